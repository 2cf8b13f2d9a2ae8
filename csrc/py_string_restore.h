// The Python side of restoring string tensors: their elements become bytes
// objects, filled by the engine's StringRestore (string_restore.h), then
// published as object arrays. Kept out of bindings.cc, which only converts
// arguments; everything here runs with the GIL held except the wait for the
// reads.
#pragma once

#include <pybind11/pybind11.h>

#include <vector>

#include "bundle_reader.h"

namespace saverkit {

// outs[i] given for a string tensor must be a writable C-contiguous object
// array of the result's shape (checked before anything is read).
void CheckStringOut(const ReadPlan& plan, const pybind11::handle& out);

// Turns the string results of reader->Execute(plans, ...) into Python: one
// bytes object per element, filled on the I/O pool. Published only after
// every CRC of the call matched: into outs[i] when it is an array (its
// elements replaced), else into new object arrays. Returns one slot per plan:
// the string tensor's array, None for numeric ones.
pybind11::list RestoreStrings(BundleReader* reader, const std::vector<ReadPlan>& plans,
                              std::vector<StringResult>* strings, const pybind11::list& outs);

}  // namespace saverkit
