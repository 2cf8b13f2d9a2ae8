#include "table_format.h"

#include <algorithm>
#include <string_view>

#include "coding.h"
#include "crc32c.h"
#include "snappy.h"

namespace saverkit {

void BlockHandle::EncodeTo(std::string* dst) const {
  PutVarint64(dst, offset);
  PutVarint64(dst, size);
}

bool BlockHandle::DecodeFrom(const char** p, const char* limit) {
  *p = GetVarint64Ptr(*p, limit, &offset);
  if (*p == nullptr) return false;
  *p = GetVarint64Ptr(*p, limit, &size);
  return *p != nullptr;
}

void Footer::EncodeTo(std::string* dst) const {
  size_t start = dst->size();
  metaindex.EncodeTo(dst);
  index.EncodeTo(dst);
  dst->resize(start + 40, '\0');  // zero padding up to the magic
  PutFixed32(dst, static_cast<uint32_t>(kTableMagicNumber & 0xffffffffu));
  PutFixed32(dst, static_cast<uint32_t>(kTableMagicNumber >> 32));
}

Status Footer::DecodeFrom(const char* data, const std::string& file) {
  uint64_t magic = DecodeFixed64(data + 40);
  if (magic != kTableMagicNumber) {
    return DataLoss(file + " is not a checkpoint index (bad table magic number: not an SSTable)");
  }
  const char* p = data;
  const char* limit = data + 40;
  if (!metaindex.DecodeFrom(&p, limit) || !index.DecodeFrom(&p, limit)) {
    return DataLoss("Corrupt table footer (bad block handles) in " + file);
  }
  return Status::OK();
}

std::string BlockTrailer(const std::string& contents, BlockType type) {
  char t = static_cast<char>(type);
  uint32_t crc = crc32c::Extend(crc32c::Value(contents.data(), contents.size()), &t, 1);
  std::string trailer(1, t);
  PutFixed32(&trailer, crc32c::Mask(crc));
  return trailer;
}

Status ReadBlock(const RandomAccessFile& file, const BlockHandle& handle, std::string* contents) {
  uint64_t end;
  if (!CheckedAdd(handle.offset, handle.size, &end) || !CheckedAdd(end, kBlockTrailerSize, &end) ||
      end > file.size()) {
    return DataLoss(StrCat("Block handle (offset ", handle.offset, ", size ", handle.size,
                           ") points outside ", file.path(), " (", file.size(), " bytes)"));
  }
  std::string raw(handle.size + kBlockTrailerSize, '\0');
  SK_RETURN_IF_ERROR(file.Read(handle.offset, raw.size(), &raw[0]));
  const char* trailer = raw.data() + handle.size;
  uint32_t expected = crc32c::Unmask(DecodeFixed32(trailer + 1));
  uint32_t actual = crc32c::Value(raw.data(), handle.size + 1);  // contents + type byte
  if (expected != actual) {
    return DataLoss(StrCat("Block checksum mismatch in ", file.path(), " at offset ", handle.offset,
                           " (", handle.size, " bytes): expected crc32c ", Hex32(expected), ", got ",
                           Hex32(actual)));
  }
  switch (trailer[0]) {
    case kNoCompression:
      raw.resize(handle.size);
      *contents = std::move(raw);
      return Status::OK();
    case kSnappyCompression:
      return SnappyUncompress(raw.data(), handle.size,
                              StrCat("block at offset ", handle.offset, " of ", file.path()), contents);
    default:
      return DataLoss(StrCat("Unknown block compression type ", int(trailer[0]), " in ", file.path(),
                             " at offset ", handle.offset));
  }
}

namespace {

struct EntryHeader {
  uint32_t shared, non_shared, value_len;
};

// Decodes the three varints of the entry at p; returns where its key bytes
// start, or nullptr if the entry does not fit before limit.
const char* DecodeEntryHeader(const char* p, const char* limit, EntryHeader* h) {
  p = GetVarint32Ptr(p, limit, &h->shared);
  if (p) p = GetVarint32Ptr(p, limit, &h->non_shared);
  if (p) p = GetVarint32Ptr(p, limit, &h->value_len);
  if (p == nullptr || static_cast<uint64_t>(limit - p) < uint64_t(h->non_shared) + h->value_len) return nullptr;
  return p;
}

// Walks every entry of a block in order, checking every varint and length
// against the block bounds and every key against the previous one.
// fn(offset of the entry, its shared length, key, value, n) returns false to stop.
Status WalkBlock(const std::string& block, const std::string& what,
                 const std::function<bool(size_t, uint32_t, const std::string&, const char*, size_t)>& fn) {
  if (block.size() < 4) return DataLoss("Block too small in " + what);
  uint64_t num_restarts = DecodeFixed32(block.data() + block.size() - 4);
  uint64_t restart_bytes;
  if (num_restarts == 0 || !CheckedMul(num_restarts + 1, 4, &restart_bytes) || restart_bytes > block.size()) {
    return DataLoss(StrCat("Corrupt block restart array in ", what));
  }
  const char* base = block.data();
  const char* p = base;
  const char* limit = base + block.size() - restart_bytes;
  std::string key, next;
  bool first = true;
  while (p < limit) {
    EntryHeader h;
    const char* k = DecodeEntryHeader(p, limit, &h);
    if (k == nullptr || h.shared > key.size() || (first && h.shared != 0)) {
      return DataLoss("Corrupt block entry in " + what);
    }
    next.assign(key, 0, h.shared);
    next.append(k, h.non_shared);
    if (!first && !(key < next)) {
      return DataLoss("Keys out of order in " + what + " at key " + PrintableKey(next));
    }
    key.swap(next);
    if (!fn(static_cast<size_t>(p - base), h.shared, key, k + h.non_shared, h.value_len)) return Status::OK();
    p = k + h.non_shared + h.value_len;
    first = false;
  }
  return Status::OK();
}

}  // namespace

Status ForEachBlockEntry(const std::string& block, const std::string& what,
                         const std::function<bool(const std::string&, const char*, size_t)>& fn) {
  return WalkBlock(block, what, [&](size_t, uint32_t, const std::string& key, const char* v, size_t n) {
    return fn(key, v, n);
  });
}

Status Block::Parse(std::string contents, const std::string& what, std::unique_ptr<Block>* out) {
  auto block = std::make_unique<Block>();
  block->contents_ = std::move(contents);
  Block* b = block.get();
  SK_RETURN_IF_ERROR(WalkBlock(b->contents_, what,
                               [b](size_t offset, uint32_t shared, const std::string& key, const char* v, size_t n) {
                                 if (shared == 0) b->anchors_.push_back(offset);
                                 if (offset == 0) b->first_key_ = key;
                                 ++b->num_entries_;
                                 b->last_key_.assign(key);
                                 b->limit_ = static_cast<size_t>(v - b->contents_.data()) + n;
                                 return true;
                               }));
  *out = std::move(block);
  return Status::OK();
}

bool Block::First(std::string* key, std::string* value) const {
  if (anchors_.empty()) return false;
  EntryHeader h;
  const char* k = DecodeEntryHeader(contents_.data(), contents_.data() + limit_, &h);  // checked by Parse
  key->assign(k, h.non_shared);  // the first entry shares nothing
  value->assign(k + h.non_shared, h.value_len);
  return true;
}

void Block::ForEach(const std::function<bool(const std::string&, const char*, size_t)>& fn) const {
  const char* base = contents_.data();
  const char* limit = base + limit_;
  std::string key;
  for (const char* p = base; p < limit;) {
    EntryHeader h;
    const char* k = DecodeEntryHeader(p, limit, &h);  // checked by Parse
    key.resize(h.shared);
    key.append(k, h.non_shared);
    if (!fn(key, k + h.non_shared, h.value_len)) return;
    p = k + h.non_shared + h.value_len;
  }
}

bool Block::Get(std::string_view target, std::string* value) const {
  if (anchors_.empty()) return false;
  const char* base = contents_.data();
  const char* limit = base + limit_;
  // Every entry up to limit_ was checked by Parse: the decodes below cannot fail.
  auto anchor_key = [&](size_t offset) {
    EntryHeader h;
    const char* k = DecodeEntryHeader(base + offset, limit, &h);
    return std::string_view(k, h.non_shared);
  };
  // The last anchor whose key is <= target, then walk from it.
  size_t lo = 0, hi = anchors_.size();
  while (lo < hi) {
    const size_t mid = lo + (hi - lo) / 2;
    if (anchor_key(anchors_[mid]) <= target) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  if (lo == 0) return false;  // below the first key
  size_t offset = anchors_[lo - 1];
  std::string k;
  while (offset < limit_) {
    EntryHeader h;
    const char* p = DecodeEntryHeader(base + offset, limit, &h);
    k.resize(h.shared);
    k.append(p, h.non_shared);
    const int c = std::string_view(k).compare(target);
    if (c >= 0) {
      if (c > 0) return false;
      value->assign(p + h.non_shared, h.value_len);
      return true;
    }
    offset = static_cast<size_t>(p - base) + h.non_shared + h.value_len;
  }
  return false;
}

void FindShortestSeparator(std::string* start, const std::string& limit) {
  size_t min_len = std::min(start->size(), limit.size());
  size_t i = 0;
  while (i < min_len && (*start)[i] == limit[i]) ++i;
  if (i >= min_len) return;  // one is a prefix of the other
  unsigned char b = static_cast<unsigned char>((*start)[i]);
  if (b < 0xff && b + 1 < static_cast<unsigned char>(limit[i])) {
    (*start)[i] = static_cast<char>(b + 1);
    start->resize(i + 1);
  }
}

void FindShortSuccessor(std::string* key) {
  for (size_t i = 0; i < key->size(); ++i) {
    unsigned char b = static_cast<unsigned char>((*key)[i]);
    if (b != 0xff) {
      (*key)[i] = static_cast<char>(b + 1);
      key->resize(i + 1);
      return;
    }
  }
}

}  // namespace saverkit
