// On-disk pieces of the LevelDB table format as TensorFlow writes it:
// block handles, the 48-byte footer, block trailers, and a checked block parser.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

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

// Index-key rules of TF's table builder.
void FindShortestSeparator(std::string* start, const std::string& limit);
void FindShortSuccessor(std::string* key);

}  // namespace saverkit
