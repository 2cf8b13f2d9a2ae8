// TensorFlow DataType numbers and on-disk element sizes.
#pragma once

#include <cstddef>
#include <string>

namespace saverkit {

enum DataType : int {
  DT_INVALID = 0,
  DT_FLOAT = 1,
  DT_DOUBLE = 2,
  DT_STRING = 7,
  DT_COMPLEX64 = 8,
  DT_COMPLEX128 = 18,
  DT_RESOURCE = 20,
  DT_VARIANT = 21,
  DT_MAX_KNOWN = 33,  // DT_FLOAT4_E2M1FN
};

// Bytes per element for numeric types; 0 for string/variant/resource or unknown.
size_t DataTypeSize(int dtype);
// Unit of byte swapping for big-endian bundles (complex: each component).
size_t DataTypeSwapUnit(int dtype);
bool IsKnownDataType(int dtype);
std::string DataTypeName(int dtype);

}  // namespace saverkit
