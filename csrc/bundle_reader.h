// Reads a tensor bundle. Open() reads the index's footer, its index block and
// the header entry (the version rules); entries are looked up when a request
// names them, reading only the index's data blocks that hold them, so the
// cost of a read follows what is read, not the size of the checkpoint.
// Prepare() resolves a request to a plan, validating every size, offset and
// shape against the data files before the caller allocates anything;
// Execute() reads many plans at once on the shared I/O pool, straight into
// caller buffers, verifying CRCs in parallel chunks (how a read is split and
// which pages it fills: ReadPolicy in the .cc).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "bundle_proto.h"
#include "env.h"
#include "page_buffer.h"
#include "status.h"
#include "table.h"
#include "tensor_slice.h"
#include "thread_pool.h"

namespace saverkit {

struct ReadRequest {
  std::string key;
  bool has_slice = false;          // from a non-empty shape_and_slice
  std::vector<int64_t> spec_shape; // full shape named by the shape_and_slice
  TensorSliceProto slice;
};

// A restore makes one per tensor (10,000 at once), so a plan for a whole
// tensor stored in one piece -- nearly every read -- is its key and entry and
// owns no heap memory (boxes and pieces were ~250 bytes of small allocations
// per tensor, 2.5 MB of a 10,000-tensor restore's peak). Keys and entries
// point into the reader's looked-up entries, which live as long as it does.
struct ReadPlan {
  struct Piece {
    const std::string* key = nullptr;  // index key of the stored payload
    const BundleEntry* entry;
    Box box;                 // what it holds, in full-tensor coordinates
  };
  // A slice request, or a partitioned tensor: the requested region and the
  // stored pieces overlapping it.
  struct Region {
    Box box;
    std::vector<Piece> pieces;
  };
  const std::string* key = nullptr;    // the requested tensor's index key
  const BundleEntry* entry = nullptr;  // and its entry
  int dtype = 0;
  uint64_t num_elements = 0;
  bool direct = false;                 // one stored payload that is exactly the result
  std::unique_ptr<Region> region;      // null: the whole of `entry`, read directly

  const std::vector<int64_t>& shape() const { return region ? region->box.length : entry->shape; }
  // The stored payload of piece i (a plan without a region has one: `entry`).
  const std::string& piece_key(size_t i) const { return region ? *region->pieces[i].key : *key; }
  const BundleEntry& piece_entry(size_t i) const { return region ? *region->pieces[i].entry : *entry; }
};

// A string tensor's values. A whole stored tensor is read in two steps so
// that its bytes can land straight in the caller's per-element buffers:
// Execute() reads and checks the element lengths (and where the bytes start),
// the caller allocates one buffer per element, and ReadStringBytes() fills
// them, verifying the entry's CRC. Slices assembled from several stored
// pieces land in `elements` instead.
struct StringResult {
  bool whole = false;
  size_t piece = 0;          // whole: the plan's piece holding the tensor (see piece_key)
  std::vector<uint64_t> lengths;
  uint64_t data_offset = 0;  // file offset of element 0's bytes
  uint32_t crc = 0;          // unmasked CRC of the entry's bytes before data_offset
  std::vector<std::string> elements;
};

class BundleReader {
 public:
  // Loads the index and opens the data files that go with it. While a
  // re-save of the prefix is committing (commit.h) it waits for the commit
  // (up to 30 s) and reads the new checkpoint.
  Status Open(const std::string& prefix);
  // A remote checkpoint (saverkit.storage): the index's bytes are given; the
  // data files are added with their sizes and read from the ranges the
  // caller fetched for the plans (pieces() in the binding) before Execute.
  // `local_data`: the index's bytes are given (read once by another process
  // of a coordinated restore) but the data files are local, opened on first
  // use as Open() would.
  Status OpenFetched(const std::string& prefix, std::string index, bool local_data = false);
  void AddFetchedDataFile(int shard_id, uint64_t size);
  // The fetched ranges of data file `shard_id` (null when not added).
  std::shared_ptr<FetchedRanges> Fetched(int shard_id);
  bool remote() const { return remote_; }

  const std::string& prefix() const { return prefix_; }
  const BundleHeader& header() const { return header_; }

  // The stored entry of `key` (slice keys included), read from the index on
  // first use and kept for the reader's lifetime (its address is stable);
  // *entry is null when the index has no such key. Thread-safe.
  Status Lookup(const std::string& key, const std::string** stored_key, const BundleEntry** entry);
  // Looks keys up in key order, so that each data block of the index is read
  // once however the caller orders them. Missing keys are left to Prepare.
  Status LookupAll(std::vector<std::string_view> keys);
  // Every entry of the index in key order, header left out, decoded: reads
  // the whole index (for listings only).
  Status ForEachEntry(const std::function<Status(const std::string& key, const BundleEntry& entry)>& fn) const;
  // Every stored tensor in key order, the slices of partitioned tensors left
  // out (as TF's variable maps). Reads the whole index.
  Status ListTensors(std::vector<std::pair<std::string, BundleEntry>>* out) const;
  // Whether `key` is a stored slice of a partitioned tensor (its owner's
  // entry lists it); costs a lookup and the owner's slice count.
  Status IsSliceKey(const std::string& key, bool* is_slice);
  // How messages name a key: 'name', or 'name' (slice 0,2:-) for slice keys.
  std::string DisplayKey(const std::string& key);

  Status Prepare(const ReadRequest& request, ReadPlan* plan);
  // dst[i]: buffer of plan i's bytes (numeric); strings[i] receives string
  // results. dst has one slot per plan; strings gets one per plan when any
  // plan is a string tensor and is left empty otherwise.
  // `fresh`: every numeric destination was allocated for this call and not
  // touched yet, so the reader may choose its pages (see ReadPolicy).
  // `pages[i]`, when given and not null, is the PageBuffer behind dst[i]
  // (page_buffer.h): a new one gets its pages faulted in by a helper.
  Status Execute(const std::vector<ReadPlan>& plans, const std::vector<char*>& dst,
                 std::vector<StringResult>* strings, bool fresh = false,
                 const std::vector<std::shared_ptr<PageBuffer>>* pages = nullptr);
  // Second step for every `whole` string result of Execute(plans, ...), in
  // one batch (see StringByteReader to overlap it with the allocations):
  // element j of plan i goes to dst[i][j] (strings[i].lengths[j] bytes;
  // unused for empty elements). Nothing is reported read until every CRC
  // has been checked.
  Status ReadStringBytes(const std::vector<ReadPlan>& plans, const std::vector<StringResult>& strings,
                         const std::vector<std::vector<char*>>& dst);

  // Byte ranges of data files, read on the I/O pool: range i is sizes[i]
  // bytes of shard shards[i] from file offset offsets[i], into dst[i] (null:
  // read only for its checksum, through a small buffer). (*crcs)[i] gets the
  // range's CRC32C (unmasked). Nothing is compared with the index here: a
  // coordinated restore (saverkit.train.distributed_save) reads the parts of
  // a stored slice that each rank needs, and the ranks combine the ranges'
  // checksums into the slice's.
  Status ReadRanges(const std::vector<int>& shards, const std::vector<uint64_t>& offsets,
                    const std::vector<uint64_t>& sizes, const std::vector<char*>& dst,
                    std::vector<uint32_t>* crcs);

 private:
  // One attempt (0, 1, ...); *again: a re-save of the prefix may have got in the way.
  Status OpenOnce(const std::string& prefix, int attempt, bool* again);
  Status ReadHeader(const std::string& prefix);
  Status DataFile(const std::string& key, const BundleEntry& entry, const RandomAccessFile** file);
  Status CheckStored(const std::string& key, const BundleEntry& entry, uint64_t* num_elements);
  Status ReadNumeric(const std::string& key, const BundleEntry& entry, char* dst);
  Status ReadStrings(const std::string& key, const BundleEntry& entry, std::vector<std::string>* out);
  // Reads and checks a stored string tensor's lengths and length checksum.
  Status ReadStringLengths(const std::string& key, const BundleEntry& entry, StringResult* out);
  Status ReadWhole(const ReadPlan& plan, char* dst, StringResult* strings);
  Status CopyPiece(const ReadPlan& plan, size_t piece, char* dst, StringResult* strings);
  Status StreamPiece(const std::string& key, const BundleEntry& entry, const Box& region, const Box& src,
                     const Box& want, size_t elem, char* dst);
  Status ChecksumError(const std::string& key, const BundleEntry& entry, const RandomAccessFile& file,
                       uint32_t actual);
  void SwapIfBigEndian(int dtype, char* data, uint64_t n) const;

  friend class StringByteReader;

  Status DecodeStored(const std::string& key, const std::string& value, BundleEntry* entry) const;
  Status PreparePartitioned(const ReadRequest& request, const BundleEntry& full, ReadPlan* plan);

  std::string prefix_;
  std::string index_path_;
  BundleHeader header_;
  std::unique_ptr<RandomAccessFile> index_file_;
  Table table_;
  std::mutex entries_mu_;
  std::unordered_map<std::string, BundleEntry> entries_;  // looked up so far (node addresses are stable)
  std::mutex files_mu_;
  std::map<int, std::unique_ptr<RandomAccessFile>> data_files_;
  bool remote_ = false;
  std::string index_bytes_;  // remote: the index, whole
  std::map<int, std::shared_ptr<FetchedRanges>> fetched_;
};

// Second step of whole string reads, tensor by tensor: Start() schedules a
// tensor's element reads on the I/O pool and returns at once, so the caller
// can allocate the next tensor's buffers meanwhile; Finish() waits and checks
// every started tensor's CRC. Plans, results and buffers must outlive
// Finish() (the destructor also waits).
class StringByteReader {
 public:
  explicit StringByteReader(BundleReader* reader) : reader_(reader) {}
  ~StringByteReader() { tasks_.Wait(); }

  // dst[j] receives element j (r.lengths[j] bytes; unused when empty).
  void Start(const ReadPlan& plan, const StringResult& r, char* const* dst);
  Status Finish();

 private:
  struct Run {
    uint64_t begin, end;  // elements
    uint64_t offset;      // file offset of element `begin`
    uint64_t bytes;
    uint32_t crc = 0;
  };
  struct Tensor {
    const std::string* key;  // the stored payload
    const BundleEntry* entry;
    const StringResult* result;
    std::deque<Run> runs;  // stable addresses: tasks write their CRCs in place
  };

  BundleReader* reader_;
  std::deque<Tensor> tensors_;
  TaskGroup tasks_;
};

}  // namespace saverkit
