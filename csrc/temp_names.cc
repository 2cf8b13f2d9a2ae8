#include "temp_names.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <sys/types.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <random>

namespace saverkit {

namespace {

// Another host's processes cannot be looked up: its temp or backup file is
// taken for dead once it has not changed for this long (a live writer's files
// are minutes old at most: a save renames them into place when it ends).
const double kOtherHostStaleSeconds = 3600;

std::string Hex8(uint32_t v) {
  char buf[9];
  std::snprintf(buf, sizeof(buf), "%08x", v);
  return std::string(buf, 8);
}

// Fresh random bits for names, from any thread. Seeded from the OS and the
// clock so that a forked child (same RNG state as its parent) that draws
// before the parent still differs: its names also carry its own pid anyway.
uint32_t Random32() {
  static std::mutex mu;
  static std::mt19937 rng([] {
    std::random_device rd;
    std::seed_seq seq{rd(), rd(), static_cast<unsigned>(::getpid()),
                      static_cast<unsigned>(std::chrono::steady_clock::now().time_since_epoch().count())};
    return std::mt19937(seq);
  }());
  std::lock_guard<std::mutex> lock(mu);
  return static_cast<uint32_t>(rng());
}

// Drawn once when the engine is loaded: a container restarted after a crash
// often gets the same pid as the process that died in it, and only the
// incarnation then tells the dead writer's files from the new process's own.
const std::string& Incarnation() {
  static const std::string inc = Hex8(Random32());
  return inc;
}
// Fixed at load time, not first use, so every token of this load agrees.
const std::string& g_incarnation_at_load = Incarnation();

std::string HostHash() {
  char name[HOST_NAME_MAX + 1] = {0};
  if (::gethostname(name, sizeof(name) - 1) != 0) name[0] = '\0';
  uint32_t h = 2166136261u;  // FNV-1a, 32 bit
  for (const char* p = name; *p; ++p) {
    h ^= static_cast<unsigned char>(*p);
    h *= 16777619u;
  }
  return Hex8(h);
}

bool IsHex8(const std::string& s) {
  if (s.size() != 8) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace

std::string TempOwner() {
  return HostHash() + "-" + std::to_string(static_cast<long>(::getpid())) + "-" + Incarnation();
}

std::string TempFilename(const std::string& path) {
  return path + ".sktmp-" + TempOwner() + "-" + Hex8(Random32());
}

std::string BackupFilename(const std::string& final_path) { return final_path + ".skprev-" + TempOwner(); }

bool ParseOwner(const std::string& token, OwnerToken* out) {
  // <8 hex>-<pid>-<8 hex>: the host and incarnation have fixed widths, so the
  // pid is whatever lies between.
  if (token.size() < 8 + 1 + 1 + 1 + 8) return false;
  const std::string host = token.substr(0, 8);
  const std::string inc = token.substr(token.size() - 8);
  if (!IsHex8(host) || !IsHex8(inc) || token[8] != '-' || token[token.size() - 9] != '-') return false;
  const std::string pid = token.substr(9, token.size() - 18);
  if (pid.empty() || pid.size() > 10 || pid[0] == '0') return false;
  long value = 0;
  for (char c : pid) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + (c - '0');
  }
  if (value > INT_MAX) return false;  // pid_t is an int
  out->host = host;
  out->pid = value;
  out->incarnation = inc;
  return true;
}

bool OwnerIsStale(const std::string& owner, double age_seconds) {
  OwnerToken t;
  if (!ParseOwner(owner, &t)) return false;  // not a name we made: never touch it
  if (t.host != HostHash()) {
    // Another host (a shared file system): its process table is not ours to
    // look at, so only age can tell. A save renames its files into place
    // within minutes; a file unchanged for an hour belongs to a dead writer.
    return age_seconds > kOtherHostStaleSeconds;
  }
  if (t.pid == static_cast<long>(::getpid())) {
    // Our own pid: ours if it is this incarnation; a different incarnation is
    // a previous process that had the same pid (a restarted container) and is
    // certainly dead, since we hold its pid now.
    return t.incarnation != Incarnation();
  }
  // Another process of this host: dead iff no process has that pid. EPERM
  // means a process exists that we may not signal (another user's): alive.
  // (A recycled pid makes a dead writer look alive: its files are then left
  // alone until that pid goes away, which errs on the safe side.)
  if (::kill(static_cast<pid_t>(t.pid), 0) == 0) return false;
  return errno == ESRCH;
}

}  // namespace saverkit
