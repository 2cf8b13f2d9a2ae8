// Copies many buffers into one staging buffer at memcpy speed: the snapshot
// step of an asynchronous save (saverkit.train.async_save). Engine code, no
// Python: the binding pins the buffers and releases the GIL around this.
#pragma once

#include <cstddef>
#include <vector>

namespace saverkit {

struct CopyRun {
  const char* src;
  char* dst;
  size_t n;
};

// Copies every run; with threads > 1 and enough bytes, the concatenated runs
// are split into `threads` equal byte ranges copied in parallel (a run may be
// split between two threads). Runs must not overlap.
void CopyRuns(const std::vector<CopyRun>& runs, int threads);

// Bytes below which CopyRuns stays on the calling thread (a thread start
// costs more than copying this much).
const size_t kParallelCopyMinBytes = 4u << 20;

}  // namespace saverkit
