// Writes one tensor bundle (prefix.index + prefix.data-SSSSS-of-NNNNN) the
// way TensorFlow's SaveV2 does. Tensors are referenced, not copied. A string
// tensor's writes start on the shared I/O pool as soon as it is added (its
// place in the data file is known then), so a caller still gathering the
// next tensors' elements overlaps the writes; numeric payloads are written by
// Finish() with large positional writes, checksumming chunks in parallel.
// Finish() then writes the index; all files are written under temporary
// names (temp_names.h) that CommitBundle (commit.h) renames into place.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "bundle_proto.h"
#include "env.h"
#include "snapshot_copy.h"
#include "status.h"
#include "thread_pool.h"

namespace saverkit {

std::string DataFilename(const std::string& prefix, int shard_id, int num_shards);
std::string MetaFilename(const std::string& prefix);

struct StringRef {
  const char* data;
  size_t size;
};

// A string tensor's elements, in the caller's memory.
struct StringSpan {
  const StringRef* refs = nullptr;
  size_t count = 0;
  const StringRef* begin() const { return refs; }
  const StringRef* end() const { return refs + count; }
  const StringRef& operator[](size_t i) const { return refs[i]; }
  size_t size() const { return count; }
  bool empty() const { return count == 0; }
};

struct BundleWriterOptions {
  int num_shards = 1;
  int shard_id = 0;
  bool durable = false;  // fdatasync files and fsync the directory
  // Remote checkpoints: the data file and the index are produced in memory
  // (numeric payloads as pointers to the caller's tensors) and nothing is
  // written, renamed or committed here: saverkit.storage uploads them.
  std::shared_ptr<MemoryFile> data_memory, index_memory;
  // A pipelined asynchronous save: numeric payloads may point into a staging
  // buffer still being filled; each byte range is read only once the copy has
  // passed it (the writer starts while the snapshot is taken).
  std::shared_ptr<const CopyProgress> staged;
};

class BundleWriter {
 public:
  BundleWriter(const std::string& prefix, const BundleWriterOptions& options);
  ~BundleWriter();  // waits for started writes; removes temporary files unless Finish() succeeded
  BundleWriter(const BundleWriter&) = delete;
  BundleWriter& operator=(const BundleWriter&) = delete;

  // Room for n tensors up front: a growing list would briefly hold two
  // copies of itself in a 10,000-tensor save.
  void Reserve(size_t n) { payloads_.reserve(n); }

  // `data`, `elems` and the element bytes must stay valid and unchanged until
  // Finish() returns or, when it is not called, the writer is destroyed.
  Status AddNumeric(const std::string& key, int dtype, const std::vector<int64_t>& shape, const char* data,
                    uint64_t nbytes);
  Status AddStrings(const std::string& key, const std::vector<int64_t>& shape, StringSpan elems);

  // A slice of a partitioned tensor: records it in the full tensor's entry and
  // stores the data under the slice key. A slice covering the whole tensor is
  // stored as a plain entry. `data`/`elems` hold the slice's values.
  Status AddSliceNumeric(const std::string& name, const std::vector<int64_t>& full_shape,
                         const TensorSliceProto& slice, int dtype, const std::vector<int64_t>& slice_shape,
                         const char* data, uint64_t nbytes);
  Status AddSliceStrings(const std::string& name, const std::vector<int64_t>& full_shape,
                         const TensorSliceProto& slice, const std::vector<int64_t>& slice_shape,
                         StringSpan elems);

  Status Finish();

 private:
  // A string tensor's writes: runs of elements, one pool task each, each
  // gathered into large writes at its place in the file and checksummed;
  // the run starting at element 0 also writes the header (varint lengths +
  // masked length CRC). Heap-allocated: tasks keep pointing at it while
  // payloads_ grows.
  struct StringJob {
    struct Run {
      uint64_t begin, end;  // elements
      uint64_t offset;      // file offset of element `begin`'s bytes
      uint64_t bytes;
      uint32_t crc = 0;     // unmasked, of the run's bytes
    };
    StringSpan elems;
    uint64_t offset = 0;        // of the payload
    uint64_t header_size = 0;
    uint32_t header_crc = 0;    // unmasked CRC of the payload's bytes before element 0
    std::vector<Run> runs;      // fixed before the first task starts
  };

  // One per tensor (10,000 in a big save), so it points at its entry rather
  // than holding a second copy of the key.
  struct Payload {
    BundleEntry* entry = nullptr;  // in entries_ (map nodes do not move)
    const char* data = nullptr;    // numeric: caller memory
    uint64_t size = 0;             // bytes in the data file
    uint64_t offset = 0;
    std::unique_ptr<StringJob> strings;  // string tensors: being written since AddStrings
    uint32_t crc = 0;              // unmasked
    bool is_string = false;
    bool crc_known = false;
  };

  Status CheckKey(const std::string& key);
  Status RecordSlice(const std::string& name, const std::vector<int64_t>& full_shape, const TensorSliceProto& slice,
                     int dtype, const std::vector<int64_t>& slice_shape, std::string* slice_key);
  Status OpenData();  // creates the temporary data file, once
  void StartStrings(const std::string& key, StringJob* job);
  Status WritePayloads(WritableFile* file);
  // A numeric payload's byte range [begin, begin + len), checksummed by
  // whoever claims it first: the writer or a helper task.
  struct NumericChunk {
    size_t payload;
    uint64_t begin, len;
    uint32_t crc;
  };
  // Every numeric payload, in pwritev batches; checksums the chunks no
  // helper has claimed (claimed[k] is chunk k's flag).
  Status WriteNumeric(const WritableFile* file, std::vector<NumericChunk>* chunks, std::atomic<bool>* claimed) const;
  // Waits until a payload's bytes [data, data + n) may be read (see
  // BundleWriterOptions::staged).
  Status Staged(const char* data, uint64_t n) const {
    return options_.staged ? options_.staged->WaitReady(data, static_cast<size_t>(n)) : Status::OK();
  }
  Status WriteIndex(const std::string& path);
  bool in_memory() const { return options_.data_memory != nullptr; }
  void RemoveTemps();

  std::string prefix_;
  BundleWriterOptions options_;
  Status status_;  // first error from the constructor
  std::map<std::string, BundleEntry> entries_;
  std::vector<Payload> payloads_;  // in add order
  uint64_t data_size_ = 0;
  std::string data_path_, data_tmp_, index_path_, index_tmp_;
  bool finished_ = false;
  bool data_open_ = false;
  WritableFile data_;            // open from the first string tensor or Finish() on
  std::mutex string_write_mu_;   // string tasks' pwrites (see GatherWriter)
  TaskGroup string_tasks_;       // last member, destroyed first: its tasks use the ones above
};

// Builds the part of a DT_STRING payload (spec 5.3) before the element bytes:
// varint lengths and the masked length checksum. Returns the unmasked CRC of
// the entry so far (which hashes lengths as fixed-width integers, not as the
// stored varints).
uint32_t BuildStringHeader(StringSpan elems, std::string* header);

}  // namespace saverkit
