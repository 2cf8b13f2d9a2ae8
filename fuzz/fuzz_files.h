// Shared by the fuzz targets: the engine reads real files, so each input is
// written into a private scratch directory (on /dev/shm when available)
// before the engine opens it.
#pragma once

#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <string>

namespace fuzz {

inline const std::string& ScratchDir() {
  static std::string dir = [] {
    const char* base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    std::string tmpl = std::string(base) + "/saverkit-fuzz-XXXXXX";
    if (mkdtemp(&tmpl[0]) == nullptr) abort();
    // Best effort: the directory and the few files in it are removed at exit.
    static std::string keep = tmpl;
    atexit([] { std::string cmd = "rm -rf '" + keep + "'"; (void)!system(cmd.c_str()); });
    return tmpl;
  }();
  return dir;
}

inline void WriteFile(const std::string& path, const uint8_t* data, size_t n) {
  FILE* f = fopen(path.c_str(), "wb");
  if (f == nullptr) abort();
  if (n > 0 && fwrite(data, 1, n, f) != n) abort();
  fclose(f);
}

// Splits an input made by fuzz/make_seeds.py:
//   u32le length | bytes   (repeated; a short length field or length ends it)
// Returns the number of bytes consumed for one chunk, 0 at the end.
inline size_t NextChunk(const uint8_t* data, size_t size, size_t* pos, const uint8_t** chunk, size_t* n) {
  if (*pos + 4 > size) return 0;
  uint32_t len = data[*pos] | (data[*pos + 1] << 8) | (data[*pos + 2] << 16) | (uint32_t(data[*pos + 3]) << 24);
  *pos += 4;
  size_t avail = size - *pos;
  *n = len < avail ? len : avail;
  *chunk = data + *pos;
  *pos += *n;
  return *n + 4;
}

}  // namespace fuzz
