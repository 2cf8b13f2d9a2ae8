#include "py_plan_cache.h"

#include <cstring>
#include <utility>

namespace py = pybind11;

namespace saverkit {
namespace {

// Whether `now` names the same bytes as `kept`, a key or spec held since
// Keep(): the same object, or an equal bytes or str. A bytes and a str of
// equal UTF-8 count as different: a miss only costs planning again.
bool SameText(PyObject* kept, PyObject* now) {
  if (kept == now) return true;  // kept is alive, so its address cannot have been reused
  if (PyBytes_Check(kept) && PyBytes_Check(now)) {
    const Py_ssize_t n = PyBytes_GET_SIZE(kept);
    return n == PyBytes_GET_SIZE(now) && std::memcmp(PyBytes_AS_STRING(kept), PyBytes_AS_STRING(now), n) == 0;
  }
  if (PyUnicode_Check(kept) && PyUnicode_Check(now)) return PyUnicode_Compare(kept, now) == 0;
  return false;
}

bool SameTexts(const py::tuple& kept, const py::list& now) {
  const size_t n = kept.size();
  if (now.size() != n) return false;
  for (size_t i = 0; i < n; ++i) {
    if (!SameText(PyTuple_GET_ITEM(kept.ptr(), i), PyList_GET_ITEM(now.ptr(), i))) return false;
  }
  return true;
}

}  // namespace

void PlanCache::Keep(const py::list& keys, const py::list& specs, std::vector<ReadPlan> plans) {
  keys_ = py::tuple(keys);  // a snapshot: the list itself may change
  specs_ = py::tuple(specs);
  plans_ = std::move(plans);
  kept_ = true;
}

bool PlanCache::Take(const py::list& keys, const py::list& specs, std::vector<ReadPlan>* plans) {
  const bool hit = kept_ && keys_.size() == plans_.size() && SameTexts(keys_, keys) &&
                   SameTexts(specs_, specs);
  if (hit) {
    *plans = std::move(plans_);
    ++hits_;
  }
  Clear();
  return hit;
}

void PlanCache::Clear() {
  kept_ = false;
  keys_ = py::tuple();
  specs_ = py::tuple();
  plans_.clear();
}

}  // namespace saverkit
