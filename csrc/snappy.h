// Minimal Snappy decompressor (raw format, no framing) for table blocks of
// type 1, which TF's reader accepts even though TF never writes them.
#pragma once

#include <string>

#include "status.h"

namespace saverkit {

// Decompresses input[0..n) into *out. Malformed input (bad tags, copies
// reaching before the start, a length that does not match) is DATA_LOSS;
// `what` names the block/file in messages.
Status SnappyUncompress(const char* input, size_t n, const std::string& what, std::string* out);

}  // namespace saverkit
