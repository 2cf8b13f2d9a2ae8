// CRC-32C (Castagnoli) as used by TensorFlow checkpoints and LevelDB tables.
// Value()/Extend() pick at run time the fastest the CPU has: carry-less
// multiply folding on 512-bit registers (x86-64 with AVX-512 VPCLMULQDQ), the
// SSE4.2 or ARMv8 CRC instruction, or a table.
#pragma once

#include <cstddef>
#include <cstdint>

namespace saverkit {
namespace crc32c {

// crc32c(a || data) given crc = crc32c(a).
uint32_t Extend(uint32_t crc, const char* data, size_t n);
inline uint32_t Value(const char* data, size_t n) { return Extend(0, data, n); }

// The two implementations, exposed so tests can compare them.
uint32_t ExtendSoftware(uint32_t crc, const char* data, size_t n);
uint32_t ExtendHardware(uint32_t crc, const char* data, size_t n);  // requires HardwareAvailable()
bool HardwareAvailable();
uint32_t ExtendFolding(uint32_t crc, const char* data, size_t n);  // requires FoldingAvailable()
bool FoldingAvailable();
const char* Implementation();  // the one Extend() uses, for reports

// crc32c(a || b) from crc32c(a), crc32c(b) and len(b): lets chunks of a large
// buffer be checksummed on different threads.
uint32_t Combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b);

static const uint32_t kMaskDelta = 0xa282ead8u;

// Stored CRCs are masked so that a CRC over data containing CRCs stays strong.
inline uint32_t Mask(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + kMaskDelta; }
inline uint32_t Unmask(uint32_t masked) {
  uint32_t rot = masked - kMaskDelta;
  return (rot >> 17) | (rot << 15);
}

}  // namespace crc32c
}  // namespace saverkit
