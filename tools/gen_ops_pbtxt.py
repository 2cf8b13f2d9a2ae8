#!/usr/bin/env python3
"""Regenerate python/saverkit/framework/ops.pbtxt: TensorFlow's OpDefs for every op saverkit runs.

Usage: .venv/bin/python tools/gen_ops_pbtxt.py   (needs tensorflow, a test dependency)
The OpDefs are copied from TensorFlow's registry, re-encoded through saverkit's own op_def.proto (so the
text uses numeric full-type ids), which keeps graphs saverkit writes valid for TensorFlow.
tests/test_op_registry_tf.py checks the file still matches the installed TensorFlow.
"""

import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf  # noqa: E402
from google.protobuf import text_format  # noqa: E402
from tensorflow.python.framework import op_def_registry  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))
from saverkit.protobuf import op_def_pb2  # noqa: E402

OPS = """
Const Placeholder PlaceholderWithDefault Identity NoOp
VariableV2 Assign AssignAdd AssignSub IsVariableInitialized
Add AddV2 Sub Mul MatMul Sum Mean Square Neg Cast LogicalNot
Fill Pack Reshape Shape Squeeze Where GatherV2 Select
StringJoin StaticRegexFullMatch ShardedFilename ShardedFilespec SaveV2 RestoreV2 MergeV2Checkpoints
VarHandleOp ReadVariableOp AssignVariableOp AssignAddVariableOp AssignSubVariableOp VarIsInitializedOp
DisableCopyOnRead Slice
""".split()


def main() -> None:
    ops = op_def_pb2.OpList()
    for name in sorted(OPS):
        ops.op.add().ParseFromString(op_def_registry.get(name).SerializeToString())
    header = f"# OpDefs copied from TensorFlow {tf.__version__} by tools/gen_ops_pbtxt.py. Do not edit.\n"
    out = ROOT / "python" / "saverkit" / "framework" / "ops.pbtxt"
    out.write_text(header + text_format.MessageToString(ops))
    print(f"wrote {len(ops.op)} OpDefs to {out}")


if __name__ == "__main__":
    main()
