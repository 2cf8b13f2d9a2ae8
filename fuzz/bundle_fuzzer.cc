// libFuzzer target: a whole bundle. The input is a sequence of chunks
// (u32le length + bytes, see fuzz_files.h): the first is `f.index`, the
// following ones are the data files f.data-0000i-of-NNNNN, where NNNNN is the
// shard count the index declares. Every tensor is then read through
// BundleReader::Prepare/Execute: whole, and (rank >= 1) a row slice. The
// index's block CRCs are recomputed first (fuzz::FixBlockCrcs).
//
// Invariant checked besides memory safety: a plan that Prepare accepted never
// asks for more bytes than its pieces could hold in the data files, i.e. no
// allocation is sized by an unchecked field.
#include <stddef.h>
#include <stdint.h>

#include <cstdio>
#include <vector>

#include "bundle_reader.h"
#include "bundle_writer.h"
#include "dtype.h"
#include "env.h"
#include "fuzz_files.h"
#include "status.h"
#include "thread_pool.h"

using namespace saverkit;

static void ReadAll(BundleReader& reader, uint64_t data_bytes) {
  std::vector<ReadRequest> requests;
  std::vector<std::pair<std::string, BundleEntry>> tensors;
  (void)reader.ListTensors(&tensors);  // up to the first bad block or entry
  for (const auto& kv : tensors) {
    ReadRequest whole;
    whole.key = kv.first;
    requests.push_back(whole);
    const std::vector<int64_t>& shape = kv.second.shape;
    if (!shape.empty() && shape[0] >= 2 && shape.size() < 8) {
      ReadRequest part = whole;
      part.has_slice = true;
      part.spec_shape = shape;
      part.slice.extents.resize(shape.size());
      part.slice.extents[0].start = 1;
      part.slice.extents[0].has_length = true;
      part.slice.extents[0].length = shape[0] - 1;
      requests.push_back(part);
    }
  }
  for (const ReadRequest& r : requests) {
    ReadPlan plan;
    if (!reader.Prepare(r, &plan).ok()) continue;
    const size_t elem = DataTypeSize(plan.dtype);
    uint64_t bytes = plan.num_elements;
    bool overflow = plan.dtype != DT_STRING && __builtin_mul_overflow(plan.num_elements, elem, &bytes);
    const size_t pieces = plan.region ? plan.region->pieces.size() : 1;
    uint64_t bound = (pieces + 1) * (data_bytes + 1);
    if (overflow || bytes > bound) {
      fprintf(stderr, "plan for %zu-byte key needs %llu bytes, more than its pieces can hold (%llu)\n",
              r.key.size(), (unsigned long long)bytes, (unsigned long long)bound);
      abort();
    }
    const bool is_string = plan.dtype == DT_STRING;
    std::vector<char> buf(is_string ? 0 : static_cast<size_t>(bytes));
    std::vector<ReadPlan> plans;
    plans.push_back(std::move(plan));
    std::vector<char*> dst{buf.data()};
    std::vector<StringResult> strings;
    if (!reader.Execute(plans, dst, &strings).ok() || !is_string || !strings[0].whole) continue;
    // Second step of a string read: one buffer per element, as the bindings allocate them.
    std::vector<std::string> elements(strings[0].lengths.size());
    std::vector<std::vector<char*>> element_dst(1);
    for (size_t j = 0; j < elements.size(); ++j) {
      elements[j].resize(static_cast<size_t>(strings[0].lengths[j]));
      element_dst[0].push_back(&elements[j][0]);
    }
    (void)reader.ReadStringBytes(plans, strings, element_dst);
  }
}

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  SetIoThreads(2);  // exercise the pool, but keep runs reproducible enough
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string dir = fuzz::ScratchDir();
  const std::string prefix = dir + "/f";
  size_t pos = 0;
  const uint8_t* chunk = nullptr;
  size_t n = 0;
  std::vector<std::pair<const uint8_t*, size_t>> chunks;
  while (chunks.size() < 9 && fuzz::NextChunk(data, size, &pos, &chunk, &n)) chunks.push_back({chunk, n});
  if (chunks.empty()) return 0;
  // Start from a clean directory: data files of the previous input must not leak in.
  static std::vector<std::string> written;
  for (const std::string& p : written) unlink(p.c_str());
  written.clear();
  // Block CRCs are made valid (table_fuzzer covers rejecting bad ones): mutations of the index then
  // reach the header/entry decoding and the reads instead of stopping at a checksum.
  std::string index(reinterpret_cast<const char*>(chunks[0].first), chunks[0].second);
  fuzz::FixBlockCrcs(&index);
  fuzz::WriteFile(prefix + ".index", reinterpret_cast<const uint8_t*>(index.data()), index.size());
  BundleReader probe;
  if (!probe.Open(prefix).ok()) return 0;
  const int num_shards = probe.header().num_shards;
  uint64_t data_bytes = 0;
  for (size_t i = 1; i < chunks.size() && static_cast<int>(i) <= num_shards && num_shards <= 8; ++i) {
    written.push_back(DataFilename(prefix, static_cast<int>(i - 1), num_shards));
    fuzz::WriteFile(written.back(), chunks[i].first, chunks[i].second);
    data_bytes += chunks[i].second;
  }
  ReadAll(probe, data_bytes);
  return 0;
}
