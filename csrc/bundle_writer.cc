#include "bundle_writer.h"

#include <sys/uio.h>

#include <cerrno>
#include <climits>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>

#include "coding.h"
#include "commit.h"
#include "crc32c.h"
#include "dtype.h"
#include "table_builder.h"
#include "temp_names.h"
#include "tensor_slice.h"
#include "thread_pool.h"

namespace saverkit {

namespace {

// Payloads are checksummed in chunks of this size, in parallel.
const uint64_t kChunkSize = 8ull << 20;
// String elements are gathered, written and checksummed in runs of this many
// bytes per task.
const uint64_t kStringChunkSize = 1ull << 20;
// Durable saves start the disk writing every this many bytes.
const uint64_t kWritebackBytes = 16ull << 20;
// Bytes handed to one pwritev call.
const uint64_t kWriteBatch = 64ull << 20;
// The writer checksums what it writes itself in pieces that fit in a core's
// L2 cache, so the kernel's copy into the page cache reads them from there.
const uint64_t kCachePiece = 256ull << 10;

// Calls writing numeric payloads right now, process-wide. Alone, a writer
// leaves checksums to helper tasks on the other cores (they run ahead of it,
// so it even finds its data in the shared cache). With several writers, the
// helpers would take cores from the writers and read every byte from memory
// a second time: each writer checksums its own pieces, cache-hot.
std::atomic<int> g_numeric_writers{0};

class NumericWriterCount {
 public:
  explicit NumericWriterCount(bool active) : active_(active) {
    if (active_) g_numeric_writers.fetch_add(1);
  }
  ~NumericWriterCount() {
    if (active_) g_numeric_writers.fetch_sub(1);
  }
  NumericWriterCount(const NumericWriterCount&) = delete;
  NumericWriterCount& operator=(const NumericWriterCount&) = delete;

 private:
  bool active_;
};

bool NumElements(const std::vector<int64_t>& shape, uint64_t* n) {
  uint64_t total = 1;
  for (int64_t d : shape) {
    if (d < 0 || !CheckedMul(total, static_cast<uint64_t>(d), &total)) return false;
  }
  *n = total;
  return true;
}

}  // namespace

std::string DataFilename(const std::string& prefix, int shard_id, int num_shards) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), ".data-%05d-of-%05d", shard_id, num_shards);
  return prefix + buf;
}

std::string MetaFilename(const std::string& prefix) { return prefix + ".index"; }

uint32_t BuildStringHeader(StringSpan elems, std::string* header) {
  size_t varints = 0, fixed_bytes = 0;
  for (const StringRef& s : elems) {
    varints += static_cast<size_t>(VarintLength(s.size));
    fixed_bytes += s.size <= 0xffffffffu ? 4 : 8;
  }
  // The CRC hashes lengths as fixed-width integers, not as the stored
  // varints: lay those out once and checksum them in one call.
  header->resize(varints + 4);
  std::string fixed(fixed_bytes, '\0');
  char* v = &(*header)[0];
  char* f = &fixed[0];
  for (const StringRef& s : elems) {
    if (s.size < 0x80) {  // most elements: skip the call
      *v++ = static_cast<char>(s.size);
    } else {
      v = EncodeVarint64(v, s.size);
    }
    if (s.size <= 0xffffffffu) {
      EncodeFixed32(f, static_cast<uint32_t>(s.size));
      f += 4;
    } else {
      EncodeFixed64(f, s.size);
      f += 8;
    }
  }
  uint32_t crc = crc32c::Value(fixed.data(), fixed.size());
  EncodeFixed32(v, crc32c::Mask(crc));
  return crc32c::Extend(crc, v, 4);
}

namespace {

// Bytes of a string payload before its elements' bytes, and in all.
void StringPayloadSize(StringSpan elems, uint64_t* header_size, uint64_t* size) {
  uint64_t varints = 0, bytes = 0;
  for (const StringRef& s : elems) {
    varints += static_cast<uint64_t>(VarintLength(s.size));
    bytes += s.size;
  }
  *header_size = varints + 4;
  *size = *header_size + bytes;
}

}  // namespace

BundleWriter::BundleWriter(const std::string& prefix, const BundleWriterOptions& options)
    : prefix_(prefix), options_(options) {
  if (options.num_shards < 1 || options.shard_id < 0 || options.shard_id >= options.num_shards) {
    status_ = InvalidArgument(StrCat("Invalid shard_id ", options.shard_id, " / num_shards ", options.num_shards,
                                     " for checkpoint ", prefix));
    return;
  }
  data_path_ = DataFilename(prefix, options.shard_id, options.num_shards);
  index_path_ = MetaFilename(prefix);
  if (in_memory() != (options.index_memory != nullptr)) {
    status_ = InvalidArgument("BundleWriter: data and index must both be in memory or both files");
    return;
  }
  if (!in_memory()) status_ = CreateDirs(Dirname(prefix));
}

BundleWriter::~BundleWriter() {
  string_tasks_.Wait();  // before the files they write go (and the caller's elements with them)
  if (!finished_) RemoveTemps();
}

Status BundleWriter::OpenData() {
  if (data_open_) return Status::OK();
  data_open_ = true;
  if (in_memory()) {
    data_.CreateInMemory(data_path_, options_.data_memory);
    return Status::OK();
  }
  data_tmp_ = TempFilename(data_path_);
  return data_.Create(data_tmp_);
}

void BundleWriter::RemoveTemps() {
  if (!data_tmp_.empty()) ::remove(data_tmp_.c_str());
  if (!index_tmp_.empty()) ::remove(index_tmp_.c_str());
}

Status BundleWriter::CheckKey(const std::string& key) {
  SK_RETURN_IF_ERROR(status_);
  if (key.empty()) return InvalidArgument("Tensor name must not be empty (checkpoint " + prefix_ + ")");
  if (entries_.count(key)) {
    return InvalidArgument("Adding duplicate key " + PrintableKey(key) + " to checkpoint " + prefix_);
  }
  return Status::OK();
}

Status BundleWriter::AddNumeric(const std::string& key, int dtype, const std::vector<int64_t>& shape,
                                const char* data, uint64_t nbytes) {
  SK_RETURN_IF_ERROR(CheckKey(key));
  size_t elem = DataTypeSize(dtype);
  if (elem == 0) {
    return InvalidArgument(StrCat("Cannot save tensor ", PrintableKey(key), " of dtype ", DataTypeName(dtype),
                                  " as a numeric tensor"));
  }
  uint64_t n, expected;
  if (!NumElements(shape, &n) || !CheckedMul(n, elem, &expected) || expected != nbytes) {
    return InvalidArgument(StrCat("Tensor ", PrintableKey(key), " has shape ", ShapeString(shape), " and dtype ",
                                  DataTypeName(dtype), " but ", nbytes, " bytes of data"));
  }
  BundleEntry& e = entries_[key];
  e.dtype = dtype;
  e.shape = shape;
  e.shard_id = options_.shard_id;
  e.offset = static_cast<int64_t>(data_size_);
  e.size = static_cast<int64_t>(nbytes);
  Payload p;
  p.entry = &e;
  p.data = data;
  p.size = nbytes;
  p.offset = data_size_;
  payloads_.push_back(std::move(p));
  data_size_ += nbytes;
  return Status::OK();
}

Status BundleWriter::AddStrings(const std::string& key, const std::vector<int64_t>& shape,
                                StringSpan elems) {
  SK_RETURN_IF_ERROR(CheckKey(key));
  uint64_t n;
  if (!NumElements(shape, &n) || n != elems.size()) {
    return InvalidArgument(StrCat("String tensor ", PrintableKey(key), " has shape ", ShapeString(shape), " but ",
                                  elems.size(), " elements"));
  }
  SK_RETURN_IF_ERROR(OpenData());
  Payload p;
  p.is_string = true;
  p.strings.reset(new StringJob);
  StringPayloadSize(elems, &p.strings->header_size, &p.size);
  p.strings->elems = elems;
  p.strings->offset = data_size_;
  p.offset = data_size_;
  StartStrings(key, p.strings.get());
  BundleEntry& e = entries_[key];
  p.entry = &e;
  e.dtype = DT_STRING;
  e.shape = shape;
  e.shard_id = options_.shard_id;
  e.offset = static_cast<int64_t>(data_size_);
  e.size = static_cast<int64_t>(p.size);
  data_size_ += p.size;
  payloads_.push_back(std::move(p));
  return Status::OK();
}

Status BundleWriter::RecordSlice(const std::string& name, const std::vector<int64_t>& full_shape,
                                 const TensorSliceProto& slice, int dtype, const std::vector<int64_t>& slice_shape,
                                 std::string* slice_key) {
  SK_RETURN_IF_ERROR(status_);
  std::string what = "slice of tensor " + PrintableKey(name);
  Box box;
  SK_RETURN_IF_ERROR(SliceToBox(slice, full_shape, what, &box));
  if (box.length != slice_shape) {
    return InvalidArgument(StrCat("Slice ", SliceString(slice), " of tensor ", PrintableKey(name), " has shape ",
                                  ShapeString(box.length), " but the data has shape ", ShapeString(slice_shape)));
  }
  if (IsFullSlice(slice, full_shape)) {
    slice_key->clear();  // stored as a plain entry
    return Status::OK();
  }
  auto it = entries_.find(name);
  if (it != entries_.end()) {
    BundleEntry& full = it->second;
    if (full.slices.empty()) {
      return InvalidArgument("Adding a slice of " + PrintableKey(name) +
                             ", which was already added as a whole tensor, to checkpoint " + prefix_);
    }
    if (full.dtype != dtype || full.shape != full_shape) {
      return InvalidArgument(StrCat("Slices of tensor ", PrintableKey(name), " disagree: dtype ",
                                    DataTypeName(full.dtype), " shape ", ShapeString(full.shape), " vs dtype ",
                                    DataTypeName(dtype), " shape ", ShapeString(full_shape)));
    }
  }
  *slice_key = EncodeTensorNameSlice(name, slice);
  if (entries_.count(*slice_key)) {
    return InvalidArgument("Adding duplicate slice " + SliceString(slice) + " of tensor " + PrintableKey(name));
  }
  BundleEntry& full = entries_[name];
  full.dtype = dtype;
  full.shape = full_shape;
  full.slices.push_back(slice);
  return Status::OK();
}

Status BundleWriter::AddSliceNumeric(const std::string& name, const std::vector<int64_t>& full_shape,
                                     const TensorSliceProto& slice, int dtype,
                                     const std::vector<int64_t>& slice_shape, const char* data, uint64_t nbytes) {
  std::string key;
  SK_RETURN_IF_ERROR(RecordSlice(name, full_shape, slice, dtype, slice_shape, &key));
  Status s = AddNumeric(key.empty() ? name : key, dtype, slice_shape, data, nbytes);
  if (!s.ok() && !key.empty()) entries_.erase(name);  // keep state consistent after a rejected slice
  return s;
}

Status BundleWriter::AddSliceStrings(const std::string& name, const std::vector<int64_t>& full_shape,
                                     const TensorSliceProto& slice, const std::vector<int64_t>& slice_shape,
                                     StringSpan elems) {
  std::string key;
  SK_RETURN_IF_ERROR(RecordSlice(name, full_shape, slice, DT_STRING, slice_shape, &key));
  return AddStrings(key.empty() ? name : key, slice_shape, elems);
}

namespace {

// Copies small pieces (string elements) into one buffer per pwrite,
// checksumming each buffer as it goes out; large pieces are written as they
// are. Writes land back to back from `offset`.
class GatherWriter {
 public:
  // `write_mu` serializes the pwrites of all tasks: the kernel would
  // serialize them on the file's inode lock anyway, but by spinning.
  GatherWriter(const WritableFile* file, uint64_t offset, std::string* buf, std::mutex* write_mu)
      : file_(file), offset_(offset), buf_(buf), write_mu_(write_mu) {
    if (buf_->size() < kGatherBytes) buf_->resize(kGatherBytes);
  }

  Status Add(const char* data, size_t n) {
    if (n >= kGatherBytes / 4) {
      SK_RETURN_IF_ERROR(Flush());
      crc_ = crc32c::Extend(crc_, data, n);
      SK_RETURN_IF_ERROR(Write(data, n));
      return Status::OK();
    }
    if (used_ + n > kGatherBytes) SK_RETURN_IF_ERROR(Flush());
    std::memcpy(&(*buf_)[used_], data, n);
    used_ += n;
    return Status::OK();
  }

  Status Flush() {
    if (used_ == 0) return Status::OK();
    crc_ = crc32c::Extend(crc_, buf_->data(), used_);
    SK_RETURN_IF_ERROR(Write(buf_->data(), used_));
    used_ = 0;
    return Status::OK();
  }

  uint32_t crc() const { return crc_; }  // of everything added (after Flush)

 private:
  Status Write(const char* data, size_t n) {
    std::lock_guard<std::mutex> lock(*write_mu_);
    SK_RETURN_IF_ERROR(file_->PWrite(offset_, data, n));
    offset_ += n;
    return Status::OK();
  }

  static const size_t kGatherBytes = 256 << 10;
  const WritableFile* file_;
  uint64_t offset_;
  std::string* buf_;
  std::mutex* write_mu_;
  size_t used_ = 0;
  uint32_t crc_ = 0;
};

}  // namespace

void BundleWriter::StartStrings(const std::string& key, StringJob* job) {
  uint64_t begin = 0, bytes = 0, offset = job->offset + job->header_size;
  const StringSpan elems = job->elems;
  for (size_t j = 0; j < elems.size(); ++j) {
    bytes += elems[j].size;
    if (bytes >= kStringChunkSize || j + 1 == elems.size()) {
      job->runs.push_back({begin, j + 1, offset, bytes});
      offset += bytes;
      begin = j + 1;
      bytes = 0;
    }
  }
  if (elems.empty()) job->runs.push_back({0, 0, offset, 0});  // the header alone
  const WritableFile* file = &data_;
  std::mutex* write_mu = &string_write_mu_;
  for (StringJob::Run& run : job->runs) {
    StringJob::Run* r = &run;
    string_tasks_.Schedule([key, job, r, file, write_mu]() -> Status {
      if (r->begin == 0) {
        std::string header;
        job->header_crc = BuildStringHeader(job->elems, &header);
        if (header.size() != job->header_size) {
          return Internal(StrCat("String tensor ", PrintableKey(key), " header is ", header.size(), " bytes, ",
                                 job->header_size, " were reserved"));
        }
        std::lock_guard<std::mutex> lock(*write_mu);
        SK_RETURN_IF_ERROR(file->PWrite(job->offset, header.data(), header.size()));
      }
      thread_local std::string scratch;  // one gather buffer per I/O thread, reused across calls
      GatherWriter out(file, r->offset, &scratch, write_mu);
      for (uint64_t j = r->begin; j < r->end; ++j) SK_RETURN_IF_ERROR(out.Add(job->elems[j].data, job->elems[j].size));
      SK_RETURN_IF_ERROR(out.Flush());
      r->crc = out.crc();
      return Status::OK();
    });
  }
}

Status BundleWriter::WritePayloads(WritableFile* file) {
  // Numeric payloads: one task streams them all to the file in add order
  // (concurrent writes to one file serialize in the kernel anyway); their
  // kChunkSize byte ranges are checksummed by helper tasks or by the writer
  // (see g_numeric_writers). String payloads were written since they were
  // added (StartStrings); their CRCs are known.
  std::vector<NumericChunk> numeric;
  for (size_t i = 0; i < payloads_.size(); ++i) {
    const Payload& p = payloads_[i];
    if (p.is_string) continue;
    for (uint64_t off = 0; off < p.size; off += kChunkSize) {
      numeric.push_back({i, off, std::min(kChunkSize, p.size - off), 0});
    }
  }
  SK_RETURN_IF_ERROR(file->Reserve(data_size_));
  const bool any_numeric = !numeric.empty();
  NumericWriterCount writing(any_numeric);
  std::unique_ptr<std::atomic<bool>[]> claimed(new std::atomic<bool>[numeric.size()]);
  for (size_t k = 0; k < numeric.size(); ++k) claimed[k].store(false, std::memory_order_relaxed);
  std::atomic<size_t> next_numeric{0};  // helpers claim from the front, just ahead of the writer
  const size_t helpers = any_numeric ? numeric.size() + 1 : 0;  // task 0 writes, the rest help
  Status st = RunParallel(helpers, [&](size_t t) -> Status {
    if (t == 0) return WriteNumeric(file, &numeric, claimed.get());
    if (g_numeric_writers.load(std::memory_order_relaxed) > 1) return Status::OK();
    // While a snapshot is still being copied (a pipelined asynchronous save), only the writer follows
    // it: helpers checksumming beside it would take the copying thread's core and slow the copy that
    // the caller is blocked on. They help once the copy is complete.
    if (options_.staged) SK_RETURN_IF_ERROR(options_.staged->WaitComplete());
    for (size_t k = next_numeric.fetch_add(1); k < numeric.size(); k = next_numeric.fetch_add(1)) {
      if (claimed[k].exchange(true)) continue;  // the writer got there first
      NumericChunk& c = numeric[k];
      SK_RETURN_IF_ERROR(Staged(payloads_[c.payload].data + c.begin, c.len));
      c.crc = crc32c::Value(payloads_[c.payload].data + c.begin, c.len);
      return Status::OK();
    }
    return Status::OK();
  });
  SK_RETURN_IF_ERROR(st);
  // Stitch the chunk CRCs of each payload together (each payload's chunks
  // are in order).
  for (const NumericChunk& c : numeric) {
    Payload& p = payloads_[c.payload];
    p.crc = p.crc_known ? crc32c::Combine(p.crc, c.crc, c.len) : c.crc;
    p.crc_known = true;
  }
  for (Payload& p : payloads_) {
    if (!p.crc_known) p.crc = 0;  // empty tensor: CRC of nothing
    p.entry->crc32c = crc32c::Mask(p.crc);
  }
  return Status::OK();
}

Status BundleWriter::WriteNumeric(const WritableFile* file, std::vector<NumericChunk>* chunks,
                                  std::atomic<bool>* claimed) const {
  std::vector<struct iovec> iov;
  uint64_t start = 0, batch = 0;  // the run gathered in iov: file offset, bytes
  // A durable save waits for the disk at the end; starting the writeback of
  // each kWritebackBytes already written lets the disk work while the rest is
  // still being checksummed and copied into the page cache.
  uint64_t writeback_from = 0, writeback_to = 0;
  auto flush = [&]() -> Status {
    if (iov.empty()) return Status::OK();
    // The payloads are the caller's tensors: a file in memory points at them.
    Status s = file->PWriteVBorrowed(start, iov.data(), static_cast<int>(iov.size()));
    iov.clear();
    if (options_.durable && s.ok()) {
      if (start != writeback_to) writeback_from = start;  // a gap: strings were written there already
      writeback_to = start + batch;
      if (writeback_to - writeback_from >= kWritebackBytes) {
        file->StartWriteback(writeback_from, writeback_to - writeback_from);
        writeback_from = writeback_to;
      }
    }
    batch = 0;
    return s;
  };
  auto add = [&](uint64_t at, const char* data, uint64_t n) -> Status {
    if (!iov.empty() && (at != start + batch || iov.size() >= IOV_MAX)) SK_RETURN_IF_ERROR(flush());
    if (iov.empty()) start = at;
    iov.push_back({const_cast<char*>(data), static_cast<size_t>(n)});
    batch += n;
    return Status::OK();
  };
  for (size_t k = 0; k < chunks->size(); ++k) {
    NumericChunk& c = (*chunks)[k];
    const Payload& p = payloads_[c.payload];
    const char* data = p.data + c.begin;
    const uint64_t at = p.offset + c.begin;
    SK_RETURN_IF_ERROR(Staged(data, c.len));
    if (claimed[k].exchange(true)) {  // a helper checksums it
      SK_RETURN_IF_ERROR(add(at, data, c.len));
      if (batch >= kWriteBatch) SK_RETURN_IF_ERROR(flush());
      continue;
    }
    uint32_t crc = 0;
    for (uint64_t done = 0; done < c.len;) {
      const uint64_t n = std::min(kCachePiece, c.len - done);
      crc = crc32c::Extend(crc, data + done, n);
      SK_RETURN_IF_ERROR(add(at + done, data + done, n));
      if (batch >= kCachePiece) SK_RETURN_IF_ERROR(flush());  // while the piece is in cache
      done += n;
    }
    c.crc = crc;
  }
  return flush();
}

Status BundleWriter::WriteIndex(const std::string& path) {
  WritableFile file;
  if (in_memory()) {
    file.CreateInMemory(index_path_, options_.index_memory);
  } else {
    SK_RETURN_IF_ERROR(file.Create(path));
  }
  TableBuilder table(&file);
  BundleHeader header;
  header.num_shards = options_.num_shards;
  header.endianness = kLittle;
  header.has_version = true;
  header.version.producer = 1;
  std::string value;
  EncodeHeader(header, &value);
  SK_RETURN_IF_ERROR(table.Add("", value));
  for (const auto& kv : entries_) {
    value.clear();
    EncodeEntry(kv.second, &value);
    SK_RETURN_IF_ERROR(table.Add(kv.first, value));
  }
  SK_RETURN_IF_ERROR(table.Finish());
  if (options_.durable) SK_RETURN_IF_ERROR(file.Sync());
  return file.Close();
}

Status BundleWriter::Finish() {
  SK_RETURN_IF_ERROR(status_);
  if (finished_) return FailedPrecondition("BundleWriter::Finish called twice for " + prefix_);
  SK_RETURN_IF_ERROR(string_tasks_.Wait());
  // Each string payload's CRC: its runs' stitched onto its header's.
  for (Payload& p : payloads_) {
    if (!p.is_string) continue;
    p.crc = p.strings->header_crc;
    for (const StringJob::Run& r : p.strings->runs) p.crc = crc32c::Combine(p.crc, r.crc, r.bytes);
    p.crc_known = true;
  }
  SK_RETURN_IF_ERROR(OpenData());
  if (in_memory()) {
    SK_RETURN_IF_ERROR(WritePayloads(&data_));
    SK_RETURN_IF_ERROR(WriteIndex(index_path_));
    finished_ = true;
    return Status::OK();
  }
  index_tmp_ = TempFilename(index_path_);
  SK_RETURN_IF_ERROR(WritePayloads(&data_));
  if (options_.durable) SK_RETURN_IF_ERROR(data_.Sync());
  SK_RETURN_IF_ERROR(data_.Close());
  SK_RETURN_IF_ERROR(WriteIndex(index_tmp_));
  // On an error the destructor removes the temporaries (those not renamed).
  SK_RETURN_IF_ERROR(CommitBundle(prefix_, {{data_tmp_, data_path_}}, index_tmp_, options_.durable));
  data_tmp_.clear();
  index_tmp_.clear();
  finished_ = true;
  return Status::OK();
}

}  // namespace saverkit
