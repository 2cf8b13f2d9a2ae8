// The second half of restoring a call's string tensors, after
// BundleReader::Execute() has read and checked their element lengths.
//
// Each element needs a buffer of its own that the caller provides (the
// binding makes Python bytes objects, which only it can allocate, under the
// GIL). Tensor by tensor, the caller's StringSink makes the buffers and the
// tensor's byte reads start on the I/O pool at once, so making the next
// tensor's buffers overlaps this one's reads; Finish() waits and checks every
// CRC. Elements of slices assembled from several stored pieces were already
// read by Execute() and are handed over as they are.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "bundle_reader.h"
#include "spare.h"
#include "status.h"

namespace saverkit {

// Where a restore's string elements go, in plan order. Called on the
// caller's thread only (from StringRestore::Start).
class StringSink {
 public:
  virtual ~StringSink() = default;
  // Makes n element buffers, lengths[j] bytes each, and sets dst[j] to where
  // element j's bytes are to be written (unused when lengths[j] == 0). The
  // buffers must stay put until StringRestore::Finish() returns.
  virtual Status Allocate(const uint64_t* lengths, size_t n, char** dst) = 0;
  // Takes n elements that are already read.
  virtual Status Append(const std::string* elements, size_t n) = 0;
};

class StringRestore {
 public:
  // plans and strings: one each per tensor of one Execute() call; both must
  // outlive this object, and so must the sink's buffers.
  StringRestore(BundleReader* reader, const std::vector<ReadPlan>& plans, std::vector<StringResult>* strings);
  StringRestore(const StringRestore&) = delete;
  StringRestore& operator=(const StringRestore&) = delete;
  // The destructor waits for reads still running (bytes_ is destroyed first).

  // Checks every string result's element count against its plan and sizes
  // the table of element destinations before any read starts (so the reads'
  // destinations never move). *total: the elements of every string tensor.
  Status Layout(size_t* total);
  // Gives every string tensor's elements to sink, in plan order, starting
  // each whole tensor's reads as soon as its buffers exist; frees assembled
  // elements once handed over. After Layout(); stops at the sink's first
  // error (reads already started are waited for by Finish() or the
  // destructor).
  Status Start(StringSink* sink);
  // Waits for the reads and checks their CRCs: the sink's buffers hold the
  // tensors' values only when this returns OK. Blocks: callers release
  // their locks (the GIL) around it.
  Status Finish();

 private:
  const std::vector<ReadPlan>& plans_;
  std::vector<StringResult>& strings_;
  std::vector<size_t> first_;   // plan i's first element in dst_
  SpareVector<char*> dst_;      // every whole tensor's element destinations, kept per thread (spare.h)
  StringByteReader bytes_;      // declared after what its tasks write into: destroyed (waits) first
};

}  // namespace saverkit
