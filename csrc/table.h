// Reads an SSTable written by TensorFlow (or by TableBuilder): footer, index
// block, then each data block, verifying every block checksum.
#pragma once

#include <functional>
#include <string>

#include "env.h"
#include "status.h"
#include "table_format.h"

namespace saverkit {

class Table {
 public:
  // `file` must outlive the table.
  Status Open(const RandomAccessFile* file);
  // Visits every key/value in key order.
  Status ForEach(const std::function<Status(const std::string& key, const std::string& value)>& fn) const;

 private:
  const RandomAccessFile* file_ = nullptr;
  Footer footer_;
  std::string index_block_;
};

}  // namespace saverkit
