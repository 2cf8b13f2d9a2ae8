// Thin POSIX file layer: positional reads/writes, atomic renames, fsync, and
// errno -> Status translation that names the file.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "status.h"

namespace saverkit {

Status IOError(const std::string& context, int err);

// Files of a remote checkpoint (saverkit.storage moves the bytes; the engine
// computes). What a writer produced: segments at file offsets, each either
// borrowed (caller memory: the tensors' own buffers, valid while the caller
// keeps them) or owned (copied: string payloads, the index).
struct MemoryFile {
  struct Segment {
    uint64_t offset;
    const char* borrowed;  // null: `owned` holds the bytes
    size_t size;
    std::string owned;
    const char* data() const { return borrowed != nullptr ? borrowed : owned.data(); }
  };
  std::mutex mu;
  std::vector<Segment> segments;  // in write order
  uint64_t size = 0;              // end of the furthest write
  void Add(uint64_t offset, const char* data, size_t n, bool borrow);
};

// Byte ranges of a remote file fetched so far, each in memory the caller
// keeps alive (Python bytes objects held by the binding); reads outside
// them fail (the caller fetches every range a plan reads before executing).
struct FetchedRanges {
  std::mutex mu;
  std::map<uint64_t, std::pair<const char*, size_t>> ranges;  // offset -> bytes
  void Add(uint64_t offset, const char* data, size_t n);
  void Clear();
  // The range holding [offset, offset + n), or null.
  const char* Find(uint64_t offset, size_t n);
};

class RandomAccessFile {
 public:
  RandomAccessFile() = default;
  ~RandomAccessFile();
  RandomAccessFile(const RandomAccessFile&) = delete;
  RandomAccessFile& operator=(const RandomAccessFile&) = delete;

  Status Open(const std::string& path);
  // A remote file of `size` bytes, read from `ranges` (see FetchedRanges).
  void OpenFetched(const std::string& path, uint64_t size, std::shared_ptr<FetchedRanges> ranges);
  // Reads exactly n bytes at offset (pread loop; safe from many threads).
  // A short file is DATA_LOSS naming the file.
  Status Read(uint64_t offset, size_t n, char* dst) const;
  // Reads consecutive bytes at offset into iov[0..count) (a preadv loop;
  // count <= IOV_MAX). Consumes iov (entries are advanced as bytes arrive).
  Status ReadV(uint64_t offset, struct iovec* iov, int count) const;
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  Status ReadFetched(uint64_t offset, size_t n, char* dst) const;
  int fd_ = -1;
  uint64_t size_ = 0;
  std::string path_;
  std::shared_ptr<FetchedRanges> fetched_;
};

class WritableFile {
 public:
  WritableFile() = default;
  ~WritableFile();
  WritableFile(const WritableFile&) = delete;
  WritableFile& operator=(const WritableFile&) = delete;

  Status Create(const std::string& path);
  // Writes go to `memory` instead of a file (remote checkpoints).
  void CreateInMemory(const std::string& path, std::shared_ptr<MemoryFile> memory);
  bool in_memory() const { return memory_ != nullptr; }
  Status Append(const char* data, size_t n);               // at the current end
  Status PWrite(uint64_t offset, const char* data, size_t n) const;  // thread-safe
  // Writes iov[0..count) back to back at offset (a pwritev loop; count <=
  // IOV_MAX). Consumes iov. Thread-safe.
  Status PWriteV(uint64_t offset, struct iovec* iov, int count) const;
  // PWriteV of memory that stays valid and unchanged as long as the caller's
  // tensors do: a file in memory keeps pointers to it rather than copies.
  Status PWriteVBorrowed(uint64_t offset, struct iovec* iov, int count) const;
  Status Reserve(uint64_t total_size) const;               // preallocate; early ENOSPC
  Status Sync() const;                                     // fdatasync
  // Starts writing [offset, offset + n) back to the disk without waiting
  // (sync_file_range; advice: errors surface at Sync).
  void StartWriteback(uint64_t offset, uint64_t n) const;
  Status Close();
  uint64_t position() const { return pos_; }
  const std::string& path() const { return path_; }
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
  uint64_t pos_ = 0;
  std::string path_;
  std::shared_ptr<MemoryFile> memory_;
};

// Whether a read whose destination aliases its page-cache source goes through
// a bounce buffer (see env.cc): -1 decides by the CPU (AMD: yes), 0 never,
// 1 always. For tests and measurements.
void SetReadBounceMode(int mode);
bool ReadBounceActive();

bool FileExists(const std::string& path);
bool IsDirectory(const std::string& path);
Status RenameFile(const std::string& from, const std::string& to);
Status DeleteFile(const std::string& path);
// A second name for a file (hard link); fails if `to` exists.
Status LinkFile(const std::string& from, const std::string& to);
struct FileStat {
  uint64_t dev = 0, ino = 0;
  double mtime = 0, ctime = 0;  // seconds since the epoch
};
Status StatFile(const std::string& path, FileStat* st);  // follows symlinks
// Names of the entries of `dir` ("" is the current directory), without "." and "..".
Status ListDirectory(const std::string& dir, std::vector<std::string>* names);
void DeleteDirIfEmpty(const std::string& path);
Status CreateDirs(const std::string& path);
Status SyncDir(const std::string& dir);
std::string Dirname(const std::string& path);
Status ReadWholeFile(const std::string& path, std::string* out);

}  // namespace saverkit
