#include "dtype.h"

namespace saverkit {
namespace {

struct Info {
  const char* name;
  size_t size;
};

// Indexed by enum value; sizes per the tensor-bundle spec (sub-byte types
// take one byte each on disk).
const Info kInfo[] = {
    {"invalid", 0},       {"float32", 4},          {"float64", 8},         {"int32", 4},
    {"uint8", 1},         {"int16", 2},            {"int8", 1},            {"string", 0},
    {"complex64", 8},     {"int64", 8},            {"bool", 1},            {"qint8", 1},
    {"quint8", 1},        {"qint32", 4},           {"bfloat16", 2},        {"qint16", 2},
    {"quint16", 2},       {"uint16", 2},           {"complex128", 16},     {"float16", 2},
    {"resource", 0},      {"variant", 0},          {"uint32", 4},          {"uint64", 8},
    {"float8_e5m2", 1},   {"float8_e4m3fn", 1},    {"float8_e4m3fnuz", 1}, {"float8_e4m3b11fnuz", 1},
    {"float8_e5m2fnuz", 1}, {"int4", 1},           {"uint4", 1},           {"int2", 1},
    {"uint2", 1},         {"float4_e2m1fn", 1},
};

}  // namespace

bool IsKnownDataType(int dtype) { return dtype > 0 && dtype <= DT_MAX_KNOWN; }

size_t DataTypeSize(int dtype) { return IsKnownDataType(dtype) ? kInfo[dtype].size : 0; }

size_t DataTypeSwapUnit(int dtype) {
  if (dtype == DT_COMPLEX64 || dtype == DT_COMPLEX128) return DataTypeSize(dtype) / 2;
  return DataTypeSize(dtype);
}

std::string DataTypeName(int dtype) {
  if (IsKnownDataType(dtype)) return kInfo[dtype].name;
  return "unknown dtype " + std::to_string(dtype);
}

}  // namespace saverkit
