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

std::string PrintableKey(const std::string& key) {
  std::string out = "'";
  for (unsigned char c : key) {
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
      out.push_back(static_cast<char>(c));
    } else if (c >= 0x80) {
      out.push_back(static_cast<char>(c));  // keep UTF-8 names readable
    } else {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", c);
      out += buf;
    }
  }
  return out + "'";
}

}  // namespace saverkit
