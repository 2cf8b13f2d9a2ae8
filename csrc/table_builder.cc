#include "table_builder.h"

namespace saverkit {

TableBuilder::TableBuilder(WritableFile* file)
    : file_(file), data_block_(kDataRestartInterval), index_block_(kIndexRestartInterval) {}

Status TableBuilder::Add(const std::string& key, const std::string& value) {
  if (num_entries_ > 0 && !(last_key_ < key)) {
    return Internal("Table keys added out of order at " + PrintableKey(key));
  }
  // TF's rule for oversized entries: start them in a block of their own.
  if (num_entries_ > 0 && key.size() + value.size() >= 2 * kTableBlockSize && !data_block_.empty()) {
    SK_RETURN_IF_ERROR(Flush());
  }
  if (pending_index_entry_) {
    FindShortestSeparator(&last_key_, key);
    std::string handle;
    pending_handle_.EncodeTo(&handle);
    index_block_.Add(last_key_, handle);
    pending_index_entry_ = false;
  }
  last_key_ = key;
  ++num_entries_;
  data_block_.Add(key, value);
  if (data_block_.CurrentSizeEstimate() >= kTableBlockSize) SK_RETURN_IF_ERROR(Flush());
  return Status::OK();
}

Status TableBuilder::Flush() {
  if (data_block_.empty()) return Status::OK();
  SK_RETURN_IF_ERROR(WriteBlock(&data_block_, &pending_handle_));
  pending_index_entry_ = true;
  return Status::OK();
}

Status TableBuilder::WriteBlock(BlockBuilder* block, BlockHandle* handle) {
  const std::string& contents = block->Finish();
  handle->offset = file_->position();
  handle->size = contents.size();
  SK_RETURN_IF_ERROR(file_->Append(contents.data(), contents.size()));
  std::string trailer = BlockTrailer(contents, kNoCompression);
  SK_RETURN_IF_ERROR(file_->Append(trailer.data(), trailer.size()));
  block->Reset();
  return Status::OK();
}

Status TableBuilder::Finish() {
  SK_RETURN_IF_ERROR(Flush());
  Footer footer;
  BlockBuilder metaindex(kDataRestartInterval);
  SK_RETURN_IF_ERROR(WriteBlock(&metaindex, &footer.metaindex));
  if (pending_index_entry_) {
    FindShortSuccessor(&last_key_);
    std::string handle;
    pending_handle_.EncodeTo(&handle);
    index_block_.Add(last_key_, handle);
    pending_index_entry_ = false;
  }
  SK_RETURN_IF_ERROR(WriteBlock(&index_block_, &footer.index));
  std::string encoded;
  footer.EncodeTo(&encoded);
  return file_->Append(encoded.data(), encoded.size());
}

}  // namespace saverkit
