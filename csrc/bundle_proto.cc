#include "bundle_proto.h"

#include "coding.h"

namespace saverkit {
namespace {

enum WireType { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

void PutTag(std::string* out, int field, WireType wt) { PutVarint32(out, (uint32_t(field) << 3) | wt); }

void PutVarintField(std::string* out, int field, uint64_t v) {
  PutTag(out, field, kVarint);
  PutVarint64(out, v);
}

// int32/int64 fields: negative values are sign-extended to 10 bytes.
void PutIntField(std::string* out, int field, int64_t v) { PutVarintField(out, field, static_cast<uint64_t>(v)); }

void PutMessageField(std::string* out, int field, const std::string& body) {
  PutTag(out, field, kLengthDelimited);
  PutVarint64(out, body.size());
  out->append(body);
}

// One field at a time, every length checked against the buffer.
class ProtoReader {
 public:
  ProtoReader(const char* data, size_t n) : p_(data), limit_(data + n) {}
  bool done() const { return p_ >= limit_; }

  // Returns false on malformed input.
  bool Next(uint32_t* field, int* wire, uint64_t* value, const char** data, size_t* len) {
    uint64_t tag;
    p_ = GetVarint64Ptr(p_, limit_, &tag);
    if (p_ == nullptr || tag > 0xffffffffu) return false;
    *field = static_cast<uint32_t>(tag >> 3);
    *wire = static_cast<int>(tag & 7);
    if (*field == 0) return false;
    switch (*wire) {
      case kVarint:
        p_ = GetVarint64Ptr(p_, limit_, value);
        return p_ != nullptr;
      case kFixed64:
        if (limit_ - p_ < 8) return false;
        *value = DecodeFixed64(p_);
        p_ += 8;
        return true;
      case kFixed32:
        if (limit_ - p_ < 4) return false;
        *value = DecodeFixed32(p_);
        p_ += 4;
        return true;
      case kLengthDelimited: {
        uint64_t n;
        p_ = GetVarint64Ptr(p_, limit_, &n);
        if (p_ == nullptr || n > static_cast<uint64_t>(limit_ - p_)) return false;
        *data = p_;
        *len = static_cast<size_t>(n);
        p_ += n;
        return true;
      }
      default:
        return false;  // groups are not used by these messages
    }
  }

 private:
  const char* p_;
  const char* limit_;
};

Status Corrupt(const std::string& message, const std::string& what) {
  return DataLoss("Corrupt " + message + " for " + what);
}

void EncodeShape(const std::vector<int64_t>& shape, std::string* out) {
  for (int64_t d : shape) {
    std::string dim;
    if (d != 0) PutIntField(&dim, 1, d);
    PutMessageField(out, 2, dim);
  }
}

Status DecodeShape(const char* data, size_t n, const std::string& what, std::vector<int64_t>* shape) {
  ProtoReader r(data, n);
  shape->clear();
  while (!r.done()) {
    uint32_t field;
    int wire;
    uint64_t v = 0;
    const char* d = nullptr;
    size_t len = 0;
    if (!r.Next(&field, &wire, &v, &d, &len)) return Corrupt("TensorShapeProto", what);
    if (field == 2 && wire == kLengthDelimited) {
      int64_t size = 0;
      ProtoReader dr(d, len);
      while (!dr.done()) {
        uint32_t f2;
        int w2;
        uint64_t v2 = 0;
        const char* d2;
        size_t l2;
        if (!dr.Next(&f2, &w2, &v2, &d2, &l2)) return Corrupt("TensorShapeProto.Dim", what);
        if (f2 == 1 && w2 == kVarint) size = static_cast<int64_t>(v2);
      }
      shape->push_back(size);
    } else if (field == 3 && wire == kVarint && v != 0) {
      return DataLoss("Tensor shape of unknown rank stored for " + what);
    }
  }
  return Status::OK();
}

void EncodeVersion(const VersionDef& v, std::string* out) {
  if (v.producer != 0) PutIntField(out, 1, v.producer);
  if (v.min_consumer != 0) PutIntField(out, 2, v.min_consumer);
  if (!v.bad_consumers.empty()) {
    std::string packed;
    for (int32_t b : v.bad_consumers) PutVarint64(&packed, static_cast<uint64_t>(static_cast<int64_t>(b)));
    PutMessageField(out, 3, packed);
  }
}

Status DecodeVersion(const char* data, size_t n, const std::string& what, VersionDef* v) {
  ProtoReader r(data, n);
  while (!r.done()) {
    uint32_t field;
    int wire;
    uint64_t val = 0;
    const char* d = nullptr;
    size_t len = 0;
    if (!r.Next(&field, &wire, &val, &d, &len)) return Corrupt("VersionDef", what);
    if (field == 1 && wire == kVarint) v->producer = static_cast<int32_t>(val);
    if (field == 2 && wire == kVarint) v->min_consumer = static_cast<int32_t>(val);
    if (field == 3 && wire == kVarint) v->bad_consumers.push_back(static_cast<int32_t>(val));
    if (field == 3 && wire == kLengthDelimited) {  // packed
      const char* p = d;
      const char* limit = d + len;
      while (p < limit) {
        uint64_t b;
        p = GetVarint64Ptr(p, limit, &b);
        if (p == nullptr) return Corrupt("VersionDef.bad_consumers", what);
        v->bad_consumers.push_back(static_cast<int32_t>(b));
      }
    }
  }
  return Status::OK();
}

}  // namespace

void EncodeSlice(const TensorSliceProto& s, std::string* out) {
  for (const SliceExtent& e : s.extents) {
    std::string ext;
    if (e.start != 0) PutIntField(&ext, 1, e.start);
    if (e.has_length) PutIntField(&ext, 2, e.length);  // oneof member: emitted even when 0
    PutMessageField(out, 1, ext);
  }
}

Status DecodeSlice(const char* data, size_t n, const std::string& what, TensorSliceProto* s) {
  ProtoReader r(data, n);
  s->extents.clear();
  while (!r.done()) {
    uint32_t field;
    int wire;
    uint64_t v = 0;
    const char* d = nullptr;
    size_t len = 0;
    if (!r.Next(&field, &wire, &v, &d, &len)) return Corrupt("TensorSliceProto", what);
    if (field != 1 || wire != kLengthDelimited) continue;
    SliceExtent e;
    ProtoReader er(d, len);
    while (!er.done()) {
      uint32_t f2;
      int w2;
      uint64_t v2 = 0;
      const char* d2;
      size_t l2;
      if (!er.Next(&f2, &w2, &v2, &d2, &l2)) return Corrupt("TensorSliceProto.Extent", what);
      if (f2 == 1 && w2 == kVarint) e.start = static_cast<int64_t>(v2);
      if (f2 == 2 && w2 == kVarint) {
        e.has_length = true;
        e.length = static_cast<int64_t>(v2);
      }
    }
    s->extents.push_back(e);
  }
  return Status::OK();
}

void EncodeHeader(const BundleHeader& h, std::string* out) {
  if (h.num_shards != 0) PutIntField(out, 1, h.num_shards);
  if (h.endianness != 0) PutIntField(out, 2, h.endianness);
  std::string version;
  EncodeVersion(h.version, &version);
  PutMessageField(out, 3, version);
}

Status DecodeHeader(const std::string& bytes, const std::string& what, BundleHeader* h) {
  ProtoReader r(bytes.data(), bytes.size());
  *h = BundleHeader();
  while (!r.done()) {
    uint32_t field;
    int wire;
    uint64_t v = 0;
    const char* d = nullptr;
    size_t len = 0;
    if (!r.Next(&field, &wire, &v, &d, &len)) return Corrupt("BundleHeaderProto", what);
    if (field == 1 && wire == kVarint) h->num_shards = static_cast<int32_t>(v);
    if (field == 2 && wire == kVarint) h->endianness = static_cast<int32_t>(v);
    if (field == 3 && wire == kLengthDelimited) {
      h->has_version = true;
      SK_RETURN_IF_ERROR(DecodeVersion(d, len, what, &h->version));
    }
  }
  return Status::OK();
}

void EncodeEntry(const BundleEntry& e, std::string* out) {
  if (e.dtype != 0) PutIntField(out, 1, e.dtype);
  std::string shape;
  EncodeShape(e.shape, &shape);
  PutMessageField(out, 2, shape);  // always present, even for scalars
  if (e.shard_id != 0) PutIntField(out, 3, e.shard_id);
  if (e.offset != 0) PutIntField(out, 4, e.offset);
  if (e.size != 0) PutIntField(out, 5, e.size);
  if (e.crc32c != 0) {
    PutTag(out, 6, kFixed32);
    PutFixed32(out, e.crc32c);
  }
  for (const TensorSliceProto& s : e.slices) {
    std::string slice;
    EncodeSlice(s, &slice);
    PutMessageField(out, 7, slice);
  }
}

Status DecodeEntry(const std::string& bytes, const std::string& what, BundleEntry* e) {
  ProtoReader r(bytes.data(), bytes.size());
  *e = BundleEntry();
  while (!r.done()) {
    uint32_t field;
    int wire;
    uint64_t v = 0;
    const char* d = nullptr;
    size_t len = 0;
    if (!r.Next(&field, &wire, &v, &d, &len)) return Corrupt("BundleEntryProto", what);
    switch (field) {
      case 1:
        if (wire == kVarint) e->dtype = static_cast<int32_t>(v);
        break;
      case 2:
        if (wire == kLengthDelimited) SK_RETURN_IF_ERROR(DecodeShape(d, len, what, &e->shape));
        break;
      case 3:
        if (wire == kVarint) e->shard_id = static_cast<int32_t>(v);
        break;
      case 4:
        if (wire == kVarint) e->offset = static_cast<int64_t>(v);
        break;
      case 5:
        if (wire == kVarint) e->size = static_cast<int64_t>(v);
        break;
      case 6:
        if (wire == kFixed32) e->crc32c = static_cast<uint32_t>(v);
        break;
      case 7:
        if (wire == kLengthDelimited) {
          e->slices.emplace_back();
          SK_RETURN_IF_ERROR(DecodeSlice(d, len, what, &e->slices.back()));
        }
        break;
      default:
        break;  // unknown fields are skipped, as protobuf does
    }
  }
  return Status::OK();
}

}  // namespace saverkit
