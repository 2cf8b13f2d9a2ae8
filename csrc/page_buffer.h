// Memory for a tensor read into a new array, mapped by the reader itself.
//
// A numpy array of 1 MiB or more starts 16 bytes into a page, and a tensor
// in a data file usually starts on one (TF's and saverkit's writers) or at
// any other offset: the kernel's copy out of the page cache then runs at the
// slow, aliasing rate (env.cc), which a bounce buffer -- a second copy of
// every byte -- works around. A PageBuffer instead starts at the same offset
// within a page as the tensor in its file (`phase`), so the copy is page to
// page, once. It is an anonymous mapping of its own: its pages are new (the
// kernel zeroes them), and another thread may fault them in while the read
// runs (Prefault) without ever touching memory that was handed back, since
// each holder keeps the mapping alive.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <utility>

#include "status.h"

namespace saverkit {

//
// Freed buffers are kept mapped, up to kPageCacheBytes, and handed out again
// (their pages already faulted in): a loop that reads a tensor, uses it and
// drops it, as numpy's arrays do through malloc's heap, does not fault in
// new memory each time.
class PageBuffer {
 public:
  // `bytes` (> 0) starting at `phase` modulo the page size.
  static Status Allocate(uint64_t bytes, uint64_t phase, std::shared_ptr<PageBuffer>* out);
  ~PageBuffer();  // to the cache, or unmapped
  PageBuffer(const PageBuffer&) = delete;
  PageBuffer& operator=(const PageBuffer&) = delete;

  char* data() const { return data_; }
  uint64_t size() const { return size_; }
  // A new mapping, none of its pages touched yet (else one from the cache).
  bool fresh() const { return fresh_; }

 private:
  PageBuffer(char* base, uint64_t mapped, char* data, uint64_t size, bool fresh)
      : base_(base), mapped_(mapped), data_(data), size_(size), fresh_(fresh) {}
  char* base_;
  uint64_t mapped_;
  char* data_;
  uint64_t size_;
  bool fresh_;
};

const uint64_t kPageCacheBytes = 64ull << 20;

// Tests: (bytes kept mapped for reuse, allocations served from them).
std::pair<uint64_t, uint64_t> PageCacheStats();
// Tests: unmaps what the cache holds.
void ClearPageCache();

// Faults in the whole pages of [data, data + bytes) of new memory at once
// (MADV_POPULATE_WRITE, Linux 5.14+): cheaper than a fault per 4 KiB during a
// read. Advice only: false where the kernel refuses it, and the read then
// faults the pages in itself.
bool Populate(char* data, uint64_t bytes);

// Tests: Populate() fails as on a kernel without MADV_POPULATE_WRITE.
void SetPopulateDisabledForTesting(bool disabled);

// One reader thread fills `buffer` front to back; a helper faults its pages
// in back to front until the two meet, so the reader mostly copies into
// pages that are already there. The reader never waits for the helper (a
// helper that is late, or never scheduled on a busy machine, only leaves the
// reader more faults of its own), and the helper holds the buffer, so it may
// still be running after the read returned.
class Prefaulter {
 public:
  // Schedules the helper on the prefaulters' own thread (page_buffer.cc).
  explicit Prefaulter(std::shared_ptr<PageBuffer> buffer);
  // The reader has filled the first `bytes` of the buffer.
  void Advance(uint64_t bytes) { state_->reader_done.store(bytes, std::memory_order_relaxed); }
  // Whether the helper has faulted in every page from byte `begin` on.
  bool Faulted(uint64_t begin) const { return begin >= state_->helper_low.load(std::memory_order_relaxed); }
  // The read is over: a helper not yet started never will, and lets go of
  // the buffer now (one that is running stops at its next piece).
  ~Prefaulter();

 private:
  enum Phase { kWaiting, kRunning, kCancelled };
  struct State {
    std::shared_ptr<PageBuffer> buffer;  // released by whichever of reader and helper is last to need it
    uint64_t size = 0;
    std::atomic<uint64_t> reader_done{0};
    std::atomic<uint64_t> helper_low{~0ull};  // the helper has faulted in the pages from here on
    std::atomic<int> phase{kWaiting};
  };
  static void Run(const std::shared_ptr<State>& state);
  static void RunPieces(State& state);
  std::shared_ptr<State> state_;
};

}  // namespace saverkit
