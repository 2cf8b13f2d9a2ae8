#include "page_buffer.h"

#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

#include <mutex>
#include <vector>

#include "coding.h"
#include "env.h"
#include "thread_pool.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

namespace saverkit {

namespace {

// The helper faults pages in this many bytes per call, keeping this far
// behind the reader's position: they meet without faulting one page twice.
const uint64_t kPrefaultPiece = 256ull << 10;

std::atomic<bool> g_populate_disabled{false};

struct Mapping {
  char* base;
  uint64_t size;
};

// Freed mappings kept for reuse. Leaked: buffers may be freed at exit.
std::mutex g_cache_mu;
std::vector<Mapping>* g_cache = new std::vector<Mapping>();
uint64_t g_cached_bytes = 0;
uint64_t g_reused = 0;

// The prefaulters' own thread, not the I/O pool, so that a lone tensor's
// read does the same work whatever the pool size (issue 23: the default must
// never be slower than one I/O thread). On the pool, each read's helper went
// to whichever worker had slept longest (the futex wakes in order): with 1,
// 2, 4 workers the get_tensor loop took 0.174, 0.177, 0.184 s in one run;
// with this thread 0.169, 0.177, 0.171 s, differences within the ±3% of
// runs of one setting. Prefaults of concurrent reads queue behind each
// other; no reader ever waits for its helper. Leaked, like the I/O pool.
ThreadPool* PrefaultThread() {
  static ThreadPool* thread = new ThreadPool(1);
  return thread;
}

uint64_t PageSize() {
  static const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  return page;
}

}  // namespace

Status PageBuffer::Allocate(uint64_t bytes, uint64_t phase, std::shared_ptr<PageBuffer>* out) {
  const uint64_t page = PageSize();
  phase %= page;
  uint64_t mapped;
  // A page more than `bytes` needs: any phase fits, so a cached mapping fits any tensor of its size.
  if (bytes == 0 || !CheckedAdd(bytes, 2 * page - 1, &mapped)) {
    return InvalidArgument(StrCat("Cannot map a buffer of ", bytes, " bytes"));
  }
  mapped -= mapped % page;
  {
    // The smallest cached mapping that holds it, if not more than twice its size (a small tensor does not
    // take the buffer a large one would reuse).
    std::lock_guard<std::mutex> lock(g_cache_mu);
    size_t best = g_cache->size();
    for (size_t i = 0; i < g_cache->size(); ++i) {
      const uint64_t have = (*g_cache)[i].size;
      if (have >= mapped && have / 2 <= mapped && (best == g_cache->size() || have < (*g_cache)[best].size)) best = i;
    }
    if (best < g_cache->size()) {
      const Mapping m = (*g_cache)[best];
      g_cache->erase(g_cache->begin() + static_cast<std::ptrdiff_t>(best));
      g_cached_bytes -= m.size;
      ++g_reused;
      out->reset(new PageBuffer(m.base, m.size, m.base + phase, bytes, false));
      return Status::OK();
    }
  }
  void* base = ::mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) {
    return IOError(StrCat("Could not map ", bytes, " bytes of memory for a tensor"), errno);
  }
  char* b = static_cast<char*>(base);
  out->reset(new PageBuffer(b, mapped, b + phase, bytes, true));
  return Status::OK();
}

PageBuffer::~PageBuffer() {
  {
    std::lock_guard<std::mutex> lock(g_cache_mu);
    if (g_cached_bytes + mapped_ <= kPageCacheBytes) {
      g_cache->push_back({base_, mapped_});
      g_cached_bytes += mapped_;
      return;
    }
  }
  ::munmap(base_, mapped_);
}

std::pair<uint64_t, uint64_t> PageCacheStats() {
  std::lock_guard<std::mutex> lock(g_cache_mu);
  return {g_cached_bytes, g_reused};
}

void ClearPageCache() {
  std::vector<Mapping> release;
  {
    std::lock_guard<std::mutex> lock(g_cache_mu);
    release.swap(*g_cache);
    g_cached_bytes = 0;
  }
  for (const Mapping& m : release) ::munmap(m.base, m.size);
}

bool Populate(char* data, uint64_t bytes) {
  if (g_populate_disabled.load(std::memory_order_relaxed)) return false;
  const uintptr_t page = static_cast<uintptr_t>(PageSize());
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + page - 1) & ~(page - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + bytes) & ~(page - 1);
  if (end <= begin) return true;
  return ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_POPULATE_WRITE) == 0;
}

void SetPopulateDisabledForTesting(bool disabled) { g_populate_disabled.store(disabled); }

Prefaulter::Prefaulter(std::shared_ptr<PageBuffer> buffer) : state_(std::make_shared<State>()) {
  state_->size = buffer->size();
  state_->buffer = std::move(buffer);
  std::shared_ptr<State> state = state_;
  PrefaultThread()->Schedule([state] { Run(state); });
}

Prefaulter::~Prefaulter() {
  int waiting = kWaiting;
  if (state_->phase.compare_exchange_strong(waiting, kCancelled)) {
    state_->buffer.reset();
  } else {
    Advance(state_->size);  // the buffer stays the running helper's to release
  }
}

void Prefaulter::Run(const std::shared_ptr<State>& state) {
  int waiting = kWaiting;
  if (!state->phase.compare_exchange_strong(waiting, kRunning)) return;  // the read finished first
  RunPieces(*state);
  state->buffer.reset();
}

void Prefaulter::RunPieces(State& state) {
  const uint64_t size = state.size;
  char* data = state.buffer->data();
  // Pieces end on page boundaries counted from the buffer's first whole page.
  const uint64_t page = PageSize();
  const uint64_t lead = (page - reinterpret_cast<uintptr_t>(data) % page) % page;
  uint64_t low = size;  // everything from here on is faulted in
  while (true) {
    uint64_t next = low > kPrefaultPiece ? low - kPrefaultPiece : 0;
    if (next > lead) next = lead + (next - lead) / page * page;
    const uint64_t reader = state.reader_done.load(std::memory_order_relaxed);
    if (next <= lead || next < reader + kPrefaultPiece) return;
    if (!Populate(data + next, low - next)) return;  // refused: the reader faults its pages itself
    low = next;
    state.helper_low.store(low, std::memory_order_relaxed);
  }
}

}  // namespace saverkit
