#include "string_restore.h"

#include "dtype.h"

namespace saverkit {

StringRestore::StringRestore(BundleReader* reader, const std::vector<ReadPlan>& plans,
                             std::vector<StringResult>* strings)
    : plans_(plans), strings_(*strings), bytes_(reader) {}

Status StringRestore::Layout(size_t* total) {
  first_.assign(plans_.size(), 0);
  size_t n_total = 0;
  for (size_t i = 0; i < plans_.size(); ++i) {
    if (plans_[i].dtype != DT_STRING) continue;
    const StringResult& r = strings_[i];
    const size_t n = r.whole ? r.lengths.size() : r.elements.size();
    if (n != plans_[i].num_elements) {
      return Internal("String tensor " + PrintableKey(*plans_[i].key) + " was read with the wrong element count");
    }
    first_[i] = n_total;
    n_total += n;
  }
  // Sized once, before any read starts: the reads keep pointers into it.
  dst_.v.resize(n_total);
  *total = n_total;
  return Status::OK();
}

Status StringRestore::Start(StringSink* sink) {
  for (size_t i = 0; i < plans_.size(); ++i) {
    if (plans_[i].dtype != DT_STRING) continue;
    StringResult& r = strings_[i];
    if (r.whole) {
      char** dst = dst_.v.data() + first_[i];
      SK_RETURN_IF_ERROR(sink->Allocate(r.lengths.data(), r.lengths.size(), dst));
      bytes_.Start(plans_[i], r, dst);
    } else {
      SK_RETURN_IF_ERROR(sink->Append(r.elements.data(), r.elements.size()));
      std::vector<std::string>().swap(r.elements);  // copied into the sink's buffers: not held twice
    }
  }
  return Status::OK();
}

Status StringRestore::Finish() { return bytes_.Finish(); }

}  // namespace saverkit
