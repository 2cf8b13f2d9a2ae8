// Reads an SSTable written by TensorFlow (or by TableBuilder). Open() reads
// only the footer and the index block; a lookup reads the one data block
// that can hold its key (a few recently used blocks are kept), so opening
// and reading a handful of keys costs the same for 10 entries or 10 million.
// Every block read is CRC-checked and parsed with bounds checks.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "env.h"
#include "status.h"
#include "table_format.h"

namespace saverkit {

class Table {
 public:
  // `file` must outlive the table. Checks the footer and every index entry.
  Status Open(const RandomAccessFile* file);
  // Looks `key` up (thread-safe). *found is false when the table has no such key.
  Status Get(const std::string& key, bool* found, std::string* value) const;
  // The data block that would hold `key` (its position in the index), or
  // num_blocks() if no block can: lookups grouped by it read each block once.
  size_t BlockFor(std::string_view key) const;
  size_t num_blocks() const { return index_.size(); }
  // Looks up keys that all belong to data block i (BlockFor), sorted and
  // distinct; fn(j, value, n) for each keys[j] found. Many keys of one block
  // are found in one walk over it, a few by searching it.
  Status GetSorted(size_t i, const std::vector<std::string_view>& keys,
                   const std::function<Status(size_t j, const char* value, size_t n)>& fn) const;
  // The first entry of the table; *found is false when the table is empty.
  Status First(bool* found, std::string* key, std::string* value) const;
  // Visits every key/value in key order (reads the whole table; nothing is cached).
  Status ForEach(const std::function<Status(const std::string& key, const std::string& value)>& fn) const;

  // Most recently used data blocks kept for the next lookups: a batch of
  // sorted keys reads each block once. Bounded by count and by bytes (TF's
  // blocks are 256 KiB; a bigger one, holding an oversized entry, is kept
  // only while it fits the byte budget).
  static const size_t kCachedBlocks = 8;
  static const size_t kCachedBytes = 4u << 20;

 private:
  struct IndexEntry {
    std::string key;  // >= every key of the block, < every key of the next one
    BlockHandle handle;
  };
  std::string BlockName(size_t i) const;
  // Reads, checks and parses data block i, or finds it in the cache.
  Status LoadBlock(size_t i, std::shared_ptr<const Block>* block) const;

  const RandomAccessFile* file_ = nullptr;
  Footer footer_;
  std::vector<IndexEntry> index_;
  mutable std::mutex cache_mu_;
  mutable std::vector<std::pair<size_t, std::shared_ptr<const Block>>> cache_;  // least recently used first
  mutable size_t cache_bytes_ = 0;
};

}  // namespace saverkit
