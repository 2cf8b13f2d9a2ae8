#include "bundle_reader.h"

#include <algorithm>
#include <cstring>

#include "bundle_writer.h"
#include "coding.h"
#include "crc32c.h"
#include "dtype.h"
#include "table.h"
#include "thread_pool.h"

namespace saverkit {

namespace {

const uint64_t kReadChunk = 8ull << 20;  // multiple of every swap unit
// Tensors up to kGroupBytes are read whole, several to a task (at most
// kGroupBytes or kGroupPlans per task); larger ones in kReadChunk pieces.
const uint64_t kGroupBytes = 1ull << 20;
const uint64_t kGroupPlans = 256;
const int kFormatVersion = 1;

bool HostIsBigEndian() {
  const uint16_t one = 1;
  return *reinterpret_cast<const unsigned char*>(&one) == 0;
}

bool NumElements(const std::vector<int64_t>& shape, uint64_t* n) {
  uint64_t total = 1;
  for (int64_t d : shape) {
    if (d < 0 || !CheckedMul(total, static_cast<uint64_t>(d), &total)) return false;
  }
  *n = total;
  return true;
}

bool SameBox(const Box& a, const Box& b) { return a.start == b.start && a.length == b.length; }

}  // namespace

Status BundleReader::Open(const std::string& prefix) {
  prefix_ = prefix;
  const std::string index_path = MetaFilename(prefix);
  RandomAccessFile index;
  Status s = index.Open(index_path);
  if (s.code() == Code::kNotFound) {
    return NotFound("Failed to find a checkpoint at prefix " + prefix + ": " + index_path + " does not exist");
  }
  SK_RETURN_IF_ERROR(s);
  Table table;
  SK_RETURN_IF_ERROR(table.Open(&index));
  bool first = true;
  SK_RETURN_IF_ERROR(table.ForEach([&](const std::string& key, const std::string& value) -> Status {
    if (first) {
      first = false;
      if (!key.empty()) return DataLoss("Checkpoint index " + index_path + " has no header entry");
      return DecodeHeader(value, "the header of " + index_path, &header_);
    }
    BundleEntry entry;
    SK_RETURN_IF_ERROR(DecodeEntry(value, "tensor " + PrintableKey(key) + " in " + index_path, &entry));
    entries_.emplace(key, std::move(entry));
    return Status::OK();
  }));
  if (first) return DataLoss("Checkpoint index " + index_path + " is empty (no header entry)");
  // Version rules of TF's reader (format version 1, minimum producer 0).
  if (header_.version.min_consumer > kFormatVersion) {
    return InvalidArgument(StrCat("Checkpoint ", prefix, " needs min consumer version ",
                                  header_.version.min_consumer, ", above this reader's version ", kFormatVersion));
  }
  for (int32_t bad : header_.version.bad_consumers) {
    if (bad == kFormatVersion) {
      return InvalidArgument(StrCat("Checkpoint ", prefix, " disallows consumer version ", kFormatVersion));
    }
  }
  if (header_.version.producer < 0) {
    return InvalidArgument(StrCat("Checkpoint ", prefix, " has producer version ", header_.version.producer,
                                  ", below the minimum 0"));
  }
  if (header_.num_shards <= 0) {
    return DataLoss(StrCat("Checkpoint index ", index_path, " header has invalid num_shards ", header_.num_shards));
  }
  if (header_.endianness != kLittle && header_.endianness != kBig) {
    return DataLoss(StrCat("Checkpoint index ", index_path, " header has invalid endianness ", header_.endianness));
  }
  for (const auto& kv : entries_) {
    for (const TensorSliceProto& slice : kv.second.slices) {
      slice_keys_[EncodeTensorNameSlice(kv.first, slice)] =
          PrintableKey(kv.first) + " (slice " + SliceString(slice) + ")";
    }
  }
  return Status::OK();
}

std::string BundleReader::DisplayKey(const std::string& key) const {
  auto it = slice_keys_.find(key);
  return it != slice_keys_.end() ? it->second : PrintableKey(key);
}

Status BundleReader::DataFile(const std::string& key, const BundleEntry& entry, const RandomAccessFile** file) {
  if (entry.shard_id < 0 || entry.shard_id >= header_.num_shards) {
    return DataLoss(StrCat("Tensor ", DisplayKey(key), " in checkpoint ", prefix_, " names shard ",
                           entry.shard_id, " but the checkpoint has ", header_.num_shards, " shards"));
  }
  std::lock_guard<std::mutex> lock(files_mu_);
  auto it = data_files_.find(entry.shard_id);
  if (it == data_files_.end()) {
    auto f = std::make_unique<RandomAccessFile>();
    std::string path = DataFilename(prefix_, entry.shard_id, header_.num_shards);
    Status s = f->Open(path);
    if (s.code() == Code::kNotFound) {
      return NotFound("Data file " + path + " of checkpoint " + prefix_ + " (holding tensor " + DisplayKey(key) +
                      ") does not exist: the checkpoint is incomplete");
    }
    SK_RETURN_IF_ERROR(s);
    it = data_files_.emplace(entry.shard_id, std::move(f)).first;
  }
  *file = it->second.get();
  return Status::OK();
}

Status BundleReader::CheckStored(const std::string& key, const BundleEntry& entry, uint64_t* num_elements) {
  const std::string what = "tensor " + DisplayKey(key) + " in checkpoint " + prefix_;
  if (entry.dtype == DT_VARIANT) {
    return Unimplemented("Cannot read " + what + ": DT_VARIANT tensors are opaque TensorFlow objects");
  }
  if (!IsKnownDataType(entry.dtype) || entry.dtype == DT_RESOURCE) {
    return DataLoss("Invalid dtype " + DataTypeName(entry.dtype) + " stored for " + what);
  }
  if (!NumElements(entry.shape, num_elements)) {
    return DataLoss("Invalid shape " + ShapeString(entry.shape) + " stored for " + what);
  }
  const RandomAccessFile* file;
  SK_RETURN_IF_ERROR(DataFile(key, entry, &file));
  uint64_t end;
  if (entry.offset < 0 || entry.size < 0 ||
      !CheckedAdd(static_cast<uint64_t>(entry.offset), static_cast<uint64_t>(entry.size), &end) ||
      end > file->size()) {
    return DataLoss(StrCat("Entry of ", what, " (offset ", entry.offset, ", size ", entry.size,
                           ") points outside its data file ", file->path(), " (", file->size(),
                           " bytes): truncated or corrupt"));
  }
  const uint64_t size = static_cast<uint64_t>(entry.size);
  if (entry.dtype == DT_STRING) {
    // At least one varint byte per element plus the 4-byte length checksum.
    if (size == 0 ? *num_elements != 0 : (size < 4 || *num_elements > size - 4)) {
      return DataLoss(StrCat("Invalid size ", size, " in bundle entry for string ", what, " of shape ",
                             ShapeString(entry.shape)));
    }
    return Status::OK();
  }
  uint64_t expected;
  if (!CheckedMul(*num_elements, DataTypeSize(entry.dtype), &expected) || expected != size) {
    return DataLoss(StrCat("Invalid size in bundle entry for ", what, ": stored size ", size, "; expected size ",
                           expected, " for shape ", ShapeString(entry.shape), " of ", DataTypeName(entry.dtype)));
  }
  return Status::OK();
}

Status BundleReader::Prepare(const ReadRequest& request, ReadPlan* plan) {
  auto it = entries_.find(request.key);
  if (it == entries_.end() || IsSliceKey(request.key)) {
    return NotFound("Key " + PrintableKey(request.key) + " not found in checkpoint " + prefix_);
  }
  const BundleEntry& full = it->second;
  const std::string what = "tensor " + PrintableKey(request.key) + " in checkpoint " + prefix_;
  *plan = ReadPlan();
  plan->key = request.key;
  plan->dtype = full.dtype;
  uint64_t full_elements;
  if (!NumElements(full.shape, &full_elements) || full_elements > (1ull << 62)) {
    return DataLoss("Invalid shape " + ShapeString(full.shape) + " stored for " + what);
  }
  Box full_box;
  full_box.start.assign(full.shape.size(), 0);
  full_box.length = full.shape;
  if (request.has_slice) {
    if (request.spec_shape != full.shape) {
      return InvalidArgument("Requested shape " + ShapeString(request.spec_shape) + " of " + what +
                             " does not match the stored shape " + ShapeString(full.shape));
    }
    SK_RETURN_IF_ERROR(SliceToBox(request.slice, full.shape, what, &plan->box));
  } else {
    plan->box = full_box;
  }
  plan->shape = plan->box.length;
  NumElements(plan->shape, &plan->num_elements);

  if (full.slices.empty()) {
    uint64_t n;
    SK_RETURN_IF_ERROR(CheckStored(request.key, full, &n));
    plan->pieces.push_back({request.key, &full, full_box});
    plan->direct = SameBox(plan->box, full_box);
    return Status::OK();
  }
  // Partitioned: find the stored slices overlapping the request.
  if (full.dtype == DT_VARIANT) return Unimplemented("Cannot read " + what + ": DT_VARIANT");
  if (!IsKnownDataType(full.dtype) || full.dtype == DT_RESOURCE) {
    return DataLoss("Invalid dtype " + DataTypeName(full.dtype) + " stored for " + what);
  }
  uint64_t covered = 0;
  for (const TensorSliceProto& slice : full.slices) {
    ReadPlan::Piece piece;
    Status s = SliceToBox(slice, full.shape, what, &piece.box);
    if (!s.ok()) return DataLoss("Corrupt slice entry: " + s.message());
    Box inter;
    if (!Intersect(piece.box, plan->box, &inter)) continue;
    piece.key = EncodeTensorNameSlice(request.key, slice);
    auto sit = entries_.find(piece.key);
    if (sit == entries_.end()) {
      return DataLoss("Slice " + SliceString(slice) + " of " + what + " is listed but its entry is missing");
    }
    piece.entry = &sit->second;
    if (piece.entry->dtype != full.dtype || piece.entry->shape != piece.box.length) {
      return DataLoss("Slice " + SliceString(slice) + " of " + what + " has dtype " +
                      DataTypeName(piece.entry->dtype) + " and shape " + ShapeString(piece.entry->shape) +
                      ", which disagree with the tensor entry");
    }
    uint64_t n;
    SK_RETURN_IF_ERROR(CheckStored(piece.key, *piece.entry, &n));
    for (const ReadPlan::Piece& other : plan->pieces) {
      Box overlap;
      if (Intersect(other.box, piece.box, &overlap)) {
        return DataLoss("Overlapping slices " + SliceString(slice) + " stored for " + what);
      }
    }
    covered += static_cast<uint64_t>(inter.NumElements());
    plan->pieces.push_back(std::move(piece));
  }
  if (covered != plan->num_elements) {
    return DataLoss("Does not have sufficient slices for partitioned " + what + ": requested slice " +
                    ShapeString(plan->box.start) + "+" + ShapeString(plan->box.length) + " is not covered");
  }
  plan->direct = plan->pieces.size() == 1 && SameBox(plan->pieces[0].box, plan->box);
  return Status::OK();
}

void BundleReader::SwapIfBigEndian(int dtype, char* data, uint64_t n) const {
  if ((header_.endianness == kBig) == HostIsBigEndian()) return;
  size_t unit = DataTypeSwapUnit(dtype);
  if (unit <= 1) return;
  for (uint64_t i = 0; i + unit <= n; i += unit) std::reverse(data + i, data + i + unit);
}

Status BundleReader::ChecksumError(const std::string& key, const BundleEntry& entry, const RandomAccessFile& file,
                                   uint32_t actual) {
  return DataLoss(StrCat("Checksum does not match for tensor ", DisplayKey(key), " in ", file.path(),
                         " at offset ", entry.offset, " (size ", entry.size, "): stored crc32c ", Hex32(crc32c::Unmask(entry.crc32c)),
                         ", calculated ", Hex32(actual)));
}

Status BundleReader::ReadNumeric(const std::string& key, const BundleEntry& entry, char* dst) {
  const RandomAccessFile* file;
  SK_RETURN_IF_ERROR(DataFile(key, entry, &file));
  if (entry.size == 0) return Status::OK();
  SK_RETURN_IF_ERROR(file->Read(static_cast<uint64_t>(entry.offset), static_cast<size_t>(entry.size), dst));
  uint32_t actual = crc32c::Value(dst, static_cast<size_t>(entry.size));
  if (actual != crc32c::Unmask(entry.crc32c)) return ChecksumError(key, entry, *file, actual);
  SwapIfBigEndian(entry.dtype, dst, static_cast<uint64_t>(entry.size));
  return Status::OK();
}

Status BundleReader::ParseStrings(const std::string& key, const BundleEntry& entry, std::string* bufp,
                                  uint64_t* start, std::vector<uint64_t>* lengths_out) {
  const RandomAccessFile* file;
  SK_RETURN_IF_ERROR(DataFile(key, entry, &file));
  uint64_t n;
  NumElements(entry.shape, &n);  // validated by CheckStored
  lengths_out->clear();
  bufp->clear();
  *start = 0;
  if (entry.size == 0) return Status::OK();  // only possible with n == 0
  std::string& buf = *bufp;
  buf.resize(static_cast<size_t>(entry.size));
  SK_RETURN_IF_ERROR(file->Read(static_cast<uint64_t>(entry.offset), buf.size(), &buf[0]));
  const bool big = header_.endianness == kBig;
  const std::string what = StrCat("string tensor ", DisplayKey(key), " in ", file->path(), " at offset ",
                                  entry.offset);
  const char* p = buf.data();
  const char* limit = buf.data() + buf.size();
  std::vector<uint64_t>& lengths = *lengths_out;
  lengths.resize(static_cast<size_t>(n));
  uint64_t total = 0;
  uint32_t crc = 0;
  for (uint64_t i = 0; i < n; ++i) {
    p = GetVarint64Ptr(p, limit, &lengths[i]);
    if (p == nullptr || !CheckedAdd(total, lengths[i], &total) || total > buf.size()) {
      return DataLoss(StrCat("Corrupt length of element ", i, " of ", what));
    }
    char fixed[8];
    size_t width = lengths[i] <= 0xffffffffu ? 4 : 8;
    if (width == 4) {
      EncodeFixed32(fixed, static_cast<uint32_t>(lengths[i]));
    } else {
      EncodeFixed64(fixed, lengths[i]);
    }
    if (big) std::reverse(fixed, fixed + width);
    crc = crc32c::Extend(crc, fixed, width);
  }
  if (limit - p < 4) return DataLoss("Truncated length checksum of " + what);
  uint32_t stored = big ? DecodeFixed32BE(p) : DecodeFixed32(p);
  if (crc32c::Unmask(stored) != crc) {
    return DataLoss(StrCat("The length checksum does not match for ", what, ": stored ", Hex32(crc32c::Unmask(stored)),
                           ", calculated ", Hex32(crc)));
  }
  crc = crc32c::Extend(crc, p, 4);
  p += 4;
  if (static_cast<uint64_t>(limit - p) != total) {
    return DataLoss(StrCat("String lengths of ", what, " add up to ", total, " bytes but the entry holds ",
                           limit - p));
  }
  crc = crc32c::Extend(crc, p, static_cast<size_t>(total));
  if (crc != crc32c::Unmask(entry.crc32c)) return ChecksumError(key, entry, *file, crc);
  *start = static_cast<uint64_t>(p - buf.data());
  return Status::OK();
}

Status BundleReader::ReadStrings(const std::string& key, const BundleEntry& entry, std::vector<std::string>* out) {
  std::string buf;
  uint64_t start;
  std::vector<uint64_t> lengths;
  SK_RETURN_IF_ERROR(ParseStrings(key, entry, &buf, &start, &lengths));
  out->resize(lengths.size());
  const char* p = buf.data() + start;
  for (size_t i = 0; i < lengths.size(); ++i) {
    (*out)[i].assign(p, static_cast<size_t>(lengths[i]));
    p += lengths[i];
  }
  return Status::OK();
}

Status BundleReader::CopyPiece(const ReadPlan& plan, const ReadPlan::Piece& piece, char* dst,
                               StringResult* strings) {
  Box region;
  if (!Intersect(piece.box, plan.box, &region)) return Status::OK();
  const BundleEntry& e = *piece.entry;
  if (plan.dtype == DT_STRING) {
    if (SameBox(piece.box, plan.box)) {
      strings->whole = true;
      return ParseStrings(piece.key, e, &strings->blob, &strings->start, &strings->lengths);
    }
    std::vector<std::string> src;
    SK_RETURN_IF_ERROR(ReadStrings(piece.key, e, &src));
    strings->elements.resize(static_cast<size_t>(plan.num_elements));
    ForEachRun(region, piece.box, plan.box, [&](int64_t si, int64_t di, int64_t count) {
      for (int64_t k = 0; k < count; ++k) strings->elements[di + k].swap(src[si + k]);
    });
    return Status::OK();
  }
  const size_t elem = DataTypeSize(plan.dtype);
  if (SameBox(piece.box, plan.box)) return ReadNumeric(piece.key, e, dst);
  std::string tmp(static_cast<size_t>(e.size), '\0');
  SK_RETURN_IF_ERROR(ReadNumeric(piece.key, e, &tmp[0]));
  ForEachRun(region, piece.box, plan.box, [&](int64_t si, int64_t di, int64_t count) {
    std::memcpy(dst + di * elem, tmp.data() + si * elem, count * elem);
  });
  return Status::OK();
}

Status BundleReader::Execute(const std::vector<ReadPlan>& plans, const std::vector<char*>& dst,
                             std::vector<StringResult>* strings) {
  // A task is either one chunk of a large directly-read numeric tensor, or a
  // run of consecutive whole plans (small tensors, strings, slices) grouped up
  // to about kGroupBytes so that 10,000 small tensors are a few hundred tasks,
  // not 10,000 hand-offs to the pool.
  struct Task {
    size_t plan;
    bool chunk;
    uint64_t begin, len;  // chunk: byte range of the tensor; group: len = plans in the run
    uint32_t crc;
  };
  std::vector<Task> tasks;
  strings->resize(plans.size());
  uint64_t group_bytes = 0;
  bool grouping = false;
  for (size_t i = 0; i < plans.size(); ++i) {
    const ReadPlan& plan = plans[i];
    uint64_t stored = 0;
    for (const ReadPlan::Piece& piece : plan.pieces) stored += static_cast<uint64_t>(piece.entry->size);
    if (plan.dtype != DT_STRING && plan.direct && plan.pieces.size() == 1 && stored > kGroupBytes) {
      grouping = false;
      for (uint64_t off = 0; off < stored; off += kReadChunk) {
        tasks.push_back({i, true, off, std::min(kReadChunk, stored - off), 0});
      }
      continue;
    }
    if (!grouping || group_bytes + stored > kGroupBytes || tasks.back().len >= kGroupPlans) {
      tasks.push_back({i, false, 0, 0, 0});
      group_bytes = 0;
      grouping = true;
    }
    tasks.back().len += 1;
    group_bytes += stored;
  }
  SK_RETURN_IF_ERROR(RunParallel(tasks.size(), [&](size_t t) -> Status {
    Task& task = tasks[t];
    if (!task.chunk) {
      for (size_t p = task.plan; p < task.plan + task.len; ++p) {
        for (const ReadPlan::Piece& piece : plans[p].pieces) {
          SK_RETURN_IF_ERROR(CopyPiece(plans[p], piece, dst[p], &(*strings)[p]));
        }
      }
      return Status::OK();
    }
    const ReadPlan& plan = plans[task.plan];
    const ReadPlan::Piece& piece = plan.pieces[0];
    const RandomAccessFile* file;
    SK_RETURN_IF_ERROR(DataFile(piece.key, *piece.entry, &file));
    char* out = dst[task.plan] + task.begin;
    SK_RETURN_IF_ERROR(file->Read(static_cast<uint64_t>(piece.entry->offset) + task.begin, task.len, out));
    task.crc = crc32c::Value(out, task.len);
    SwapIfBigEndian(plan.dtype, out, task.len);
    return Status::OK();
  }));
  // Combine the chunk CRCs of each directly-read tensor and compare.
  for (size_t t = 0; t < tasks.size();) {
    if (!tasks[t].chunk) {
      ++t;
      continue;
    }
    const ReadPlan& plan = plans[tasks[t].plan];
    uint32_t crc = tasks[t].crc;
    size_t u = t + 1;
    for (; u < tasks.size() && tasks[u].chunk && tasks[u].plan == tasks[t].plan; ++u) {
      crc = crc32c::Combine(crc, tasks[u].crc, tasks[u].len);
    }
    const BundleEntry& e = *plan.pieces[0].entry;
    if (crc != crc32c::Unmask(e.crc32c)) {
      const RandomAccessFile* file;
      SK_RETURN_IF_ERROR(DataFile(plan.pieces[0].key, e, &file));
      return ChecksumError(plan.pieces[0].key, e, *file, crc);
    }
    t = u;
  }
  return Status::OK();
}

}  // namespace saverkit
