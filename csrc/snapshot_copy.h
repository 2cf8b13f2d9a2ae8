// Copies many buffers into one staging buffer at memcpy speed: the snapshot
// step of an asynchronous save (saverkit.train.async_save). Engine code, no
// Python: the binding pins the buffers and releases the GIL around this.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <vector>

#include "status.h"

namespace saverkit {

// How far a staging copy has got: shared by the thread copying into a
// staging buffer and a writer of the staged bytes that starts before the
// copy ends (a pipelined asynchronous save). The copy fills the staged range
// [begin, end) in address order; bytes below the mark are complete.
class CopyProgress {
 public:
  CopyProgress(const char* begin, const char* end) : begin_(begin), end_(end), ready_(begin) {}
  CopyProgress(const CopyProgress&) = delete;
  CopyProgress& operator=(const CopyProgress&) = delete;

  // The copy completed every byte below `upto` (its stores made visible).
  void Advance(const char* upto);
  // The copy will not happen (or not complete): waiters fail from now on.
  void Abort();
  // Waits until bytes [p, p + n) are complete. Bytes outside the staged
  // range are complete already. FailedPrecondition if the copy was abandoned.
  Status WaitReady(const char* p, size_t n) const;
  // Waits until the whole staged range is complete.
  Status WaitComplete() const { return WaitReady(begin_, static_cast<size_t>(end_ - begin_)); }

 private:
  const char* const begin_;
  const char* const end_;
  std::atomic<const char*> ready_;  // waiters read it without the lock once the copy is ahead
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  mutable int waiters_ = 0;  // guarded by mu_: Advance wakes nobody while none waits
  bool aborted_ = false;     // guarded by mu_
};

struct CopyRun {
  const char* src;
  char* dst;
  size_t n;
};

// Copies every run; with threads > 1 and enough bytes, the concatenated runs
// are split into `threads` equal byte ranges copied in parallel (a run may be
// split between two threads). Runs must not overlap.
void CopyRuns(const std::vector<CopyRun>& runs, int threads);

// Copies the runs in order on the calling thread, reporting to `progress`
// every kProgressBytes and at the end (runs must lie in the staged range in
// address order; reports are per byte count, not per run: a snapshot of
// 10,000 small tensors makes hundreds of reports, not 10,000 wake-ups).
void CopyRunsInOrder(const std::vector<CopyRun>& runs, CopyProgress* progress);

// How often CopyRunsInOrder reports: a writer waiting for the first bytes
// starts after this much, and a report costs a lock and a wake-up.
const size_t kProgressBytes = 1u << 20;

// Bytes below which CopyRuns stays on the calling thread (a thread start
// costs more than copying this much).
const size_t kParallelCopyMinBytes = 4u << 20;

}  // namespace saverkit
