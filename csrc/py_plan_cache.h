// The plans of a reader's last prepare(), kept for the execute() that
// usually follows with the same requests: planning again costs ~3 us per
// tensor (30 ms for 10,000).
//
// Matched by the requests' content, never by list identity: a list changed
// in place between the two calls must not get plans made for what it held
// before, and an equal list made anew may reuse them. The keys and specs are
// kept as the very objects prepare() saw (bytes and str cannot change), so
// the usual case, the same objects again, costs a pointer comparison per
// tensor; only a different object is compared by content.
//
// Plans depend on nothing else: dtypes are checked in Python, and a reader
// always reads the checkpoint it opened.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <vector>

#include "bundle_reader.h"

namespace saverkit {

class PlanCache {
 public:
  // Keeps plans made for keys[i] with specs[i] (each bytes or str).
  void Keep(const pybind11::list& keys, const pybind11::list& specs, std::vector<ReadPlan> plans);
  // Moves the kept plans to *plans and returns true if keys and specs name
  // exactly the requests they were made for; else returns false. Empties the
  // cache either way (a plan serves one execute()).
  bool Take(const pybind11::list& keys, const pybind11::list& specs, std::vector<ReadPlan>* plans);
  // Take() calls that returned plans (for tests).
  uint64_t hits() const { return hits_; }

 private:
  void Clear();

  bool kept_ = false;
  pybind11::tuple keys_;  // the objects of the last Keep(), held
  pybind11::tuple specs_;
  std::vector<ReadPlan> plans_;
  uint64_t hits_ = 0;
};

}  // namespace saverkit
