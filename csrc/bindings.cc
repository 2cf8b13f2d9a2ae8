// Python bindings for the saverkit engine. Kept thin: argument unpacking,
// GIL release around I/O, and Status -> saverkit.errors translation.
#include <pybind11/pybind11.h>

namespace py = pybind11;

PYBIND11_MODULE(_core, m) {
  m.doc() = "saverkit's compiled checkpoint engine (private; use the saverkit API)";
  m.attr("__version__") = "0.1.0";
}
