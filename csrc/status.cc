#include "status.h"

#include <cstdio>

namespace saverkit {

Status InvalidArgument(const std::string& msg) { return Status(Code::kInvalidArgument, msg); }
Status NotFound(const std::string& msg) { return Status(Code::kNotFound, msg); }
Status DataLoss(const std::string& msg) { return Status(Code::kDataLoss, msg); }
Status FailedPrecondition(const std::string& msg) { return Status(Code::kFailedPrecondition, msg); }
Status Unimplemented(const std::string& msg) { return Status(Code::kUnimplemented, msg); }
Status Internal(const std::string& msg) { return Status(Code::kInternal, msg); }
Status ResourceExhausted(const std::string& msg) { return Status(Code::kResourceExhausted, msg); }

namespace {

bool IsValidUtf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 0x2) return false;
    }
    i += n;
  }
  return true;
}

}  // namespace

std::string PrintableKey(const std::string& key) {
  const bool utf8 = IsValidUtf8(key);
  std::string out = "'";
  for (unsigned char c : key) {
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
      out.push_back(static_cast<char>(c));
    } else if (c >= 0x80 && utf8) {
      out.push_back(static_cast<char>(c));  // keep UTF-8 names readable
    } else {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", c);
      out += buf;
    }
  }
  return out + "'";
}

std::string Hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%08x", v);
  return buf;
}

}  // namespace saverkit
