#include "merge.h"

#include <cstring>
#include <map>
#include <memory>

#include "bundle_proto.h"
#include "bundle_writer.h"
#include "commit.h"
#include "env.h"
#include "table.h"
#include "table_builder.h"
#include "temp_names.h"
#include "tensor_slice.h"

namespace saverkit {

namespace {

struct MergeState {
  bool have_header = false;
  BundleHeader header;  // endianness and version of the first part
  int64_t num_shards = 0;
  std::map<std::string, BundleEntry> entries;
  std::map<std::string, int> data_file_ids;  // input data file -> new shard id
  std::vector<std::string> data_files;       // by new shard id
};

bool SameVersion(const VersionDef& a, const VersionDef& b) {
  return a.producer == b.producer && a.min_consumer == b.min_consumer && a.bad_consumers == b.bad_consumers;
}

// Adds the entries of the index `index` (of bundle `prefix`, named index_path) to `state`.
Status MergeTable(const RandomAccessFile* index, const std::string& prefix, const std::string& index_path,
                  MergeState* state) {
  Table table;
  SK_RETURN_IF_ERROR(table.Open(index));
  BundleHeader header;
  bool first = true;
  // Entries are staged so an empty part can be skipped as a whole.
  std::vector<std::pair<std::string, BundleEntry>> part;
  SK_RETURN_IF_ERROR(table.ForEach([&](const std::string& key, const std::string& value) -> Status {
    if (first) {
      first = false;
      if (!key.empty()) return DataLoss("Checkpoint index " + index_path + " has no header entry");
      return DecodeHeader(value, "the header of " + index_path, &header);
    }
    BundleEntry e;
    SK_RETURN_IF_ERROR(DecodeEntry(value, "tensor " + PrintableKey(key) + " in " + index_path, &e));
    part.emplace_back(key, std::move(e));
    return Status::OK();
  }));
  if (first) return DataLoss("Checkpoint index " + index_path + " is empty (no header entry)");
  if (header.num_shards <= 0) {
    return DataLoss(StrCat("Checkpoint index ", index_path, " header has invalid num_shards ", header.num_shards));
  }
  if (!state->have_header) {
    state->have_header = true;
    state->header = header;
  } else {
    if (header.endianness != state->header.endianness) {
      return InvalidArgument("Merging bundles with conflicting endianness; inputs corrupted? (" + prefix + ")");
    }
    if (!SameVersion(header.version, state->header.version)) {
      return InvalidArgument("Merging bundles with different format versions (" + prefix + ")");
    }
  }
  // A part without tensors has a data file that no entry names; counting its
  // shards (as TF does) would give a header that disagrees with the files.
  if (part.empty()) return Status::OK();
  state->num_shards += header.num_shards;
  for (auto& kv : part) {
    const std::string& key = kv.first;
    BundleEntry& e = kv.second;
    auto it = state->entries.find(key);
    if (it != state->entries.end()) {
      if (it->second.slices.empty() || e.slices.empty()) {
        return InvalidArgument("Duplicate tensor keyed by " + PrintableKey(key) +
                               " encountered, when merging prefix: " + prefix);
      }
      if (it->second.dtype != e.dtype || it->second.shape != e.shape) {
        return FailedPrecondition("Conflicting dtype or shape for partitioned tensor " + PrintableKey(key) +
                                  " when merging prefix: " + prefix);
      }
      for (const TensorSliceProto& s : e.slices) it->second.slices.push_back(s);
      continue;
    }
    std::string data_path = DataFilename(prefix, e.shard_id, header.num_shards);
    auto fit = state->data_file_ids.find(data_path);
    if (fit == state->data_file_ids.end()) {
      fit = state->data_file_ids.emplace(data_path, static_cast<int>(state->data_files.size())).first;
      state->data_files.push_back(data_path);
    }
    e.shard_id = fit->second;
    state->entries.emplace(key, std::move(e));
  }
  return Status::OK();
}

Status MergeOne(const std::string& prefix, MergeState* state) {
  const std::string index_path = MetaFilename(prefix);
  RandomAccessFile index;
  SK_RETURN_IF_ERROR(index.Open(index_path));
  return MergeTable(&index, prefix, index_path, state);
}

// The merged index: the first part's header with `num_shards`, then every entry in key order.
Status WriteMergedIndex(const MergeState& state, int64_t num_shards, WritableFile* file) {
  TableBuilder table(file);
  BundleHeader header = state.header;
  header.num_shards = static_cast<int32_t>(num_shards);
  std::string value;
  EncodeHeader(header, &value);
  SK_RETURN_IF_ERROR(table.Add("", value));
  for (const auto& kv : state.entries) {
    value.clear();
    EncodeEntry(kv.second, &value);
    SK_RETURN_IF_ERROR(table.Add(kv.first, value));
  }
  return table.Finish();
}

}  // namespace

Status MergeIndexes(const std::vector<std::string>& indexes, const std::string& merged_prefix, int64_t num_shards,
                    std::string* merged, std::vector<int>* part_shards) {
  if (indexes.empty()) return InvalidArgument("merge_indexes: no index to merge into " + merged_prefix);
  MergeState state;
  std::vector<std::string> part_prefixes;
  for (size_t i = 0; i < indexes.size(); ++i) {
    // Each part is named for its errors and so its data file maps to one new shard id.
    part_prefixes.push_back(StrCat(merged_prefix, " (part ", i, ")"));
    auto ranges = std::make_shared<FetchedRanges>();
    ranges->Add(0, indexes[i].data(), indexes[i].size());
    RandomAccessFile file;
    file.OpenFetched(MetaFilename(part_prefixes.back()), indexes[i].size(), ranges);
    SK_RETURN_IF_ERROR(MergeTable(&file, part_prefixes.back(), MetaFilename(part_prefixes.back()), &state));
  }
  const int64_t total_files = static_cast<int64_t>(state.data_files.size());
  if (total_files != state.num_shards) {
    return InvalidArgument(StrCat("merge_indexes: the parts of ", merged_prefix,
                                  " must be single-shard bundles (", total_files, " data files, ", state.num_shards,
                                  " shards)"));
  }
  if (num_shards == 0) num_shards = total_files;
  if (num_shards < total_files || num_shards > 99999) {
    return InvalidArgument(StrCat("merge_indexes: ", merged_prefix, " has ", total_files,
                                  " non-empty parts; num_shards ", num_shards, " is out of range"));
  }
  part_shards->assign(indexes.size(), -1);
  for (size_t i = 0; i < indexes.size(); ++i) {
    auto it = state.data_file_ids.find(DataFilename(part_prefixes[i], 0, 1));
    if (it != state.data_file_ids.end()) (*part_shards)[i] = it->second;
  }
  auto memory = std::make_shared<MemoryFile>();
  WritableFile file;
  file.CreateInMemory(MetaFilename(merged_prefix), memory);
  SK_RETURN_IF_ERROR(WriteMergedIndex(state, num_shards, &file));
  SK_RETURN_IF_ERROR(file.Close());
  merged->assign(memory->size, '\0');
  for (const auto& seg : memory->segments) std::memcpy(&(*merged)[seg.offset], seg.data(), seg.size);
  return Status::OK();
}

Status MergeBundles(const std::vector<std::string>& prefixes, const std::string& merged_prefix,
                    bool delete_old_dirs, bool allow_missing_files, bool durable) {
  SK_RETURN_IF_ERROR(CreateDirs(Dirname(merged_prefix)));
  MergeState state;
  bool any_exists = false;
  for (const std::string& prefix : prefixes) {
    if (!FileExists(MetaFilename(prefix))) {
      if (allow_missing_files) continue;
      return NotFound("Cannot merge checkpoint " + prefix + ": " + MetaFilename(prefix) + " does not exist");
    }
    any_exists = true;
    SK_RETURN_IF_ERROR(MergeOne(prefix, &state));
  }
  if (!any_exists) {
    return InvalidArgument("At least one prefix checkpoint file must exist, but none existed (merging into " +
                           merged_prefix + ")");
  }
  const int total_files = static_cast<int>(state.data_files.size());
  std::vector<DataRename> renames;
  for (int id = 0; id < total_files; ++id) {
    renames.push_back({state.data_files[id], DataFilename(merged_prefix, id, total_files)});
  }
  // The merged index is written under a temporary name first; CommitBundle
  // then renames the data files and the index into place.
  const std::string index_path = MetaFilename(merged_prefix);
  const std::string tmp = TempFilename(index_path);
  {
    WritableFile file;
    SK_RETURN_IF_ERROR(file.Create(tmp));
    Status s = [&]() -> Status {
      SK_RETURN_IF_ERROR(WriteMergedIndex(state, state.num_shards, &file));
      if (durable) SK_RETURN_IF_ERROR(file.Sync());
      return file.Close();
    }();
    if (!s.ok()) {
      DeleteFile(tmp);
      return s;
    }
  }
  Status s = CommitBundle(merged_prefix, renames, tmp, durable);
  if (!s.ok()) {
    DeleteFile(tmp);
    return s;
  }
  // Best-effort cleanup of the inputs, as TF does.
  for (const std::string& prefix : prefixes) {
    if (MetaFilename(prefix) != index_path) DeleteFile(MetaFilename(prefix));
    if (delete_old_dirs) DeleteDirIfEmpty(Dirname(prefix));
  }
  return Status::OK();
}

}  // namespace saverkit
