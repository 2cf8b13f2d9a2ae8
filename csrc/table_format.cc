#include "table_format.h"

#include <algorithm>

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

Status ForEachBlockEntry(const std::string& block, const std::string& what,
                         const std::function<bool(const std::string&, const char*, size_t)>& fn) {
  if (block.size() < 4) return DataLoss("Block too small in " + what);
  uint64_t num_restarts = DecodeFixed32(block.data() + block.size() - 4);
  uint64_t restart_bytes;
  if (num_restarts == 0 || !CheckedMul(num_restarts + 1, 4, &restart_bytes) || restart_bytes > block.size()) {
    return DataLoss(StrCat("Corrupt block restart array in ", what));
  }
  const char* p = block.data();
  const char* limit = block.data() + block.size() - restart_bytes;
  std::string key;
  bool first = true;
  while (p < limit) {
    uint32_t shared, non_shared, value_len;
    p = GetVarint32Ptr(p, limit, &shared);
    if (p) p = GetVarint32Ptr(p, limit, &non_shared);
    if (p) p = GetVarint32Ptr(p, limit, &value_len);
    if (p == nullptr || shared > key.size() || (first && shared != 0) ||
        static_cast<uint64_t>(limit - p) < uint64_t(non_shared) + value_len) {
      return DataLoss("Corrupt block entry in " + what);
    }
    std::string next = key.substr(0, shared);
    next.append(p, non_shared);
    if (!first && !(key < next)) {
      return DataLoss("Keys out of order in " + what + " at key " + PrintableKey(next));
    }
    key.swap(next);
    p += non_shared;
    if (!fn(key, p, value_len)) return Status::OK();
    p += value_len;
    first = false;
  }
  return Status::OK();
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
