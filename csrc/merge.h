// MergeV2Checkpoints: combine the indexes of several single-prefix bundles
// into one prefix, renaming (never copying) their data files. The renames go
// through CommitBundle (commit.h), so merging over an existing checkpoint of
// the same prefix is safe against a crash. `durable`: fdatasync the new index
// and fsync the directory around the renames.
#pragma once

#include <string>
#include <vector>

#include "status.h"

namespace saverkit {

Status MergeBundles(const std::vector<std::string>& prefixes, const std::string& merged_prefix,
                    bool delete_old_dirs, bool allow_missing_files, bool durable = false);

// MergeV2Checkpoints for a remote store (saverkit.storage), in memory: the
// index of `merged_prefix` made from the indexes of single-shard parts, byte
// for byte what MergeBundles writes (parts without tensors contribute no
// shard). `num_shards` (0: the number of non-empty parts) may exceed that
// number: the extra shards are data files that no entry names.
// part_shards[i]: part i's shard id in the merged bundle, -1 for an empty part.
Status MergeIndexes(const std::vector<std::string>& indexes, const std::string& merged_prefix, int64_t num_shards,
                    std::string* merged, std::vector<int>* part_shards);

}  // namespace saverkit
