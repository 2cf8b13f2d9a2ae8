// Writes an SSTable exactly as TensorFlow's bundle writer does: 256 KiB data
// blocks (restart interval 16), no compression, an empty metaindex block, an
// index block with restart interval 1, and the 48-byte footer.
#pragma once

#include <string>

#include "block_builder.h"
#include "env.h"
#include "status.h"
#include "table_format.h"

namespace saverkit {

class TableBuilder {
 public:
  explicit TableBuilder(WritableFile* file);

  // Keys must be strictly increasing (bytewise).
  Status Add(const std::string& key, const std::string& value);
  Status Finish();

 private:
  Status Flush();
  Status WriteBlock(BlockBuilder* block, BlockHandle* handle);

  WritableFile* file_;
  BlockBuilder data_block_;
  BlockBuilder index_block_;
  std::string last_key_;
  uint64_t num_entries_ = 0;
  bool pending_index_entry_ = false;
  BlockHandle pending_handle_;
};

}  // namespace saverkit
