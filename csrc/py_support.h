// What the binding-side files share: Status -> Python exception (translated
// to saverkit.errors by the module's exception translator), and Python
// references owned by C++ code. Only files that talk to Python include this.
#pragma once

#include <pybind11/pybind11.h>

#include <algorithm>
#include <exception>
#include <string>
#include <vector>

#include "spare.h"
#include "status.h"

namespace saverkit {

// A non-OK Status on its way to Python; bindings.cc's translator raises the
// saverkit.errors class of its code.
struct StatusError : std::exception {
  int code;
  std::string message;
  explicit StatusError(const Status& s) : code(static_cast<int>(s.code())), message(s.message()) {}
  const char* what() const noexcept override { return message.c_str(); }
};

inline void Check(const Status& s) {
  if (!s.ok()) throw StatusError(s);
}

// Python references owned by C++ code: taken to keep objects alive while
// the GIL is released (Hold), or new objects not yet handed to Python (Adopt).
// Released, with the GIL held, when this goes away.
class PyRefs {
 public:
  static const size_t kPrefetch = 16;  // elements looked ahead in loops over scattered objects

  PyRefs() = default;
  // With the vector kept from the thread's last call (see spare.h).
  static PyRefs Reused() {
    PyRefs r;
    r.objects_ = Spare<PyObject*>::Take();
    return r;
  }
  PyRefs(PyRefs&&) = default;
  PyRefs& operator=(PyRefs&&) = delete;
  PyRefs(const PyRefs&) = delete;
  PyRefs& operator=(const PyRefs&) = delete;
  ~PyRefs() {  // callers reacquire the GIL before anything here is destroyed
    const size_t n = objects_.size();
    for (size_t i = 0; i < n; ++i) {
      // Scattered objects: fetch ahead, or every decref waits on a cache miss.
      if (i + kPrefetch < n && objects_[i + kPrefetch] != nullptr) __builtin_prefetch(objects_[i + kPrefetch], 1);
      Py_XDECREF(objects_[i]);
    }
    Spare<PyObject*>::Give(&objects_);
  }
  void Reserve(size_t n) {
    if (objects_.capacity() - objects_.size() < n) objects_.reserve(std::max(2 * objects_.capacity(), objects_.size() + n));
  }
  void Hold(PyObject* o) {
    Py_INCREF(o);
    objects_.push_back(o);
  }
  void Adopt(PyObject* o) { objects_.push_back(o); }
  PyObject*& operator[](size_t i) { return objects_[i]; }
  size_t size() const { return objects_.size(); }

 private:
  std::vector<PyObject*> objects_;
};

}  // namespace saverkit
