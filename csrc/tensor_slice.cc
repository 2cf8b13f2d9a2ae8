#include "tensor_slice.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>

namespace saverkit {
namespace {

std::atomic<uint64_t> g_box_operations{0};

void CountBoxOperations(uint64_t n) { g_box_operations.fetch_add(n, std::memory_order_relaxed); }

bool ParseInt64(const std::string& s, int64_t* out) {
  if (s.empty()) return false;
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(s.c_str(), &end, 10);
  if (errno != 0 || end != s.c_str() + s.size()) return false;
  *out = v;
  return true;
}

std::vector<std::string> Split(const std::string& s, char sep, bool skip_empty) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    size_t pos = s.find(sep, start);
    std::string piece = s.substr(start, pos == std::string::npos ? std::string::npos : pos - start);
    if (!piece.empty() || !skip_empty) out.push_back(piece);
    if (pos == std::string::npos) break;
    start = pos + 1;
  }
  return out;
}

void PutNumIncreasing(std::string* out, uint64_t v) {
  char buf[9];
  int n = 0;
  while (v > 0) {
    buf[8 - n] = static_cast<char>(v & 0xff);
    v >>= 8;
    ++n;
  }
  out->push_back(static_cast<char>(n));
  out->append(buf + 9 - n, n);
}

void PutStringIncreasing(std::string* out, const std::string& s) {
  for (char c : s) {
    if (c == '\x00') {
      out->append("\x00\xff", 2);
    } else if (c == '\xff') {
      out->append("\xff\x00", 2);
    } else {
      out->push_back(c);
    }
  }
  out->append("\x00\x01", 2);
}

void PutSignedNumIncreasing(std::string* out, int64_t v) {
  static const unsigned char kHeader[11][2] = {{0, 0},       {0x80, 0},    {0xc0, 0},    {0xe0, 0},
                                               {0xf0, 0},    {0xf8, 0},    {0xfc, 0},    {0xfe, 0},
                                               {0xff, 0},    {0xff, 0x80}, {0xff, 0xc0}};
  uint64_t x = v < 0 ? ~static_cast<uint64_t>(v) : static_cast<uint64_t>(v);
  int bits = 0;
  while (x >> bits) ++bits;  // bit length of x
  int n = bits / 7 + 1;
  unsigned char buf[10];
  unsigned char sign = v < 0 ? 0xff : 0x00;
  buf[0] = buf[1] = sign;
  uint64_t u = static_cast<uint64_t>(v);
  for (int i = 0; i < 8; ++i) buf[9 - i] = static_cast<unsigned char>((u >> (8 * i)) & 0xff);
  unsigned char* begin = buf + 10 - n;
  begin[0] ^= kHeader[n][0];
  if (n > 1) begin[1] ^= kHeader[n][1];
  out->append(reinterpret_cast<const char*>(begin), n);
}

}  // namespace

int64_t Box::NumElements() const {
  int64_t n = 1;
  for (int64_t l : length) n *= l;
  return n;
}

Status ParseShapeAndSlice(const std::string& spec, std::vector<int64_t>* full_shape, TensorSliceProto* slice) {
  std::vector<std::string> parts = Split(spec, ' ', false);
  if (parts.size() < 2) {
    return InvalidArgument("Need at least two elements in shape_and_slice specification: '" + spec + "'");
  }
  full_shape->clear();
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    int64_t d;
    if (!ParseInt64(parts[i], &d) || d < 0) {
      return InvalidArgument("Bad dimension '" + parts[i] + "' in shape_and_slice: '" + spec + "'");
    }
    full_shape->push_back(d);
  }
  slice->extents.clear();
  for (const std::string& x : Split(parts.back(), ':', true)) {
    SliceExtent e;
    if (x != "-") {
      std::vector<std::string> sl = Split(x, ',', true);
      int64_t s, l;
      if (sl.size() != 2 || !ParseInt64(sl[0], &s) || !ParseInt64(sl[1], &l) || s < 0 || l < -1 ||
          (l == -1 && s != 0)) {
        return InvalidArgument("Expected a pair of numbers or '-' but got '" + x + "' in shape_and_slice: '" +
                               spec + "'");
      }
      if (l != -1) {
        e.start = s;
        e.has_length = true;
        e.length = l;
      }
    }
    slice->extents.push_back(e);
  }
  Box box;
  return SliceToBox(*slice, *full_shape, "shape_and_slice '" + spec + "'", &box);
}

Status SliceToBox(const TensorSliceProto& slice, const std::vector<int64_t>& shape, const std::string& what,
                  Box* box) {
  if (slice.extents.size() != shape.size()) {
    return InvalidArgument(StrCat("Slice ", SliceString(slice), " has rank ", slice.extents.size(),
                                  " but the tensor shape ", ShapeString(shape), " has rank ", shape.size(),
                                  " in ", what));
  }
  box->start.clear();
  box->length.clear();
  for (size_t d = 0; d < shape.size(); ++d) {
    const SliceExtent& e = slice.extents[d];
    int64_t start = e.has_length ? e.start : 0;
    int64_t length = e.has_length ? e.length : shape[d];
    if (start < 0 || length < 0 || start > shape[d] || length > shape[d] - start) {
      return InvalidArgument(StrCat("Slice ", SliceString(slice), " is out of bounds of shape ", ShapeString(shape),
                                    " in dimension ", d, " in ", what));
    }
    box->start.push_back(start);
    box->length.push_back(length);
  }
  return Status::OK();
}

bool IsFullSlice(const TensorSliceProto& slice, const std::vector<int64_t>& shape) {
  if (slice.extents.size() != shape.size()) return false;
  for (size_t d = 0; d < shape.size(); ++d) {
    const SliceExtent& e = slice.extents[d];
    if (e.has_length && !(e.start == 0 && e.length == shape[d])) return false;
  }
  return true;
}

std::string EncodeTensorNameSlice(const std::string& name, const TensorSliceProto& slice) {
  std::string key;
  PutNumIncreasing(&key, 0);
  PutStringIncreasing(&key, name);
  PutNumIncreasing(&key, slice.extents.size());
  for (const SliceExtent& e : slice.extents) {
    PutSignedNumIncreasing(&key, e.has_length ? e.start : 0);
    PutSignedNumIncreasing(&key, e.has_length ? e.length : -1);
  }
  return key;
}

bool SliceKeyTensorName(const std::string& key, std::string* name) {
  // PutNumIncreasing(0), then the name escaped by PutStringIncreasing.
  if (key.size() < 3 || key[0] != '\x00') return false;
  name->clear();
  for (size_t i = 1; i + 1 < key.size(); ++i) {
    const char c = key[i];
    if (c != '\x00' && c != '\xff') {
      name->push_back(c);
      continue;
    }
    const char next = key[++i];
    if (c == '\x00' && next == '\x01') return true;  // the terminator
    if (c == '\x00' && next == '\xff') {
      name->push_back('\x00');
    } else if (c == '\xff' && next == '\x00') {
      name->push_back('\xff');
    } else {
      return false;
    }
  }
  return false;
}

uint64_t BoxOperationCount() { return g_box_operations.load(std::memory_order_relaxed); }

bool FindOverlap(const std::vector<const Box*>& boxes, size_t* a, size_t* b) {
  if (boxes.size() < 2) return false;
  const size_t rank = boxes[0]->start.size();
  auto end = [&](uint32_t i, size_t d) { return boxes[i]->start[d] + boxes[i]->length[d]; };
  // Guillotine cuts: sorted along one dimension, a group splits wherever no
  // box reaches past the next one's start; boxes on either side of a cut
  // cannot intersect, so only boxes left in one group need comparing. Each
  // group is tried in every dimension in turn before its boxes are compared
  // pairwise.
  struct Group {
    std::vector<uint32_t> ids;
    size_t dim;
    size_t tried;  // dimensions tried since the last cut
  };
  std::vector<Group> work(1);
  work[0].ids.resize(boxes.size());
  for (size_t i = 0; i < boxes.size(); ++i) work[0].ids[i] = static_cast<uint32_t>(i);
  work[0].dim = 0;
  work[0].tried = 0;
  while (!work.empty()) {
    Group g = std::move(work.back());
    work.pop_back();
    std::vector<uint32_t>& ids = g.ids;
    if (ids.size() < 2) continue;
    if (g.tried >= rank) {
      Box unused;
      for (size_t i = 0; i < ids.size(); ++i) {
        for (size_t j = i + 1; j < ids.size(); ++j) {
          if (Intersect(*boxes[ids[i]], *boxes[ids[j]], &unused)) {
            *a = std::min(ids[i], ids[j]);
            *b = std::max(ids[i], ids[j]);
            return true;
          }
        }
      }
      continue;
    }
    const size_t d = g.dim;
    CountBoxOperations(ids.size());
    std::sort(ids.begin(), ids.end(), [&](uint32_t x, uint32_t y) {
      const int64_t sx = boxes[x]->start[d], sy = boxes[y]->start[d];
      return sx != sy ? sx < sy : end(x, d) < end(y, d);
    });
    std::vector<size_t> cuts;  // positions in ids where a new group starts
    int64_t reach = end(ids[0], d);
    for (size_t k = 1; k < ids.size(); ++k) {
      if (boxes[ids[k]]->start[d] >= reach) cuts.push_back(k);
      reach = std::max(reach, end(ids[k], d));
    }
    const size_t next_dim = (d + 1) % rank;
    if (cuts.empty()) {
      work.push_back({std::move(ids), next_dim, g.tried + 1});
      continue;
    }
    cuts.push_back(ids.size());
    size_t begin = 0;
    for (size_t c : cuts) {
      work.push_back({std::vector<uint32_t>(ids.begin() + begin, ids.begin() + c), next_dim, 0});
      begin = c;
    }
  }
  return false;
}

bool Intersect(const Box& a, const Box& b, Box* out) {
  CountBoxOperations(1);
  out->start.resize(a.start.size());
  out->length.resize(a.start.size());
  for (size_t d = 0; d < a.start.size(); ++d) {
    int64_t lo = std::max(a.start[d], b.start[d]);
    int64_t hi = std::min(a.start[d] + a.length[d], b.start[d] + b.length[d]);
    if (hi <= lo) return false;
    out->start[d] = lo;
    out->length[d] = hi - lo;
  }
  return true;
}

void ForEachRun(const Box& region, const Box& src, const Box& dst,
                const std::function<void(int64_t, int64_t, int64_t)>& fn) {
  const size_t rank = region.start.size();
  if (rank == 0) {
    fn(0, 0, 1);
    return;
  }
  for (int64_t l : region.length)
    if (l == 0) return;
  // Row-major strides of both layouts.
  std::vector<int64_t> src_stride(rank), dst_stride(rank);
  int64_t s = 1, t = 1;
  for (size_t d = rank; d-- > 0;) {
    src_stride[d] = s;
    dst_stride[d] = t;
    s *= src.length[d];
    t *= dst.length[d];
  }
  // Trailing dimensions that the region spans whole in both layouts join the run: slicing rows of a
  // [N, 4] tensor is one memcpy, not N of 16 bytes (a 256 MiB restore across two stored slices of a
  // partitioned variable took 8x longer than a plain read).
  size_t last = rank - 1;  // the dimension the run goes along
  int64_t run = region.length[last];
  while (last > 0 && region.length[last] == src.length[last] && region.length[last] == dst.length[last]) {
    --last;
    run *= region.length[last];
  }
  std::vector<int64_t> idx(rank, 0);  // odometer over the dimensions before `last`
  while (true) {
    int64_t si = 0, di = 0;
    for (size_t d = 0; d <= last; ++d) {  // past `last` the region starts where src and dst start
      int64_t pos = region.start[d] + idx[d];
      si += (pos - src.start[d]) * src_stride[d];
      di += (pos - dst.start[d]) * dst_stride[d];
    }
    fn(si, di, run);
    if (last == 0) return;
    size_t d = last;
    while (d > 0) {
      --d;
      if (++idx[d] < region.length[d]) break;
      idx[d] = 0;
      if (d == 0) return;
    }
  }
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string SliceString(const TensorSliceProto& slice) {
  std::string s;
  for (size_t i = 0; i < slice.extents.size(); ++i) {
    const SliceExtent& e = slice.extents[i];
    if (i) s += ":";
    s += e.has_length ? std::to_string(e.start) + "," + std::to_string(e.length) : "-";
  }
  return s;
}

}  // namespace saverkit
