// On-disk pieces of the LevelDB table format as TensorFlow writes it:
// block handles, the 48-byte footer, block trailers, and a checked block parser.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "env.h"
#include "status.h"

namespace saverkit {

const uint64_t kTableMagicNumber = 0xdb4775248b80fb57ull;
const size_t kBlockTrailerSize = 5;  // type byte + masked crc32c
const size_t kFooterSize = 48;
const size_t kTableBlockSize = 262144;
const int kDataRestartInterval = 16;
const int kIndexRestartInterval = 1;

enum BlockType : char { kNoCompression = 0, kSnappyCompression = 1 };

struct BlockHandle {
  uint64_t offset = 0;
  uint64_t size = 0;
  void EncodeTo(std::string* dst) const;
  // Parses from [*p, limit); advances *p.
  bool DecodeFrom(const char** p, const char* limit);
};

struct Footer {
  BlockHandle metaindex;
  BlockHandle index;
  void EncodeTo(std::string* dst) const;
  Status DecodeFrom(const char* data, const std::string& file);  // exactly kFooterSize bytes
};

// The 5-byte trailer for `contents` stored with `type`.
std::string BlockTrailer(const std::string& contents, BlockType type);

// Reads the block at handle, checks its trailer CRC, uncompresses if needed.
Status ReadBlock(const RandomAccessFile& file, const BlockHandle& handle, std::string* contents);

// Walks every entry of a block in order, checking every varint and length
// against the block bounds. fn returns false to stop early.
Status ForEachBlockEntry(const std::string& block, const std::string& what,
                         const std::function<bool(const std::string& key, const char* value, size_t n)>& fn);

// A block checked entry by entry once (as ForEachBlockEntry does), then
// searched in place: the entries that store their whole key (shared == 0:
// the first entry and every restart point TF writes) anchor a binary search,
// and the few entries after the nearest anchor are walked.
class Block {
 public:
  static Status Parse(std::string contents, const std::string& what, std::unique_ptr<Block>* out);

  bool empty() const { return anchors_.empty(); }
  const std::string& first_key() const { return first_key_; }  // of a non-empty block
  const std::string& last_key() const { return last_key_; }
  // The value stored under `key`; false if the block has no such key.
  bool Get(std::string_view key, std::string* value) const;
  // The block's first entry; false if it has none.
  bool First(std::string* key, std::string* value) const;
  size_t num_entries() const { return num_entries_; }
  // Visits the entries in order; fn returns false to stop.
  void ForEach(const std::function<bool(const std::string& key, const char* value, size_t n)>& fn) const;
  size_t memory() const { return contents_.capacity() + anchors_.capacity() * sizeof(size_t); }

 private:
  std::string contents_;
  size_t limit_ = 0;            // end of the entries (the restart array follows)
  std::vector<size_t> anchors_;  // offsets of the entries with shared == 0
  size_t num_entries_ = 0;
  std::string first_key_, last_key_;
};

// Index-key rules of TF's table builder.
void FindShortestSeparator(std::string* start, const std::string& limit);
void FindShortSuccessor(std::string* key);

}  // namespace saverkit
