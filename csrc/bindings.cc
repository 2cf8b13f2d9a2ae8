// Python bindings for the saverkit engine. Kept thin: argument unpacking,
// GIL release around I/O, and Status -> saverkit.errors translation.
// Pipelines live in engine files; what must make Python objects along the
// way lives in py_*.{h,cc} (py_string_restore: restored strings,
// py_plan_cache: plans kept from prepare() for execute()).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <map>
#include <set>
#include <tuple>
#include <stdexcept>
#include <string>
#include <vector>

#include "block_builder.h"
#include "bundle_reader.h"
#include "bundle_writer.h"
#include "commit.h"
#include "crc32c.h"
#include "dtype.h"
#include "env.h"
#include "merge.h"
#include "page_buffer.h"
#include "py_arenas.h"
#include "py_plan_cache.h"
#include "py_string_restore.h"
#include "py_support.h"
#include "snappy.h"
#include "snapshot_copy.h"
#include "table.h"
#include "table_builder.h"
#include "table_format.h"
#include "temp_names.h"
#include "tensor_slice.h"
#include "thread_pool.h"

namespace py = pybind11;
using namespace saverkit;

namespace {

std::string AsBytes(const py::handle& h) {
  if (PyBytes_Check(h.ptr())) return std::string(PyBytes_AS_STRING(h.ptr()), PyBytes_GET_SIZE(h.ptr()));
  if (PyUnicode_Check(h.ptr())) return h.cast<std::string>();  // UTF-8
  throw py::type_error("expected bytes or str");
}

std::vector<int64_t> AsShape(const py::handle& h) {
  std::vector<int64_t> shape;
  for (py::handle d : h) shape.push_back(d.cast<int64_t>());
  return shape;
}

py::tuple ShapeTuple(const std::vector<int64_t>& shape) {
  py::tuple t(shape.size());
  for (size_t i = 0; i < shape.size(); ++i) t[i] = py::int_(shape[i]);
  return t;
}

py::list SliceList(const TensorSliceProto& slice) {
  py::list out;
  for (const SliceExtent& e : slice.extents) {
    if (e.has_length) {
      out.append(py::make_tuple(e.start, e.length));
    } else {
      out.append(py::none());
    }
  }
  return out;
}

// Parses a request's shape_and_slice ("" = the whole tensor).
// A shape_and_slice (str or bytes) from a list read in place: 10,000 of
// them converted up front are a vector of 10,000 strings, mostly empty.
std::string SpecText(const py::handle& spec) {
  if (PyUnicode_Check(spec.ptr()) && PyUnicode_GET_LENGTH(spec.ptr()) == 0) return std::string();
  return spec.cast<std::string>();
}

ReadRequest MakeRequest(const py::handle& key, const py::handle& spec) {
  ReadRequest r;
  r.key = AsBytes(key);
  std::string text = SpecText(spec);
  if (!text.empty()) {
    r.has_slice = true;
    Check(ParseShapeAndSlice(text, &r.spec_shape, &r.slice));
  }
  return r;
}

// Buffers of the numeric tensors of one engine call, pinned until it ends:
// a Py_buffer each (80 bytes), where a py::buffer_info also copies its
// shape and strides (~300 bytes in four heap blocks: 3 MB for 10,000
// tensors, which counted against the peak-RSS budget of a restore).
class PinnedBuffers {
 public:
  explicit PinnedBuffers(size_t n) { objects_.reserve(n); }
  ~PinnedBuffers() {  // callers hold the GIL when this goes away
    for (Py_buffer& v : views_) PyBuffer_Release(&v);
    for (PyObject* o : objects_) Py_DECREF(o);
  }
  PinnedBuffers(const PinnedBuffers&) = delete;
  PinnedBuffers& operator=(const PinnedBuffers&) = delete;

  // Pins obj's bytes, which must be C-contiguous (and writable if asked):
  // the engine reads and writes each buffer as one run of bytes. The
  // returned view's buf stays valid while pinned; its shape field may point
  // into the view itself (bytes objects), so `shape`, when given, receives
  // the shape here.
  Py_buffer Pin(const py::handle& obj, bool writable, const std::string& key,
                std::vector<int64_t>* shape = nullptr) {
    Py_buffer view;
    if (PyObject_GetBuffer(obj.ptr(), &view, PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0)) != 0) {
      py::error_already_set e;  // takes and clears the Python error
      Check(InvalidArgument(StrCat(writable ? "Output buffer" : "Buffer", " for tensor ", PrintableKey(key),
                                   " must be a C-contiguous", writable ? ", writable" : "", " buffer: ", e.what())));
    }
    if (shape) shape->assign(view.shape, view.shape + view.ndim);
    // Releasing a view whose exporter has no release hook (numpy arrays) is
    // only dropping its reference (PyBuffer_Release), so that is all that is
    // kept: 8 bytes per tensor, not an 80-byte Py_buffer (0.8 MB of a
    // 10,000-tensor call).
    PyBufferProcs* procs = view.obj ? Py_TYPE(view.obj)->tp_as_buffer : nullptr;
    if (view.obj && !(procs && procs->bf_releasebuffer)) {
      objects_.push_back(view.obj);  // takes over the view's reference
    } else {
      views_.push_back(view);
    }
    return view;
  }

 private:
  std::vector<PyObject*> objects_;
  std::vector<Py_buffer> views_;
};

// A tensor's bytes in a PageBuffer, exported as a writable byte buffer: the
// array viewing it (np.frombuffer) keeps it alive as its base.
struct PyPageBuffer {
  std::shared_ptr<PageBuffer> buffer;
};

class PyReader {
 public:
  explicit PyReader(const std::string& prefix) {
    Status s;
    {
      py::gil_scoped_release release;
      s = reader_.Open(prefix);
    }
    Check(s);
  }

  // A checkpoint from its index's bytes (see BundleReader::OpenFetched): a
  // remote one, or with `local_data` local data files.
  PyReader(const std::string& prefix, const py::bytes& index, bool local_data) {
    std::string bytes = index;
    Status s;
    {
      py::gil_scoped_release release;
      s = reader_.OpenFetched(prefix, std::move(bytes), local_data);
    }
    Check(s);
  }

  // Remote: data file `shard_id` has `size` bytes (its reads come from add_range).
  void add_data_file(int shard_id, uint64_t size) { reader_.AddFetchedDataFile(shard_id, size); }

  // Remote: the byte ranges of data files that reading keys[i] with specs[i]
  // reads, as (shard_id, offset, size), each payload once. Keeps the plans
  // for the execute() that follows.
  py::list pieces(const py::list& keys, const py::list& specs) {
    std::vector<ReadPlan> plans;
    if (!plan_cache_.Take(keys, specs, &plans)) plans = Plan(keys, specs);
    std::set<std::tuple<int, int64_t, int64_t>> seen;
    py::list out;
    for (const ReadPlan& p : plans) {
      const size_t n = p.region ? p.region->pieces.size() : 1;
      for (size_t i = 0; i < n; ++i) {
        const BundleEntry& e = p.piece_entry(i);
        if (e.size <= 0) continue;
        if (seen.emplace(e.shard_id, e.offset, e.size).second) out.append(py::make_tuple(e.shard_id, e.offset, e.size));
      }
    }
    plan_cache_.Keep(keys, specs, std::move(plans));
    return out;
  }

  // Remote: bytes of data file `shard_id` from `offset`, fetched by the
  // caller; held until clear_ranges().
  void add_range(int shard_id, uint64_t offset, const py::object& data) {
    std::shared_ptr<FetchedRanges> ranges = reader_.Fetched(shard_id);
    if (!ranges) throw py::value_error(StrCat("add_range: no data file ", shard_id, " was added"));
    py::buffer_info info = py::buffer(data).request();
    held_.append(data);
    ranges->Add(offset, static_cast<const char*>(info.ptr), static_cast<size_t>(info.size * info.itemsize));
  }

  void clear_ranges() {
    for (int id = 0; id < num_shards(); ++id) {
      std::shared_ptr<FetchedRanges> r = reader_.Fetched(id);
      if (r) r->Clear();
    }
    held_ = py::list();
  }

  std::string prefix() const { return reader_.prefix(); }
  int num_shards() const { return reader_.header().num_shards; }
  int endianness() const { return reader_.header().endianness; }

  // Full tensors only (slice keys hidden): (key, dtype, shape, has_slices).
  // Reads the whole index: only listings call this.
  py::list list_entries() {
    std::vector<std::pair<std::string, BundleEntry>> tensors;
    Status s;
    {
      py::gil_scoped_release release;
      s = reader_.ListTensors(&tensors);
    }
    Check(s);
    py::list out;
    for (const auto& kv : tensors) {
      out.append(py::make_tuple(py::bytes(kv.first), kv.second.dtype, ShapeTuple(kv.second.shape),
                                !kv.second.slices.empty()));
    }
    return out;
  }

  // Every key of the index (slice keys included, header left out).
  py::list all_keys() {
    std::vector<std::string> keys;
    Status s;
    {
      py::gil_scoped_release release;
      s = reader_.ForEachEntry([&](const std::string& key, const BundleEntry&) {
        keys.push_back(key);
        return Status::OK();
      });
    }
    Check(s);
    py::list out;
    for (const std::string& k : keys) out.append(py::bytes(k));
    return out;
  }

  // Whether the checkpoint holds tensor `key` (a stored slice is not one):
  // one lookup, not a listing.
  bool has_tensor(const py::handle& key) {
    std::string k = AsBytes(key);
    const std::string* stored;
    const BundleEntry* e;
    bool is_slice = false;
    Status s;
    {
      py::gil_scoped_release release;
      s = reader_.Lookup(k, &stored, &e);
      if (s.ok() && e != nullptr) s = reader_.IsSliceKey(k, &is_slice);
    }
    Check(s);
    return e != nullptr && !is_slice;
  }

  py::dict entry(const py::handle& key) {
    std::string k = AsBytes(key);
    const std::string* stored;
    const BundleEntry* found;
    Status s;
    {
      py::gil_scoped_release release;
      s = reader_.Lookup(k, &stored, &found);
    }
    Check(s);
    if (found == nullptr) {
      Check(NotFound("Key " + PrintableKey(k) + " not found in checkpoint " + reader_.prefix()));
    }
    const BundleEntry& e = *found;
    py::dict d;
    d["dtype"] = e.dtype;
    d["shape"] = ShapeTuple(e.shape);
    d["shard_id"] = e.shard_id;
    d["offset"] = e.offset;
    d["size"] = e.size;
    d["crc32c"] = e.crc32c;
    py::list slices;
    for (const TensorSliceProto& s : e.slices) slices.append(SliceList(s));
    d["slices"] = slices;
    return d;
  }

  // Validates every request before anything is allocated: (dtype, shape) each.
  // Tensors of one dtype and shape share one tuple (a restore of 10,000
  // variables has a handful of distinct ones). `max_rank`: the most
  // dimensions the caller's arrays can have (numpy: 32 before 2.0, then 64;
  // TF allows 254).
  py::list prepare(const py::list& keys, const py::list& specs, size_t max_rank) {
    std::vector<ReadPlan> plans = Plan(keys, specs);
    py::list out(plans.size());
    std::map<std::pair<int, std::vector<int64_t>>, py::tuple> seen;
    for (size_t i = 0; i < plans.size(); ++i) {
      const ReadPlan& p = plans[i];
      auto key = std::make_pair(p.dtype, p.shape());
      auto it = seen.find(key);
      if (it == seen.end()) {
        if (p.shape().size() > max_rank) {
          Check(Unimplemented(StrCat("Cannot read tensor ", PrintableKey(*p.key), " of checkpoint ",
                                     reader_.prefix(), ": its rank ", p.shape().size(),
                                     " is above the ", max_rank, " dimensions a numpy array can have")));
        }
        it = seen.emplace(std::move(key), py::make_tuple(p.dtype, ShapeTuple(p.shape()))).first;
      }
      out[i] = it->second;
    }
    plan_cache_.Keep(keys, specs, std::move(plans));  // for the execute() that usually follows
    return out;
  }

  // Fills outs[i] (numeric, sized as prepare() said) in place. String tensors
  // are filled into outs[i] when it is an object array of the right shape,
  // else returned as new object arrays of bytes. Returns a list holding each
  // string tensor's array (None for numeric ones). `fresh`: every numeric
  // out was allocated for this call and not touched yet (the engine may then
  // choose its pages).
  //
  // A numeric outs[i] of None is read into a new PageBuffer (page_buffer.h)
  // mapped here, returned in its slot for the caller to view as an array.
  py::list execute(const py::list& keys, const py::list& specs, const py::list& outs, bool fresh) {
    std::vector<ReadPlan> plans;
    if (!plan_cache_.Take(keys, specs, &plans)) plans = Plan(keys, specs);
    if (outs.size() != plans.size()) throw py::value_error("outs must have one slot per key");
    PinnedBuffers buffers(plans.size());
    std::vector<char*> dst(plans.size(), nullptr);
    std::vector<std::shared_ptr<PageBuffer>> pages;
    for (size_t i = 0; i < plans.size(); ++i) {
      if (plans[i].dtype == DT_STRING) {
        if (!outs[i].is_none()) CheckStringOut(plans[i], outs[i]);
        continue;
      }
      if (outs[i].is_none()) {
        const uint64_t bytes = plans[i].num_elements * DataTypeSize(plans[i].dtype);
        // Where the bytes start in their file (a plan of several pieces: no one place).
        const uint64_t phase = plans[i].direct ? static_cast<uint64_t>(plans[i].piece_entry(0).offset) : 0;
        pages.resize(plans.size());
        if (bytes > 0) {
          Status s = PageBuffer::Allocate(bytes, phase, &pages[i]);
          if (!s.ok()) Check(Status(s.code(), s.message() + " (tensor " + PrintableKey(*plans[i].key) + ")"));
          dst[i] = pages[i]->data();
        }
        continue;
      }
      const Py_buffer view = buffers.Pin(outs[i], /*writable=*/true, *plans[i].key);
      uint64_t want = plans[i].num_elements * DataTypeSize(plans[i].dtype);
      if (static_cast<uint64_t>(view.len) != want) {
        Check(InvalidArgument(StrCat("Output buffer for tensor ", PrintableKey(*plans[i].key), " holds ", view.len,
                                     " bytes; ", want, " needed")));
      }
      dst[i] = static_cast<char*>(view.buf);
    }
    std::vector<StringResult> strings;
    Status s;
    {
      py::gil_scoped_release release;
      s = reader_.Execute(plans, dst, &strings, fresh, pages.empty() ? nullptr : &pages);
    }
    Check(s);
    py::list out = RestoreStrings(&reader_, plans, &strings, outs);
    for (size_t i = 0; i < pages.size(); ++i) {
      if (pages[i]) out[i] = py::cast(PyPageBuffer{std::move(pages[i])});
    }
    return out;
  }

  // Coordinated restores: byte ranges of data files into buffers (None: only
  // checksummed), returning each range's CRC32C (see BundleReader::ReadRanges).
  std::vector<uint32_t> read_ranges(const std::vector<int>& shards, const std::vector<uint64_t>& offsets,
                                    const std::vector<uint64_t>& sizes, const py::list& outs) {
    if (outs.size() != shards.size()) throw py::value_error("read_ranges: one buffer (or None) per range");
    PinnedBuffers buffers(outs.size());
    std::vector<char*> dst(outs.size(), nullptr);
    for (size_t i = 0; i < outs.size(); ++i) {
      if (outs[i].is_none()) continue;
      const Py_buffer view = buffers.Pin(outs[i], /*writable=*/true, "read_ranges");
      if (static_cast<uint64_t>(view.len) != sizes[i]) {
        throw py::value_error(StrCat("read_ranges: buffer ", i, " holds ", view.len, " bytes, not ", sizes[i]));
      }
      dst[i] = static_cast<char*>(view.buf);
    }
    std::vector<uint32_t> crcs;
    Status s;
    {
      py::gil_scoped_release release;
      s = reader_.ReadRanges(shards, offsets, sizes, dst, &crcs);
    }
    Check(s);
    return crcs;
  }

  uint64_t plan_cache_hits() const { return plan_cache_.hits(); }

 private:
  py::list held_;  // remote: the fetched ranges' buffers
  std::vector<ReadPlan> Plan(const py::list& keys, const py::list& specs) {
    if (specs.size() != keys.size()) throw py::value_error("keys and shape_and_slices differ in length");
    // Every entry looked up first, in key order: a restore names its tensors
    // in creation order, and looked up in that order each one could cost a
    // read of an index block. The tuple keeps the keys alive without the GIL.
    {
      py::tuple held(keys);
      std::vector<std::string> converted;  // str keys, as UTF-8 (bytes are viewed in place)
      std::vector<std::string_view> views;
      views.reserve(held.size());
      size_t n_str = 0;
      for (py::handle k : held) n_str += PyBytes_Check(k.ptr()) ? 0 : 1;
      converted.reserve(n_str);
      for (py::handle k : held) {
        if (PyBytes_Check(k.ptr())) {
          views.emplace_back(PyBytes_AS_STRING(k.ptr()), static_cast<size_t>(PyBytes_GET_SIZE(k.ptr())));
        } else {
          converted.push_back(AsBytes(k));
          views.emplace_back(converted.back());
        }
      }
      Status s;
      {
        py::gil_scoped_release release;
        s = reader_.LookupAll(std::move(views));
      }
      Check(s);
    }
    // Requests made a batch at a time: all 10,000 held beside the plans
    // added ~1.3 MB to a restore's peak.
    const size_t kBatch = 512;
    std::vector<ReadPlan> plans(keys.size());
    std::vector<ReadRequest> requests;
    for (size_t begin = 0; begin < keys.size(); begin += kBatch) {
      const size_t end = std::min(keys.size(), begin + kBatch);
      requests.clear();
      for (size_t i = begin; i < end; ++i) requests.push_back(MakeRequest(keys[i], specs[i]));
      Status s;
      {
        py::gil_scoped_release release;  // may open and stat data files
        for (size_t i = begin; i < end && s.ok(); ++i) s = reader_.Prepare(requests[i - begin], &plans[i]);
      }
      Check(s);
    }
    return plans;
  }

  BundleReader reader_;
  PlanCache plan_cache_;
};

// Where the numpy arrays of `srcs` that export a C-contiguous buffer go in a
// staging buffer `dst`: from `offset` on, each at the next multiple of
// `align`. Holds `dst` and every source buffer pinned until destroyed (with
// the GIL held). offsets[i] == -1: not staged (object or structured dtypes,
// strided arrays, other objects; the caller copies those).
class StageLayout {
 public:
  StageLayout(const py::buffer& dst, int64_t offset, const py::sequence& srcs, int64_t align) {
    if (offset < 0 || align <= 0 || (align & (align - 1)) != 0) throw py::value_error("bad offset or align");
    if (PyObject_GetBuffer(dst.ptr(), &out_, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) != 0) throw py::error_already_set();
    out_held_ = true;
    py::object fast = py::reinterpret_steal<py::object>(PySequence_Fast(srcs.ptr(), "srcs must be a sequence"));
    if (!fast) throw py::error_already_set();
    const size_t n = static_cast<size_t>(PySequence_Fast_GET_SIZE(fast.ptr()));
    PyObject** items = PySequence_Fast_ITEMS(fast.ptr());
    views_.reserve(n);
    offsets_.assign(n, -1);
    runs_.reserve(n);
    const uint64_t mask = static_cast<uint64_t>(align) - 1;
    uint64_t pos = static_cast<uint64_t>(offset);
    for (size_t i = 0; i < n; ++i) {
      if (!py::isinstance<py::array>(items[i])) continue;
      // Object arrays export their pointers as bytes: never copy those (no references would be taken).
      // Structured dtypes ('V') may hold objects too: the caller copies both.
      const char kind = py::reinterpret_borrow<py::array>(items[i]).dtype().kind();
      if (kind == 'O' || kind == 'V') continue;
      Py_buffer v;
      if (PyObject_GetBuffer(items[i], &v, PyBUF_C_CONTIGUOUS) != 0) {  // object dtype, strided...
        PyErr_Clear();
        continue;
      }
      views_.push_back(v);
      pos = (pos + mask) & ~mask;
      offsets_[i] = static_cast<int64_t>(pos);
      runs_.push_back(CopyRun{static_cast<const char*>(v.buf), nullptr, static_cast<size_t>(v.len)});
      pos += static_cast<uint64_t>(v.len);
    }
    begin_ = static_cast<uint64_t>(offset);
    end_ = pos;
    fits_ = pos <= static_cast<uint64_t>(out_.len);
    if (!fits_) return;
    char* base = static_cast<char*>(out_.buf);
    size_t r = 0;
    for (size_t i = 0; i < n; ++i) {
      if (offsets_[i] >= 0) runs_[r++].dst = base + offsets_[i];
    }
  }
  ~StageLayout() { Release(); }
  StageLayout(const StageLayout&) = delete;
  StageLayout& operator=(const StageLayout&) = delete;

  // Unpins every buffer (GIL held).
  void Release() {
    for (Py_buffer& b : views_) PyBuffer_Release(&b);
    views_.clear();
    if (out_held_) PyBuffer_Release(&out_);
    out_held_ = false;
  }

  bool fits() const { return fits_; }
  // (end, offsets): the offset after the last array and each array's offset in
  // dst (-1: not copied); (-(bytes needed from offset), None) when they do not fit.
  py::tuple Result() const {
    if (!fits_) return py::make_tuple(-static_cast<int64_t>(end_ - begin_), py::none());
    py::list out_offsets(offsets_.size());
    for (size_t i = 0; i < offsets_.size(); ++i) {
      PyList_SET_ITEM(out_offsets.ptr(), i, PyLong_FromLongLong(offsets_[i]));
    }
    return py::make_tuple(static_cast<int64_t>(end_), out_offsets);
  }
  const std::vector<CopyRun>& runs() const { return runs_; }
  const char* staged_begin() const { return static_cast<const char*>(out_.buf) + begin_; }
  const char* staged_end() const { return static_cast<const char*>(out_.buf) + end_; }

 private:
  Py_buffer out_;
  bool out_held_ = false;
  std::vector<Py_buffer> views_;
  std::vector<int64_t> offsets_;
  std::vector<CopyRun> runs_;
  uint64_t begin_ = 0, end_ = 0;
  bool fits_ = false;
};

// A pipelined snapshot (stage_plan): laid out when made, copied by copy();
// a write_bundle given it as `staged` may start before the copy and reads
// each staged byte range only once the copy has passed it.
class StagePlan {
 public:
  explicit StagePlan(std::unique_ptr<StageLayout> layout)
      : layout_(std::move(layout)),
        progress_(std::make_shared<CopyProgress>(layout_->staged_begin(), layout_->staged_end())) {}
  ~StagePlan() {
    if (!copied_) progress_->Abort();  // never leave a writer waiting
  }

  // Copies, then unpins the sources. threads == 1: in address order,
  // reporting progress as it goes (a write started before the copy follows
  // it). threads > 1: split over that many threads, reported once complete
  // (for a write that starts after the copy: the copy ends sooner).
  void Copy(int threads) {
    if (copied_ || layout_ == nullptr) throw py::value_error("stage_plan: copy() called twice or after abort()");
    if (threads < 1) throw py::value_error("stage_plan: copy() needs threads >= 1");
    {
      py::gil_scoped_release release;
      const std::vector<CopyRun>& runs = layout_->runs();
      if (threads == 1) {
        CopyRunsInOrder(runs, progress_.get());
      } else {
        CopyRuns(runs, threads);  // each thread fences its stores; join orders them before this
        if (!runs.empty()) progress_->Advance(runs.back().dst + runs.back().n);
      }
    }
    copied_ = true;
    layout_->Release();
  }
  // The copy will not happen: a writer waiting for it fails.
  void Abort() {
    if (copied_) return;
    progress_->Abort();
    layout_.reset();
  }
  std::shared_ptr<const CopyProgress> progress() const { return progress_; }

 private:
  std::unique_ptr<StageLayout> layout_;
  std::shared_ptr<CopyProgress> progress_;
  bool copied_ = false;
};

// (end, offsets, plan); (-(bytes needed), None, None) when they do not fit.
py::tuple StagePlanFor(const py::buffer& dst, int64_t offset, const py::sequence& srcs, int64_t align) {
  auto layout = std::make_unique<StageLayout>(dst, offset, srcs, align);
  py::tuple result = layout->Result();
  if (!layout->fits()) return py::make_tuple(result[0], py::none(), py::none());
  return py::make_tuple(result[0], result[1], py::cast(new StagePlan(std::move(layout)), py::return_value_policy::take_ownership));
}

// Appends the elements of a C-contiguous numpy object array of bytes or str
// (str saved as UTF-8), without a Python-level pass over them. Each element
// is held: the GIL is released while they are written, and another thread
// replacing elements of the array must not free bytes the writer points at.
// `elems` has room for them (the writer points into it).
void StringElements(const std::string& key, const py::array& arr, PyRefs* held, std::vector<StringRef>* elems) {
  if (arr.dtype().kind() != 'O' || !(arr.flags() & py::array::c_style)) {
    throw py::type_error("string tensors must be C-contiguous object arrays");
  }
  PyObject* const* items = static_cast<PyObject* const*>(arr.data());
  const size_t n = static_cast<size_t>(arr.size());
  held->Reserve(n);
  for (size_t j = 0; j < n; ++j) {
    if (j + PyRefs::kPrefetch < n && items[j + PyRefs::kPrefetch] != nullptr) {
      __builtin_prefetch(items[j + PyRefs::kPrefetch], 1);  // see ~PyRefs
    }
    PyObject* x = items[j];
    if (x != nullptr && PyBytes_Check(x)) {
      elems->push_back({PyBytes_AS_STRING(x), static_cast<size_t>(PyBytes_GET_SIZE(x))});
    } else if (x != nullptr && PyUnicode_Check(x)) {
      Py_ssize_t size;
      const char* utf8 = PyUnicode_AsUTF8AndSize(x, &size);
      if (utf8 == nullptr) throw py::error_already_set();
      elems->push_back({utf8, static_cast<size_t>(size)});
    } else {
      const char* type = x == nullptr ? "NoneType" : Py_TYPE(x)->tp_name;
      Check(InvalidArgument("String tensor " + PrintableKey(key) + " has an element of type " + type +
                            "; need bytes or str"));
    }
    held->Hold(x);
  }
}

void WriteBundleWith(const std::string& prefix, const py::list& names, const py::list& specs,
                     const std::vector<int>& dtypes, const py::list& shapes, const py::list& datas,
                     const BundleWriterOptions& options) {
  size_t n = names.size();
  if (specs.size() != n || dtypes.size() != n || shapes.size() != n || datas.size() != n) {
    throw py::value_error("write_bundle: argument lists differ in length");
  }
  // Every string element of the call, tensor after tensor, in one vector
  // sized up front: the writer points into it from AddStrings on.
  size_t string_count = 0;
  for (size_t i = 0; i < n; ++i) {
    if (dtypes[i] != DT_STRING) continue;
    if (py::isinstance<py::array>(datas[i])) {
      string_count += static_cast<size_t>(py::reinterpret_borrow<py::array>(datas[i]).size());
    } else {
      string_count += py::len(datas[i]);
    }
  }
  // Declared before the writer, so released only after it: string tensors
  // are written from the moment they are added, and the writer's destructor
  // waits for those writes when a later tensor is rejected.
  PinnedBuffers buffers(n);  // every numeric buffer, until Finish
  SpareVector<StringRef> elements;  // kept per thread (spare.h)
  std::vector<StringRef>& all = elements.v;
  all.reserve(string_count);
  PyRefs held = PyRefs::Reused();  // the string elements being written (see StringElements)
  held.Reserve(string_count);
  BundleWriter writer(prefix, options);
  writer.Reserve(n);
  std::vector<int64_t> shape;
  for (size_t i = 0; i < n; ++i) {
    // A pipelined asynchronous save adds its tensors while the caller it snapshots waits for the GIL
    // once its copy is done: let that thread through now and then (a thread asking for the GIL gets
    // it when the holder releases it).
    if (options.staged && i % 256 == 255) {
      py::gil_scoped_release let_through;
    }
    std::string name = AsBytes(names[i]);
    // None: a numeric buffer whose own shape is the tensor's (spares the
    // caller 10,000 shape tuples).
    const bool shape_from_buffer = shapes[i].is_none() && dtypes[i] != DT_STRING;
    if (!shape_from_buffer) shape = AsShape(shapes[i]);
    const std::string spec = SpecText(specs[i]);
    bool sliced = !spec.empty();
    std::vector<int64_t> full_shape;
    TensorSliceProto slice;
    if (sliced) {
      Status s = ParseShapeAndSlice(spec, &full_shape, &slice);
      if (!s.ok()) Check(InvalidArgument("Tensor " + PrintableKey(name) + ": " + s.message()));
    }
    if (dtypes[i] == DT_STRING) {
      const size_t first = all.size();
      if (py::isinstance<py::array>(datas[i])) {
        StringElements(name, py::reinterpret_borrow<py::array>(datas[i]), &held, &all);
      } else {
        for (py::handle item : datas[i]) {
          if (!PyBytes_Check(item.ptr())) throw py::type_error("string tensor elements must be bytes");
          // Growing `all` would move elements the writer already points at.
          if (all.size() == string_count) Check(Internal("write_bundle: more string elements than counted"));
          held.Hold(item.ptr());  // as above
          all.push_back({PyBytes_AS_STRING(item.ptr()), static_cast<size_t>(PyBytes_GET_SIZE(item.ptr()))});
        }
      }
      StringSpan elems{all.data() + first, all.size() - first};
      Check(sliced ? writer.AddSliceStrings(name, full_shape, slice, shape, elems)
                   : writer.AddStrings(name, shape, elems));
      continue;
    }
    const Py_buffer view = buffers.Pin(datas[i], /*writable=*/false, name, shape_from_buffer ? &shape : nullptr);
    uint64_t nbytes = static_cast<uint64_t>(view.len);
    const char* ptr = static_cast<const char*>(view.buf);
    Check(sliced ? writer.AddSliceNumeric(name, full_shape, slice, dtypes[i], shape, ptr, nbytes)
                 : writer.AddNumeric(name, dtypes[i], shape, ptr, nbytes));
  }
  Status s;
  {
    py::gil_scoped_release release;
    s = writer.Finish();
  }
  Check(s);
}

void WriteBundle(const std::string& prefix, const py::list& names, const py::list& specs,
                 const std::vector<int>& dtypes, const py::list& shapes, const py::list& datas, int num_shards,
                 int shard_id, bool durable, const StagePlan* staged) {
  BundleWriterOptions options;
  options.num_shards = num_shards;
  options.shard_id = shard_id;
  options.durable = durable;
  if (staged != nullptr) options.staged = staged->progress();
  WriteBundleWith(prefix, names, specs, dtypes, shapes, datas, options);
}

// A bundle for a remote store (saverkit.storage): nothing is written; returns
// (data segments, data size, index bytes). Segments are (offset, buffer) in
// offset order, covering the data file without gaps; numeric payloads are
// memoryviews of the callers' arrays (valid while the caller keeps `datas`),
// string payloads bytes.
py::tuple EncodeBundle(const std::string& prefix, const py::list& names, const py::list& specs,
                       const std::vector<int>& dtypes, const py::list& shapes, const py::list& datas, int num_shards,
                       int shard_id) {
  BundleWriterOptions options;
  options.num_shards = num_shards;
  options.shard_id = shard_id;
  options.data_memory = std::make_shared<MemoryFile>();
  options.index_memory = std::make_shared<MemoryFile>();
  WriteBundleWith(prefix, names, specs, dtypes, shapes, datas, options);
  MemoryFile& data = *options.data_memory;
  std::vector<const MemoryFile::Segment*> order;
  for (const auto& seg : data.segments) {
    if (seg.size > 0) order.push_back(&seg);
  }
  std::stable_sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
  py::list segments;
  uint64_t at = 0;
  for (const MemoryFile::Segment* seg : order) {
    if (seg->offset != at) {
      Check(Internal(StrCat("encode_bundle: data of ", prefix, " has a gap or overlap at offset ", at)));
    }
    py::object buf = seg->borrowed != nullptr
                         ? py::object(py::memoryview::from_memory(seg->borrowed, static_cast<ssize_t>(seg->size)))
                         : py::object(py::bytes(seg->owned));
    segments.append(py::make_tuple(seg->offset, buf));
    at += seg->size;
  }
  if (at != data.size) Check(Internal("encode_bundle: data of " + prefix + " is not contiguous"));
  std::string index;
  MemoryFile& idx = *options.index_memory;
  index.resize(idx.size);
  for (const auto& seg : idx.segments) std::memcpy(&index[seg.offset], seg.data(), seg.size);
  return py::make_tuple(segments, data.size, py::bytes(index));
}

uint32_t BufferCrc(const py::buffer& data, uint32_t init, int which) {
  py::buffer_info info = data.request();
  const char* p = static_cast<const char*>(info.ptr);
  size_t n = static_cast<size_t>(info.size * info.itemsize);
  py::gil_scoped_release release;
  if (which == 1) return crc32c::ExtendSoftware(init, p, n);
  if (which == 2) return crc32c::ExtendHardware(init, p, n);
  if (which == 3) return crc32c::ExtendFolding(init, p, n);
  return crc32c::Extend(init, p, n);
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "saverkit's compiled checkpoint engine (private; use the saverkit API)";
  m.attr("__version__") = "0.1.0";

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const StatusError& e) {
      py::object cls = py::module_::import("saverkit.errors").attr("exception_type_from_error_code")(e.code);
      // Paths and keys may hold bytes that are not UTF-8: never fail on the message itself.
      py::object message = py::reinterpret_steal<py::object>(
          PyUnicode_DecodeUTF8(e.message.data(), static_cast<Py_ssize_t>(e.message.size()), "backslashreplace"));
      py::object exc = cls(py::none(), py::none(), message);
      PyErr_SetObject(cls.ptr(), exc.ptr());
    }
  });

  // --- CRC32C ---
  m.def("crc32c", [](const py::buffer& b, uint32_t init) { return BufferCrc(b, init, 0); }, py::arg("data"),
        py::arg("init") = 0);
  m.def("crc32c_software", [](const py::buffer& b, uint32_t init) { return BufferCrc(b, init, 1); },
        py::arg("data"), py::arg("init") = 0);
  m.def("crc32c_hardware", [](const py::buffer& b, uint32_t init) {
    if (!crc32c::HardwareAvailable()) Check(Unimplemented("no CRC32C instruction on this CPU"));
    return BufferCrc(b, init, 2);
  }, py::arg("data"), py::arg("init") = 0);
  m.def("crc32c_hardware_available", &crc32c::HardwareAvailable);
  m.def("crc32c_folding", [](const py::buffer& b, uint32_t init) {
    if (!crc32c::FoldingAvailable()) Check(Unimplemented("no AVX-512 VPCLMULQDQ on this CPU"));
    return BufferCrc(b, init, 3);
  }, py::arg("data"), py::arg("init") = 0);
  m.def("crc32c_folding_available", &crc32c::FoldingAvailable);
  m.def("crc32c_implementation", &crc32c::Implementation);
  m.def("crc32c_combine", &crc32c::Combine, py::arg("crc_a"), py::arg("crc_b"), py::arg("len_b"));
  m.def("crc32c_mask", &crc32c::Mask);
  m.def("crc32c_unmask", &crc32c::Unmask);

  // --- SSTable pieces (exposed for tests and tools) ---
  m.def("build_block", [](const std::vector<std::pair<py::bytes, py::bytes>>& kvs, int restart_interval) {
    BlockBuilder b(restart_interval);
    for (const auto& kv : kvs) b.Add(std::string(kv.first), std::string(kv.second));
    return py::bytes(b.Finish());
  });
  m.def("block_trailer", [](const py::bytes& contents, int type) {
    return py::bytes(BlockTrailer(std::string(contents), static_cast<BlockType>(type)));
  });
  m.def("find_shortest_separator", [](const py::bytes& start, const py::bytes& limit) {
    std::string s(start);
    FindShortestSeparator(&s, std::string(limit));
    return py::bytes(s);
  });
  m.def("find_short_successor", [](const py::bytes& key) {
    std::string s(key);
    FindShortSuccessor(&s);
    return py::bytes(s);
  });
  m.def("write_table", [](const std::string& path, const std::vector<std::pair<py::bytes, py::bytes>>& kvs) {
    WritableFile f;
    Check(f.Create(path));
    TableBuilder t(&f);
    for (const auto& kv : kvs) Check(t.Add(std::string(kv.first), std::string(kv.second)));
    Check(t.Finish());
    Check(f.Close());
  });
  m.def("read_table", [](const std::string& path) {
    RandomAccessFile f;
    Check(f.Open(path));
    Table t;
    Check(t.Open(&f));
    std::vector<std::pair<std::string, std::string>> kvs;
    Check(t.ForEach([&](const std::string& k, const std::string& v) {
      kvs.emplace_back(k, v);
      return Status::OK();
    }));
    py::list out;
    for (const auto& kv : kvs) out.append(py::make_tuple(py::bytes(kv.first), py::bytes(kv.second)));
    return out;
  });
  m.def("table_get", [](const std::string& path, const std::vector<py::bytes>& keys) {
    // Point lookups, one at a time in the order given (None: no such key).
    RandomAccessFile f;
    Check(f.Open(path));
    Table t;
    Check(t.Open(&f));
    py::list out;
    for (const py::bytes& k : keys) {
      bool found;
      std::string value;
      Check(t.Get(std::string(k), &found, &value));
      if (found) {
        out.append(py::bytes(value));
      } else {
        out.append(py::none());
      }
    }
    return out;
  });
  m.def("snappy_uncompress", [](const py::bytes& data) {
    std::string in(data), out;
    Check(SnappyUncompress(in.data(), in.size(), "input", &out));
    return py::bytes(out);
  });

  // --- slices ---
  m.def("parse_shape_and_slice", [](const std::string& spec) {
    std::vector<int64_t> shape;
    TensorSliceProto slice;
    Check(ParseShapeAndSlice(spec, &shape, &slice));
    return py::make_tuple(ShapeTuple(shape), SliceList(slice));
  });
  m.def("_box_operations", &BoxOperationCount);  // for tests: see tensor_slice.h
  m.def("slice_key", [](const py::object& name, const std::string& spec) {
    std::vector<int64_t> shape;
    TensorSliceProto slice;
    Check(ParseShapeAndSlice(spec, &shape, &slice));
    return py::bytes(EncodeTensorNameSlice(AsBytes(name), slice));
  });
  m.def("dtype_size", &DataTypeSize);

  // --- bundles ---
  m.def("write_bundle", &WriteBundle, py::arg("prefix"), py::arg("names"), py::arg("shape_and_slices"),
        py::arg("dtypes"), py::arg("shapes"), py::arg("datas"), py::arg("num_shards") = 1, py::arg("shard_id") = 0,
        py::arg("durable") = false, py::arg("staged") = nullptr);
  m.def("encode_bundle", &EncodeBundle, py::arg("prefix"), py::arg("names"), py::arg("shape_and_slices"),
        py::arg("dtypes"), py::arg("shapes"), py::arg("datas"), py::arg("num_shards") = 1, py::arg("shard_id") = 0);
  m.def("merge_bundles", [](const std::vector<std::string>& prefixes, const std::string& dest, bool delete_old_dirs,
                            bool allow_missing_files, bool durable) {
    Status s;
    {
      py::gil_scoped_release release;
      s = MergeBundles(prefixes, dest, delete_old_dirs, allow_missing_files, durable);
    }
    Check(s);
  }, py::arg("checkpoint_prefixes"), py::arg("destination_prefix"), py::arg("delete_old_dirs") = true,
        py::arg("allow_missing_files") = false, py::arg("durable") = false);
  // The merged index of a remote sharded save (see MergeIndexes): (index bytes, each part's shard id or -1).
  m.def("merge_indexes", [](const std::vector<py::bytes>& indexes, const std::string& dest, int64_t num_shards) {
    std::vector<std::string> parts(indexes.begin(), indexes.end());
    std::string merged;
    std::vector<int> part_shards;
    Status s;
    {
      py::gil_scoped_release release;
      s = MergeIndexes(parts, dest, num_shards, &merged, &part_shards);
    }
    Check(s);
    return py::make_tuple(py::bytes(merged), part_shards);
  }, py::arg("indexes"), py::arg("destination_prefix"), py::arg("num_shards") = 0);
  py::class_<StagePlan>(m, "StagePlan")
      .def("copy", &StagePlan::Copy, py::arg("threads") = 1)
      .def("abort", &StagePlan::Abort);
  m.def("stage_plan", &StagePlanFor, py::arg("dst"), py::arg("offset"), py::arg("srcs"), py::arg("align") = 64);
  m.def("recover_bundle", [](const std::string& prefix) {
    Status s;
    {
      py::gil_scoped_release release;
      s = RecoverBundle(prefix);
    }
    Check(s);
  }, py::arg("prefix"));

  // --- owner-stamped temporary names (temp_names.h) ---
  m.def("temp_owner", &TempOwner);
  m.def("temp_filename", &TempFilename, py::arg("path"));
  m.def("owner_is_stale", &OwnerIsStale, py::arg("owner"), py::arg("age_seconds"));
  m.def("set_io_threads", [](int n) {
    py::gil_scoped_release release;  // may join the old pool's workers
    SetIoThreads(n);
  });
  m.def("get_io_threads", &GetIoThreads);
  m.def("_arena_cache_stats", [] {  // for tests: (installed, cached bytes, allocations served from the cache)
    ArenaCacheStats s = GetArenaCacheStats();
    return py::make_tuple(s.installed, s.cached_bytes, s.reused);
  });
  m.def("set_arena_cache", &SetArenaCacheEnabled);  // saverkit.config.set_arena_cache
  m.def("_set_read_bounce", &SetReadBounceMode, py::arg("mode"));  // tests: -1 by CPU, 0 never, 1 always
  m.def("_read_bounce_active", &ReadBounceActive);
  m.attr("_ARENA_CACHE_BYTES") = kArenaCacheBytes;

  py::class_<PyPageBuffer>(m, "PageBuffer", py::buffer_protocol())
      .def_buffer([](PyPageBuffer& b) {
        return py::buffer_info(b.buffer->data(), 1, py::format_descriptor<uint8_t>::format(), 1,
                               {static_cast<py::ssize_t>(b.buffer->size())}, {1}, /*readonly=*/false);
      })
      .def_property_readonly("fresh", [](const PyPageBuffer& b) { return b.buffer->fresh(); });  // for tests
  m.def("_page_cache_stats", [] {  // for tests: (bytes kept mapped for reuse, allocations served from them)
    std::pair<uint64_t, uint64_t> s = PageCacheStats();
    return py::make_tuple(s.first, s.second);
  });
  m.def("_clear_page_cache", &ClearPageCache);  // for tests
  m.def("_set_populate_disabled", &SetPopulateDisabledForTesting);  // for tests: as without MADV_POPULATE_WRITE
  m.attr("_PAGE_CACHE_BYTES") = kPageCacheBytes;

  py::class_<PyReader>(m, "Reader")
      .def(py::init<const std::string&>())
      .def(py::init<const std::string&, const py::bytes&, bool>(), py::arg("prefix"), py::arg("index"),
           py::arg("local_data") = false)
      .def("add_data_file", &PyReader::add_data_file, py::arg("shard_id"), py::arg("size"))
      .def("pieces", &PyReader::pieces, py::arg("keys"), py::arg("specs"))
      .def("add_range", &PyReader::add_range, py::arg("shard_id"), py::arg("offset"), py::arg("data"))
      .def("clear_ranges", &PyReader::clear_ranges)
      .def_property_readonly("prefix", &PyReader::prefix)
      .def_property_readonly("num_shards", &PyReader::num_shards)
      .def_property_readonly("endianness", &PyReader::endianness)
      .def("list_entries", &PyReader::list_entries)
      .def("all_keys", &PyReader::all_keys)
      .def("has_tensor", &PyReader::has_tensor)
      .def("entry", &PyReader::entry)
      .def("prepare", &PyReader::prepare, py::arg("keys"), py::arg("specs"), py::arg("max_rank") = 64)
      .def("execute", &PyReader::execute, py::arg("keys"), py::arg("specs"), py::arg("outs"),
           py::arg("fresh") = false)
      .def("read_ranges", &PyReader::read_ranges, py::arg("shards"), py::arg("offsets"), py::arg("sizes"),
           py::arg("outs"))
      .def_property_readonly("_plan_cache_hits", &PyReader::plan_cache_hits);  // for tests
}
