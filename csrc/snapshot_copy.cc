#include "snapshot_copy.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <thread>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace saverkit {

namespace {

// Copies at or above this size bypass the cache (non-temporal stores): the
// staging buffer is written once and read back later by the writer thread,
// and glibc's memcpy switches to such stores only for single copies of
// several MiB, so a snapshot of many 4 MiB tensors ran at half memcpy speed.
const size_t kStreamMinBytes = 4u << 10;

void Copy(char* dst, const char* src, size_t n) {
#if defined(__SSE2__)
  if (n >= kStreamMinBytes) {
    // Head up to a 16-byte boundary of dst, then 64 bytes per step, then the tail.
    size_t head = (16 - (reinterpret_cast<uintptr_t>(dst) & 15)) & 15;
    std::memcpy(dst, src, head);
    dst += head;
    src += head;
    n -= head;
    size_t blocks = n / 64;
    for (size_t i = 0; i < blocks; ++i, dst += 64, src += 64) {
      __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src));
      __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 16));
      __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 32));
      __m128i d = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 48));
      _mm_stream_si128(reinterpret_cast<__m128i*>(dst), a);
      _mm_stream_si128(reinterpret_cast<__m128i*>(dst + 16), b);
      _mm_stream_si128(reinterpret_cast<__m128i*>(dst + 32), c);
      _mm_stream_si128(reinterpret_cast<__m128i*>(dst + 48), d);
    }
    std::memcpy(dst, src, n % 64);
    return;  // the caller fences (Fence) once its copies are done
  }
#endif
  if (n) std::memcpy(dst, src, n);
}

// Makes this thread's streamed stores visible before its copies count as done.
void Fence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

// Copies bytes [begin, end) of the runs' concatenation.
void CopyRange(const std::vector<CopyRun>& runs, size_t begin, size_t end) {
  size_t pos = 0;  // start of the current run in the concatenation
  for (const CopyRun& r : runs) {
    const size_t run_end = pos + r.n;
    if (run_end > begin && pos < end) {
      const size_t from = std::max(begin, pos) - pos;
      const size_t to = std::min(end, run_end) - pos;
      Copy(r.dst + from, r.src + from, to - from);
    }
    pos = run_end;
    if (pos >= end) break;
  }
  Fence();
}

}  // namespace

void CopyProgress::Advance(const char* upto) {
  if (upto <= ready_.load(std::memory_order_relaxed)) return;
  ready_.store(upto, std::memory_order_release);
  std::lock_guard<std::mutex> lock(mu_);  // a waiter between its check and its wait sees the store
  if (waiters_ > 0) cv_.notify_all();
}

void CopyProgress::Abort() {
  std::lock_guard<std::mutex> lock(mu_);
  aborted_ = true;
  cv_.notify_all();
}

Status CopyProgress::WaitReady(const char* p, size_t n) const {
  if (n == 0 || p + n <= begin_ || p >= end_) return Status::OK();
  const char* need = std::min(p + n, end_);
  if (ready_.load(std::memory_order_acquire) >= need) return Status::OK();
  std::unique_lock<std::mutex> lock(mu_);
  ++waiters_;
  cv_.wait(lock, [&] { return ready_.load(std::memory_order_acquire) >= need || aborted_; });
  --waiters_;
  if (ready_.load(std::memory_order_acquire) >= need) return Status::OK();
  return FailedPrecondition("the snapshot of an asynchronous save was abandoned before it was complete");
}

void CopyRunsInOrder(const std::vector<CopyRun>& runs, CopyProgress* progress) {
  size_t unreported = 0;
  const char* copied = nullptr;  // end of the last copy
  for (const CopyRun& r : runs) {
    for (size_t done = 0; done < r.n;) {
      const size_t n = std::min(kProgressBytes - unreported, r.n - done);
      Copy(r.dst + done, r.src + done, n);
      done += n;
      unreported += n;
      copied = r.dst + done;
      if (unreported == kProgressBytes) {
        Fence();  // the streamed stores are visible before the writer is told
        progress->Advance(copied);
        unreported = 0;
      }
    }
  }
  Fence();
  if (copied != nullptr) progress->Advance(copied);
}

void CopyRuns(const std::vector<CopyRun>& runs, int threads) {
  size_t total = 0;
  for (const CopyRun& r : runs) total += r.n;
  if (threads <= 1 || total < kParallelCopyMinBytes) {
    for (const CopyRun& r : runs) Copy(r.dst, r.src, r.n);
    Fence();
    return;
  }
  const size_t n = static_cast<size_t>(threads);
  const size_t step = (total + n - 1) / n;
  std::vector<std::thread> workers;
  workers.reserve(n - 1);
  for (size_t t = 1; t < n; ++t) {
    const size_t begin = std::min(total, t * step), end = std::min(total, (t + 1) * step);
    if (begin < end) workers.emplace_back([&runs, begin, end] { CopyRange(runs, begin, end); });
  }
  CopyRange(runs, 0, std::min(total, step));
  for (std::thread& w : workers) w.join();
}

}  // namespace saverkit
