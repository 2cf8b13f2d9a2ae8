"""Subprocess that reads checkpoints on request, so a crash in the engine is seen, not suffered.

Protocol: one JSON request per stdin line, one JSON answer per stdout line.
  request  {"prefix": str, "names": [str], "dtypes": [str], "modes": ["reader", "batch", "load"]}
  answer   {"modes": {mode: {"open": outcome | None, "entries": {name: [dtype, shape]} | None,
                               "values": {name: outcome}}}, "maxrss_kib": int}
  outcome  {"digest": hex, "dtype": str, "shape": [int]}            a value was returned
           {"error": class name, "message": str, "op_error": bool,
            "names_checkpoint": bool}                               an exception was raised
A segfault/abort shows as EOF on stdout; a hang as no answer before the parent's deadline.

Digests follow tests/fixtures/tf-2.21/manifest.json: sha256 of the C-order little-endian bytes;
for strings, of each element's 8-byte LE length followed by its bytes.
"""

from __future__ import annotations

import hashlib
import json
import resource
import sys
import traceback

import numpy as np
import saverkit.errors as errors


def digest(value) -> dict:
    # A 0-d string tensor read through get_tensor is bytes (as TF's reader returns it): an object scalar.
    arr = np.array(value, dtype=object) if isinstance(value, bytes) else np.asarray(value)
    h = hashlib.sha256()
    if arr.dtype == object:
        for x in arr.flat:
            h.update(len(x).to_bytes(8, "little"))
            h.update(x)
    else:
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        h.update(np.ascontiguousarray(arr).tobytes())
    return {"digest": h.hexdigest(), "shape": list(arr.shape)}


_prefix_name = ""  # basename of the checkpoint being read: error messages should name it


def outcome_of(exc: BaseException) -> dict:
    return {
        "error": type(exc).__name__,
        "message": str(exc)[:500],
        "names_checkpoint": _prefix_name in str(exc),
        "op_error": isinstance(exc, errors.OpError),
        **({} if isinstance(exc, errors.OpError) else {"traceback": traceback.format_exc()[-1500:]}),
    }


def _value(fn, dtype_name=None) -> dict:
    try:
        out = digest(fn())
    except Exception as e:  # noqa: BLE001 - every exception is an outcome to report
        return outcome_of(e)
    if dtype_name is not None:
        out["dtype"] = dtype_name
    return out


def read_with_reader(prefix: str, names: list[str], dtypes: list[str]) -> dict:
    from saverkit.bundle import BundleReader

    res: dict = {"open": None, "entries": None, "values": {}}
    try:
        reader = BundleReader(prefix)
        res["entries"] = {
            (k if isinstance(k, str) else k.decode("latin-1")): [dt.name, list(shape)]
            for k, (dt, shape) in reader.entries().items()
        }
    except Exception as e:  # noqa: BLE001
        res["open"] = outcome_of(e)
        return res
    for name in names:
        res["values"][name] = _value(lambda n=name: reader.read(n))
    return res


def read_batch(prefix: str, names: list[str], dtypes: list[str]) -> dict:
    from saverkit.bundle import read_tensors

    res: dict = {"open": None, "entries": None, "values": {}}
    try:
        values = read_tensors(prefix, names, [""] * len(names), dtypes)
    except Exception as e:  # noqa: BLE001
        res["open"] = outcome_of(e)
        return res
    for name, v in zip(names, values, strict=True):
        res["values"][name] = _value(lambda v=v: v)
    return res


def read_with_load_checkpoint(prefix: str, names: list[str], dtypes: list[str]) -> dict:
    from saverkit.train import load_checkpoint

    res: dict = {"open": None, "entries": None, "values": {}}
    try:
        reader = load_checkpoint(prefix)
        res["entries"] = {
            k: [reader.get_variable_to_dtype_map()[k].name, list(s)]
            for k, s in reader.get_variable_to_shape_map().items()
        }
    except Exception as e:  # noqa: BLE001
        res["open"] = outcome_of(e)
        return res
    for name in names:
        res["values"][name] = _value(lambda n=name: reader.get_tensor(n))
    return res


MODES = {"reader": read_with_reader, "batch": read_batch, "load": read_with_load_checkpoint}


def serve(stdin, stdout) -> None:
    for line in stdin:
        req = json.loads(line)
        global _prefix_name
        _prefix_name = req["prefix"].rsplit("/", 1)[-1]
        answer = {"modes": {}}
        for mode in req.get("modes", ["reader"]):
            answer["modes"][mode] = MODES[mode](req["prefix"], req["names"], req["dtypes"])
        answer["maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        stdout.write(json.dumps(answer) + "\n")
        stdout.flush()


if __name__ == "__main__":
    serve(sys.stdin, sys.stdout)
