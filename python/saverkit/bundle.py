"""Read and write TensorFlow V2 checkpoints ("tensor bundles") as numpy arrays.

A thin layer over the compiled engine (``saverkit._core``): every call is one
batched engine call that releases the GIL, writes straight from the arrays'
memory and reads straight into them, on a process-wide pool of I/O threads.

Names may be ``str`` (stored as UTF-8) or ``bytes``. Names read back from a
checkpoint are ``str``; bytes that are not UTF-8 come back surrogate-escaped so
they round-trip.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Sequence
from typing import Any, cast

import numpy as np

from saverkit import _core, _gc, checkpoint_paths, errors, storage, tempfiles
from saverkit import config as _config  # noqa: F401 - applies SAVERKIT_ARENA_CACHE before any read
from saverkit import dtypes as _dtypes
from saverkit.dtypes import DType

__all__ = [
    "BundleReader", "get_io_threads", "merge_bundles", "read_tensors", "recover_bundle", "resolve_prefix",
    "set_io_threads", "write_bundle",
]


def _as_key(name: str | bytes) -> bytes:
    if isinstance(name, bytes):
        return name
    if isinstance(name, str):
        return name.encode("utf-8", "surrogateescape")
    raise TypeError(f"tensor names must be str or bytes, got {type(name).__name__}")


def _as_name(key: bytes) -> str:
    return key.decode("utf-8", "surrogateescape")


def _dtype_of_array(arr: np.ndarray) -> DType:
    for q in _dtypes.QUANTIZED_DTYPES:
        if arr.dtype == q.np_dtype:
            return q
    return _dtypes.as_dtype(arr.dtype)


def _byte_view(arr: np.ndarray) -> np.ndarray:
    # ml_dtypes types cannot cross the buffer protocol; raw bytes always can.
    return arr.reshape(-1).view(np.uint8)


def _buffer(arr: np.ndarray) -> np.ndarray:
    """What the engine reads or fills: the (C-contiguous) array itself when numpy can export its dtype."""
    return arr if arr.dtype.isbuiltin == 1 else _byte_view(arr)


_UNSET = object()


def _plain_numeric(value: Any, dt: Any, memo: dict) -> DType | None:
    """The DType of ``value`` when it can be written as is (a C-contiguous ndarray of exactly that dtype);
    None sends it down the general path, which converts or reports. Resolutions are memoised per call:
    a checkpoint of 10,000 tensors has a handful of (dtype argument, numpy dtype) pairs."""
    if type(value) is not np.ndarray or not value.flags.c_contiguous:
        return None
    k = (dt, value.dtype)
    dtype = memo.get(k, _UNSET)
    if dtype is _UNSET:
        dtype = None
        if value.dtype.kind not in "OSU":
            try:
                cand = _dtype_of_array(value) if dt is None else _dtypes.as_dtype(dt)
            except (TypeError, ValueError):
                cand = None
            if (cand is not None and cand != _dtypes.string and cand.is_numeric and not cand.is_ref_dtype
                    and cand.np_dtype == value.dtype):
                dtype = cand
        memo[k] = dtype
    return dtype


# --- writing ------------------------------------------------------------------

def _string_elements(key: bytes, value: Any) -> tuple[list[int], list[bytes]]:
    arr = np.asarray(value, dtype=object) if not isinstance(value, np.ndarray) else value
    if arr.dtype.kind not in "OSU":
        raise errors.InvalidArgumentError(
            None, None, f"Tensor {key!r} is declared string but holds {arr.dtype}")
    items = []
    for x in arr.reshape(-1).tolist():
        if isinstance(x, bytes):
            items.append(bytes(x))
        elif isinstance(x, str):
            items.append(x.encode("utf-8"))
        else:
            raise errors.InvalidArgumentError(
                None, None,
                f"String tensor {key!r} has an element of type {type(x).__name__}; need bytes or str")
    return list(arr.shape), items


def _numeric_array(key: bytes, value: Any, dtype: DType | None) -> tuple[DType, np.ndarray]:
    if dtype is None:
        arr = np.asarray(value)
        return _dtype_of_array(arr), np.ascontiguousarray(arr).reshape(arr.shape)
    want = dtype.np_dtype
    if not isinstance(value, np.ndarray):
        value = np.asarray(value, dtype=want)
    if value.dtype != want:
        # Quantized types share layouts with plain integers: reinterpret, don't convert.
        if dtype.is_quantized and value.dtype.kind in "iu" and value.dtype.itemsize == want.itemsize:
            value = np.ascontiguousarray(value).reshape(value.shape).view(want)
        else:
            raise errors.InvalidArgumentError(
                None, None, f"Tensor {key!r} has numpy dtype {value.dtype} but dtype {dtype.name} was given")
    # 0-d arrays stay 0-d (ascontiguousarray alone would make them 1-d).
    return dtype, np.ascontiguousarray(value).reshape(value.shape)


def write_bundle(
    prefix: str,
    names: Sequence[str | bytes],
    tensors: Sequence[Any],
    shape_and_slices: Sequence[str] | None = None,
    dtypes: Sequence[DType | int | None] | None = None,
    *,
    num_shards: int = 1,
    shard_id: int = 0,
    durable: bool = False,
    storage_options: dict | None = None,
    staged: Any = None,
) -> None:
    """Write tensors to ``prefix.index`` + ``prefix.data-<shard_id>-of-<num_shards>``, like SaveV2.

    ``shape_and_slices[i]`` (TF syntax, e.g. ``"10 4 0,4:-"``) saves ``tensors[i]`` as that slice of a
    partitioned tensor; ``""`` saves a whole tensor. ``dtypes`` overrides the dtype inferred from numpy
    (needed for quantized types). String tensors are object arrays or lists of bytes/str.

    ``staged`` (``saverkit.train.async_save``): a ``_core.stage_plan`` whose copy into the tensors' staging
    memory may still be running; each tensor's bytes are read once the copy has passed them.

    ``prefix`` may be a URL (``s3://bucket/dir/model``, see :mod:`saverkit.storage`): the data object is
    uploaded first, then the index, so the checkpoint appears only complete.
    """
    if storage.is_url(prefix):
        _write_remote(os.fsdecode(os.fspath(prefix)), names, tensors, shape_and_slices, dtypes, num_shards,
                      shard_id, storage_options)
        return
    prefix = storage.local_path(prefix)
    tempfiles.make_part_dir(os.fspath(prefix))  # a sharded save's part: marked as saverkit's temporary
    with _gc.paused():  # 10,000 tensors are tens of thousands of objects: see saverkit._gc
        _write_bundle(prefix, names, tensors, shape_and_slices, dtypes, num_shards, shard_id, durable,
                      staged=staged)
    prefix = os.fspath(prefix)
    if not tempfiles.is_part_prefix(prefix):  # a part's directory is removed whole after the merge
        # What a killed earlier write of this checkpoint left (only a dead writer's).
        tempfiles.remove_stale(os.path.dirname(prefix) or ".", os.path.basename(prefix))


def _write_bundle(
    prefix: str,
    names: Sequence[str | bytes],
    tensors: Sequence[Any],
    shape_and_slices: Sequence[str] | None,
    dtypes: Sequence[DType | int | None] | None,
    num_shards: int,
    shard_id: int,
    durable: bool,
    encode: bool = False,
    staged: Any = None,
) -> Any:
    prefix = os.fspath(prefix)
    n = len(names)
    if len(tensors) != n:
        raise ValueError(f"write_bundle: {n} names but {len(tensors)} tensors")
    specs = list(shape_and_slices) if shape_and_slices is not None else [""] * n
    given = list(dtypes) if dtypes is not None else [None] * n
    if len(specs) != n or len(given) != n:
        raise ValueError("write_bundle: names, tensors, shape_and_slices and dtypes must have equal lengths")
    keys: list[bytes] = []
    enums: list[int] = []
    shapes: list[Any] = []
    datas: list[Any] = []  # arrays, or the list of a string tensor's elements
    memo: dict = {}
    for name, value, dt in zip(names, tensors, given, strict=True):
        key = name.encode("utf-8", "surrogateescape") if type(name) is str else _as_key(name)
        if type(value) is np.ndarray and value.dtype.kind == "O" and value.flags.c_contiguous and (
                dt is None or _dtypes.as_dtype(dt) == _dtypes.string):
            # String tensors as object arrays go to the engine whole: it reads the bytes/str elements.
            keys.append(key)
            enums.append(_dtypes.string.as_datatype_enum)
            shapes.append(value.shape)
            datas.append(value)
            continue
        dtype = _plain_numeric(value, dt, memo)
        if dtype is not None:  # the common case, without per-tensor conversions
            keys.append(key)
            enums.append(dtype.as_datatype_enum)
            if value.dtype.isbuiltin == 1:
                shapes.append(None)  # the engine takes the buffer's own shape: no tuple per tensor
                datas.append(value)
            else:
                shapes.append(value.shape)
                datas.append(_byte_view(value))
            continue
        dtype = _dtypes.as_dtype(dt) if dt is not None else None
        is_string = dtype == _dtypes.string if dtype is not None else (
            not isinstance(value, np.ndarray) and _looks_like_strings(value)
            or isinstance(value, np.ndarray) and value.dtype.kind in "OSU")
        data: Any  # the string elements (list), or the tensor's bytes (array)
        if is_string:
            shape, data = _string_elements(key, value)
            dtype = _dtypes.string
        else:
            dtype, arr = _numeric_array(key, value, dtype)
            if not dtype.is_numeric or dtype.is_ref_dtype:
                raise errors.InvalidArgumentError(
                    None, None, f"Cannot save tensor {key!r} of dtype {dtype.name}")
            shape, data = list(arr.shape), _byte_view(arr)
        keys.append(key)
        enums.append(dtype.as_datatype_enum)
        shapes.append(shape)
        datas.append(data)
    if encode:  # a remote checkpoint: bytes in memory (numeric payloads as views of `datas`)
        return _core.encode_bundle(prefix, keys, specs, enums, shapes, datas, num_shards, shard_id), datas
    _core.write_bundle(prefix, keys, specs, enums, shapes, datas, num_shards, shard_id, durable, staged)
    return None


def encode_bundle(
    prefix: str,
    names: Sequence[str | bytes],
    tensors: Sequence[Any],
    shape_and_slices: Sequence[str] | None = None,
    dtypes: Sequence[DType | int | None] | None = None,
) -> tuple[Sequence[tuple[int, Any]], int, bytes, Any]:
    """A single-shard bundle encoded in memory, nothing written: ``(segments, size, index, held)`` — the
    data file's bytes as (offset, buffer) segments (numeric payloads are views of the tensors), its
    size, the index's bytes, and what the segments view (keep it until they are written). For writers
    that move the bytes themselves: each rank of a coordinated save to a URL writes its data object
    (saverkit.train.distributed_save), the indexes merged by ``_core.merge_indexes``."""
    with _gc.paused():
        (segments, size, index), held = _write_bundle(
            os.fsdecode(os.fspath(prefix)), names, tensors, shape_and_slices, dtypes, 1, 0, False,
            encode=True)
    return segments, size, index, held


def _write_remote(
    prefix: str,
    names: Sequence[str | bytes],
    tensors: Sequence[Any],
    shape_and_slices: Sequence[str] | None,
    dtypes: Sequence[DType | int | None] | None,
    num_shards: int,
    shard_id: int,
    storage_options: dict | None,
) -> None:
    from saverkit import remote_bundle

    with _gc.paused():
        (segments, size, index), held = _write_bundle(
            prefix, names, tensors, shape_and_slices, dtypes, num_shards, shard_id, False, encode=True)
    if remote_bundle.is_part(prefix) and (num_shards, shard_id) == (1, 0):
        # A part of a sharded save: published with the others by MergeV2Checkpoints (merge_bundles).
        remote_bundle.stage_part(prefix, (segments, size, index, held))
        return
    loc = storage.Location(prefix, storage_options)
    if (num_shards, shard_id) == (1, 0):
        remote_bundle.publish(loc, prefix, [(segments, size, index, held)])
        return
    # One shard of a bundle the caller assembles itself: data first, then the index.
    data_url = f"{prefix}.data-{shard_id:05d}-of-{num_shards:05d}"
    existed = loc.isfile(data_url)
    loc.write_segments(data_url, segments, size)
    del segments, held  # the views of the caller's arrays: no longer needed
    try:
        loc.write_bytes(prefix + ".index", index)
    except BaseException:
        if not existed:  # ours, and no index names it: remove it (never what was there before)
            try:
                loc.remove([data_url])
            except errors.OpError:
                pass
        raise


def _looks_like_strings(value: Any) -> bool:
    if isinstance(value, (bytes, str)):
        return True
    if isinstance(value, (list, tuple)):
        flat = np.asarray(value, dtype=object).reshape(-1)
        return flat.size > 0 and all(isinstance(x, (bytes, str)) for x in flat)
    return False


def merge_bundles(
    checkpoint_prefixes: Sequence[str],
    destination_prefix: str,
    delete_old_dirs: bool = True,
    allow_missing_files: bool = False,
    storage_options: dict | None = None,
) -> None:
    """MergeV2Checkpoints: merge single-shard bundles into ``destination_prefix`` (data files are renamed).

    A URL ``destination_prefix``: the parts are those its sharded save staged in memory (see
    :mod:`saverkit.remote_bundle`), published in place as its data objects, the merged index last."""
    prefixes = [os.fspath(p) for p in checkpoint_prefixes]
    if storage.is_url(destination_prefix):
        _merge_remote(prefixes, os.fsdecode(os.fspath(destination_prefix)), allow_missing_files,
                      storage_options)
        return
    _core.merge_bundles(prefixes, os.fspath(destination_prefix), delete_old_dirs, allow_missing_files)
    if delete_old_dirs:  # the engine leaves a part directory that still holds saverkit's marker
        for directory in {os.path.dirname(p) for p in prefixes}:
            tempfiles.remove_part_dir(directory)


def _merge_remote(prefixes: list[str], destination: str, allow_missing_files: bool,
                  storage_options: dict | None) -> None:
    from saverkit import remote_bundle

    parts = remote_bundle.take_parts(prefixes)
    present = [p for p in parts if p is not None]
    missing = [prefix for prefix, p in zip(prefixes, parts, strict=True) if p is None]
    if missing and not allow_missing_files or not present:
        raise errors.NotFoundError(
            None, None, f"Cannot merge checkpoint {missing[0] if missing else destination} into "
            f"{destination}: a part of a sharded save to a URL is published only by the save that wrote it")
    remote_bundle.publish(storage.Location(destination, storage_options), destination, present)


def recover_bundle(prefix: str | os.PathLike) -> None:
    """Settle what an interrupted re-save of ``prefix`` left: if the process that was committing it is
    gone, put the previous checkpoint back under its own name (or, when the new one was complete,
    delete the previous one's ``.skprev-<owner>`` backups). A commit still in flight is left alone."""
    _core.recover_bundle(os.fspath(prefix))


def set_io_threads(n: int | None) -> None:
    """Size of the process-wide I/O pool shared by all reads and writes (None: one per core)."""
    _core.set_io_threads(0 if n is None else int(n))


def get_io_threads() -> int:
    return _core.get_io_threads()


# --- locating checkpoints -----------------------------------------------------

# One resolver for every entry point (saverkit.checkpoint_paths); re-exported under its old name here.
resolve_prefix = checkpoint_paths.resolve_prefix


# --- reading ------------------------------------------------------------------

# The most dimensions a numpy array can have (TF allows 254): reading a tensor of higher rank is
# UnimplementedError naming it, while listing it still works.
_MAX_NDIM = 64 if np.lib.NumpyVersion(np.__version__) >= "2.0.0" else 32

# A lone numeric tensor of more than this many bytes read into a new array (get_tensor) goes into memory
# the engine maps for it (a _core.PageBuffer, the array's base): placed like the tensor in its file, so it is
# copied out of the page cache once and at full speed, and faulted in by a helper thread while it is read.
# Smaller ones (and batches, whose arrays a repeated restore gets back from malloc's heap) are numpy's.
_PAGE_BUFFER_MIN = 1 << 20


def _as_dtype_or_data_loss(enum: int, key: bytes, prefix: str) -> DType:
    try:
        return _dtypes.as_dtype(enum)
    except TypeError:
        raise errors.DataLossError(
            None, None, f"Tensor {key!r} in {prefix} has invalid dtype {enum}") from None


class BundleReader:
    """An open checkpoint: list its tensors and read them (``with BundleReader(p) as r: ...``)."""

    def __init__(self, prefix: str | os.PathLike, storage_options: dict | None = None, *,
                 index: bytes | None = None) -> None:
        """``index``: the bytes of the checkpoint's ``.index``, already read (by rank 0 of a coordinated
        restore, see saverkit.train.distributed_save): the index file is then not opened here, only the
        data files are (local), or their byte ranges fetched (URL)."""
        self._remote: storage.Location | None = None
        self._core: _core.Reader | None
        if storage.is_url(prefix):
            self._open_remote(os.fsdecode(os.fspath(prefix)), storage_options, index)
        elif index is not None:
            self.prefix = storage.local_path(os.fsdecode(os.fspath(prefix)))
            self._core = _core.Reader(self.prefix, index, True)
        else:
            self.prefix = resolve_prefix(storage.local_path(prefix))
            self._core = _core.Reader(self.prefix)
        self._entries_cache: dict[str, tuple[DType, tuple[int, ...]]] | None = None

    def _open_remote(self, url: str, storage_options: dict | None, index: bytes | None = None) -> None:
        """The index fetched once (unless given); data objects' sizes looked up; tensor bytes fetched per
        read."""
        loc = self._remote = storage.Location(url, storage_options)
        self._remote_lock = threading.Lock()
        if index is None:
            self.prefix, index = checkpoint_paths.read_remote_index(loc, url)
        else:
            self.prefix = url
        self._core = _core.Reader(self.prefix, index)
        n = self._core.num_shards
        urls = [f"{self.prefix}.data-{shard:05d}-of-{n:05d}" for shard in range(n)]
        if n == 1:
            sizes = [loc.size(urls[0])]
        else:  # one round trip for all, not one per shard (a 4-rank checkpoint has 4 data objects)
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(min(n, 16)) as pool:
                sizes = list(pool.map(loc.size, urls))
        for shard, size in enumerate(sizes):
            if size is not None:  # a missing one is NotFoundError naming it when a tensor in it is read
                self._core.add_data_file(shard, size)

    def _fetch(self, keys: list, specs: list) -> None:
        """Remote: fetch the byte ranges the planned reads need into the engine's reader. Payloads close
        together are fetched as one range (a restore of 10,000 small tensors is a few requests, not
        10,000), and ranges are split into requests of at most ``storage.PART_SIZE`` bytes, all sent at
        once (concurrently on async backends)."""
        core, remote = self._core, self._remote
        assert core is not None and remote is not None
        pieces = sorted(core.pieces(keys, specs))
        if not pieces:
            return
        n = core.num_shards
        gap, most = storage.COALESCE_GAP, storage.PART_SIZE
        groups: list[list[int]] = []  # [shard, start, end]
        for shard, offset, size in pieces:
            g = groups[-1] if groups else None
            if (g is not None and g[0] == shard and offset <= g[2] + gap
                    and max(g[2], offset + size) - g[1] <= most):
                g[2] = max(g[2], offset + size)
            else:
                groups.append([shard, offset, offset + size])
        urls, starts, ends, owner = [], [], [], []
        for k, (shard, start, end) in enumerate(groups):
            url = f"{self.prefix}.data-{shard:05d}-of-{n:05d}"
            for s in range(start, end, most):
                urls.append(url)
                starts.append(s)
                ends.append(min(s + most, end))
                owner.append(k)
        datas = remote.read_ranges(urls, starts, ends)
        chunks: list[list[bytes]] = [[] for _ in groups]
        for k, data in zip(owner, datas, strict=True):
            chunks[k].append(data)
        for (shard, start, _), parts in zip(groups, chunks, strict=True):
            # A payload larger than one request arrives in pieces: joined (one copy) so the engine
            # reads it from one buffer.
            core.add_range(shard, start, parts[0] if len(parts) == 1 else b"".join(parts))

    @property
    def _entries(self) -> dict[str, tuple[DType, tuple[int, ...]]]:
        # Built on first use: read_tensors never needs the listing (10,000 entries cost ~50 ms).
        if self._entries_cache is None:
            if self._core is None:
                raise errors.FailedPreconditionError(None, None, f"BundleReader for {self.prefix} is closed")
            entries = {}
            for key, enum, shape, _ in self._core.list_entries():
                if key == b"":
                    continue
                entries[_as_name(key)] = (_as_dtype_or_data_loss(enum, key, self.prefix), tuple(shape))
            self._entries_cache = entries
        return self._entries_cache

    @property
    def num_shards(self) -> int:
        if self._core is None:  # as every other read of a closed reader (was an AttributeError on None)
            raise errors.FailedPreconditionError(None, None, f"BundleReader for {self.prefix} is closed")
        return self._core.num_shards

    def entries(self) -> dict[str, tuple[DType, tuple[int, ...]]]:
        """Full tensors (slices of partitioned tensors hidden): name -> (dtype, shape)."""
        return dict(self._entries)

    def has_tensor(self, name: str | bytes) -> bool:
        if self._entries_cache is not None:
            return _as_name(_as_key(name)) in self._entries_cache
        if self._core is None:
            raise errors.FailedPreconditionError(None, None, f"BundleReader for {self.prefix} is closed")
        return self._core.has_tensor(_as_key(name))  # one index lookup, not a listing

    def read(self, name: str | bytes) -> np.ndarray:
        return self.read_many([name])[0]

    def read_slice(self, name: str | bytes, shape_and_slice: str) -> np.ndarray:
        return self.read_many([name], [shape_and_slice])[0]

    def read_many(
        self,
        names: Sequence[str | bytes],
        shape_and_slices: Sequence[str] | None = None,
        dtypes: Sequence[DType | int | None] | None = None,
        out: Sequence[np.ndarray | None] | None = None,
    ) -> list[np.ndarray]:
        with _gc.paused():  # 10,000 tensors are tens of thousands of objects: see saverkit._gc
            return self._read_many(names, shape_and_slices, dtypes, out)

    def _read_many(
        self,
        names: Sequence[str | bytes],
        shape_and_slices: Sequence[str] | None,
        dtypes: Sequence[DType | int | None] | None,
        out: Sequence[np.ndarray | None] | None,
    ) -> list[np.ndarray]:
        # Names from a RestoreV2 kernel are already bytes: 10,000 _as_key calls cost more than this check.
        keys: list[bytes] = (
            cast("list[bytes]", list(names)) if all(type(n) is bytes for n in names)
            else [_as_key(n) for n in names]
        )
        n = len(keys)
        specs = list(shape_and_slices) if shape_and_slices is not None else [""] * n
        if len(specs) != n or len(dtypes if dtypes is not None else keys) != n \
                or len(out if out is not None else keys) != n:
            raise ValueError("read_tensors: names, shape_and_slices, dtypes and out must have equal lengths")
        if self._core is None:
            raise errors.FailedPreconditionError(None, None, f"BundleReader for {self.prefix} is closed")
        plans = self._core.prepare(keys, specs, _MAX_NDIM)
        buffers: list[np.ndarray | None] = []
        results: list[np.ndarray | None] = []
        # enum -> (dtype, numpy dtype or None for strings, whether the engine can read into the array itself)
        by_enum: dict[int, tuple[DType, np.dtype | None, bool]] = {}
        requested: dict[Any, DType] = {}
        checked = None  # (enum, requested object) last found equal: a restore asks for one dtype 10,000 times
        fresh = True  # every numeric destination allocated here: the engine may choose its pages
        lone = n == 1 and out is None and self._remote is None
        paged: list[tuple[int, np.dtype, tuple[int, ...]]] = []  # read into a PageBuffer: (i, dtype, shape)
        for i, (enum, shape) in enumerate(plans):
            known = by_enum.get(enum)
            if known is None:
                d = _as_dtype_or_data_loss(enum, keys[i], self.prefix)
                np_dtype = None if d == _dtypes.string else d.np_dtype
                known = by_enum[enum] = (d, np_dtype, np_dtype is not None and np_dtype.isbuiltin == 1)
            dtype, np_dtype, builtin = known
            if dtypes is not None and dtypes[i] is not None:
                asked = dtypes[i]
                if checked is None or checked[0] != enum or checked[1] is not asked:
                    want = requested.get(asked)
                    if want is None:
                        want = requested[asked] = _dtypes.as_dtype(asked)
                    if want != dtype:
                        raise errors.InvalidArgumentError(
                            None, None, f"Tensor {keys[i]!r} in checkpoint {self.prefix} has dtype "
                            f"{dtype.name}, but {want.name} was requested")
                    checked = (enum, asked)
            if np_dtype is None:
                # Object arrays given as out= get their elements replaced, once every read has succeeded.
                target = out[i] if out is not None else None
                if target is not None and not (
                        type(target) is np.ndarray and target.dtype == object and target.shape == shape
                        and target.flags.c_contiguous and target.flags.writeable):
                    _check_out(target, dtype, tuple(shape), keys[i])  # names the problem
                buffers.append(target)
                results.append(None)
                continue
            target = out[i] if out is not None else None
            if lone and np_dtype.itemsize * math.prod(shape) > _PAGE_BUFFER_MIN:
                paged.append((i, np_dtype, shape))
                buffers.append(None)
                results.append(None)
                continue
            if target is None:
                target = np.empty(shape, dtype=np_dtype)
            else:
                fresh = False
                if not (type(target) is np.ndarray and target.dtype == np_dtype and target.shape == shape
                        and target.flags.c_contiguous and target.flags.writeable):
                    _check_out(target, dtype, tuple(shape), keys[i])  # names the problem
            results.append(target)
            buffers.append(target if builtin else _byte_view(target))
        if self._remote is not None:
            with self._remote_lock:  # the fetched ranges belong to this read until it is done
                self._fetch(keys, specs)
                try:
                    strings = self._core.execute(keys, specs, buffers, fresh)
                finally:
                    self._core.clear_ranges()
        else:
            strings = self._core.execute(keys, specs, buffers, fresh)
        for i, np_dtype, shape in paged:
            results[i] = np.ndarray(shape, dtype=np_dtype, buffer=strings[i])  # base: the PageBuffer
            strings[i] = None
        for i, items in enumerate(strings):
            if items is not None:  # string tensors: object arrays of bytes (out[i] itself when given)
                results[i] = items
        return results  # type: ignore[return-value]

    def close(self) -> None:
        self._core = None  # data files close with the engine reader

    def __enter__(self) -> BundleReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_out(target: Any, dtype: DType, shape: tuple[int, ...], key: bytes) -> None:
    problem = None
    if not isinstance(target, np.ndarray):
        problem = f"is a {type(target).__name__}, not a numpy array"
    elif target.dtype != dtype.np_dtype:
        problem = f"has dtype {target.dtype}, tensor is {dtype.name}"
    elif target.shape != shape:
        problem = f"has shape {target.shape}, tensor is {shape}"
    elif not target.flags.c_contiguous:
        problem = "is not C-contiguous"
    elif not target.flags.writeable:
        problem = "is read-only"
    if problem:
        raise errors.InvalidArgumentError(None, None, f"Output array for tensor {key!r} {problem}")


def read_tensors(
    prefix: str,
    names: Sequence[str | bytes],
    shape_and_slices: Sequence[str] | None = None,
    dtypes: Sequence[DType | int | None] | None = None,
    out: Sequence[np.ndarray | None] | None = None,
    storage_options: dict | None = None,
) -> list[np.ndarray]:
    """Read tensors (or slices, in TF shape_and_slice syntax) like RestoreV2, in one parallel batch.

    ``out[i]``, when given, is filled in place and returned; otherwise a new array is allocated. For a
    string tensor ``out[i]`` is an object array whose elements are replaced by new bytes objects, only
    after every tensor of the call was read and checked (numeric ``out`` arrays are read into directly,
    so a failed call may leave them partly overwritten).
    """
    return BundleReader(prefix, storage_options).read_many(names, shape_and_slices, dtypes, out)
