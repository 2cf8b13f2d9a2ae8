// Python.h first: it may set feature-test macros the standard headers read.
#include <Python.h>

#include "py_arenas.h"

#include <mutex>
#include <vector>

namespace saverkit {
namespace {

struct Arena {
  void* ptr;
  size_t size;
};

// Arena calls normally come with the GIL held; the mutex covers
// interpreters with their own GIL, which share the arena allocator.
std::mutex g_mu;
bool g_installed = false;
bool g_enabled = true;          // SetArenaCacheEnabled
PyObjectArenaAllocator g_next;  // the allocator the cache wraps
std::vector<Arena>* g_cached;   // most recently freed last: the warmest pages first
size_t g_cached_bytes = 0;
uint64_t g_reused = 0;

void* CachedAlloc(void*, size_t size) {
  {
    std::lock_guard<std::mutex> lock(g_mu);
    for (size_t i = g_cached->size(); i-- > 0;) {
      if ((*g_cached)[i].size != size) continue;
      void* p = (*g_cached)[i].ptr;
      g_cached->erase(g_cached->begin() + static_cast<std::ptrdiff_t>(i));
      g_cached_bytes -= size;
      ++g_reused;
      return p;
    }
  }
  return g_next.alloc(g_next.ctx, size);
}

void CachedFree(void*, void* ptr, size_t size) {
  if (ptr == nullptr) return;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    if (g_enabled && g_cached_bytes + size <= kArenaCacheBytes) {
      g_cached->push_back({ptr, size});
      g_cached_bytes += size;
      return;
    }
  }
  g_next.free(g_next.ctx, ptr, size);
}

}  // namespace

void InstallArenaCache() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_installed || !g_enabled) return;
  g_cached = new std::vector<Arena>();  // never freed: the hook outlives every destructor
  PyObject_GetArenaAllocator(&g_next);
  PyObjectArenaAllocator cache{nullptr, CachedAlloc, CachedFree};
  PyObject_SetArenaAllocator(&cache);
  g_installed = true;
}

void SetArenaCacheEnabled(bool enabled) {
  std::vector<Arena> release;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    g_enabled = enabled;
    if (!enabled && g_installed) {
      release.swap(*g_cached);
      g_cached_bytes = 0;
    }
  }
  // Installed stays installed (pymalloc holds arenas it got through the hook); it now passes through.
  for (const Arena& a : release) g_next.free(g_next.ctx, a.ptr, a.size);
}

ArenaCacheStats GetArenaCacheStats() {
  std::lock_guard<std::mutex> lock(g_mu);
  ArenaCacheStats s;
  s.installed = g_installed;
  s.cached_bytes = g_cached_bytes;
  s.reused = g_reused;
  return s;
}

}  // namespace saverkit
