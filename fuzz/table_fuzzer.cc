// libFuzzer target: the whole input is a `.index` file. Opens it as an
// SSTable (footer, index block, every data block with its CRC, Snappy
// blocks) and decodes every entry as the bundle reader would; then does the
// same once more with the block CRCs recomputed (see FixBlockCrcs).
#include <stddef.h>
#include <stdint.h>

#include "bundle_proto.h"
#include "env.h"
#include "fuzz_files.h"
#include "status.h"
#include "table.h"

static void ReadTable(const uint8_t* data, size_t size) {
  using namespace saverkit;
  const std::string path = fuzz::ScratchDir() + "/t.index";
  fuzz::WriteFile(path, data, size);
  RandomAccessFile file;
  if (!file.Open(path).ok()) abort();  // we just wrote it
  Table table;
  if (!table.Open(&file).ok()) return;
  bool first = true;
  Status s = table.ForEach([&](const std::string& key, const std::string& value) -> Status {
    if (first) {
      first = false;
      BundleHeader h;
      return DecodeHeader(value, "header", &h);
    }
    BundleEntry e;
    (void)DecodeEntry(value, "entry", &e);
    return Status::OK();  // keep walking past bad entries: more code to reach
  });
  (void)s;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ReadTable(data, size);
  // Again with every block CRC made valid: the mutation then reaches the block and entry parsers
  // (and Snappy) instead of stopping at the checksum.
  std::string fixed(reinterpret_cast<const char*>(data), size);
  if (fuzz::FixBlockCrcs(&fixed) && fixed.compare(0, size, reinterpret_cast<const char*>(data), size) != 0) {
    ReadTable(reinterpret_cast<const uint8_t*>(fixed.data()), fixed.size());
  }
  return 0;
}
