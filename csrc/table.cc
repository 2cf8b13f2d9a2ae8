#include "table.h"

#include <algorithm>

namespace saverkit {

Status Table::Open(const RandomAccessFile* file) {
  file_ = file;
  index_.clear();
  {
    // A reader that opens again (a re-save raced its first open) must not
    // keep another file's blocks.
    std::lock_guard<std::mutex> lock(cache_mu_);
    cache_.clear();
    cache_bytes_ = 0;
  }
  if (file->size() < kFooterSize) {
    return DataLoss(StrCat(file->path(), " is too short (", file->size(),
                           " bytes) to be a checkpoint index: not an SSTable or truncated"));
  }
  char footer[kFooterSize];
  SK_RETURN_IF_ERROR(file->Read(file->size() - kFooterSize, kFooterSize, footer));
  SK_RETURN_IF_ERROR(footer_.DecodeFrom(footer, file->path()));
  // TF never reads the metaindex block; neither do we (only its bounds).
  std::string index_block;
  SK_RETURN_IF_ERROR(ReadBlock(*file, footer_.index, &index_block));
  // One entry per data block (a 1M-tensor index has ~100): kept decoded.
  Status bad;
  SK_RETURN_IF_ERROR(ForEachBlockEntry(index_block, "the index block of " + file->path(),
                                       [&](const std::string& key, const char* v, size_t n) {
                                         BlockHandle h;
                                         const char* p = v;
                                         if (!h.DecodeFrom(&p, v + n)) {
                                           bad = DataLoss("Corrupt block handle in the index block of " +
                                                          file->path());
                                           return false;
                                         }
                                         index_.push_back({key, h});
                                         return true;
                                       }));
  return bad;
}

std::string Table::BlockName(size_t i) const {
  return StrCat("data block at offset ", index_[i].handle.offset, " of ", file_->path());
}

Status Table::LoadBlock(size_t i, std::shared_ptr<const Block>* block) const {
  {
    std::lock_guard<std::mutex> lock(cache_mu_);
    for (size_t c = 0; c < cache_.size(); ++c) {
      if (cache_[c].first != i) continue;
      *block = cache_[c].second;
      std::rotate(cache_.begin() + c, cache_.begin() + c + 1, cache_.end());  // now the most recent
      return Status::OK();
    }
  }
  std::string contents;
  SK_RETURN_IF_ERROR(ReadBlock(*file_, index_[i].handle, &contents));
  std::unique_ptr<Block> parsed;
  SK_RETURN_IF_ERROR(Block::Parse(std::move(contents), BlockName(i), &parsed));
  // The index says which keys the block holds: a block disagreeing with it
  // would make lookups miss keys it holds.
  if (!parsed->empty() && (parsed->last_key() > index_[i].key || (i > 0 && parsed->first_key() <= index_[i - 1].key))) {
    return DataLoss("Keys of the " + BlockName(i) + " are out of order with the index block");
  }
  std::shared_ptr<const Block> shared(std::move(parsed));
  *block = shared;
  const size_t bytes = shared->memory();
  if (bytes > kCachedBytes) return Status::OK();  // used once, not kept
  std::lock_guard<std::mutex> lock(cache_mu_);
  for (const auto& c : cache_) {
    if (c.first == i) return Status::OK();  // another thread loaded it meanwhile
  }
  cache_.emplace_back(i, std::move(shared));
  cache_bytes_ += bytes;
  while (cache_.size() > kCachedBlocks || cache_bytes_ > kCachedBytes) {
    cache_bytes_ -= cache_.front().second->memory();
    cache_.erase(cache_.begin());
  }
  return Status::OK();
}

size_t Table::BlockFor(std::string_view key) const {
  // The first block whose index key is >= key is the only one that can hold it.
  auto it = std::lower_bound(index_.begin(), index_.end(), key,
                             [](const IndexEntry& e, std::string_view k) { return std::string_view(e.key) < k; });
  return static_cast<size_t>(it - index_.begin());
}

Status Table::Get(const std::string& key, bool* found, std::string* value) const {
  *found = false;
  value->clear();
  const size_t i = BlockFor(key);
  if (i == index_.size()) return Status::OK();
  std::shared_ptr<const Block> block;
  SK_RETURN_IF_ERROR(LoadBlock(i, &block));
  *found = block->Get(key, value);
  return Status::OK();
}

Status Table::GetSorted(size_t i, const std::vector<std::string_view>& keys,
                        const std::function<Status(size_t, const char*, size_t)>& fn) const {
  if (keys.empty() || i >= index_.size()) return Status::OK();
  std::shared_ptr<const Block> block;
  SK_RETURN_IF_ERROR(LoadBlock(i, &block));
  // A search costs a binary search over the block's anchors and a walk of up
  // to one restart interval (16 entries): about 16 steps of the walk below.
  if (keys.size() * 16 < block->num_entries()) {
    std::string value;
    for (size_t j = 0; j < keys.size(); ++j) {
      if (block->Get(keys[j], &value)) SK_RETURN_IF_ERROR(fn(j, value.data(), value.size()));
    }
    return Status::OK();
  }
  size_t j = 0;
  Status st;
  block->ForEach([&](const std::string& key, const char* v, size_t n) {
    const std::string_view k(key);
    while (j < keys.size() && keys[j] < k) ++j;
    if (j == keys.size()) return false;
    if (keys[j] == k) {
      st = fn(j++, v, n);
      if (!st.ok()) return false;
    }
    return j < keys.size();
  });
  return st;
}

Status Table::First(bool* found, std::string* key, std::string* value) const {
  *found = false;
  if (index_.empty()) return Status::OK();
  std::shared_ptr<const Block> block;
  SK_RETURN_IF_ERROR(LoadBlock(0, &block));
  *found = block->First(key, value);
  return Status::OK();
}

Status Table::ForEach(const std::function<Status(const std::string&, const std::string&)>& fn) const {
  std::string prev_key;
  bool have_prev = false;
  for (size_t i = 0; i < index_.size(); ++i) {
    std::string block;
    SK_RETURN_IF_ERROR(ReadBlock(*file_, index_[i].handle, &block));
    Status st;
    SK_RETURN_IF_ERROR(ForEachBlockEntry(block, BlockName(i), [&](const std::string& key, const char* v, size_t n) {
      if ((have_prev && !(prev_key < key)) || key > index_[i].key || (i > 0 && key <= index_[i - 1].key)) {
        st = DataLoss("Keys of the " + BlockName(i) + " are out of order with the index block");
        return false;
      }
      prev_key = key;
      have_prev = true;
      st = fn(key, std::string(v, n));
      return st.ok();
    }));
    SK_RETURN_IF_ERROR(st);
  }
  return Status::OK();
}

}  // namespace saverkit
