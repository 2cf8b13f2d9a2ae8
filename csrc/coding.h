// Explicit little-endian and varint encode/decode helpers. Decoders never read
// past `limit` and report failure instead.
#pragma once

#include <cstdint>
#include <string>

namespace saverkit {

void PutFixed32(std::string* dst, uint32_t v);
void PutFixed64(std::string* dst, uint64_t v);
void PutVarint32(std::string* dst, uint32_t v);
void PutVarint64(std::string* dst, uint64_t v);
inline int VarintLength(uint64_t v) {
  int len = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++len;
  }
  return len;
}
// Writes v as a varint at dst (VarintLength(v) bytes); returns the end.
char* EncodeVarint64(char* dst, uint64_t v);

inline void EncodeFixed32(char* dst, uint32_t v) {
  for (int i = 0; i < 4; ++i) dst[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}
inline void EncodeFixed64(char* dst, uint64_t v) {
  for (int i = 0; i < 8; ++i) dst[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}
uint32_t DecodeFixed32(const char* p);
uint64_t DecodeFixed64(const char* p);
uint32_t DecodeFixed32BE(const char* p);

// Returns a pointer just past the parsed varint, or nullptr if it is
// truncated or too long (more than 5 / 10 bytes).
const char* GetVarint32Ptr(const char* p, const char* limit, uint32_t* v);
const char* GetVarint64Ptr(const char* p, const char* limit, uint64_t* v);

// Checked arithmetic for sizes and offsets read from files.
bool CheckedAdd(uint64_t a, uint64_t b, uint64_t* out);
bool CheckedMul(uint64_t a, uint64_t b, uint64_t* out);

}  // namespace saverkit
