// Shared by the fuzz targets: the engine reads real files, so each input is
// written into a private scratch directory (on /dev/shm when available)
// before the engine opens it.
#pragma once

#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "coding.h"
#include "crc32c.h"
#include "table_format.h"

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

// Rewrites every block trailer CRC of an SSTable image (the index block, then each data block its
// handles point at) so mutated contents get past the checksum and reach the parsers behind it
// (block entries, Snappy, the bundle protos). Returns false if the image has no usable footer.
inline bool FixBlockCrcs(std::string* file) {
  using namespace saverkit;
  if (file->size() < kFooterSize) return false;
  Footer footer;
  if (!footer.DecodeFrom(file->data() + file->size() - kFooterSize, "fuzz").ok()) return false;
  auto fix = [&](const BlockHandle& h) -> bool {
    uint64_t end;
    if (__builtin_add_overflow(h.offset, h.size, &end) || end > file->size() - kBlockTrailerSize) return false;
    char* block = &(*file)[h.offset];
    uint32_t crc = crc32c::Extend(crc32c::Value(block, h.size), block + h.size, 1);  // contents + type
    EncodeFixed32(block + h.size + 1, crc32c::Mask(crc));
    return true;
  };
  if (!fix(footer.index)) return false;
  std::string index = file->substr(footer.index.offset, footer.index.size);
  std::vector<BlockHandle> handles;
  (void)ForEachBlockEntry(index, "fuzz", [&](const std::string&, const char* v, size_t n) {
    BlockHandle h;
    const char* p = v;
    if (h.DecodeFrom(&p, v + n)) handles.push_back(h);
    return handles.size() < 64;
  });
  for (const BlockHandle& h : handles) fix(h);
  return true;
}

}  // namespace fuzz
