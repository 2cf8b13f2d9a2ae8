#include "env.h"

#include "coding.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace saverkit {

namespace {

// The kernel copies a read out of the page cache with `rep movsb`, which on
// some CPUs (the benchmark VM's AMD EPYC among them) runs 3-4x slower when
// the destination is a few bytes ahead of the source within a 4 KiB page
// (they alias: 1-31 bytes ahead measured slow, 0 and 32-4095 not). numpy's
// large arrays start 16 bytes into a page and tensors in data files often
// start on a page, so a whole tensor read straight into its new array copied
// at ~2.5 GB/s instead of ~9 (cold destination, pieces of 256 KiB). Such a
// read goes through a small per-thread buffer placed to alias neither the
// source nor the destination: one more copy, but in user space from a
// cache-hot buffer. On other CPUs (this project's Intel Xeon VMs: 5.6-5.9
// GB/s at 0, 16, 64 or 2048 bytes ahead) the second copy is pure cost (W1
// in-place restore 10.9 -> 8.2 GB/s), so by default only AMD CPUs bounce.
const uint64_t kPage = 4096;
const uint64_t kAliasWindow = 32;      // destination fewer bytes than this ahead of the source: slow
const size_t kBounceMin = 4096;        // smaller reads: not worth the second copy
const size_t kBouncePiece = 256 << 10;  // fits a core's L2 with the destination's lines

bool CpuIsAmd() {
#if defined(__x86_64__) || defined(__i386__)
  unsigned int eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid(0, &eax, &ebx, &ecx, &edx) == 0) return false;
  char vendor[13];
  std::memcpy(vendor, &ebx, 4);
  std::memcpy(vendor + 4, &edx, 4);
  std::memcpy(vendor + 8, &ecx, 4);
  vendor[12] = '\0';
  return std::strcmp(vendor, "AuthenticAMD") == 0 || std::strcmp(vendor, "HygonGenuine") == 0;
#else
  return false;
#endif
}

std::atomic<int> g_read_bounce{-1};  // ReadBounceMode: -1 by the CPU, 0 never, 1 always

bool BounceAliasedReads() {
  const int mode = g_read_bounce.load(std::memory_order_relaxed);
  if (mode >= 0) return mode == 1;
  static const bool amd = CpuIsAmd();
  return amd;
}

bool Aliases(uint64_t from, uint64_t to) {
  const uint64_t ahead = (to - from) & (kPage - 1);
  return ahead != 0 && ahead < kAliasWindow;
}

// A buffer of kBouncePiece bytes at (`offset` + half a page) modulo a page:
// apart from the source in the page cache (page-aligned folios) and, since
// the destination is within kAliasWindow of the source, from it too.
char* BounceBuffer(uint64_t offset) {
  struct Buffer {
    char* base = nullptr;
    ~Buffer() { std::free(base); }
  };
  thread_local Buffer buf;
  if (buf.base == nullptr) {
    buf.base = static_cast<char*>(std::aligned_alloc(kPage, kBouncePiece + kPage));
    if (buf.base == nullptr) return nullptr;
  }
  return buf.base + ((offset + kPage / 2) & (kPage - 1));
}

}  // namespace

void SetReadBounceMode(int mode) { g_read_bounce.store(mode < 0 ? -1 : (mode > 0 ? 1 : 0)); }

bool ReadBounceActive() { return BounceAliasedReads(); }

Status IOError(const std::string& context, int err) {
  std::string msg = context + ": " + std::strerror(err);
  switch (err) {
    case ENOENT:
      return Status(Code::kNotFound, msg);
    case EACCES:
    case EPERM:
    case EROFS:
      return Status(Code::kPermissionDenied, msg);
    case ENOSPC:
    case EFBIG:
    case EDQUOT:
    case ENOMEM:
    case EMFILE:
    case ENFILE:
      return Status(Code::kResourceExhausted, msg);
    case EEXIST:
      return Status(Code::kAlreadyExists, msg);
    case ENAMETOOLONG:
    case EINVAL:
      return Status(Code::kInvalidArgument, msg);
    case EISDIR:
    case ENOTDIR:
    case ENOTEMPTY:
      return Status(Code::kFailedPrecondition, msg);
    default:
      return Status(Code::kUnknown, msg);
  }
}

void MemoryFile::Add(uint64_t offset, const char* data, size_t n, bool borrow) {
  std::lock_guard<std::mutex> lock(mu);
  if (borrow && !segments.empty()) {  // a tensor written in pieces: one segment
    Segment& last = segments.back();
    if (last.borrowed != nullptr && last.offset + last.size == offset && last.borrowed + last.size == data) {
      last.size += n;
      size = std::max(size, offset + n);
      return;
    }
  }
  Segment seg{offset, borrow ? data : nullptr, n, borrow ? std::string() : std::string(data, n)};
  segments.push_back(std::move(seg));
  size = std::max(size, offset + n);
}

void FetchedRanges::Add(uint64_t offset, const char* data, size_t n) {
  std::lock_guard<std::mutex> lock(mu);
  auto& r = ranges[offset];
  if (r.second < n) r = {data, n};
}

void FetchedRanges::Clear() {
  std::lock_guard<std::mutex> lock(mu);
  ranges.clear();
}

const char* FetchedRanges::Find(uint64_t offset, size_t n) {
  std::lock_guard<std::mutex> lock(mu);
  auto it = ranges.upper_bound(offset);
  // Ranges may overlap (two plans reading one payload): try the nearest few.
  for (int tries = 0; tries < 64 && it != ranges.begin(); ++tries) {
    --it;
    if (offset - it->first + n <= it->second.second) return it->second.first + (offset - it->first);
  }
  return nullptr;
}

RandomAccessFile::~RandomAccessFile() {
  if (fd_ >= 0) ::close(fd_);
}

Status RandomAccessFile::Open(const std::string& path) {
  path_ = path;
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) return IOError("Could not open " + path, errno);
  struct stat st;
  if (::fstat(fd_, &st) != 0) return IOError("Could not stat " + path, errno);
  if (S_ISDIR(st.st_mode)) return FailedPrecondition(path + " is a directory, not a checkpoint file");
  size_ = static_cast<uint64_t>(st.st_size);
  return Status::OK();
}

void RandomAccessFile::OpenFetched(const std::string& path, uint64_t size, std::shared_ptr<FetchedRanges> ranges) {
  path_ = path;
  size_ = size;
  fetched_ = std::move(ranges);
}

Status RandomAccessFile::ReadFetched(uint64_t offset, size_t n, char* dst) const {
  if (n == 0) return Status::OK();
  const char* src = fetched_->Find(offset, n);
  if (src == nullptr) {
    return Internal(StrCat("Bytes [", offset, ", ", offset + n, ") of ", path_, " were read but not fetched"));
  }
  std::memcpy(dst, src, n);
  return Status::OK();
}

Status RandomAccessFile::Read(uint64_t offset, size_t n, char* dst) const {
  uint64_t end;
  if (!CheckedAdd(offset, n, &end) || end > size_) {
    return DataLoss(StrCat("Read of ", n, " bytes at offset ", offset, " runs past the end of ", path_,
                           " (", size_, " bytes): file truncated or corrupt"));
  }
  if (fetched_) return ReadFetched(offset, n, dst);
  // No buffer (out of memory): the slow copy.
  const bool bounce = n >= kBounceMin && Aliases(offset, reinterpret_cast<uintptr_t>(dst)) &&
                     BounceAliasedReads() && BounceBuffer(offset) != nullptr;
  while (n > 0) {
    // Large reads are split: some kernels cap a single pread at ~2 GiB.
    size_t want = n > (1u << 30) ? (1u << 30) : n;
    if (bounce) {
      char* b = BounceBuffer(offset);  // placed for this piece's offset (a short read moves it)
      want = std::min(want, kBouncePiece);
      ssize_t got = ::pread(fd_, b, want, static_cast<off_t>(offset));
      if (got < 0) {
        if (errno == EINTR) continue;
        return IOError("Read failed on " + path_, errno);
      }
      if (got == 0) return DataLoss(StrCat("Unexpected end of file in ", path_, " at offset ", offset));
      std::memcpy(dst, b, static_cast<size_t>(got));
      dst += got;
      offset += static_cast<uint64_t>(got);
      n -= static_cast<size_t>(got);
      continue;
    }
    ssize_t got = ::pread(fd_, dst, want, static_cast<off_t>(offset));
    if (got < 0) {
      if (errno == EINTR) continue;
      return IOError("Read failed on " + path_, errno);
    }
    if (got == 0) {
      return DataLoss(StrCat("Unexpected end of file in ", path_, " at offset ", offset));
    }
    dst += got;
    offset += static_cast<uint64_t>(got);
    n -= static_cast<size_t>(got);
  }
  return Status::OK();
}

namespace {

// Drops the first `done` bytes of iov[*k..count): whole entries advance *k,
// a partly transferred one is trimmed.
void AdvanceIov(struct iovec* iov, int count, int* k, size_t done) {
  while (*k < count && done >= iov[*k].iov_len) done -= iov[(*k)++].iov_len;
  if (*k < count && done > 0) {
    iov[*k].iov_base = static_cast<char*>(iov[*k].iov_base) + done;
    iov[*k].iov_len -= done;
  }
}

uint64_t IovBytes(const struct iovec* iov, int count) {
  uint64_t n = 0;
  for (int i = 0; i < count; ++i) n += iov[i].iov_len;
  return n;
}

}  // namespace

Status RandomAccessFile::ReadV(uint64_t offset, struct iovec* iov, int count) const {
  const uint64_t n = IovBytes(iov, count);
  uint64_t end;
  if (!CheckedAdd(offset, n, &end) || end > size_) {
    return DataLoss(StrCat("Read of ", n, " bytes at offset ", offset, " runs past the end of ", path_,
                           " (", size_, " bytes): file truncated or corrupt"));
  }
  if (fetched_) {
    for (int i = 0; i < count; ++i) {
      SK_RETURN_IF_ERROR(ReadFetched(offset, iov[i].iov_len, static_cast<char*>(iov[i].iov_base)));
      offset += iov[i].iov_len;
    }
    return Status::OK();
  }
  int k = 0;
  while (k < count && iov[k].iov_len == 0) ++k;
  while (k < count) {
    ssize_t got = ::preadv(fd_, iov + k, count - k, static_cast<off_t>(offset));
    if (got < 0) {
      if (errno == EINTR) continue;
      return IOError("Read failed on " + path_, errno);
    }
    if (got == 0) return DataLoss(StrCat("Unexpected end of file in ", path_, " at offset ", offset));
    offset += static_cast<uint64_t>(got);
    AdvanceIov(iov, count, &k, static_cast<size_t>(got));
  }
  return Status::OK();
}

WritableFile::~WritableFile() {
  if (fd_ >= 0) ::close(fd_);
}

Status WritableFile::Create(const std::string& path) {
  path_ = path;
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) return IOError("Could not create " + path, errno);
  pos_ = 0;
  return Status::OK();
}

void WritableFile::CreateInMemory(const std::string& path, std::shared_ptr<MemoryFile> memory) {
  path_ = path;
  memory_ = std::move(memory);
  pos_ = 0;
}

Status WritableFile::PWriteVBorrowed(uint64_t offset, struct iovec* iov, int count) const {
  if (!memory_) return PWriteV(offset, iov, count);
  for (int i = 0; i < count; ++i) {
    memory_->Add(offset, static_cast<const char*>(iov[i].iov_base), iov[i].iov_len, /*borrow=*/true);
    offset += iov[i].iov_len;
  }
  return Status::OK();
}

Status WritableFile::PWrite(uint64_t offset, const char* data, size_t n) const {
  if (memory_) {
    memory_->Add(offset, data, n, /*borrow=*/false);
    return Status::OK();
  }
  while (n > 0) {
    size_t want = n > (1u << 30) ? (1u << 30) : n;
    ssize_t put = ::pwrite(fd_, data, want, static_cast<off_t>(offset));
    if (put < 0) {
      if (errno == EINTR) continue;
      return IOError(StrCat("Write of ", n, " bytes at offset ", offset, " failed on ", path_), errno);
    }
    data += put;
    offset += static_cast<uint64_t>(put);
    n -= static_cast<size_t>(put);
  }
  return Status::OK();
}

Status WritableFile::PWriteV(uint64_t offset, struct iovec* iov, int count) const {
  if (memory_) {
    for (int i = 0; i < count; ++i) {
      memory_->Add(offset, static_cast<const char*>(iov[i].iov_base), iov[i].iov_len, /*borrow=*/false);
      offset += iov[i].iov_len;
    }
    return Status::OK();
  }
  int k = 0;
  while (k < count && iov[k].iov_len == 0) ++k;
  while (k < count) {
    ssize_t put = ::pwritev(fd_, iov + k, count - k, static_cast<off_t>(offset));
    if (put < 0) {
      if (errno == EINTR) continue;
      return IOError(StrCat("Write of ", IovBytes(iov + k, count - k), " bytes at offset ", offset, " failed on ",
                            path_), errno);
    }
    if (put == 0) return IOError(StrCat("Write at offset ", offset, " made no progress on ", path_), EIO);
    offset += static_cast<uint64_t>(put);
    AdvanceIov(iov, count, &k, static_cast<size_t>(put));
  }
  return Status::OK();
}

Status WritableFile::Append(const char* data, size_t n) {
  SK_RETURN_IF_ERROR(PWrite(pos_, data, n));
  pos_ += n;
  return Status::OK();
}

Status WritableFile::Reserve(uint64_t total_size) const {
  if (total_size == 0 || memory_) return Status::OK();
  int err = ::posix_fallocate(fd_, 0, static_cast<off_t>(total_size));
  // File systems without fallocate support just skip the early check.
  if (err == 0 || err == EINVAL || err == EOPNOTSUPP) return Status::OK();
  return IOError(StrCat("Could not reserve ", total_size, " bytes for ", path_), err);
}

Status WritableFile::Sync() const {
  if (memory_) return Status::OK();
  if (::fdatasync(fd_) != 0) return IOError("fdatasync failed on " + path_, errno);
  return Status::OK();
}

void WritableFile::StartWriteback(uint64_t offset, uint64_t n) const {
  if (memory_) return;
#if defined(__linux__)
  (void)::sync_file_range(fd_, static_cast<off_t>(offset), static_cast<off_t>(n), SYNC_FILE_RANGE_WRITE);
#else
  (void)offset;
  (void)n;
#endif
}

Status WritableFile::Close() {
  if (fd_ < 0) return Status::OK();
  int r = ::close(fd_);
  fd_ = -1;
  if (r != 0) return IOError("close failed on " + path_, errno);
  return Status::OK();
}

bool FileExists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

bool IsDirectory(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

Status RenameFile(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) return IOError("Could not rename " + from + " to " + to, errno);
  return Status::OK();
}

Status DeleteFile(const std::string& path) {
  if (::unlink(path.c_str()) != 0) return IOError("Could not delete " + path, errno);
  return Status::OK();
}

Status LinkFile(const std::string& from, const std::string& to) {
  if (::link(from.c_str(), to.c_str()) != 0) return IOError("Could not link " + from + " to " + to, errno);
  return Status::OK();
}

Status StatFile(const std::string& path, FileStat* out) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return IOError("Could not stat " + path, errno);
  out->dev = static_cast<uint64_t>(st.st_dev);
  out->ino = static_cast<uint64_t>(st.st_ino);
  out->mtime = static_cast<double>(st.st_mtim.tv_sec) + st.st_mtim.tv_nsec * 1e-9;
  out->ctime = static_cast<double>(st.st_ctim.tv_sec) + st.st_ctim.tv_nsec * 1e-9;
  return Status::OK();
}

Status ListDirectory(const std::string& dir, std::vector<std::string>* names) {
  const std::string path = dir.empty() ? "." : dir;
  DIR* d = ::opendir(path.c_str());
  if (d == nullptr) return IOError("Could not list directory " + path, errno);
  names->clear();
  for (;;) {
    errno = 0;
    struct dirent* e = ::readdir(d);
    if (e == nullptr) break;
    if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
    names->push_back(e->d_name);
  }
  int err = errno;
  ::closedir(d);
  if (err != 0) return IOError("Could not list directory " + path, err);
  return Status::OK();
}

void DeleteDirIfEmpty(const std::string& path) { ::rmdir(path.c_str()); }

Status CreateDirs(const std::string& path) {
  if (path.empty() || IsDirectory(path)) return Status::OK();
  SK_RETURN_IF_ERROR(CreateDirs(Dirname(path)));
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) {
    return IOError("Could not create directory " + path, errno);
  }
  return Status::OK();
}

Status SyncDir(const std::string& dir) {
  int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return IOError("Could not open directory " + dir, errno);
  int r = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (r != 0 && err != EINVAL) return IOError("fsync failed on directory " + dir, err);
  return Status::OK();
}

std::string Dirname(const std::string& path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return "";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

Status ReadWholeFile(const std::string& path, std::string* out) {
  RandomAccessFile f;
  SK_RETURN_IF_ERROR(f.Open(path));
  out->resize(f.size());
  return f.Read(0, f.size(), &(*out)[0]);
}

}  // namespace saverkit
