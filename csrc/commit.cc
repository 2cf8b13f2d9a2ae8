#include "commit.h"

#include <limits.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <set>

#include "bundle_proto.h"
#include "bundle_writer.h"
#include "env.h"
#include "table.h"
#include "temp_names.h"

namespace saverkit {

namespace {

const char kBackupTag[] = ".skprev-";

// --- test hook ----------------------------------------------------------------
// SAVERKIT_TEST_CRASH_AT=commit:<n> ends the process with _exit(137) (no
// cleanup, as after SIGKILL) just before the n-th rename or delete step of the
// commits this process makes, counted from its start. Read once; when unset a
// step costs one load of a static.
int CrashTarget() {
  static const int target = [] {
    const char* v = std::getenv("SAVERKIT_TEST_CRASH_AT");
    if (v == nullptr || std::strncmp(v, "commit:", 7) != 0) return 0;
    char* end = nullptr;
    long n = std::strtol(v + 7, &end, 10);
    return end != v + 7 && *end == '\0' && n > 0 && n < INT_MAX ? static_cast<int>(n) : 0;
  }();
  return target;
}

std::atomic<int> g_commit_steps{0};

void CrashPoint(const char* step) {
  const int target = CrashTarget();
  if (target <= 0 || g_commit_steps.fetch_add(1) + 1 != target) return;
  std::string msg = StrCat("saverkit: SAVERKIT_TEST_CRASH_AT=commit:", target, ": exiting before ", step, "\n");
  ssize_t ignored = ::write(2, msg.data(), msg.size());
  (void)ignored;
  ::_exit(137);
}

// --- names ------------------------------------------------------------------------

// Length of ".data-DDDDD-of-NNNNN" (exactly five digits each) at name[pos..],
// or 0; *count gets NNNNN.
size_t DataSuffixAt(const std::string& name, size_t pos, int* count) {
  static const char kShape[] = ".data-#####-of-#####";
  const size_t n = sizeof(kShape) - 1;
  if (name.size() < pos + n) return 0;
  int value = 0;
  for (size_t i = 0; i < n; ++i) {
    const char c = name[pos + i];
    if (kShape[i] == '#') {
      if (c < '0' || c > '9') return 0;
      if (i >= 15) value = value * 10 + (c - '0');
    } else if (c != kShape[i]) {
      return 0;
    }
  }
  *count = value;
  return n;
}

// Whether name[pos..] is ".skprev-<owner>" with a well-formed owner token.
bool BackupTagAt(const std::string& name, size_t pos, std::string* owner) {
  const size_t n = sizeof(kBackupTag) - 1;
  if (name.compare(pos, n, kBackupTag) != 0) return false;
  OwnerToken parsed;
  *owner = name.substr(pos + n);
  return ParseOwner(*owner, &parsed);
}

struct DataFile {
  std::string path;  // <prefix>.data-SSSSS-of-NNNNN
  int count;         // NNNNN
};

// One owner's backups of a prefix.
struct Backups {
  bool index = false;
  std::vector<std::string> data;  // the final names they were moved from
  double last_change = 0;         // the newest mtime or ctime among them
};

// What of a prefix's directory belongs to it: its data files and backups.
// Names are compared literally: no pattern is built from the prefix, so any
// character in it is just a character.
struct PrefixFiles {
  std::vector<DataFile> data;
  std::map<std::string, Backups> backups;  // by owner
};

std::string Basename(const std::string& prefix) {
  size_t slash = prefix.find_last_of('/');
  return slash == std::string::npos ? prefix : prefix.substr(slash + 1);
}

Status ScanPrefix(const std::string& prefix, bool want_backups, PrefixFiles* out) {
  const std::string base = Basename(prefix);
  std::vector<std::string> names;
  Status s = ListDirectory(Dirname(prefix), &names);
  if (s.code() == Code::kNotFound) return Status::OK();  // no directory: nothing of the prefix exists
  SK_RETURN_IF_ERROR(s);
  static const char kIndex[] = ".index";
  const size_t index_len = sizeof(kIndex) - 1;
  for (const std::string& name : names) {
    if (name.size() <= base.size() || name.compare(0, base.size(), base) != 0) continue;
    const size_t pos = base.size();
    std::string owner;
    int count = 0;
    if (const size_t n = DataSuffixAt(name, pos, &count)) {
      const std::string final_path = prefix + name.substr(pos, n);
      if (name.size() == pos + n) {
        out->data.push_back({final_path, count});
      } else if (want_backups && BackupTagAt(name, pos + n, &owner)) {
        out->backups[owner].data.push_back(final_path);
      } else {
        continue;
      }
    } else if (want_backups && name.compare(pos, index_len, kIndex) == 0 &&
               BackupTagAt(name, pos + index_len, &owner)) {
      out->backups[owner].index = true;
    } else {
      continue;
    }
    if (!owner.empty()) {
      FileStat st;
      if (StatFile(prefix + name.substr(pos), &st).ok()) {
        Backups& b = out->backups[owner];
        // A rename changes a file's ctime, not its mtime: the backup of an
        // old checkpoint keeps that checkpoint's mtime but was made when its
        // ctime says.
        b.last_change = std::max(b.last_change, std::max(st.mtime, st.ctime));
      }
    }
  }
  return Status::OK();
}

Status DeleteIfExists(const std::string& path) {
  Status s = DeleteFile(path);
  return s.code() == Code::kNotFound ? Status::OK() : s;
}

// Moves a backup back to its final name. A merge into one of its own inputs
// keeps such a backup as a second link to a file it renames: when the two
// names are still the same file, dropping the backup name is the restore.
Status PutBack(const std::string& backup, const std::string& final_path) {
  FileStat b, f;
  Status sb = StatFile(backup, &b);
  if (sb.code() == Code::kNotFound) return Status::OK();  // restored already (by a concurrent recovery)
  SK_RETURN_IF_ERROR(sb);
  if (StatFile(final_path, &f).ok() && f.dev == b.dev && f.ino == b.ino) return DeleteIfExists(backup);
  Status s = RenameFile(backup, final_path);
  if (s.code() == Code::kNotFound && !FileExists(backup)) return Status::OK();
  return s;
}

Status ReadShardCount(const std::string& index_path, int* count) {
  RandomAccessFile file;
  SK_RETURN_IF_ERROR(file.Open(index_path));
  Table table;
  SK_RETURN_IF_ERROR(table.Open(&file));
  bool first = true;
  BundleHeader header;
  SK_RETURN_IF_ERROR(table.ForEach([&](const std::string& key, const std::string& value) -> Status {
    if (!first) return Status::OK();
    first = false;
    if (!key.empty()) return DataLoss("Checkpoint index " + index_path + " has no header entry");
    return DecodeHeader(value, "the header of " + index_path, &header);
  }));
  if (first) return DataLoss("Checkpoint index " + index_path + " is empty (no header entry)");
  *count = header.num_shards;
  return Status::OK();
}

// Settles one owner's backups of `prefix`, whoever the owner: the caller has
// decided that nobody else will touch them.
Status SettleBackups(const std::string& prefix, const std::string& owner, const Backups& backups) {
  const std::string index_path = MetaFilename(prefix);
  const std::string tag = kBackupTag + owner;
  if (FileExists(index_path) || !backups.index) {
    // With an index in place, the commit got past its commit point (or had
    // not moved the old index yet): the index matches the data and the
    // backups are garbage. Data backups without an index backup cannot come
    // from the protocol (the index moves first): nothing to restore them to.
    if (backups.index) SK_RETURN_IF_ERROR(DeleteIfExists(index_path + tag));
    for (const std::string& f : backups.data) SK_RETURN_IF_ERROR(DeleteIfExists(f + tag));
    return Status::OK();
  }
  // The commit stopped before its commit point: put the previous checkpoint
  // back, data first, the index last (the invariant holds at every step).
  // An index backup that cannot be read still goes back as it was; then no
  // shard count is known and no data file is deleted.
  int count = 0;
  const bool count_known = ReadShardCount(index_path + tag, &count).ok();
  for (const std::string& f : backups.data) SK_RETURN_IF_ERROR(PutBack(f + tag, f));
  if (count_known) {
    // The new checkpoint's data files that no backup replaced have another
    // shard count than the previous one (a re-save with as many shards as
    // before replaces each old file by name, and every one got a backup).
    // A file with the restored count but no backup is kept: the commit may
    // have stopped while moving the old files, and then it is an old one.
    PrefixFiles now;
    SK_RETURN_IF_ERROR(ScanPrefix(prefix, false, &now));
    for (const DataFile& d : now.data) {
      if (d.count != count) SK_RETURN_IF_ERROR(DeleteIfExists(d.path));
    }
  }
  SK_RETURN_IF_ERROR(SyncDir(Dirname(prefix)));  // rare: always durable
  SK_RETURN_IF_ERROR(PutBack(index_path + tag, index_path));
  return SyncDir(Dirname(prefix));
}

// Commits of one prefix by threads of this process take turns: their backups
// would have the same names.
class PrefixLock {
 public:
  explicit PrefixLock(const std::string& prefix) : prefix_(prefix) {
    std::unique_lock<std::mutex> lock(Mu());
    Cv().wait(lock, [&] { return Held().count(prefix_) == 0; });
    Held().insert(prefix_);
  }
  ~PrefixLock() {
    {
      std::lock_guard<std::mutex> lock(Mu());
      Held().erase(prefix_);
    }
    Cv().notify_all();
  }
  PrefixLock(const PrefixLock&) = delete;
  PrefixLock& operator=(const PrefixLock&) = delete;

 private:
  static std::mutex& Mu() {
    static std::mutex mu;
    return mu;
  }
  static std::condition_variable& Cv() {
    static std::condition_variable cv;
    return cv;
  }
  static std::set<std::string>& Held() {
    static std::set<std::string> held;
    return held;
  }
  std::string prefix_;
};

// A re-save failed before its commit point: put the previous checkpoint back.
Status RollBack(const std::string& prefix, const std::string& owner, const Status& cause) {
  PrefixFiles files;
  Status s = ScanPrefix(prefix, true, &files);
  auto it = files.backups.find(owner);
  if (s.ok() && it != files.backups.end()) s = SettleBackups(prefix, owner, it->second);
  if (s.ok()) return cause;
  return Status(cause.code(), cause.message() + "; putting the previous checkpoint " + prefix +
                                  " back also failed (a later recovery will): " + s.message());
}

Status FirstSave(const std::string& prefix, const std::vector<DataRename>& data, const std::string& index_tmp,
                 bool durable) {
  // Data first: an index that exists always points at complete data.
  for (const DataRename& r : data) {
    if (r.from == r.to) continue;
    CrashPoint("renaming a new data file into place (first save)");
    SK_RETURN_IF_ERROR(RenameFile(r.from, r.to));
  }
  if (durable) SK_RETURN_IF_ERROR(SyncDir(Dirname(prefix)));  // the data's names before the index's
  CrashPoint("renaming the new index into place (first save)");
  SK_RETURN_IF_ERROR(RenameFile(index_tmp, MetaFilename(prefix)));
  if (durable) SK_RETURN_IF_ERROR(SyncDir(Dirname(prefix)));
  return Status::OK();
}

Status Resave(const std::string& prefix, const std::vector<DataRename>& data, const std::string& index_tmp,
              bool durable) {
  const std::string dir = Dirname(prefix);
  const std::string index_path = MetaFilename(prefix);
  const std::string owner = TempOwner();
  const std::string tag = kBackupTag + owner;
  int new_count = 0;
  std::set<std::pair<uint64_t, uint64_t>> sources;  // (device, inode): names may be spelled differently
  for (const DataRename& r : data) {
    FileStat st;
    if (StatFile(r.from, &st).ok()) sources.insert({st.dev, st.ino});
    int count = 0;
    if (r.to.size() > prefix.size() && DataSuffixAt(r.to, prefix.size(), &count)) new_count = count;
  }
  CrashPoint("moving the old index to its backup");
  SK_RETURN_IF_ERROR(RenameFile(index_path, index_path + tag));
  // From here until the new index is in place, the prefix has no index: no
  // reader can pair the old index with new data.
  PrefixFiles old;
  Status s = ScanPrefix(prefix, false, &old);
  if (!s.ok()) return RollBack(prefix, owner, s);
  for (const DataFile& d : old.data) {
    // A merge into one of its own inputs renames an old data file itself:
    // its backup is a second link, so both the rename and the backup work.
    FileStat st;
    const bool is_source = StatFile(d.path, &st).ok() && sources.count({st.dev, st.ino}) > 0;
    CrashPoint("moving an old data file to its backup");
    s = is_source ? LinkFile(d.path, d.path + tag) : RenameFile(d.path, d.path + tag);
    if (!s.ok()) return RollBack(prefix, owner, s);
  }
  if (durable && !(s = SyncDir(dir)).ok()) return RollBack(prefix, owner, s);  // backups before new data
  for (const DataRename& r : data) {
    if (r.from == r.to) continue;
    CrashPoint("renaming a new data file into place");
    s = RenameFile(r.from, r.to);
    if (!s.ok()) return RollBack(prefix, owner, s);
  }
  // Every old data file has a backup, so none should be left; any that is
  // (appeared meanwhile) with another shard count than the new checkpoint's
  // would be a stray beside it.
  PrefixFiles now;
  s = ScanPrefix(prefix, false, &now);
  if (!s.ok()) return RollBack(prefix, owner, s);
  for (const DataFile& d : now.data) {
    if (d.count == new_count) continue;
    CrashPoint("deleting an old data file with another shard count");
    s = DeleteIfExists(d.path);
    if (!s.ok()) return RollBack(prefix, owner, s);
  }
  if (durable && !(s = SyncDir(dir)).ok()) return RollBack(prefix, owner, s);  // the data before the index
  CrashPoint("renaming the new index into place (the commit point)");
  s = RenameFile(index_tmp, index_path);
  if (!s.ok()) return RollBack(prefix, owner, s);
  if (durable) SK_RETURN_IF_ERROR(SyncDir(dir));
  // Committed. A backup left now is deleted by the next recovery once this
  // process is gone; the error still says so.
  auto after_commit = [&](const Status& e) {
    return Status(e.code(), "Checkpoint " + prefix + " was saved, but deleting the previous one's backup failed: " +
                                e.message());
  };
  CrashPoint("deleting the old index's backup");
  s = DeleteIfExists(index_path + tag);
  if (!s.ok()) return after_commit(s);
  for (const DataFile& d : old.data) {
    CrashPoint("deleting an old data file's backup");
    s = DeleteIfExists(d.path + tag);
    if (!s.ok()) return after_commit(s);
  }
  return Status::OK();
}

}  // namespace

Status CommitBundle(const std::string& prefix, const std::vector<DataRename>& data, const std::string& index_tmp,
                    bool durable) {
  PrefixLock lock(prefix);
  SK_RETURN_IF_ERROR(RecoverBundle(prefix));
  if (!FileExists(MetaFilename(prefix))) return FirstSave(prefix, data, index_tmp, durable);
  return Resave(prefix, data, index_tmp, durable);
}

namespace {

double Now() { return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count(); }

}  // namespace

void FindMovedIndex(const std::string& prefix, std::string* live_owner, std::string* stale_backup) {
  live_owner->clear();
  stale_backup->clear();
  PrefixFiles files;
  if (!ScanPrefix(prefix, true, &files).ok()) return;
  const double now = Now();
  for (const auto& kv : files.backups) {
    if (!kv.second.index) continue;
    if (!OwnerIsStale(kv.first, now - kv.second.last_change)) {
      *live_owner = kv.first;
    } else {
      *stale_backup = MetaFilename(prefix) + kBackupTag + kv.first;
    }
  }
}

Status RecoverBundle(const std::string& prefix) {
  PrefixFiles files;
  SK_RETURN_IF_ERROR(ScanPrefix(prefix, true, &files));
  if (files.backups.empty()) return Status::OK();
  const double now = Now();
  for (const auto& kv : files.backups) {
    // A live owner's commit is in flight: its backups are its own business.
    if (!OwnerIsStale(kv.first, now - kv.second.last_change)) continue;
    SK_RETURN_IF_ERROR(SettleBackups(prefix, kv.first, kv.second));
  }
  return Status::OK();
}

}  // namespace saverkit
