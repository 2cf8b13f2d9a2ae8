// Status: an error code (TensorFlow's canonical numbering) plus a message.
// Every engine function that can fail returns one; bindings.cc turns a
// non-OK Status into the matching saverkit.errors exception.
#pragma once

#include <cstdint>
#include <string>
#include <utility>

namespace saverkit {

enum class Code : int {
  kOk = 0,
  kUnknown = 2,
  kInvalidArgument = 3,
  kNotFound = 5,
  kAlreadyExists = 6,
  kPermissionDenied = 7,
  kResourceExhausted = 8,
  kFailedPrecondition = 9,
  kUnimplemented = 12,
  kInternal = 13,
  kDataLoss = 15,
};

class Status {
 public:
  Status() = default;
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status OK() { return Status(); }
  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }

 private:
  Code code_ = Code::kOk;
  std::string message_;
};

// Concatenate any streamable arguments into a message.
std::string StrCat();
template <typename T, typename... Rest>
std::string StrCat(const T& first, const Rest&... rest);

Status InvalidArgument(const std::string& msg);
Status NotFound(const std::string& msg);
Status DataLoss(const std::string& msg);
Status FailedPrecondition(const std::string& msg);
Status Unimplemented(const std::string& msg);
Status Internal(const std::string& msg);
Status ResourceExhausted(const std::string& msg);

// "0x" followed by 8 hex digits; for checksums in messages (StrCat has no
// stream state, so std::hex cannot be passed through it).
std::string Hex32(uint32_t v);

// Human-readable, quoted form of a key that may hold arbitrary bytes.
std::string PrintableKey(const std::string& key);

}  // namespace saverkit

#define SK_RETURN_IF_ERROR(expr)            \
  do {                                      \
    ::saverkit::Status _sk_status = (expr); \
    if (!_sk_status.ok()) return _sk_status; \
  } while (0)

#include <sstream>

namespace saverkit {
inline std::string StrCat() { return std::string(); }
template <typename T, typename... Rest>
std::string StrCat(const T& first, const Rest&... rest) {
  std::ostringstream os;
  os << first;
  return os.str() + StrCat(rest...);
}
}  // namespace saverkit
