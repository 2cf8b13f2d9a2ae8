#include "py_string_restore.h"

#include <pybind11/numpy.h>

#include <utility>

#include "dtype.h"
#include "py_arenas.h"
#include "py_support.h"
#include "string_restore.h"
#include "tensor_slice.h"

namespace py = pybind11;

namespace saverkit {
namespace {

// Makes the elements bytes objects, owned by `values` until published. A
// failed allocation leaves its Python error set for the caller to raise
// (MemoryError stays MemoryError), and stops the restore.
class BytesSink : public StringSink {
 public:
  explicit BytesSink(PyRefs* values) : values_(values) {}

  Status Allocate(const uint64_t* lengths, size_t n, char** dst) override {
    for (size_t j = 0; j < n; ++j) {
      PyObject* b = PyBytes_FromStringAndSize(nullptr, static_cast<py::ssize_t>(lengths[j]));
      if (b == nullptr) return PythonError();
      values_->Adopt(b);
      dst[j] = lengths[j] > 0 ? PyBytes_AS_STRING(b) : nullptr;
    }
    return Status::OK();
  }

  Status Append(const std::string* elements, size_t n) override {
    for (size_t j = 0; j < n; ++j) {
      PyObject* b = PyBytes_FromStringAndSize(elements[j].data(), static_cast<py::ssize_t>(elements[j].size()));
      if (b == nullptr) return PythonError();
      values_->Adopt(b);
    }
    return Status::OK();
  }

  bool python_error() const { return python_error_; }

 private:
  Status PythonError() {
    python_error_ = true;
    return ResourceExhausted("cannot allocate a string element");  // not seen: the Python error is raised
  }

  PyRefs* values_;
  bool python_error_ = false;
};

}  // namespace

void CheckStringOut(const ReadPlan& plan, const py::handle& out) {
  bool ok = py::isinstance<py::array>(out);
  if (ok) {
    py::array arr = py::reinterpret_borrow<py::array>(out);
    std::vector<int64_t> shape(arr.shape(), arr.shape() + arr.ndim());
    ok = arr.dtype().kind() == 'O' && (arr.flags() & py::array::c_style) && arr.writeable() && shape == plan.shape();
  }
  if (!ok) {
    Check(InvalidArgument("Output array for string tensor " + PrintableKey(*plan.key) +
                          " must be a writable C-contiguous object array of shape " + ShapeString(plan.shape())));
  }
}

py::list RestoreStrings(BundleReader* reader, const std::vector<ReadPlan>& plans, std::vector<StringResult>* strings,
                        const py::list& outs) {
  // All string elements of the call in one flat vector kept across calls
  // (spare.h), declared before the restore whose reads fill them.
  PyRefs values = PyRefs::Reused();
  StringRestore restore(reader, plans, strings);
  size_t total = 0;
  Check(restore.Layout(&total));
  if (total > 0) InstallArenaCache();  // the bytes objects below reuse the last restore's memory
  values.Reserve(total);
  BytesSink sink(&values);
  Status s = restore.Start(&sink);
  if (sink.python_error()) throw py::error_already_set();
  Check(s);
  {
    py::gil_scoped_release release;
    s = restore.Finish();
  }
  Check(s);
  // Every read succeeded: only now are caller arrays touched.
  py::list result;
  size_t first = 0;  // this tensor's first element in `values`
  for (size_t i = 0; i < plans.size(); ++i) {
    if (plans[i].dtype != DT_STRING) {
      result.append(py::none());
      continue;
    }
    py::array arr;
    if (outs[i].is_none()) {
      std::vector<py::ssize_t> shape(plans[i].shape().begin(), plans[i].shape().end());
      arr = py::array(py::dtype("O"), shape);
    } else {
      arr = py::reinterpret_borrow<py::array>(outs[i]);
    }
    // Swapped in: the array takes the new values, `values` the old ones,
    // released after every array is consistent.
    PyObject** items = static_cast<PyObject**>(arr.mutable_data());
    const size_t n = static_cast<size_t>(plans[i].num_elements);
    for (size_t j = 0; j < n; ++j) std::swap(items[j], values[first + j]);
    first += n;
    result.append(arr);
  }
  return result;
}

}  // namespace saverkit
