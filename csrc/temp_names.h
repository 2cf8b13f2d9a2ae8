// Names of the engine's in-progress files, stamped with the process that owns
// them, so that cleanup and recovery can tell a dead writer's leftovers from a
// live writer's files.
//
//   owner token  <host8>-<pid>-<inc8>
//                host8: FNV-1a 32 of gethostname(), 8 lowercase hex digits
//                pid:   getpid() in decimal (evaluated per call: a forked
//                       child owns its own files)
//                inc8:  8 lowercase hex digits drawn once per load of the
//                       engine: the process's "incarnation"
//   temp file    <path>.sktmp-<owner>-<rand8>    (rand8 fresh per call)
//   backup       <final>.skprev-<owner>          (see commit.h)
#pragma once

#include <string>

namespace saverkit {

// This process's owner token, now.
std::string TempOwner();
// "<path>.sktmp-<owner>-<rand8>": every file the engine writes before renaming
// it into place.
std::string TempFilename(const std::string& path);
// "<final>.skprev-<owner>": where a re-save keeps the previous checkpoint's
// file until the new one is committed.
std::string BackupFilename(const std::string& final_path);

// Parses "<host8>-<pid>-<inc8>" (exactly that: lowercase hex, a decimal pid
// without sign or leading zero, nothing else).
struct OwnerToken {
  std::string host;  // 8 hex digits
  long pid = 0;      // >= 1
  std::string incarnation;  // 8 hex digits
};
bool ParseOwner(const std::string& token, OwnerToken* out);

// Whether the owner of a temp or backup file is certainly gone, so that its
// file may be deleted or recovered. `age_seconds`: how long ago the file last
// changed. A malformed token is never stale (never touched).
bool OwnerIsStale(const std::string& owner, double age_seconds);

}  // namespace saverkit
