// MergeV2Checkpoints: combine the indexes of several single-prefix bundles
// into one prefix, renaming (never copying) their data files.
#pragma once

#include <string>
#include <vector>

#include "status.h"

namespace saverkit {

Status MergeBundles(const std::vector<std::string>& prefixes, const std::string& merged_prefix,
                    bool delete_old_dirs, bool allow_missing_files);

}  // namespace saverkit
