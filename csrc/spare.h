// Per-element vectors of a call (a reference, a pointer or a length for each
// string element: megabytes) are kept for the thread's next call. Fresh ones
// are fresh pages, and faulting them in cost ~450 page faults per save of
// 100,000 strings on the benchmark VM (with malloc returning freed memory to
// the OS, as in the benchmark). Capped so that one huge call does not pin
// its bookkeeping for the rest of the process.
#pragma once

#include <cstddef>
#include <vector>

namespace saverkit {

template <typename T>
class Spare {
 public:
  static std::vector<T> Take() {
    std::vector<T> v;
    v.swap(Slot());  // a call made while this one runs (from a finalizer) finds none: no sharing
    return v;
  }
  static void Give(std::vector<T>* v) {
    if (v->capacity() * sizeof(T) > kMaxBytes || v->capacity() <= Slot().capacity()) return;
    v->clear();
    v->swap(Slot());
  }

 private:
  static const size_t kMaxBytes = 8 << 20;
  static std::vector<T>& Slot() {
    thread_local std::vector<T> slot;
    return slot;
  }
};

// A vector taken from the thread's spare for one call and given back
// however the call ends (an early return or an exception included).
template <typename T>
struct SpareVector {
  std::vector<T> v = Spare<T>::Take();
  SpareVector() = default;
  SpareVector(const SpareVector&) = delete;
  SpareVector& operator=(const SpareVector&) = delete;
  ~SpareVector() { Spare<T>::Give(&v); }
};

}  // namespace saverkit
