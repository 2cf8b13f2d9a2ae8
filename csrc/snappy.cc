#include "snappy.h"

#include "coding.h"

namespace saverkit {

Status SnappyUncompress(const char* input, size_t n, const std::string& what, std::string* out) {
  const char* p = input;
  const char* limit = input + n;
  uint32_t expected = 0;
  p = GetVarint32Ptr(p, limit, &expected);
  if (p == nullptr) return DataLoss("Corrupt Snappy block (bad length header) in " + what);
  // Snappy expands at most ~22x (a 3-byte copy yields 64 bytes): a bigger
  // claim is corruption, and refusing it caps the allocation.
  uint64_t bound = 32 * static_cast<uint64_t>(n) + 64;
  if (expected > bound) {
    return DataLoss(StrCat("Corrupt Snappy block in ", what, ": claims ", expected, " bytes from ", n));
  }
  out->clear();
  out->reserve(expected);
  while (p < limit) {
    unsigned char tag = static_cast<unsigned char>(*p++);
    uint64_t len = 0, offset = 0;
    switch (tag & 3) {
      case 0: {  // literal
        len = (tag >> 2) + 1;
        if (len > 60) {
          size_t extra = len - 60;  // 1..4 little-endian length bytes
          if (static_cast<size_t>(limit - p) < extra) return DataLoss("Truncated Snappy literal in " + what);
          len = 0;
          for (size_t i = 0; i < extra; ++i) len |= uint64_t(static_cast<unsigned char>(p[i])) << (8 * i);
          len += 1;
          p += extra;
        }
        if (static_cast<uint64_t>(limit - p) < len || out->size() + len > expected) {
          return DataLoss("Corrupt Snappy literal in " + what);
        }
        out->append(p, len);
        p += len;
        continue;
      }
      case 1:
        if (limit - p < 1) return DataLoss("Truncated Snappy copy in " + what);
        len = ((tag >> 2) & 7) + 4;
        offset = (uint64_t(tag >> 5) << 8) | static_cast<unsigned char>(*p++);
        break;
      case 2:
        if (limit - p < 2) return DataLoss("Truncated Snappy copy in " + what);
        len = (tag >> 2) + 1;
        offset = static_cast<unsigned char>(p[0]) | (uint64_t(static_cast<unsigned char>(p[1])) << 8);
        p += 2;
        break;
      default:
        if (limit - p < 4) return DataLoss("Truncated Snappy copy in " + what);
        len = (tag >> 2) + 1;
        offset = DecodeFixed32(p);
        p += 4;
        break;
    }
    if (offset == 0 || offset > out->size() || out->size() + len > expected) {
      return DataLoss("Corrupt Snappy copy in " + what);
    }
    size_t from = out->size() - offset;
    for (uint64_t i = 0; i < len; ++i) out->push_back((*out)[from + i]);  // may overlap itself
  }
  if (out->size() != expected) {
    return DataLoss(StrCat("Snappy block in ", what, " decoded to ", out->size(), " bytes, header says ",
                           expected));
  }
  return Status::OK();
}

}  // namespace saverkit
