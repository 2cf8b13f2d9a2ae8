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

}  // namespace saverkit
