#include "bundle_writer.h"

#include <sys/uio.h>

#include <cerrno>
#include <climits>

#include <algorithm>
#include <cstdio>

#include "coding.h"
#include "crc32c.h"
#include "dtype.h"
#include "table_builder.h"
#include "tensor_slice.h"
#include "thread_pool.h"

namespace saverkit {

namespace {

// Payloads are checksummed in chunks of this size, in parallel.
const uint64_t kChunkSize = 8ull << 20;
// Bytes handed to one pwritev call.
const uint64_t kWriteBatch = 64ull << 20;

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

uint32_t BuildStringPayload(const std::vector<StringRef>& elems, std::string* payload) {
  uint64_t total = 0;
  size_t varints = 0;
  for (const StringRef& s : elems) {
    total += s.size;
    varints += static_cast<size_t>(VarintLength(s.size));
  }
  payload->clear();
  payload->reserve(varints + 4 + total);
  // The CRCs hash lengths as fixed-width integers, not as the stored varints:
  // collect those once and checksum them in one call.
  std::string fixed;
  fixed.reserve(elems.size() * 4);
  for (const StringRef& s : elems) {
    PutVarint64(payload, s.size);
    if (s.size <= 0xffffffffu) {
      PutFixed32(&fixed, static_cast<uint32_t>(s.size));
    } else {
      PutFixed64(&fixed, s.size);
    }
  }
  uint32_t crc = crc32c::Value(fixed.data(), fixed.size());
  char masked[4];
  EncodeFixed32(masked, crc32c::Mask(crc));
  payload->append(masked, 4);
  crc = crc32c::Extend(crc, masked, 4);
  const size_t data_start = payload->size();
  for (const StringRef& s : elems) payload->append(s.data, s.size);
  return crc32c::Extend(crc, payload->data() + data_start, static_cast<size_t>(total));
}

namespace {

uint64_t StringPayloadSize(const std::vector<StringRef>& elems) {
  uint64_t size = 4;
  for (const StringRef& s : elems) size += static_cast<uint64_t>(VarintLength(s.size)) + s.size;
  return size;
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
  status_ = CreateDirs(Dirname(prefix));
}

BundleWriter::~BundleWriter() {
  if (!finished_) RemoveTemps();
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
  p.key = key;
  p.data = data;
  p.size = nbytes;
  p.offset = data_size_;
  payloads_.push_back(std::move(p));
  data_size_ += nbytes;
  return Status::OK();
}

Status BundleWriter::AddStrings(const std::string& key, const std::vector<int64_t>& shape,
                                const std::vector<StringRef>& elems) {
  SK_RETURN_IF_ERROR(CheckKey(key));
  uint64_t n;
  if (!NumElements(shape, &n) || n != elems.size()) {
    return InvalidArgument(StrCat("String tensor ", PrintableKey(key), " has shape ", ShapeString(shape), " but ",
                                  elems.size(), " elements"));
  }
  Payload p;
  p.key = key;
  p.is_string = true;
  p.elems = elems;  // the payload is built in Finish(), on the pool
  p.size = StringPayloadSize(elems);
  p.offset = data_size_;
  BundleEntry& e = entries_[key];
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
                                     const std::vector<StringRef>& elems) {
  std::string key;
  SK_RETURN_IF_ERROR(RecordSlice(name, full_shape, slice, DT_STRING, slice_shape, &key));
  return AddStrings(key.empty() ? name : key, slice_shape, elems);
}

Status BundleWriter::WritePayloads(WritableFile* file) {
  // String payloads (varint lengths, length checksum, bytes) are built in
  // parallel first; each one's CRC comes with it.
  std::vector<size_t> string_payloads;
  for (size_t i = 0; i < payloads_.size(); ++i) {
    if (payloads_[i].is_string) string_payloads.push_back(i);
  }
  SK_RETURN_IF_ERROR(RunParallel(string_payloads.size(), [&](size_t t) -> Status {
    Payload& p = payloads_[string_payloads[t]];
    p.crc = BuildStringPayload(p.elems, &p.staged);
    p.crc_known = true;
    p.data = p.staged.data();
    if (p.staged.size() != p.size) {
      return Internal(StrCat("String tensor ", PrintableKey(p.key), " payload is ", p.staged.size(),
                             " bytes, ", p.size, " were reserved"));
    }
    std::vector<StringRef>().swap(p.elems);
    return Status::OK();
  }));
  // Numeric payloads are checksummed in chunks on the pool while one task
  // streams every payload to the file in add order: concurrent writes to one
  // file serialize in the kernel anyway, and this keeps the writer busy.
  struct Chunk {
    size_t payload;
    uint64_t begin, len;
    uint32_t crc;
  };
  std::vector<Chunk> chunks;
  for (size_t i = 0; i < payloads_.size(); ++i) {
    const Payload& p = payloads_[i];
    if (p.crc_known) continue;
    for (uint64_t off = 0; off < p.size; off += kChunkSize) {
      chunks.push_back({i, off, std::min(kChunkSize, p.size - off), 0});
    }
  }
  SK_RETURN_IF_ERROR(file->Reserve(data_size_));
  Status st = RunParallel(chunks.size() + 1, [&](size_t t) -> Status {
    if (t > 0) {
      Chunk& c = chunks[t - 1];
      c.crc = crc32c::Value(payloads_[c.payload].data + c.begin, c.len);
      return Status::OK();
    }
    std::vector<struct iovec> iov;
    uint64_t offset = 0, batch = 0;
    for (size_t i = 0; i <= payloads_.size(); ++i) {
      bool last = i == payloads_.size();
      if (!last && payloads_[i].size > 0) {
        iov.push_back({const_cast<char*>(payloads_[i].data), static_cast<size_t>(payloads_[i].size)});
        batch += payloads_[i].size;
      }
      if (iov.empty() || (!last && iov.size() < IOV_MAX && batch < kWriteBatch)) continue;
      size_t k = 0;
      while (k < iov.size()) {  // pwritev may write less than asked
        ssize_t put = ::pwritev(file->fd(), iov.data() + k, static_cast<int>(std::min<size_t>(iov.size() - k, IOV_MAX)),
                                static_cast<off_t>(offset));
        if (put < 0) {
          if (errno == EINTR) continue;
          return IOError(StrCat("Write of ", batch, " bytes at offset ", offset, " failed on ", file->path()), errno);
        }
        offset += static_cast<uint64_t>(put);
        size_t left = static_cast<size_t>(put);
        while (k < iov.size() && left >= iov[k].iov_len) left -= iov[k++].iov_len;
        if (k < iov.size()) {
          iov[k].iov_base = static_cast<char*>(iov[k].iov_base) + left;
          iov[k].iov_len -= left;
        }
      }
      iov.clear();
      batch = 0;
    }
    return Status::OK();
  });
  SK_RETURN_IF_ERROR(st);
  // Stitch the chunk CRCs of each numeric payload together.
  for (size_t i = 0; i < chunks.size();) {
    uint32_t crc = chunks[i].crc;
    size_t j = i + 1;
    for (; j < chunks.size() && chunks[j].payload == chunks[i].payload; ++j) {
      crc = crc32c::Combine(crc, chunks[j].crc, chunks[j].len);
    }
    payloads_[chunks[i].payload].crc = crc;
    payloads_[chunks[i].payload].crc_known = true;
    i = j;
  }
  for (Payload& p : payloads_) {
    if (!p.crc_known) p.crc = 0;  // empty tensor: CRC of nothing
    entries_[p.key].crc32c = crc32c::Mask(p.crc);
  }
  return Status::OK();
}

Status BundleWriter::WriteIndex(const std::string& path) {
  WritableFile file;
  SK_RETURN_IF_ERROR(file.Create(path));
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
  data_tmp_ = TempFilename(data_path_);
  index_tmp_ = TempFilename(index_path_);
  {
    WritableFile data;
    SK_RETURN_IF_ERROR(data.Create(data_tmp_));
    SK_RETURN_IF_ERROR(WritePayloads(&data));
    if (options_.durable) SK_RETURN_IF_ERROR(data.Sync());
    SK_RETURN_IF_ERROR(data.Close());
  }
  SK_RETURN_IF_ERROR(WriteIndex(index_tmp_));
  // Data first: an index that exists always points at complete data.
  SK_RETURN_IF_ERROR(RenameFile(data_tmp_, data_path_));
  data_tmp_.clear();
  SK_RETURN_IF_ERROR(RenameFile(index_tmp_, index_path_));
  index_tmp_.clear();
  if (options_.durable) SK_RETURN_IF_ERROR(SyncDir(Dirname(prefix_)));
  finished_ = true;
  return Status::OK();
}

}  // namespace saverkit
