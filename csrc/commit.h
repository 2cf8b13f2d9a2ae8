// Committing a bundle's files into place: the one piece of code that gives a
// checkpoint's data files and index their final names (BundleWriter::Finish
// and MergeBundles both end here), and the recovery of a commit that was
// interrupted.
//
// Invariant: whenever <prefix>.index exists, it matches the data files
// <prefix>.data-SSSSS-of-NNNNN beside it. A first save renames the data into
// place, then the index. A re-save of an existing prefix first moves the old
// index out of the way (to <prefix>.index.skprev-<owner>), so that no reader
// can pair it with new data, then the old data files (each to
// <file>.skprev-<owner>), then renames the new data and the new index into
// place (the commit point) and deletes the backups. A process killed at any
// point leaves either the new checkpoint complete, or backups from which
// RecoverBundle puts the previous checkpoint back under its own name.
#pragma once

#include <string>
#include <vector>

#include "status.h"

namespace saverkit {

struct DataRename {
  std::string from;  // a temporary file or a merged part's data file
  std::string to;    // <prefix>.data-SSSSS-of-NNNNN
};

// Renames `data` and `index_tmp` into place as described above, after settling
// whatever an interrupted earlier commit of `prefix` left (RecoverBundle).
// `durable`: fsync the directory so that the order of the renames survives a
// power loss (the files themselves are the caller's to sync). On an error
// before the commit point the previous checkpoint is put back; the caller
// removes its temporary files.
Status CommitBundle(const std::string& prefix, const std::vector<DataRename>& data, const std::string& index_tmp,
                    bool durable);

// Settles the backups an interrupted re-save of `prefix` left, if their owner
// is gone (OwnerIsStale; a live owner's commit is in flight and is left
// alone): with <prefix>.index in place they are deleted, otherwise the
// previous checkpoint is restored from them. Touches no other name.
Status RecoverBundle(const std::string& prefix);

// For a reader that found no <prefix>.index: whether a re-save has moved it
// aside. *live_owner: the owner token of a commit in flight (the index comes
// back within a few renames); *stale_backup: an index backup whose owner is
// gone (RecoverBundle restores it). Either may be empty.
void FindMovedIndex(const std::string& prefix, std::string* live_owner, std::string* stale_backup);

}  // namespace saverkit
