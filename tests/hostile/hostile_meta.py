"""Hostile ``.meta`` files: MetaGraphDefs whose Const nodes declare values far bigger than their bytes.

Used by tests/test_meta_graph.py. Each file is a few dozen bytes; decoded, its ``big`` Const would take
gigabytes or terabytes (or more dimensions than numpy has). ``python tests/hostile/hostile_meta.py OUT_DIR``
writes every case as OUT_DIR/<case>.meta, e.g. to try them on TensorFlow.

Each case is (name, build(node), expected error class when ``big`` runs, text the message must contain).
Every graph also has a normal Const ``small`` (float32 [1.5, 2.5]) that must run.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from saverkit import errors
from saverkit.protobuf import meta_graph_pb2

FLOAT, INT32, STRING = 1, 3, 7  # DataType numbers


def _floats_from_one_value(t):  # 2**31 floats (8 GiB) from one float_val
    t.dtype = FLOAT
    t.tensor_shape.dim.add(size=2**31)
    t.float_val.append(1.5)


def _zeros_without_values(t):  # 2**40 zeros (4 TiB): no value at all means zeros
    t.dtype = FLOAT
    t.tensor_shape.dim.add(size=2**20)
    t.tensor_shape.dim.add(size=2**20)


def _strings_from_one_value(t):  # 2**30 strings (8 GiB of references) from one string_val
    t.dtype = STRING
    t.tensor_shape.dim.add(size=2**30)
    t.string_val.append(b"x")


def _rank_200(t):  # numpy has at most 64 dimensions; TensorFlow allows 254
    t.dtype = FLOAT
    for _ in range(200):
        t.tensor_shape.dim.add(size=1)
    t.float_val.append(2.0)


def _dtype_mismatch(t):  # the Const says int32, its value float32
    t.dtype = FLOAT
    t.tensor_shape.dim.add(size=2)
    t.float_val.append(2.0)


CASES = [
    ("floats_2_31", _floats_from_one_value, FLOAT, errors.InvalidArgumentError,
     "float32 of shape [2147483648], would take 8589934592 bytes (8.0 GiB) decoded"),
    ("zeros_2_40", _zeros_without_values, FLOAT, errors.InvalidArgumentError,
     "float32 of shape [1048576, 1048576], would take 4398046511104 bytes (4096.0 GiB) decoded"),
    ("strings_2_30", _strings_from_one_value, STRING, errors.InvalidArgumentError,
     "string of shape [1073741824], would take 8589934592 bytes (8.0 GiB) decoded"),
    ("rank_200", _rank_200, FLOAT, errors.UnimplementedError,
     "its value has rank 200; saverkit holds values as numpy arrays, which have at most 64 dimensions"),
    ("dtype_mismatch", _dtype_mismatch, INT32, errors.InvalidArgumentError,
     "type mismatch between value (float32) and dtype (int32)"),
]


def meta_graph_def(build, dtype: int) -> meta_graph_pb2.MetaGraphDef:
    mg = meta_graph_pb2.MetaGraphDef()
    mg.meta_info_def.tensorflow_version = "2.21.0"
    gd = mg.graph_def
    gd.versions.producer = 1994
    small = gd.node.add(name="small", op="Const")
    small.attr["dtype"].type = FLOAT
    value = small.attr["value"].tensor
    value.dtype = FLOAT
    value.tensor_shape.dim.add(size=2)
    value.tensor_content = np.array([1.5, 2.5], "<f4").tobytes()
    big = gd.node.add(name="big", op="Const")
    big.attr["dtype"].type = dtype
    big.attr["value"].tensor.SetInParent()
    build(big.attr["value"].tensor)
    return mg


if __name__ == "__main__":
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    for name, build, dtype, _, _ in CASES:
        with open(os.path.join(out_dir, name + ".meta"), "wb") as f:
            f.write(meta_graph_def(build, dtype).SerializeToString())
