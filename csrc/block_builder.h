// Builds one SSTable block: prefix-compressed entries, restart array, count.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace saverkit {

class BlockBuilder {
 public:
  explicit BlockBuilder(int restart_interval);

  void Reset();
  // Keys must arrive in strictly increasing order.
  void Add(const std::string& key, const std::string& value);
  // Appends the restart array; the returned contents stay valid until Reset().
  const std::string& Finish();
  // Size the block would have if finished now (TF's block-cut estimate).
  size_t CurrentSizeEstimate() const;
  bool empty() const { return buffer_.empty(); }

 private:
  const int restart_interval_;
  std::string buffer_;
  std::vector<uint32_t> restarts_;
  int counter_ = 0;
  bool finished_ = false;
  std::string last_key_;
};

}  // namespace saverkit
