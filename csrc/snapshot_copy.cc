#include "snapshot_copy.h"

#include <algorithm>
#include <cstring>
#include <thread>

namespace saverkit {

namespace {

// Copies bytes [begin, end) of the runs' concatenation.
void CopyRange(const std::vector<CopyRun>& runs, size_t begin, size_t end) {
  size_t pos = 0;  // start of the current run in the concatenation
  for (const CopyRun& r : runs) {
    const size_t run_end = pos + r.n;
    if (run_end > begin && pos < end) {
      const size_t from = std::max(begin, pos) - pos;
      const size_t to = std::min(end, run_end) - pos;
      std::memcpy(r.dst + from, r.src + from, to - from);
    }
    pos = run_end;
    if (pos >= end) break;
  }
}

}  // namespace

void CopyRuns(const std::vector<CopyRun>& runs, int threads) {
  size_t total = 0;
  for (const CopyRun& r : runs) total += r.n;
  if (threads <= 1 || total < kParallelCopyMinBytes) {
    for (const CopyRun& r : runs) {
      if (r.n) std::memcpy(r.dst, r.src, r.n);
    }
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
