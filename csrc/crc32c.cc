#include "crc32c.h"

#include <cstring>

#if defined(__x86_64__) || defined(_M_X64)
#include <nmmintrin.h>
#define SK_CRC_X86 1
#elif defined(__aarch64__) && defined(__linux__) && defined(__has_include)
#if __has_include(<arm_acle.h>) && __has_include(<sys/auxv.h>)
#include <arm_acle.h>
#include <sys/auxv.h>
#ifndef HWCAP_CRC32
#define HWCAP_CRC32 (1 << 7)
#endif
#define SK_CRC_ARM 1
#endif
#endif

namespace saverkit {
namespace crc32c {
namespace {

const uint32_t kPoly = 0x82f63b78u;  // reflected 0x1EDC6F41

// Slicing-by-8 tables: table[0] is the classic byte table.
struct Tables {
  uint32_t t[8][256];
  Tables() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ kPoly : c >> 1;
      t[0][i] = c;
    }
    for (int s = 1; s < 8; ++s)
      for (int i = 0; i < 256; ++i) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xff];
  }
};

const Tables& GetTables() {
  static const Tables tables;
  return tables;
}

uint32_t LoadLE32(const unsigned char* p) {
  return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
}

}  // namespace

uint32_t ExtendSoftware(uint32_t crc, const char* data, size_t n) {
  const Tables& tb = GetTables();
  const unsigned char* p = reinterpret_cast<const unsigned char*>(data);
  uint32_t c = crc ^ 0xffffffffu;
  while (n >= 8) {
    uint32_t lo = LoadLE32(p) ^ c;
    uint32_t hi = LoadLE32(p + 4);
    c = tb.t[7][lo & 0xff] ^ tb.t[6][(lo >> 8) & 0xff] ^ tb.t[5][(lo >> 16) & 0xff] ^ tb.t[4][lo >> 24] ^
        tb.t[3][hi & 0xff] ^ tb.t[2][(hi >> 8) & 0xff] ^ tb.t[1][(hi >> 16) & 0xff] ^ tb.t[0][hi >> 24];
    p += 8;
    n -= 8;
  }
  while (n--) c = tb.t[0][(c ^ *p++) & 0xff] ^ (c >> 8);
  return c ^ 0xffffffffu;
}

#if defined(SK_CRC_X86)
// Function-level target attribute: the rest of the build needs no -msse4.2,
// and this is only called after the cpuid check below.
// One stream of the crc32 instruction is latency-bound (3 cycles per 8
// bytes); three independent streams over three stripes keep the unit busy.
__attribute__((target("sse4.2"))) uint32_t ExtendOneStream(uint32_t crc, const unsigned char* p, size_t n) {
  uint64_t c = crc ^ 0xffffffffu;
  while (n > 0 && (reinterpret_cast<uintptr_t>(p) & 7) != 0) {
    c = _mm_crc32_u8(static_cast<uint32_t>(c), *p++);
    --n;
  }
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    c = _mm_crc32_u64(c, w);
    p += 8;
    n -= 8;
  }
  while (n--) c = _mm_crc32_u8(static_cast<uint32_t>(c), *p++);
  return static_cast<uint32_t>(c) ^ 0xffffffffu;
}

__attribute__((target("sse4.2"))) uint32_t ExtendHardware(uint32_t crc, const char* data, size_t n) {
  const unsigned char* p = reinterpret_cast<const unsigned char*>(data);
  if (n < 8192) return ExtendOneStream(crc, p, n);
  const size_t stripe = (n / 3) & ~static_cast<size_t>(7);
  const unsigned char* p1 = p + stripe;
  const unsigned char* p2 = p + 2 * stripe;
  uint64_t c0 = crc ^ 0xffffffffu, c1 = 0xffffffffu, c2 = 0xffffffffu;
  for (size_t i = 0; i < stripe; i += 8) {
    uint64_t w0, w1, w2;
    std::memcpy(&w0, p + i, 8);
    std::memcpy(&w1, p1 + i, 8);
    std::memcpy(&w2, p2 + i, 8);
    c0 = _mm_crc32_u64(c0, w0);
    c1 = _mm_crc32_u64(c1, w1);
    c2 = _mm_crc32_u64(c2, w2);
  }
  uint32_t v0 = static_cast<uint32_t>(c0) ^ 0xffffffffu;
  uint32_t v1 = static_cast<uint32_t>(c1) ^ 0xffffffffu;
  // The third stream also takes the bytes after the last full stripe.
  uint32_t v2 = ExtendOneStream(static_cast<uint32_t>(c2) ^ 0xffffffffu, p2 + stripe, n - 3 * stripe);
  return Combine(Combine(v0, v1, stripe), v2, n - 2 * stripe);
}

bool HardwareAvailable() {
  static const bool has = __builtin_cpu_supports("sse4.2");
  return has;
}
#elif defined(SK_CRC_ARM)
__attribute__((target("+crc"))) uint32_t ExtendHardware(uint32_t crc, const char* data, size_t n) {
  const unsigned char* p = reinterpret_cast<const unsigned char*>(data);
  uint32_t c = crc ^ 0xffffffffu;
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    c = __crc32cd(c, w);
    p += 8;
    n -= 8;
  }
  while (n--) c = __crc32cb(c, *p++);
  return c ^ 0xffffffffu;
}

bool HardwareAvailable() {
  static const bool has = (getauxval(AT_HWCAP) & HWCAP_CRC32) != 0;
  return has;
}
#else
uint32_t ExtendHardware(uint32_t crc, const char* data, size_t n) { return ExtendSoftware(crc, data, n); }
bool HardwareAvailable() { return false; }
#endif

uint32_t Extend(uint32_t crc, const char* data, size_t n) {
  return HardwareAvailable() ? ExtendHardware(crc, data, n) : ExtendSoftware(crc, data, n);
}

// Combine: multiply crc_a by x^(8*len_b) modulo the polynomial (GF(2)), the
// method zlib uses. Polynomials are stored reflected: bit 31 is x^0.
namespace {

uint32_t MultModP(uint32_t a, uint32_t b) {
  uint32_t m = 1u << 31, p = 0;
  for (;;) {
    if (a & m) {
      p ^= b;
      if ((a & (m - 1)) == 0) break;
    }
    m >>= 1;
    b = (b & 1) ? (b >> 1) ^ kPoly : b >> 1;
  }
  return p;
}

struct PowerTable {
  uint32_t x2n[67];  // x^(2^k) mod P, enough for any 64-bit byte count
  PowerTable() {
    uint32_t p = 1u << 30;  // x^1
    x2n[0] = p;
    for (int k = 1; k < 67; ++k) x2n[k] = p = MultModP(p, p);
  }
};

uint32_t XToThe8NModP(uint64_t n) {
  static const PowerTable table;
  uint32_t p = 1u << 31;  // x^0
  unsigned k = 3;         // 8*n = n * 2^3
  while (n) {
    if (n & 1) p = MultModP(table.x2n[k], p);
    n >>= 1;
    ++k;
  }
  return p;
}

}  // namespace

uint32_t Combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b) {
  return MultModP(XToThe8NModP(len_b), crc_a) ^ crc_b;
}

}  // namespace crc32c
}  // namespace saverkit
