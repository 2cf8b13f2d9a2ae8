// Writes one tensor bundle (prefix.index + prefix.data-SSSSS-of-NNNNN) the
// way TensorFlow's SaveV2 does. Add*() only records what to write (numeric
// and string tensors are referenced, not copied); Finish() writes all
// payloads with large positional writes on the shared I/O pool, checksumming
// chunks in parallel, then writes the index, all under temporary names
// renamed into place at the end.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "bundle_proto.h"
#include "env.h"
#include "status.h"

namespace saverkit {

std::string DataFilename(const std::string& prefix, int shard_id, int num_shards);
std::string MetaFilename(const std::string& prefix);

struct StringRef {
  const char* data;
  size_t size;
};

struct BundleWriterOptions {
  int num_shards = 1;
  int shard_id = 0;
  bool durable = false;  // fdatasync files and fsync the directory
};

class BundleWriter {
 public:
  BundleWriter(const std::string& prefix, const BundleWriterOptions& options);
  ~BundleWriter();  // removes temporary files unless Finish() succeeded
  BundleWriter(const BundleWriter&) = delete;
  BundleWriter& operator=(const BundleWriter&) = delete;

  // `data` / the element bytes must stay valid and unchanged until Finish() returns.
  Status AddNumeric(const std::string& key, int dtype, const std::vector<int64_t>& shape, const char* data,
                    uint64_t nbytes);
  Status AddStrings(const std::string& key, const std::vector<int64_t>& shape, std::vector<StringRef> elems);

  // A slice of a partitioned tensor: records it in the full tensor's entry and
  // stores the data under the slice key. A slice covering the whole tensor is
  // stored as a plain entry. `data`/`elems` hold the slice's values.
  Status AddSliceNumeric(const std::string& name, const std::vector<int64_t>& full_shape,
                         const TensorSliceProto& slice, int dtype, const std::vector<int64_t>& slice_shape,
                         const char* data, uint64_t nbytes);
  Status AddSliceStrings(const std::string& name, const std::vector<int64_t>& full_shape,
                         const TensorSliceProto& slice, const std::vector<int64_t>& slice_shape,
                         std::vector<StringRef> elems);

  Status Finish();

 private:
  struct Payload {
    std::string key;
    const char* data = nullptr;  // numeric: caller memory
    uint64_t size = 0;           // bytes in the data file
    uint64_t offset = 0;
    bool is_string = false;
    // String tensors are written from the caller's element buffers: the
    // header (varint lengths + masked length CRC) is built in Finish(), and
    // the elements' bytes are gathered from `elems` into large writes.
    std::vector<StringRef> elems;
    uint64_t header_size = 0;
    uint32_t header_crc = 0;  // unmasked CRC of the entry's bytes before element 0
    bool crc_known = false;
    uint32_t crc = 0;         // unmasked
  };

  Status CheckKey(const std::string& key);
  Status RecordSlice(const std::string& name, const std::vector<int64_t>& full_shape, const TensorSliceProto& slice,
                     int dtype, const std::vector<int64_t>& slice_shape, std::string* slice_key);
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
  Status WriteIndex(const std::string& path);
  void RemoveTemps();

  std::string prefix_;
  BundleWriterOptions options_;
  Status status_;  // first error from the constructor
  std::map<std::string, BundleEntry> entries_;
  std::vector<Payload> payloads_;  // in add order
  uint64_t data_size_ = 0;
  std::string data_path_, data_tmp_, index_path_, index_tmp_;
  bool finished_ = false;
};

// Builds the part of a DT_STRING payload (spec 5.3) before the element bytes:
// varint lengths and the masked length checksum. Returns the unmasked CRC of
// the entry so far (which hashes lengths as fixed-width integers, not as the
// stored varints).
uint32_t BuildStringHeader(const std::vector<StringRef>& elems, std::string* header);

}  // namespace saverkit
