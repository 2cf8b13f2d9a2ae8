#include "table.h"

#include <vector>

namespace saverkit {

Status Table::Open(const RandomAccessFile* file) {
  file_ = file;
  if (file->size() < kFooterSize) {
    return DataLoss(StrCat(file->path(), " is too short (", file->size(),
                           " bytes) to be a checkpoint index: not an SSTable or truncated"));
  }
  char footer[kFooterSize];
  SK_RETURN_IF_ERROR(file->Read(file->size() - kFooterSize, kFooterSize, footer));
  SK_RETURN_IF_ERROR(footer_.DecodeFrom(footer, file->path()));
  // TF never reads the metaindex block; neither do we (only its bounds).
  return ReadBlock(*file, footer_.index, &index_block_);
}

Status Table::ForEach(const std::function<Status(const std::string&, const std::string&)>& fn) const {
  std::vector<BlockHandle> handles;
  Status bad;
  SK_RETURN_IF_ERROR(ForEachBlockEntry(index_block_, "the index block of " + file_->path(),
                                       [&](const std::string& key, const char* v, size_t n) {
                                         BlockHandle h;
                                         const char* p = v;
                                         if (!h.DecodeFrom(&p, v + n)) {
                                           bad = DataLoss("Corrupt block handle in the index block of " +
                                                          file_->path());
                                           return false;
                                         }
                                         handles.push_back(h);
                                         return true;
                                       }));
  SK_RETURN_IF_ERROR(bad);
  std::string prev_key;
  bool have_prev = false;
  for (const BlockHandle& h : handles) {
    std::string block;
    SK_RETURN_IF_ERROR(ReadBlock(*file_, h, &block));
    Status st;
    SK_RETURN_IF_ERROR(ForEachBlockEntry(block, StrCat("data block at offset ", h.offset, " of ", file_->path()),
                                         [&](const std::string& key, const char* v, size_t n) {
                                           if (have_prev && !(prev_key < key)) {
                                             st = DataLoss("Keys out of order across blocks in " +
                                                           file_->path());
                                             return false;
                                           }
                                           prev_key = key;
                                           have_prev = true;
                                           st = fn(key, std::string(v, n));
                                           return st.ok();
                                         }));
    SK_RETURN_IF_ERROR(st);
  }
  return Status::OK();
}

}  // namespace saverkit
