#include "bundle_reader.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>
#include <unordered_set>

#include <sys/mman.h>
#include <unistd.h>

#include "bundle_writer.h"
#include "commit.h"
#include "coding.h"
#include "crc32c.h"
#include "dtype.h"
#include "page_buffer.h"
#include "thread_pool.h"

namespace saverkit {

namespace {

const uint64_t kReadChunk = 8ull << 20;  // multiple of every swap unit
// A chunk is read and checksummed in pieces that fit in a core's L2 cache.
const uint64_t kCachePiece = 256ull << 10;
// Tensors up to kGroupBytes are read whole, several to a task (at most
// kGroupBytes or kGroupPlans per task); larger ones in kReadChunk pieces.
const uint64_t kGroupBytes = 1ull << 20;
const uint64_t kGroupPlans = 256;
// String elements are read and checksummed in runs of about this many bytes
// per task.
const uint64_t kStringRun = 1ull << 20;
const int kFormatVersion = 1;
// How long Open waits for a re-save of the prefix in flight (commit.h): its
// index is away for a few renames (and directory fsyncs, when durable).
const int kCommitWaitSeconds = 30;
// Checkpoints with up to this many shards have every data file opened with
// the index (a consistent snapshot); beyond, files are opened on first use.
const int kEagerShards = 256;

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

// How a read uses the machine: the one place where a call's parallelism,
// and the pages of the new arrays it fills, are chosen by its work.
//
// Splitting. A batch of several tensors (a restore) already has a task per
// tensor or group of small ones, plus one per 8 MiB chunk of large ones:
// enough to keep every thread busy. A call of fewer tensors than I/O
// threads -- one get_tensor() -- had one task per 8 MiB, so a tensor of up
// to 8 MiB ran on one thread and 10 MiB ran as 8 + 2 MiB. Such a tensor is
// now split evenly over the threads, in parts of at least kMinPart.
// Measured on the 2-core benchmark VM, policies alternating call by call in
// fresh processes, one tensor per call (before -> after): into new arrays
// 1.5 MiB 1.47 -> 1.02 ms, 4 MiB 5.7 -> 4.1 ms, 6 MiB 8.5 -> 4.3 ms, 10 MiB
// 12.6 -> 9.3 ms; into arrays already touched 4 MiB 1.9 -> 1.1 ms, 8 MiB
// 3.7 -> 2.4 ms; CPU time within 10% (1.5 MiB: +15%). The calling thread
// alone was never faster, for new arrays neither (10 MiB: 13.8 ms on one
// thread, 8.0 ms on two, the same CPU time).
//
// Pages. What made a fresh process's get_tensor() loop slow (50 tensors of
// 10 MiB: 0.6-1.2 s, swinging run to run; TF 0.43 s) was not the threads
// but the new arrays' pages: numpy advises huge pages for arrays of 4 MiB
// and more (MADV_HUGEPAGE), and with the kernel's default THP defrag setting
// ("madvise") a huge-page fault may compact memory synchronously, which a
// process that has just started, needing hundreds of MiB, pays at every
// fault. So for such a call the reader advises its own new arrays (never
// touched: `fresh`) back to small pages, as TF's tensors have, and each
// task faults in its part at once (MADV_POPULATE_WRITE, Linux 5.14+) rather
// than a page per 4 KiB during the read. Per call, alternating (numpy's
// pages -> these): 4 MiB 2.96 -> 2.25 ms, 10 MiB 6.0 -> 5.0 ms, 16 MiB 17.2
// -> 8.4 ms, 32 MiB 15.1 -> 15.5 ms, 64 MiB 41.6 -> 35.3 ms; CPU -10..30%.
// Batches keep numpy's pages: a restore repeated in one process (W1: 64 x
// 16 MiB) finds the huge pages the last one freed, and small pages there
// cost 430 ms against 300-430 ms. Arrays the caller passes in are never
// advised.
//
// Placement. Since issue 23's last round a lone tensor of more than
// kGroupBytes read into a new array (get_tensor) goes into a PageBuffer the
// binding maps at the tensor's offset within a page (page_buffer.h): one
// copy out of the page cache at full speed, where numpy's arrays needed the
// bounce buffer of env.cc. Below kSplitBytes it is read on the calling
// thread, front to back, while a helper thread faults its pages in from the
// back (Prefaulter): the reader never waits for a helper, so a busy machine
// that does not schedule the helper in time leaves it no slower than one
// thread; split into parts instead, the caller waited for the part a
// descheduled helper had claimed. Larger tensors are still split.
// Measured on the 2-core VM (500 MiB in 50 tensors, fresh processes, CPU s /
// wall s): see benchmarks/RESULTS.md, issue 23.
const uint64_t kSplitBytes = 64ull << 20;
const uint64_t kMinPart = 512ull << 10;
const uint64_t kPartAlign = 64ull << 10;  // a multiple of every swap unit
const uint64_t kHugePage = 2ull << 20;
const uint64_t kNumpyHugePageMin = 4ull << 20;  // numpy advises huge pages from this size on

struct ReadPolicy {
  uint64_t threads;
  bool few;          // fewer tensors than I/O threads, or one: a get_tensor()
  bool small_pages;  // few, into new arrays: small pages, faulted in per task

  // Bytes per task of a directly read numeric tensor.
  uint64_t ChunkBytes(uint64_t bytes) const {
    uint64_t parts = (bytes + kReadChunk - 1) / kReadChunk;
    if (few) parts = std::max(parts, std::min(threads, bytes / kMinPart));
    parts = std::max<uint64_t>(parts, 1);
    return ((bytes + parts - 1) / parts + kPartAlign - 1) / kPartAlign * kPartAlign;
  }
};

ReadPolicy ChooseReadPolicy(size_t tensors, bool fresh) {
  ReadPolicy p;
  p.threads = static_cast<uint64_t>(GetIoThreads());
  p.few = tensors <= 1 || tensors < p.threads;
  p.small_pages = p.few && fresh;
  return p;
}

// Small pages for a new array numpy advised to huge pages (the whole huge
// pages inside it: only those can be huge). Advice only: a failure changes
// nothing but speed.
void AdviseSmallPages(char* data, uint64_t bytes) {
  if (bytes < kNumpyHugePageMin) return;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + kHugePage - 1) & ~(kHugePage - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + bytes) & ~(kHugePage - 1);
  if (end > begin) (void)madvise(reinterpret_cast<void*>(begin), end - begin, MADV_NOHUGEPAGE);
}

}  // namespace

Status BundleReader::Open(const std::string& prefix) {
  // A re-save of the prefix (commit.h) moves its index aside for a few
  // renames while the data files change: wait for it rather than report a
  // missing checkpoint, and start over if the index was renamed while this
  // reader opened the data files, so that it never pairs an index with
  // another save's data.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(kCommitWaitSeconds);
  int pause_us = 250;
  for (int attempt = 0;; ++attempt) {
    bool again = false;
    Status s = OpenOnce(prefix, attempt, &again);
    if (!again || std::chrono::steady_clock::now() >= deadline) return s;
    std::this_thread::sleep_for(std::chrono::microseconds(pause_us));
    pause_us = std::min(pause_us * 2, 20000);
  }
}

Status BundleReader::OpenOnce(const std::string& prefix, int attempt, bool* again) {
  prefix_ = prefix;
  header_ = BundleHeader();
  {
    std::lock_guard<std::mutex> lock(entries_mu_);
    entries_.clear();
  }
  data_files_.clear();
  index_path_ = MetaFilename(prefix);
  // The index's identity before it is opened and after the data files are:
  // a commit renames it (which changes its ctime, if not its inode) before
  // any data file changes. The index stays open, so later lookups read the
  // same generation whatever happens to the name.
  FileStat before, after;
  index_file_ = std::make_unique<RandomAccessFile>();
  Status s = StatFile(index_path_, &before);
  if (s.ok()) s = index_file_->Open(index_path_);
  if (s.code() == Code::kNotFound) {
    std::string live_owner, stale_backup;
    FindMovedIndex(prefix, &live_owner, &stale_backup);
    std::string msg = "Failed to find a checkpoint at prefix " + prefix + ": " + index_path_ + " does not exist";
    if (!live_owner.empty()) {
      *again = true;
      return NotFound(StrCat(msg, ": a save of it by ", live_owner, " has kept its index moved aside for over ",
                             kCommitWaitSeconds, " s (process stopped?)"));
    }
    if (!stale_backup.empty()) {
      return NotFound(msg + ": an interrupted save left " + stale_backup +
                      ", from which saverkit.bundle.recover_bundle(prefix) restores the previous checkpoint");
    }
    // A save that committed while the directory was listed may have
    // deleted its backup before the listing reached it (and the next one
    // moved the index aside again): look a few more times before believing
    // that nothing is there.
    *again = attempt < 4;
    return NotFound(msg);
  }
  SK_RETURN_IF_ERROR(s);
  SK_RETURN_IF_ERROR(ReadHeader(prefix));
  // The data files are opened now, while they match the index (checked
  // below). One that cannot be opened is tried again, and reported, when a
  // tensor in it is read. Beyond kEagerShards they are opened on first use.
  if (header_.num_shards <= kEagerShards) {
    for (int id = 0; id < header_.num_shards; ++id) {
      auto f = std::make_unique<RandomAccessFile>();
      if (f->Open(DataFilename(prefix, id, header_.num_shards)).ok()) data_files_.emplace(id, std::move(f));
    }
  }
  if (!StatFile(index_path_, &after).ok() || after.dev != before.dev || after.ino != before.ino ||
      after.ctime != before.ctime) {
    *again = true;
    return Status(Code::kUnknown, StrCat("Checkpoint ", prefix, " kept being re-saved while it was opened (for ",
                                         kCommitWaitSeconds, " s)"));
  }
  return Status::OK();
}

Status BundleReader::OpenFetched(const std::string& prefix, std::string index, bool local_data) {
  prefix_ = prefix;
  header_ = BundleHeader();
  remote_ = !local_data;
  index_path_ = MetaFilename(prefix);
  index_bytes_ = std::move(index);
  auto ranges = std::make_shared<FetchedRanges>();
  ranges->Add(0, index_bytes_.data(), index_bytes_.size());
  index_file_ = std::make_unique<RandomAccessFile>();
  index_file_->OpenFetched(index_path_, index_bytes_.size(), ranges);
  return ReadHeader(prefix);
}

void BundleReader::AddFetchedDataFile(int shard_id, uint64_t size) {
  std::lock_guard<std::mutex> lock(files_mu_);
  auto ranges = std::make_shared<FetchedRanges>();
  auto f = std::make_unique<RandomAccessFile>();
  f->OpenFetched(DataFilename(prefix_, shard_id, header_.num_shards), size, ranges);
  data_files_[shard_id] = std::move(f);
  fetched_[shard_id] = ranges;
}

std::shared_ptr<FetchedRanges> BundleReader::Fetched(int shard_id) {
  std::lock_guard<std::mutex> lock(files_mu_);
  auto it = fetched_.find(shard_id);
  return it == fetched_.end() ? nullptr : it->second;
}

Status BundleReader::ReadHeader(const std::string& prefix) {
  SK_RETURN_IF_ERROR(table_.Open(index_file_.get()));
  // The header is the table's first entry, under the empty key.
  bool found;
  std::string key, value;
  SK_RETURN_IF_ERROR(table_.First(&found, &key, &value));
  if (!found) return DataLoss("Checkpoint index " + index_path_ + " is empty (no header entry)");
  if (!key.empty()) return DataLoss("Checkpoint index " + index_path_ + " has no header entry");
  SK_RETURN_IF_ERROR(DecodeHeader(value, "the header of " + index_path_, &header_));
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
    return DataLoss(StrCat("Checkpoint index ", index_path_, " header has invalid num_shards ", header_.num_shards));
  }
  if (header_.endianness != kLittle && header_.endianness != kBig) {
    return DataLoss(StrCat("Checkpoint index ", index_path_, " header has invalid endianness ", header_.endianness));
  }
  return Status::OK();
}

Status BundleReader::DecodeStored(const std::string& key, const std::string& value, BundleEntry* entry) const {
  // Decoding is deterministic, so the message naming the tensor is built by
  // decoding again, only for a bad entry (10,000 of them cost more than
  // decoding itself).
  if (DecodeEntry(value, std::string(), entry).ok()) return Status::OK();
  *entry = BundleEntry();
  return DecodeEntry(value, "tensor " + PrintableKey(key) + " in " + index_path_, entry);
}

Status BundleReader::Lookup(const std::string& key, const std::string** stored_key, const BundleEntry** entry) {
  {
    std::lock_guard<std::mutex> lock(entries_mu_);
    auto it = entries_.find(key);
    if (it != entries_.end()) {
      *stored_key = &it->first;
      *entry = &it->second;
      return Status::OK();
    }
  }
  *stored_key = nullptr;
  *entry = nullptr;
  if (key.empty()) return Status::OK();  // the header, not a tensor
  bool found;
  std::string value;
  SK_RETURN_IF_ERROR(table_.Get(key, &found, &value));
  if (!found) return Status::OK();
  BundleEntry decoded;
  SK_RETURN_IF_ERROR(DecodeStored(key, value, &decoded));
  std::lock_guard<std::mutex> lock(entries_mu_);
  auto it = entries_.emplace(key, std::move(decoded)).first;  // or the copy another thread added meanwhile
  *stored_key = &it->first;
  *entry = &it->second;
  return Status::OK();
}

Status BundleReader::LookupAll(std::vector<std::string_view> keys) {
  {
    std::lock_guard<std::mutex> lock(entries_mu_);
    keys.erase(std::remove_if(keys.begin(), keys.end(),
                              [&](std::string_view k) { return k.empty() || entries_.count(std::string(k)) > 0; }),
               keys.end());
  }
  // Grouped by the block that can hold them, with a counting sort (blocks
  // are few: a full sort of 10,000 names cost more than the lookups).
  const size_t blocks = table_.num_blocks();
  std::vector<uint32_t> block_of(keys.size());
  std::vector<size_t> start(blocks + 2, 0);
  for (size_t i = 0; i < keys.size(); ++i) {
    block_of[i] = static_cast<uint32_t>(table_.BlockFor(keys[i]));
    ++start[block_of[i] + 1];
  }
  for (size_t b = 1; b < start.size(); ++b) start[b] += start[b - 1];
  std::vector<std::string_view> grouped(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) grouped[start[block_of[i]]++] = keys[i];
  // start[b] is now where group b ends.
  std::vector<std::string_view> group;
  size_t begin = 0;
  for (size_t b = 0; b < blocks; ++b) {
    group.assign(grouped.begin() + begin, grouped.begin() + start[b]);
    begin = start[b];
    if (group.empty()) continue;
    if (!std::is_sorted(group.begin(), group.end())) std::sort(group.begin(), group.end());  // usually sorted already
    group.erase(std::unique(group.begin(), group.end()), group.end());
    std::string key, value;
    SK_RETURN_IF_ERROR(table_.GetSorted(b, group, [&](size_t j, const char* v, size_t n) -> Status {
      key.assign(group[j].data(), group[j].size());
      value.assign(v, n);
      BundleEntry decoded;
      SK_RETURN_IF_ERROR(DecodeStored(key, value, &decoded));
      std::lock_guard<std::mutex> lock(entries_mu_);
      entries_.emplace(key, std::move(decoded));
      return Status::OK();
    }));
  }
  return Status::OK();
}

Status BundleReader::ForEachEntry(const std::function<Status(const std::string&, const BundleEntry&)>& fn) const {
  BundleEntry entry;
  return table_.ForEach([&](const std::string& key, const std::string& value) -> Status {
    if (key.empty()) return Status::OK();  // the header: the first key, checked by Open
    entry = BundleEntry();
    SK_RETURN_IF_ERROR(DecodeStored(key, value, &entry));
    return fn(key, entry);
  });
}

Status BundleReader::ListTensors(std::vector<std::pair<std::string, BundleEntry>>* out) const {
  out->clear();
  std::unordered_set<std::string> slice_keys;  // of the partitioned tensors listed
  SK_RETURN_IF_ERROR(ForEachEntry([&](const std::string& key, const BundleEntry& entry) -> Status {
    for (const TensorSliceProto& slice : entry.slices) slice_keys.insert(EncodeTensorNameSlice(key, slice));
    out->emplace_back(key, entry);
    return Status::OK();
  }));
  if (!slice_keys.empty()) {
    out->erase(std::remove_if(out->begin(), out->end(),
                              [&](const std::pair<std::string, BundleEntry>& kv) { return slice_keys.count(kv.first) > 0; }),
               out->end());
  }
  return Status::OK();
}

Status BundleReader::IsSliceKey(const std::string& key, bool* is_slice) {
  *is_slice = false;
  std::string name;
  if (!SliceKeyTensorName(key, &name)) return Status::OK();  // no tensor name starts with a 0 byte
  const std::string* owner_key;
  const BundleEntry* owner;
  SK_RETURN_IF_ERROR(Lookup(name, &owner_key, &owner));
  if (owner == nullptr) return Status::OK();
  for (const TensorSliceProto& slice : owner->slices) {
    if (EncodeTensorNameSlice(name, slice) == key) {
      *is_slice = true;
      break;
    }
  }
  return Status::OK();
}

std::string BundleReader::DisplayKey(const std::string& key) {
  std::string name;
  const std::string* owner_key;
  const BundleEntry* owner;
  // Only messages call this: the owner is looked up again.
  if (SliceKeyTensorName(key, &name) && Lookup(name, &owner_key, &owner).ok() && owner != nullptr) {
    for (const TensorSliceProto& slice : owner->slices) {
      if (EncodeTensorNameSlice(name, slice) == key) return PrintableKey(name) + " (slice " + SliceString(slice) + ")";
    }
  }
  return PrintableKey(key);
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
    Status s = remote_ ? NotFound(path) : f->Open(path);
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
  // Built only for an error: this runs once per tensor of every restore.
  auto what = [&] { return "tensor " + DisplayKey(key) + " in checkpoint " + prefix_; };
  if (entry.dtype == DT_VARIANT) {
    return Unimplemented("Cannot read " + what() + ": DT_VARIANT tensors are opaque TensorFlow objects");
  }
  if (!IsKnownDataType(entry.dtype) || entry.dtype == DT_RESOURCE) {
    return DataLoss("Invalid dtype " + DataTypeName(entry.dtype) + " stored for " + what());
  }
  if (!NumElements(entry.shape, num_elements)) {
    return DataLoss("Invalid shape " + ShapeString(entry.shape) + " stored for " + what());
  }
  const RandomAccessFile* file;
  SK_RETURN_IF_ERROR(DataFile(key, entry, &file));
  uint64_t end;
  if (entry.offset < 0 || entry.size < 0 ||
      !CheckedAdd(static_cast<uint64_t>(entry.offset), static_cast<uint64_t>(entry.size), &end) ||
      end > file->size()) {
    return DataLoss(StrCat("Entry of ", what(), " (offset ", entry.offset, ", size ", entry.size,
                           ") points outside its data file ", file->path(), " (", file->size(),
                           " bytes): truncated or corrupt"));
  }
  const uint64_t size = static_cast<uint64_t>(entry.size);
  if (entry.dtype == DT_STRING) {
    // At least one varint byte per element plus the 4-byte length checksum.
    if (size == 0 ? *num_elements != 0 : (size < 4 || *num_elements > size - 4)) {
      return DataLoss(StrCat("Invalid size ", size, " in bundle entry for string ", what(), " of shape ",
                             ShapeString(entry.shape)));
    }
    return Status::OK();
  }
  uint64_t expected;
  if (!CheckedMul(*num_elements, DataTypeSize(entry.dtype), &expected) || expected != size) {
    return DataLoss(StrCat("Invalid size in bundle entry for ", what(), ": stored size ", size, "; expected size ",
                           expected, " for shape ", ShapeString(entry.shape), " of ", DataTypeName(entry.dtype)));
  }
  return Status::OK();
}

Status BundleReader::Prepare(const ReadRequest& request, ReadPlan* plan) {
  auto not_found = [&] { return NotFound("Key " + PrintableKey(request.key) + " not found in checkpoint " + prefix_); };
  const std::string* stored_key;
  const BundleEntry* found;
  SK_RETURN_IF_ERROR(Lookup(request.key, &stored_key, &found));
  if (found == nullptr) return not_found();
  if (request.key[0] == '\x00') {  // perhaps a stored slice, which is not a tensor of its own
    bool is_slice;
    SK_RETURN_IF_ERROR(IsSliceKey(request.key, &is_slice));
    if (is_slice) return not_found();
  }
  const BundleEntry& full = *found;
  // Built only for an error: this runs once per tensor of every restore.
  auto what = [&] { return "tensor " + PrintableKey(request.key) + " in checkpoint " + prefix_; };
  *plan = ReadPlan();
  plan->key = stored_key;
  plan->entry = &full;
  plan->dtype = full.dtype;
  uint64_t full_elements;
  if (!NumElements(full.shape, &full_elements) || full_elements > (1ull << 62)) {
    return DataLoss("Invalid shape " + ShapeString(full.shape) + " stored for " + what());
  }
  if (!request.has_slice && full.slices.empty()) {  // the common case: no boxes, no pieces
    SK_RETURN_IF_ERROR(CheckStored(request.key, full, &plan->num_elements));
    plan->direct = true;
    return Status::OK();
  }
  auto region = std::make_unique<ReadPlan::Region>();
  Box full_box;
  full_box.start.assign(full.shape.size(), 0);
  full_box.length = full.shape;
  if (request.has_slice) {
    if (request.spec_shape != full.shape) {
      return InvalidArgument("Requested shape " + ShapeString(request.spec_shape) + " of " + what() +
                             " does not match the stored shape " + ShapeString(full.shape));
    }
    SK_RETURN_IF_ERROR(SliceToBox(request.slice, full.shape, what(), &region->box));
  } else {
    region->box = full_box;
  }
  NumElements(region->box.length, &plan->num_elements);

  if (full.slices.empty()) {
    uint64_t n;
    SK_RETURN_IF_ERROR(CheckStored(request.key, full, &n));
    plan->direct = SameBox(region->box, full_box);
    region->pieces.push_back({stored_key, &full, std::move(full_box)});
    plan->region = std::move(region);
    return Status::OK();
  }
  plan->region = std::move(region);
  return PreparePartitioned(request, full, plan);
}

// Partitioned: the stored slices overlapping the request. Linear in the
// slice count but for sorting (32,000 slices compared pairwise took a minute).
Status BundleReader::PreparePartitioned(const ReadRequest& request, const BundleEntry& full, ReadPlan* plan) {
  auto what = [&] { return "tensor " + PrintableKey(request.key) + " in checkpoint " + prefix_; };
  if (full.dtype == DT_VARIANT) return Unimplemented("Cannot read " + what() + ": DT_VARIANT");
  if (!IsKnownDataType(full.dtype) || full.dtype == DT_RESOURCE) {
    return DataLoss("Invalid dtype " + DataTypeName(full.dtype) + " stored for " + what());
  }
  ReadPlan::Region* region = plan->region.get();
  std::vector<ReadPlan::Piece>& pieces = region->pieces;
  std::vector<size_t> slice_of;  // the stored slice each piece is
  uint64_t covered = 0;
  const std::string partitioned = what();  // SliceToBox takes it for each stored slice
  Box box, inter;
  for (size_t j = 0; j < full.slices.size(); ++j) {
    Status s = SliceToBox(full.slices[j], full.shape, partitioned, &box);
    if (!s.ok()) return DataLoss("Corrupt slice entry: " + s.message());
    if (!Intersect(box, region->box, &inter)) continue;
    covered += static_cast<uint64_t>(inter.NumElements());
    pieces.push_back({nullptr, nullptr, box});
    slice_of.push_back(j);
  }
  std::vector<const Box*> boxes(pieces.size());
  for (size_t i = 0; i < pieces.size(); ++i) boxes[i] = &pieces[i].box;
  size_t a, b;
  if (FindOverlap(boxes, &a, &b)) {
    return DataLoss("Overlapping slices " + SliceString(full.slices[slice_of[a]]) + " and " +
                    SliceString(full.slices[slice_of[b]]) + " stored for " + what());
  }
  if (covered != plan->num_elements) {
    return DataLoss("Does not have sufficient slices for partitioned " + what() + ": requested slice " +
                    ShapeString(region->box.start) + "+" + ShapeString(region->box.length) + " is not covered");
  }
  // The slices' entries, looked up in key order (each index block read once).
  std::vector<std::pair<std::string, size_t>> keys(pieces.size());
  for (size_t i = 0; i < pieces.size(); ++i) keys[i] = {EncodeTensorNameSlice(request.key, full.slices[slice_of[i]]), i};
  std::sort(keys.begin(), keys.end());
  for (const auto& k : keys) {
    ReadPlan::Piece& piece = pieces[k.second];
    const TensorSliceProto& slice = full.slices[slice_of[k.second]];
    SK_RETURN_IF_ERROR(Lookup(k.first, &piece.key, &piece.entry));
    if (piece.entry == nullptr) {
      return DataLoss("Slice " + SliceString(slice) + " of " + what() + " is listed but its entry is missing");
    }
    if (piece.entry->dtype != full.dtype || piece.entry->shape != piece.box.length) {
      return DataLoss("Slice " + SliceString(slice) + " of " + what() + " has dtype " +
                      DataTypeName(piece.entry->dtype) + " and shape " + ShapeString(piece.entry->shape) +
                      ", which disagree with the tensor entry");
    }
    uint64_t n;
    SK_RETURN_IF_ERROR(CheckStored(*piece.key, *piece.entry, &n));
  }
  plan->direct = pieces.size() == 1 && SameBox(pieces[0].box, region->box);
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

namespace {

// Reads consecutive small pieces (string elements) with one pread per
// buffer-full and checksums each buffer before copying the pieces out; large
// pieces are read straight into place. Reads run back to back from `offset`.
class ScatterReader {
 public:
  ScatterReader(const RandomAccessFile* file, uint64_t offset, std::string* buf)
      : file_(file), offset_(offset), buf_(buf) {
    if (buf_->size() < kScatterBytes) buf_->resize(kScatterBytes);
    pieces_.reserve(kMaxPieces);
  }

  Status Add(char* dst, size_t n) {
    if (n == 0) return Status::OK();
    if (n >= kScatterBytes / 4) {
      SK_RETURN_IF_ERROR(Flush());
      SK_RETURN_IF_ERROR(file_->Read(offset_, n, dst));
      crc_ = crc32c::Extend(crc_, dst, n);
      offset_ += n;
      return Status::OK();
    }
    if (used_ + n > kScatterBytes || pieces_.size() == kMaxPieces) SK_RETURN_IF_ERROR(Flush());
    pieces_.push_back({dst, n});
    used_ += n;
    return Status::OK();
  }

  Status Flush() {
    if (used_ == 0) return Status::OK();
    SK_RETURN_IF_ERROR(file_->Read(offset_, used_, &(*buf_)[0]));
    crc_ = crc32c::Extend(crc_, buf_->data(), used_);
    const char* p = buf_->data();
    for (const Piece& piece : pieces_) {
      std::memcpy(piece.dst, p, piece.n);
      p += piece.n;
    }
    offset_ += used_;
    used_ = 0;
    pieces_.clear();
    return Status::OK();
  }

  uint32_t crc() const { return crc_; }  // of everything read (after Flush)

 private:
  struct Piece {
    char* dst;
    size_t n;
  };
  static const size_t kScatterBytes = 256 << 10;
  static const size_t kMaxPieces = 4096;
  const RandomAccessFile* file_;
  uint64_t offset_;
  std::string* buf_;
  size_t used_ = 0;
  std::vector<Piece> pieces_;
  uint32_t crc_ = 0;
};

// Reads elements [begin, end) of `r` (whose bytes start at file offset
// `offset`) into dst[begin..end); *crc receives their bytes' CRC.
Status ReadElementRun(const RandomAccessFile* file, const StringResult& r, uint64_t begin, uint64_t end,
                      uint64_t offset, char* const* dst, uint32_t* crc) {
  thread_local std::string scratch;  // one buffer per I/O thread, reused across calls
  ScatterReader in(file, offset, &scratch);
  for (uint64_t j = begin; j < end; ++j) SK_RETURN_IF_ERROR(in.Add(dst[j], static_cast<size_t>(r.lengths[j])));
  SK_RETURN_IF_ERROR(in.Flush());
  *crc = in.crc();
  return Status::OK();
}

}  // namespace

Status BundleReader::ReadStringLengths(const std::string& key, const BundleEntry& entry, StringResult* out) {
  const RandomAccessFile* file;
  SK_RETURN_IF_ERROR(DataFile(key, entry, &file));
  uint64_t n;
  NumElements(entry.shape, &n);  // validated by CheckStored: n <= size - 4
  out->whole = true;
  out->lengths.clear();
  out->data_offset = static_cast<uint64_t>(entry.offset);
  out->crc = 0;
  const uint64_t size = static_cast<uint64_t>(entry.size);
  if (size == 0) return Status::OK();  // only possible with n == 0
  // Built only for an error (naming a slice key looks its owner up).
  auto what = [&] { return StrCat("string tensor ", DisplayKey(key), " in ", file->path(), " at offset ", entry.offset); };
  // Lengths are varints before the length checksum. Most take a byte or
  // two: read that much of the entry first, and more only when needed.
  std::string buf;
  uint64_t have = 0;
  auto read_more = [&](uint64_t want) -> Status {
    want = std::min(size, want);
    buf.resize(static_cast<size_t>(want));
    SK_RETURN_IF_ERROR(file->Read(static_cast<uint64_t>(entry.offset) + have, want - have, &buf[have]));
    have = want;
    return Status::OK();
  };
  SK_RETURN_IF_ERROR(read_more(2 * n + 4 + 64));
  const bool big = header_.endianness == kBig;
  std::vector<uint64_t>& lengths = out->lengths;
  lengths.resize(static_cast<size_t>(n));
  // The checksum hashes lengths as fixed-width integers: laid out in a small
  // buffer, checksummed a buffer-full at a time.
  char fixed[4096];
  size_t fixed_used = 0;
  uint32_t crc = 0;
  uint64_t pos = 0, total = 0;
  for (uint64_t i = 0; i < n; ++i) {
    const char* p = GetVarint64Ptr(buf.data() + pos, buf.data() + have, &lengths[i]);
    if (p == nullptr && have < size && have - pos < 10) {  // the varint runs past what was read
      SK_RETURN_IF_ERROR(read_more(std::max(2 * have, have + 65536)));
      p = GetVarint64Ptr(buf.data() + pos, buf.data() + have, &lengths[i]);
    }
    if (p == nullptr || !CheckedAdd(total, lengths[i], &total) || total > size) {
      return DataLoss(StrCat("Corrupt length of element ", i, " of ", what()));
    }
    pos = static_cast<uint64_t>(p - buf.data());
    if (fixed_used + 8 > sizeof(fixed)) {
      crc = crc32c::Extend(crc, fixed, fixed_used);
      fixed_used = 0;
    }
    char* f = fixed + fixed_used;
    size_t width = lengths[i] <= 0xffffffffu ? 4 : 8;
    if (width == 4) {
      EncodeFixed32(f, static_cast<uint32_t>(lengths[i]));
    } else {
      EncodeFixed64(f, lengths[i]);
    }
    if (big) std::reverse(f, f + width);
    fixed_used += width;
  }
  crc = crc32c::Extend(crc, fixed, fixed_used);
  if (have - pos < 4 && have < size) SK_RETURN_IF_ERROR(read_more(pos + 4));
  if (have - pos < 4) return DataLoss("Truncated length checksum of " + what());
  const char* p = buf.data() + pos;
  uint32_t stored = big ? DecodeFixed32BE(p) : DecodeFixed32(p);
  if (crc32c::Unmask(stored) != crc) {
    return DataLoss(StrCat("The length checksum does not match for ", what(), ": stored ", Hex32(crc32c::Unmask(stored)),
                           ", calculated ", Hex32(crc)));
  }
  out->crc = crc32c::Extend(crc, p, 4);
  pos += 4;
  if (size - pos != total) {
    return DataLoss(StrCat("String lengths of ", what(), " add up to ", total, " bytes but the entry holds ",
                           size - pos));
  }
  out->data_offset = static_cast<uint64_t>(entry.offset) + pos;
  return Status::OK();
}

Status BundleReader::ReadStrings(const std::string& key, const BundleEntry& entry, std::vector<std::string>* out) {
  StringResult r;
  SK_RETURN_IF_ERROR(ReadStringLengths(key, entry, &r));
  const RandomAccessFile* file;
  SK_RETURN_IF_ERROR(DataFile(key, entry, &file));
  out->resize(r.lengths.size());
  std::vector<char*> dst(r.lengths.size());
  for (size_t i = 0; i < r.lengths.size(); ++i) {
    (*out)[i].resize(static_cast<size_t>(r.lengths[i]));
    dst[i] = &(*out)[i][0];
  }
  uint32_t crc;
  SK_RETURN_IF_ERROR(ReadElementRun(file, r, 0, r.lengths.size(), r.data_offset, dst.data(), &crc));
  uint64_t bytes = static_cast<uint64_t>(entry.size) - (r.data_offset - static_cast<uint64_t>(entry.offset));
  crc = crc32c::Combine(r.crc, crc, bytes);
  if (entry.size > 0 && crc != crc32c::Unmask(entry.crc32c)) return ChecksumError(key, entry, *file, crc);
  return Status::OK();
}

Status BundleReader::ReadWhole(const ReadPlan& plan, char* dst, StringResult* strings) {
  if (plan.dtype == DT_STRING) {
    strings->piece = 0;
    return ReadStringLengths(*plan.key, *plan.entry, strings);
  }
  return ReadNumeric(*plan.key, *plan.entry, dst);
}

Status BundleReader::CopyPiece(const ReadPlan& plan, size_t index, char* dst, StringResult* strings) {
  const ReadPlan::Piece& piece = plan.region->pieces[index];
  const Box& want = plan.region->box;
  Box region;
  if (!Intersect(piece.box, want, &region)) return Status::OK();
  const BundleEntry& e = *piece.entry;
  if (plan.dtype == DT_STRING) {
    if (SameBox(piece.box, want)) {
      strings->piece = index;
      return ReadStringLengths(*piece.key, e, strings);
    }
    std::vector<std::string> src;
    SK_RETURN_IF_ERROR(ReadStrings(*piece.key, e, &src));
    strings->elements.resize(static_cast<size_t>(plan.num_elements));
    ForEachRun(region, piece.box, want, [&](int64_t si, int64_t di, int64_t count) {
      for (int64_t k = 0; k < count; ++k) strings->elements[di + k].swap(src[si + k]);
    });
    return Status::OK();
  }
  const size_t elem = DataTypeSize(plan.dtype);
  if (SameBox(piece.box, want)) return ReadNumeric(*piece.key, e, dst);
  if ((header_.endianness == kBig) != HostIsBigEndian() && DataTypeSwapUnit(plan.dtype) > 1) {
    std::unique_ptr<char[]> tmp(new char[static_cast<size_t>(e.size) + 1]);
    SK_RETURN_IF_ERROR(ReadNumeric(*piece.key, e, tmp.get()));
    ForEachRun(region, piece.box, want, [&](int64_t si, int64_t di, int64_t count) {
      std::memcpy(dst + di * elem, tmp.get() + si * elem, count * elem);
    });
    return Status::OK();
  }
  return StreamPiece(*piece.key, e, region, piece.box, want, elem, dst);
}

// The part of a stored slice that a request needs, streamed: the whole piece is read once (its CRC
// covers all of it) in L2-sized pieces, each checksummed while in cache; what the region needs is
// copied out of them, and long runs are read straight into place. No buffer of the piece's size (a
// 256 MiB piece cost a 256 MiB allocation, its page faults and a CRC from DRAM).
Status BundleReader::StreamPiece(const std::string& key, const BundleEntry& e, const Box& region,
                                 const Box& src, const Box& want, size_t elem, char* dst) {
  const RandomAccessFile* file;
  SK_RETURN_IF_ERROR(DataFile(key, e, &file));
  const uint64_t size = static_cast<uint64_t>(e.size);
  const uint64_t base = static_cast<uint64_t>(e.offset);
  thread_local std::string scratch;
  if (scratch.size() < kCachePiece) scratch.resize(kCachePiece);
  char* buf = &scratch[0];
  uint64_t buf_start = 0, buf_len = 0;  // what `buf` holds, in piece bytes
  uint64_t next = 0;                    // first byte not yet read (and checksummed)
  uint32_t crc = 0;
  Status status;
  auto fill = [&]() -> bool {  // the next kCachePiece bytes into buf
    if (next >= size) {  // a run past the piece's end: its box and its size disagree
      status = DataLoss(StrCat("Slice of ", DisplayKey(key), " in ", file->path(), " is shorter than its shape"));
      return false;
    }
    buf_start = next;
    buf_len = std::min<uint64_t>(kCachePiece, size - next);
    status = file->Read(base + next, buf_len, buf);
    if (!status.ok()) return false;
    crc = crc32c::Extend(crc, buf, buf_len);
    next += buf_len;
    return true;
  };
  ForEachRun(region, src, want, [&](int64_t si, int64_t di, int64_t count) {
    if (!status.ok()) return;
    uint64_t b = static_cast<uint64_t>(si) * elem, n = static_cast<uint64_t>(count) * elem;
    char* out = dst + static_cast<uint64_t>(di) * elem;
    while (n > 0) {
      if (b >= buf_start && b < buf_start + buf_len) {  // in the buffer
        const uint64_t m = std::min(n, buf_start + buf_len - b);
        std::memcpy(out, buf + (b - buf_start), m);
        out += m, b += m, n -= m;
      } else if (b == next && n >= kCachePiece) {  // a long run: read in place, checksum while in cache
        const uint64_t m = n - n % kCachePiece;
        for (uint64_t done = 0; done < m; done += kCachePiece) {
          status = file->Read(base + next, kCachePiece, out + done);
          if (!status.ok()) return;
          crc = crc32c::Extend(crc, out + done, kCachePiece);
          next += kCachePiece;
        }
        buf_len = 0;
        out += m, b += m, n -= m;
      } else if (!fill()) {
        return;
      }
    }
  });
  SK_RETURN_IF_ERROR(status);
  while (next < size) {  // the rest of the piece, for its checksum
    if (!fill()) return status;
  }
  if (crc != crc32c::Unmask(e.crc32c)) return ChecksumError(key, e, *file, crc);
  return Status::OK();
}

Status BundleReader::ReadRanges(const std::vector<int>& shards, const std::vector<uint64_t>& offsets,
                               const std::vector<uint64_t>& sizes, const std::vector<char*>& dst,
                               std::vector<uint32_t>* crcs) {
  const size_t n = shards.size();
  if (offsets.size() != n || sizes.size() != n || dst.size() != n) {
    return InvalidArgument("ReadRanges: shards, offsets, sizes and buffers differ in length");
  }
  // Tasks of at most kReadChunk bytes, each read in cache-sized pieces checksummed while in cache.
  struct Task {
    size_t range;
    uint64_t begin, len;  // bytes of the range
    uint32_t crc = 0;
  };
  std::vector<Task> tasks;
  std::vector<const RandomAccessFile*> files(n, nullptr);
  for (size_t i = 0; i < n; ++i) {
    BundleEntry e;
    e.shard_id = shards[i];
    SK_RETURN_IF_ERROR(DataFile(StrCat("bytes of shard ", shards[i]), e, &files[i]));
    uint64_t end;
    if (__builtin_add_overflow(offsets[i], sizes[i], &end) || end > files[i]->size()) {
      return DataLoss(StrCat("Bytes [", offsets[i], ", ", offsets[i] + sizes[i], ") of ", files[i]->path(),
                             " are past its end (", files[i]->size(), " bytes): truncated?"));
    }
    for (uint64_t b = 0; b < sizes[i]; b += kReadChunk) tasks.push_back({i, b, std::min(kReadChunk, sizes[i] - b)});
  }
  Status s = RunParallel(tasks.size(), [&](size_t t) -> Status {
    Task& task = tasks[t];
    const size_t i = task.range;
    thread_local std::string scratch;
    if (dst[i] == nullptr && scratch.size() < kCachePiece) scratch.resize(kCachePiece);
    uint32_t crc = 0;
    for (uint64_t done = 0; done < task.len;) {
      const uint64_t m = std::min<uint64_t>(kCachePiece, task.len - done);
      char* to = dst[i] != nullptr ? dst[i] + task.begin + done : &scratch[0];
      SK_RETURN_IF_ERROR(files[i]->Read(offsets[i] + task.begin + done, m, to));
      crc = crc32c::Extend(crc, to, m);
      done += m;
    }
    task.crc = crc;
    return Status::OK();
  });
  SK_RETURN_IF_ERROR(s);
  crcs->assign(n, 0);
  std::vector<bool> started(n, false);
  for (const Task& task : tasks) {  // in order within each range
    uint32_t& c = (*crcs)[task.range];
    c = started[task.range] ? crc32c::Combine(c, task.crc, task.len) : task.crc;
    started[task.range] = true;
  }
  return Status::OK();
}

Status BundleReader::Execute(const std::vector<ReadPlan>& plans, const std::vector<char*>& dst,
                             std::vector<StringResult>* strings, bool fresh,
                             const std::vector<std::shared_ptr<PageBuffer>>* pages) {
  // A task is one chunk of a large directly-read numeric tensor; a run of
  // consecutive whole plans (small tensors, strings, slices) grouped up to
  // about kGroupBytes, so that 10,000 small tensors are a few hundred tasks,
  // not 10,000 hand-offs to the pool; or a run of the pieces of one numeric
  // plan assembled from many stored slices (they fill disjoint parts of it).
  enum Kind { kChunk, kGroup, kPieces };
  struct Task {
    Kind kind;
    size_t plan;
    uint64_t begin, len;  // chunk: byte range of the tensor; group: plans from `plan`; pieces: piece range
    uint32_t crc;
    bool prefault = false;  // chunk: the whole of a new PageBuffer, its pages faulted in by a helper
  };
  std::vector<Task> tasks;
  // Only calls with string tensors get a result slot per plan (~80 bytes
  // each: 0.8 MB of a 10,000-tensor numeric restore's peak otherwise).
  const bool any_string =
      std::any_of(plans.begin(), plans.end(), [](const ReadPlan& p) { return p.dtype == DT_STRING; });
  strings->clear();
  if (any_string) strings->resize(plans.size());
  const ReadPolicy policy = ChooseReadPolicy(plans.size(), fresh);
  auto page_buffer = [&](size_t i) -> PageBuffer* {
    return pages != nullptr && i < pages->size() ? (*pages)[i].get() : nullptr;
  };
  if (policy.small_pages) {
    for (size_t i = 0; i < plans.size(); ++i) {
      if (plans[i].dtype != DT_STRING && page_buffer(i) == nullptr) {
        AdviseSmallPages(dst[i], plans[i].num_elements * DataTypeSize(plans[i].dtype));
      }
    }
  }
  uint64_t group_bytes = 0;
  bool grouping = false;
  for (size_t i = 0; i < plans.size(); ++i) {
    const ReadPlan& plan = plans[i];
    uint64_t stored = 0;
    if (!plan.region) {
      stored = static_cast<uint64_t>(plan.entry->size);
    } else {
      for (const ReadPlan::Piece& piece : plan.region->pieces) stored += static_cast<uint64_t>(piece.entry->size);
    }
    if (plan.dtype != DT_STRING && plan.direct && stored > kGroupBytes) {
      grouping = false;
      PageBuffer* buffer = page_buffer(i);
      if (buffer != nullptr && buffer->fresh() && stored < kSplitBytes) {
        tasks.push_back({kChunk, i, 0, stored, 0, true});
        continue;
      }
      const uint64_t chunk = policy.ChunkBytes(stored);
      for (uint64_t off = 0; off < stored; off += chunk) {
        tasks.push_back({kChunk, i, off, std::min(chunk, stored - off), 0});
      }
      continue;
    }
    if (plan.dtype != DT_STRING && plan.region && plan.region->pieces.size() > 1 && stored > kGroupBytes) {
      grouping = false;
      uint64_t bytes = 0;
      const std::vector<ReadPlan::Piece>& pieces = plan.region->pieces;
      for (size_t k = 0; k < pieces.size(); ++k) {
        if (k == 0 || bytes >= kGroupBytes) {
          tasks.push_back({kPieces, i, k, 0, 0});
          bytes = 0;
        }
        tasks.back().len += 1;
        bytes += static_cast<uint64_t>(pieces[k].entry->size);
      }
      continue;
    }
    if (!grouping || group_bytes + stored > kGroupBytes || tasks.back().len >= kGroupPlans) {
      tasks.push_back({kGroup, i, 0, 0, 0});
      group_bytes = 0;
      grouping = true;
    }
    tasks.back().len += 1;
    group_bytes += stored;
  }
  auto run = [&](size_t t) -> Status {
    Task& task = tasks[t];
    if (task.kind == kGroup) {
      for (size_t p = task.plan; p < task.plan + task.len; ++p) {
        StringResult* out = any_string ? &(*strings)[p] : nullptr;
        if (!plans[p].region) {
          SK_RETURN_IF_ERROR(ReadWhole(plans[p], dst[p], out));
          continue;
        }
        for (size_t k = 0; k < plans[p].region->pieces.size(); ++k) {
          SK_RETURN_IF_ERROR(CopyPiece(plans[p], k, dst[p], out));
        }
      }
      return Status::OK();
    }
    if (task.kind == kPieces) {
      for (uint64_t k = task.begin; k < task.begin + task.len; ++k) {
        SK_RETURN_IF_ERROR(CopyPiece(plans[task.plan], static_cast<size_t>(k), dst[task.plan], nullptr));
      }
      return Status::OK();
    }
    const ReadPlan& plan = plans[task.plan];
    const BundleEntry& entry = plan.piece_entry(0);  // direct: the only piece
    const RandomAccessFile* file;
    SK_RETURN_IF_ERROR(DataFile(plan.piece_key(0), entry, &file));
    char* out = dst[task.plan] + task.begin;
    const uint64_t at = static_cast<uint64_t>(entry.offset) + task.begin;
    std::unique_ptr<Prefaulter> helper;
    if (task.prefault) {
      helper = std::make_unique<Prefaulter>((*pages)[task.plan]);
    } else if (policy.small_pages) {
      Populate(out, task.len);
    }
    // Checksum each piece right after reading it, while it is still in this
    // core's L2: the CRC then runs at cache speed (~3x its speed from DRAM,
    // where it cost three quarters of the copy when run over whole chunks).
    uint32_t crc = 0;
    for (uint64_t done = 0; done < task.len;) {
      const uint64_t n = std::min(kCachePiece, task.len - done);
      if (helper && !helper->Faulted(done)) Populate(out + done, n);  // unless the helper was there first
      SK_RETURN_IF_ERROR(file->Read(at + done, n, out + done));
      crc = crc32c::Extend(crc, out + done, n);
      done += n;
      if (helper) helper->Advance(done);
    }
    task.crc = crc;
    SwapIfBigEndian(plan.dtype, out, task.len);
    return Status::OK();
  };
  SK_RETURN_IF_ERROR(RunParallel(tasks.size(), run));
  // Combine the chunk CRCs of each directly-read tensor and compare.
  for (size_t t = 0; t < tasks.size();) {
    if (tasks[t].kind != kChunk) {
      ++t;
      continue;
    }
    const ReadPlan& plan = plans[tasks[t].plan];
    uint32_t crc = tasks[t].crc;
    size_t u = t + 1;
    for (; u < tasks.size() && tasks[u].kind == kChunk && tasks[u].plan == tasks[t].plan; ++u) {
      crc = crc32c::Combine(crc, tasks[u].crc, tasks[u].len);
    }
    const BundleEntry& e = plan.piece_entry(0);
    if (crc != crc32c::Unmask(e.crc32c)) {
      const RandomAccessFile* file;
      SK_RETURN_IF_ERROR(DataFile(plan.piece_key(0), e, &file));
      return ChecksumError(plan.piece_key(0), e, *file, crc);
    }
    t = u;
  }
  return Status::OK();
}

Status BundleReader::ReadStringBytes(const std::vector<ReadPlan>& plans, const std::vector<StringResult>& strings,
                                     const std::vector<std::vector<char*>>& dst) {
  if (strings.size() != plans.size() || dst.size() != plans.size()) {
    return Internal("ReadStringBytes: one string result and destination list per plan needed");
  }
  StringByteReader bytes(this);
  for (size_t i = 0; i < plans.size(); ++i) {
    if (!strings[i].whole) continue;
    if (dst[i].size() != strings[i].lengths.size()) return Internal("ReadStringBytes: wrong number of destinations");
    bytes.Start(plans[i], strings[i], dst[i].data());
  }
  return bytes.Finish();
}

void StringByteReader::Start(const ReadPlan& plan, const StringResult& r, char* const* dst) {
  tensors_.push_back({&plan.piece_key(r.piece), &plan.piece_entry(r.piece), &r, {}});
  Tensor& t = tensors_.back();
  // Runs of about kStringRun bytes, one pool task each.
  uint64_t begin = 0, bytes = 0, offset = r.data_offset;
  for (size_t j = 0; j < r.lengths.size(); ++j) {
    bytes += r.lengths[j];
    if (bytes >= kStringRun || j + 1 == r.lengths.size()) {
      t.runs.push_back({begin, j + 1, offset, bytes});
      offset += bytes;
      begin = j + 1;
      bytes = 0;
    }
  }
  BundleReader* reader = reader_;
  const std::string* key = t.key;
  const BundleEntry* entry = t.entry;
  for (Run& run : t.runs) {
    Run* rp = &run;
    tasks_.Schedule([reader, key, entry, &r, rp, dst]() -> Status {
      const RandomAccessFile* file;
      SK_RETURN_IF_ERROR(reader->DataFile(*key, *entry, &file));
      return ReadElementRun(file, r, rp->begin, rp->end, rp->offset, dst, &rp->crc);
    });
  }
}

Status StringByteReader::Finish() {
  SK_RETURN_IF_ERROR(tasks_.Wait());
  // Stitch each tensor's run CRCs onto its header's and compare.
  for (const Tensor& t : tensors_) {
    uint32_t crc = t.result->crc;
    for (const Run& run : t.runs) crc = crc32c::Combine(crc, run.crc, run.bytes);
    if (t.entry->size > 0 && crc != crc32c::Unmask(t.entry->crc32c)) {
      const RandomAccessFile* file;
      SK_RETURN_IF_ERROR(reader_->DataFile(*t.key, *t.entry, &file));
      return reader_->ChecksumError(*t.key, *t.entry, *file, crc);
    }
  }
  return Status::OK();
}

}  // namespace saverkit
