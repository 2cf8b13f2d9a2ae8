#include "crc32c.h"

#include <cstring>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
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

// n bytes (a multiple of 8) of three stripes, each on its own crc32 chain.
__attribute__((target("sse4.2"))) static inline void ThreeStreams(uint64_t* c0, uint64_t* c1, uint64_t* c2,
                                                                  const unsigned char* p0, const unsigned char* p1,
                                                                  const unsigned char* p2, size_t n) {
  uint64_t a = *c0, b = *c1, c = *c2;
  for (size_t i = 0; i < n; i += 8) {
    uint64_t w0, w1, w2;
    std::memcpy(&w0, p0 + i, 8);
    std::memcpy(&w1, p1 + i, 8);
    std::memcpy(&w2, p2 + i, 8);
    a = _mm_crc32_u64(a, w0);
    b = _mm_crc32_u64(b, w1);
    c = _mm_crc32_u64(c, w2);
  }
  *c0 = a;
  *c1 = b;
  *c2 = c;
}

__attribute__((target("sse4.2"))) uint32_t ExtendHardware(uint32_t crc, const char* data, size_t n) {
  const unsigned char* p = reinterpret_cast<const unsigned char*>(data);
  if (n < 8192) return ExtendOneStream(crc, p, n);
  const size_t stripe = (n / 3) & ~static_cast<size_t>(7);
  const unsigned char* p1 = p + stripe;
  const unsigned char* p2 = p + 2 * stripe;
  uint64_t c0 = crc ^ 0xffffffffu, c1 = 0xffffffffu, c2 = 0xffffffffu;
  ThreeStreams(&c0, &c1, &c2, p, p1, p2, stripe);
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

// Folding with carry-less multiplies (VPCLMULQDQ on 512-bit registers).
// Where a page-cache read copies ~18 GB/s per core, three crc32 streams
// (~30 GB/s) cost over half as much as the read they verify; four 512-bit
// accumulators folded by multiplication reach ~65 GB/s, ~84 GB/s with the
// crc32 streams running beside them (measured on the AVX-512 EPYC VM).
//
// The message is a polynomial whose first bit is the highest power; a 128-bit
// lane loaded from memory holds its first 64 bits in the low qword (Xh) and the
// next 64 in the high qword (Xl). Moving a lane D bits further along the
// message multiplies it by x^D, done modulo P as Xh*k_h + Xl*k_l with
// k_h = x^(D+31) mod P and k_l = x^(D-33) mod P: the extra -33 is the 32 bits
// of the constant's placement and the one bit that a carry-less multiply of
// two bit-reflected operands shifts the product by. The 128-bit residue left
// at the end is congruent to the message, so two crc32 instructions over it
// give the CRC. Constants: x^n mod P in the reflected 32-bit form (bit j is
// the coefficient of x^(31-j)).
static const uint64_t kFold256BytesHigh = 0xdcb17aa4u, kFold256BytesLow = 0xb9e02b86u;  // D = 2048
static const uint64_t kFold64BytesHigh = 0x740eef02u, kFold64BytesLow = 0x9e4addf8u;    // D = 512
static const uint64_t kFold16BytesHigh = 0xf20c0dfeu, kFold16BytesLow = 0x493c7d27u;    // D = 128

#define SK_FOLD_TARGET __attribute__((target("avx512f,avx512vl,vpclmulqdq,pclmul,sse4.2")))

// Both constants in each 128-bit lane: k_h multiplies the lane's low qword, k_l its high one.
SK_FOLD_TARGET static inline __m512i LaneConstants(uint64_t k_high, uint64_t k_low) {
  const long long h = static_cast<long long>(k_high), l = static_cast<long long>(k_low);
  return _mm512_set_epi64(l, h, l, h, l, h, l, h);
}

SK_FOLD_TARGET static inline __m512i Fold512(__m512i x, __m512i k, __m512i next) {
  // 0x96: three-way XOR
  return _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(x, k, 0x00), _mm512_clmulepi64_epi128(x, k, 0x11), next,
                                   0x96);
}

SK_FOLD_TARGET static inline __m128i Fold128(__m128i x, __m128i k, __m128i next) {
  return _mm_ternarylogic_epi64(_mm_clmulepi64_si128(x, k, 0x00), _mm_clmulepi64_si128(x, k, 0x11), next, 0x96);
}

// Reduces a 512-bit accumulator (four lanes in message order) to the CRC
// register state of the message it stands for.
SK_FOLD_TARGET static uint32_t Reduce512(__m512i x) {
  const __m128i k16 =
      _mm_set_epi64x(static_cast<long long>(kFold16BytesLow), static_cast<long long>(kFold16BytesHigh));
  __m128i r = Fold128(_mm512_maskz_extracti32x4_epi32(0xf, x, 0), k16, _mm512_maskz_extracti32x4_epi32(0xf, x, 1));
  r = Fold128(r, k16, _mm512_maskz_extracti32x4_epi32(0xf, x, 2));
  r = Fold128(r, k16, _mm512_maskz_extracti32x4_epi32(0xf, x, 3));
  uint64_t c = _mm_crc32_u64(0, static_cast<uint64_t>(_mm_cvtsi128_si64(r)));
  return static_cast<uint32_t>(_mm_crc32_u64(c, static_cast<uint64_t>(_mm_extract_epi64(r, 1))));
}

// Four 512-bit accumulators over 256 consecutive bytes, in message order.
struct Lanes {
  __m512i x0, x1, x2, x3;
};

// The first 256 bytes; a CRC register's state enters the message as an XOR
// over its first 32 bits.
SK_FOLD_TARGET static inline Lanes LoadLanes(const unsigned char* p, uint32_t state) {
  const __m512i s = _mm512_zextsi128_si512(_mm_cvtsi32_si128(static_cast<int>(state)));
  return {_mm512_xor_si512(_mm512_loadu_si512(p), s), _mm512_loadu_si512(p + 64), _mm512_loadu_si512(p + 128),
          _mm512_loadu_si512(p + 192)};
}

// Moves the accumulators 256 bytes along and adds the next 256 bytes at p.
SK_FOLD_TARGET static inline void FoldLanes(Lanes* a, const unsigned char* p) {
  const __m512i k256 = LaneConstants(kFold256BytesHigh, kFold256BytesLow);
  a->x0 = Fold512(a->x0, k256, _mm512_loadu_si512(p));
  a->x1 = Fold512(a->x1, k256, _mm512_loadu_si512(p + 64));
  a->x2 = Fold512(a->x2, k256, _mm512_loadu_si512(p + 128));
  a->x3 = Fold512(a->x3, k256, _mm512_loadu_si512(p + 192));
}

// Folds the four accumulators into the last one.
SK_FOLD_TARGET static inline __m512i MergeLanes(const Lanes& a) {
  const __m512i k64 = LaneConstants(kFold64BytesHigh, kFold64BytesLow);
  return Fold512(Fold512(Fold512(a.x0, k64, a.x1), k64, a.x2), k64, a.x3);
}

// Register state after the whole 64-byte blocks of p[0..n), n >= 256;
// *used receives how many bytes that was.
SK_FOLD_TARGET static uint32_t FoldVector(uint32_t state, const unsigned char* p, size_t n, size_t* used) {
  const unsigned char* const begin = p;
  Lanes lanes = LoadLanes(p, state);
  for (p += 256, n -= 256; n >= 256; p += 256, n -= 256) FoldLanes(&lanes, p);
  __m512i x = MergeLanes(lanes);
  const __m512i k64 = LaneConstants(kFold64BytesHigh, kFold64BytesLow);
  for (; n >= 64; p += 64, n -= 64) x = Fold512(x, k64, _mm512_loadu_si512(p));
  *used = static_cast<size_t>(p - begin);
  return Reduce512(x);
}

// The vector unit leaves the integer unit idle, and the crc32 instruction
// runs there: a hybrid block folds kHybridIters x 256 bytes with vectors while
// three crc32 streams each take 32 bytes per iteration of a stripe of their
// own (together ~1.35x the vector loop alone). The stripes' CRCs are then
// shifted into place: state * x^(8 * kStripe) mod P is one carry-less
// multiply by kShiftStripe = x^(8 * kStripe - 33) mod P, the -33 undone by the
// crc32 instruction that reduces the product.
static const size_t kHybridIters = 128;
static const size_t kStripe = kHybridIters * 32;                   // 4 KiB per crc32 stream
static const size_t kHybridBlock = kHybridIters * 256 + 3 * kStripe;  // 44 KiB
static const uint64_t kShiftStripe = 0x82f89c77u;                 // x^(8*4096-33) mod P

SK_FOLD_TARGET static uint32_t ShiftByStripe(uint32_t state) {
  const __m128i prod = _mm_clmulepi64_si128(_mm_cvtsi32_si128(static_cast<int>(state)),
                                            _mm_cvtsi64_si128(static_cast<long long>(kShiftStripe)), 0x00);
  return static_cast<uint32_t>(_mm_crc32_u64(0, static_cast<uint64_t>(_mm_cvtsi128_si64(prod))));
}

SK_FOLD_TARGET static uint32_t FoldHybridBlock(uint32_t state, const unsigned char* p) {
  const unsigned char* s0 = p + kHybridIters * 256;
  const unsigned char* s1 = s0 + kStripe;
  const unsigned char* s2 = s1 + kStripe;
  uint64_t c0 = 0, c1 = 0, c2 = 0;
  Lanes lanes = LoadLanes(p, state);
  for (size_t i = 0;;) {
    ThreeStreams(&c0, &c1, &c2, s0, s1, s2, 32);
    s0 += 32;
    s1 += 32;
    s2 += 32;
    if (++i == kHybridIters) break;
    p += 256;
    FoldLanes(&lanes, p);
  }
  // Raw CRCs are linear: state(A || B) = state(A) * x^(8|B|) ^ state_from_zero(B).
  uint32_t c = Reduce512(MergeLanes(lanes));
  c = ShiftByStripe(c) ^ static_cast<uint32_t>(c0);
  c = ShiftByStripe(c) ^ static_cast<uint32_t>(c1);
  return ShiftByStripe(c) ^ static_cast<uint32_t>(c2);
}

SK_FOLD_TARGET static uint32_t ExtendFoldingImpl(uint32_t crc, const unsigned char* p, size_t n) {
  uint32_t state = crc ^ 0xffffffffu;
  while (n >= kHybridBlock) {
    state = FoldHybridBlock(state, p);
    p += kHybridBlock;
    n -= kHybridBlock;
  }
  if (n >= 256) {
    size_t used;
    state = FoldVector(state, p, n, &used);
    p += used;
    n -= used;
  }
  return ExtendOneStream(state ^ 0xffffffffu, p, n);
}

#undef SK_FOLD_TARGET

bool FoldingAvailable() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                          __builtin_cpu_supports("vpclmulqdq") && __builtin_cpu_supports("pclmul") &&
                          __builtin_cpu_supports("sse4.2");
  return has;
}

uint32_t ExtendFolding(uint32_t crc, const char* data, size_t n) {
  return ExtendFoldingImpl(crc, reinterpret_cast<const unsigned char*>(data), n);
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

#if !defined(SK_CRC_X86)
bool FoldingAvailable() { return false; }
uint32_t ExtendFolding(uint32_t crc, const char* data, size_t n) { return ExtendSoftware(crc, data, n); }
#endif

const char* Implementation() {
  if (FoldingAvailable()) return "vpclmulqdq-avx512";
  if (HardwareAvailable()) return "crc32-instruction";
  return "table";
}

uint32_t Extend(uint32_t crc, const char* data, size_t n) {
  if (FoldingAvailable()) return ExtendFolding(crc, data, n);
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
