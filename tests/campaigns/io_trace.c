/* LD_PRELOAD shim that logs the calls that decide durability and atomicity, in order, to the file
 * named by $SAVERKIT_IO_TRACE: one line per call, "<call> <path>[ -> <path>]". fsync/fdatasync
 * (and sync_file_range, which only starts writeback) log the path of their descriptor (from
 * /proc/self/fd); renames log both paths. Used by
 * tests/test_saver_reliability.py to prove the order of fsyncs and renames of a durable save. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static void log_line(const char* call, const char* a, const char* b) {
  const char* out = getenv("SAVERKIT_IO_TRACE");
  if (out == NULL) return;
  pthread_mutex_lock(&mu);
  int fd = ((int (*)(const char*, int, ...))dlsym(RTLD_NEXT, "open"))(out, O_WRONLY | O_APPEND | O_CREAT, 0644);
  if (fd >= 0) {
    char line[8192];
    int n = snprintf(line, sizeof line, "%s %s%s%s\n", call, a, b ? " -> " : "", b ? b : "");
    if (n > 0) (void)!write(fd, line, (size_t)(n < (int)sizeof line ? n : (int)sizeof line - 1));
    close(fd);
  }
  pthread_mutex_unlock(&mu);
}

static void fd_path(int fd, char* buf, size_t n) {
  char link[64];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t got = readlink(link, buf, n - 1);
  buf[got > 0 ? got : 0] = '\0';
}

int fsync(int fd) {
  char p[4096];
  fd_path(fd, p, sizeof p);
  log_line("fsync", p, NULL);
  return ((int (*)(int))dlsym(RTLD_NEXT, "fsync"))(fd);
}

int fdatasync(int fd) {
  char p[4096];
  fd_path(fd, p, sizeof p);
  log_line("fdatasync", p, NULL);
  return ((int (*)(int))dlsym(RTLD_NEXT, "fdatasync"))(fd);
}

int sync_file_range(int fd, off64_t offset, off64_t nbytes, unsigned int flags) {
  char p[4096];
  fd_path(fd, p, sizeof p);
  log_line("sync_file_range", p, NULL);
  return ((int (*)(int, off64_t, off64_t, unsigned int))dlsym(RTLD_NEXT, "sync_file_range"))(fd, offset, nbytes,
                                                                                             flags);
}

int rename(const char* from, const char* to) {
  int r = ((int (*)(const char*, const char*))dlsym(RTLD_NEXT, "rename"))(from, to);
  if (r == 0) log_line("rename", from, to);
  return r;
}

int renameat(int dfrom, const char* from, int dto, const char* to) {
  int r = ((int (*)(int, const char*, int, const char*))dlsym(RTLD_NEXT, "renameat"))(dfrom, from, dto, to);
  if (r == 0) log_line("rename", from, to);
  return r;
}
