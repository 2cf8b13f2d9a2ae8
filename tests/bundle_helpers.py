"""Shared helpers for the bundle tests: fixture manifest, hashing rule, index surgery."""

from __future__ import annotations

import hashlib
import json
import pathlib
import re

import numpy as np
from saverkit import _core, bundle
from saverkit.protobuf import tensor_bundle_pb2

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures" / "tf-2.21"


def manifest() -> dict:
    return json.loads((FIXTURES / "manifest.json").read_text())


def manifest_checkpoints() -> list[tuple[str, dict]]:
    """(relative prefix, {key: record}) for every checkpoint the manifest describes."""
    out = []
    for case in manifest()["cases"].values():
        out.extend(case["checkpoints"].items())
    return sorted(out)


def tensor_sha256(arr: np.ndarray, dtype_name: str) -> str:
    """The manifest's hashing rule (see make_tf_fixtures.py). ``arr`` may also be what TF's reader gives
    for a 0-d tensor: ``bytes`` or a numpy scalar."""
    h = hashlib.sha256()
    if isinstance(arr, bytes):
        arr = np.array(arr, dtype=object)
    if dtype_name == "string":
        for x in arr.reshape(-1):
            h.update(len(x).to_bytes(8, "little"))
            h.update(x)
        return h.hexdigest()
    h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def read_index(prefix) -> list[tuple[bytes, bytes]]:
    return _core.read_table(str(prefix) + ".index")


def write_index(prefix, kvs: list[tuple[bytes, bytes]]) -> None:
    _core.write_table(str(prefix) + ".index", kvs)


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = v = 0
    while True:
        b = buf[i]
        v |= (b & 0x7F) << shift
        i += 1
        if b < 0x80:
            return v, i
        shift += 7


def data_blocks(index_path) -> list[tuple[bytes, int, int]]:
    """(index key, offset, size) of every data block of an SSTable, read through its footer and index."""
    data = pathlib.Path(index_path).read_bytes()
    footer = data[-48:]
    _, i = _varint(footer, 0)
    _, i = _varint(footer, i)
    off, i = _varint(footer, i)
    size, _ = _varint(footer, i)
    index = data[off:off + size]
    n = int.from_bytes(index[-4:], "little")
    body, out, i = index[: len(index) - 4 - 4 * n], [], 0
    while i < len(body):
        _, i = _varint(body, i)  # shared: always 0 (restart interval 1)
        nk, i = _varint(body, i)
        nv, i = _varint(body, i)
        key, (boff, j) = body[i:i + nk], _varint(body, i + nk)
        bsize, _ = _varint(body, j)
        out.append((key, boff, bsize))
        i += nk + nv
    return out


def entry_of(prefix, key: bytes) -> tensor_bundle_pb2.BundleEntryProto:
    return tensor_bundle_pb2.BundleEntryProto.FromString(dict(read_index(prefix))[key])


def replace_entry(prefix, key: bytes, mutate) -> None:
    """Re-encode one index entry after `mutate(entry_proto)`."""
    kvs = []
    for k, v in read_index(prefix):
        if k == key:
            e = tensor_bundle_pb2.BundleEntryProto.FromString(v)
            mutate(e)
            v = e.SerializeToString()
        kvs.append((k, v))
    write_index(prefix, kvs)


def replace_header(prefix, mutate) -> None:
    kvs = read_index(prefix)
    h = tensor_bundle_pb2.BundleHeaderProto.FromString(kvs[0][1])
    mutate(h)
    kvs[0] = (b"", h.SerializeToString())
    write_index(prefix, kvs)


def slice_spec(shape, slice_extents) -> str:
    ext = ":".join("-" if x is None else f"{x[0]},{x[1]}" for x in slice_extents)
    return " ".join(str(d) for d in shape) + " " + ext


def stored_payloads_in_data_order(src: str) -> list[tuple[int, int, bytes | str, str, int]]:
    """Every stored payload of a bundle as (shard, offset, name, shape_and_slice, dtype enum),
    in data-file order: what a writer must be given to reproduce the files."""
    r = _core.Reader(src)
    spec_of = {}
    for key, _, shape, has_slices in r.list_entries():
        if has_slices:
            for sl in r.entry(key)["slices"]:
                spec = slice_spec(shape, sl)
                spec_of[_core.slice_key(key, spec)] = (key, spec)
    out = []
    for key in r.all_keys():
        if key == b"":
            continue
        e = r.entry(key)
        if e["slices"]:
            continue
        name, spec = spec_of.get(key, (key, ""))
        out.append((e["shard_id"], e["offset"], name, spec, e["dtype"]))
    return sorted(out, key=lambda t: (t[0], t[1]))


def rewrite_single_shard(src: str, dst: str) -> None:
    """Read every payload of `src` and write it again with our writer in TF's data order."""
    reader = bundle.BundleReader(src)
    items = stored_payloads_in_data_order(src)
    names = [name for _, _, name, _, _ in items]
    specs = [spec for _, _, _, spec, _ in items]
    dtypes = [dt for *_, dt in items]
    tensors = reader.read_many(names, specs)
    bundle.write_bundle(dst, names, tensors, specs, dtypes)


def files_of(prefix) -> dict[str, bytes]:
    p = pathlib.Path(prefix)
    return {f.name[len(p.name):]: f.read_bytes()
            for f in p.parent.iterdir() if f.name.startswith(p.name + ".")}


# saverkit's temporaries (saverkit.tempfiles): in-progress files, re-save backups, marked part directories.
TEMPORARY_RE = re.compile(
    r"\.sktmp-[0-9a-f]{8}-\d+-[0-9a-f]{8}-[0-9a-f]{8}\Z|\.skprev-[0-9a-f]{8}-\d+-[0-9a-f]{8}\Z"
    r"|_temp_[0-9a-f]{32}\Z|\A\.saverkit-temp\Z")


def temporaries(directory) -> list[str]:
    """Names of saverkit temporaries in ``directory`` (and inside its part directories)."""
    out = []
    for path in sorted(pathlib.Path(directory).iterdir()):
        if TEMPORARY_RE.search(path.name):
            out.append(path.name)
        if path.is_dir():
            out += [f"{path.name}/{p.name}" for p in sorted(path.iterdir()) if TEMPORARY_RE.search(p.name)]
    return out
