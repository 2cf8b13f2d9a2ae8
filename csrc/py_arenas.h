// Reuse of pymalloc's object arenas across string restores.
//
// A restore of 100,000 string elements makes 100,000 bytes objects: about
// 14 MiB of pymalloc arenas. When the previous restore's objects are freed,
// CPython unmaps their arenas, so the next restore maps fresh ones and takes
// a page fault per 4 KiB touched: ~3,000 faults, about half the call's time
// on the benchmark VM. The cache keeps up to kArenaCacheBytes of freed
// arenas mapped and hands them back to pymalloc first.
#pragma once

#include <cstddef>
#include <cstdint>

namespace saverkit {

const size_t kArenaCacheBytes = 32u << 20;

// Wraps the interpreter's arena allocator with the cache; later calls do
// nothing. Call with the GIL held, before making many objects.
void InstallArenaCache();

// Off: InstallArenaCache does nothing, and an installed cache frees what it
// holds and passes every later call through. Call with the GIL held.
void SetArenaCacheEnabled(bool enabled);

struct ArenaCacheStats {
  bool installed = false;
  size_t cached_bytes = 0;  // freed arenas kept mapped
  uint64_t reused = 0;      // allocations served from the cache
};
ArenaCacheStats GetArenaCacheStats();

}  // namespace saverkit
