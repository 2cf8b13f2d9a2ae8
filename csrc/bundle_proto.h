// Hand-coded encoders/decoders for the few protobuf messages in a bundle
// index (BundleHeaderProto, BundleEntryProto, TensorShapeProto,
// TensorSliceProto, VersionDef). Encoding follows proto3 rules and field
// order exactly so output is byte-identical to TensorFlow's.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "status.h"

namespace saverkit {

struct SliceExtent {
  int64_t start = 0;
  bool has_length = false;  // absent length = the full dimension
  int64_t length = 0;
};

struct TensorSliceProto {
  std::vector<SliceExtent> extents;
};

struct VersionDef {
  int32_t producer = 0;
  int32_t min_consumer = 0;
  std::vector<int32_t> bad_consumers;
};

enum Endianness { kLittle = 0, kBig = 1 };

struct BundleHeader {
  int32_t num_shards = 0;
  int32_t endianness = kLittle;
  bool has_version = false;
  VersionDef version;
};

struct BundleEntry {
  int32_t dtype = 0;
  std::vector<int64_t> shape;
  int32_t shard_id = 0;
  int64_t offset = 0;
  int64_t size = 0;
  uint32_t crc32c = 0;  // masked
  std::vector<TensorSliceProto> slices;
};

void EncodeSlice(const TensorSliceProto& s, std::string* out);
void EncodeHeader(const BundleHeader& h, std::string* out);
void EncodeEntry(const BundleEntry& e, std::string* out);

// Malformed bytes give DATA_LOSS; `what` names the key and file.
Status DecodeSlice(const char* data, size_t n, const std::string& what, TensorSliceProto* s);
Status DecodeHeader(const std::string& bytes, const std::string& what, BundleHeader* h);
Status DecodeEntry(const std::string& bytes, const std::string& what, BundleEntry* e);

}  // namespace saverkit
