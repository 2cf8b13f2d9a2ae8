// Partitioned-variable support: TF's "shape_and_slice" strings, the
// ordered-code slice keys, and copying a sub-block between two slices.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "bundle_proto.h"
#include "status.h"

namespace saverkit {

// A concrete box: [start[d], start[d] + length[d]) in each dimension.
struct Box {
  std::vector<int64_t> start;
  std::vector<int64_t> length;
  int64_t NumElements() const;  // caller guarantees no overflow (validated shapes)
};

// Parses "d0 d1 ... <slice>" where <slice> is "start,length" or "-" per
// dimension, separated by ':' (e.g. "10 4 0,4:0,4", "10 4 4,3:-").
Status ParseShapeAndSlice(const std::string& spec, std::vector<int64_t>* full_shape, TensorSliceProto* slice);

// Checks rank and bounds of `slice` against `shape`; fills the concrete box.
Status SliceToBox(const TensorSliceProto& slice, const std::vector<int64_t>& shape, const std::string& what,
                  Box* box);

bool IsFullSlice(const TensorSliceProto& slice, const std::vector<int64_t>& shape);

// The index key of one stored slice of tensor `name` (spec section 6.3).
std::string EncodeTensorNameSlice(const std::string& name, const TensorSliceProto& slice);
// The tensor name a slice key starts with; false if `key` does not start
// like one. (Whether it is a slice key is up to the tensor's entry.)
bool SliceKeyTensorName(const std::string& key, std::string* name);

// Intersection of two boxes; false if empty.
bool Intersect(const Box& a, const Box& b, Box* out);

// Whether any two of `boxes` (all of one rank) intersect; if so, *a < *b
// name two that do. O(n log n) for the layouts partitioners produce (one
// axis cut, or a grid: guillotine cuts); layouts no cut separates fall back
// to comparing the boxes left together pairwise.
bool FindOverlap(const std::vector<const Box*>& boxes, size_t* a, size_t* b);

// For tests: box operations done so far in this process (Intersect calls,
// and boxes visited while looking for overlaps), to check that assembling a
// partitioned tensor grows linearly with its slice count.
uint64_t BoxOperationCount();

// Calls fn(src_index, dst_index, count) for each contiguous run of `region`
// (in full-tensor coordinates) copied from a row-major array laid out as box
// `src` into one laid out as box `dst`. Indices are in elements.
void ForEachRun(const Box& region, const Box& src, const Box& dst,
                const std::function<void(int64_t, int64_t, int64_t)>& fn);

std::string ShapeString(const std::vector<int64_t>& shape);
std::string SliceString(const TensorSliceProto& slice);

}  // namespace saverkit
