"""``saverkit`` command-line tool: inspect, diff and convert checkpoints without TensorFlow.

    saverkit inspect PATH [--tensor NAME ... | --all] [--full] [--object-graph]
    saverkit diff A B [--quiet]
    saverkit convert SRC DST [--force]

PATH, A, B and SRC may be a TF checkpoint (its prefix, its directory -- through the ``checkpoint`` state
file, or the newest complete checkpoint there when that file is missing -- or any of its own files), an
``.npz`` or a ``.safetensors`` file. ``convert`` chooses the output format by DST's extension: ``.npz``,
``.safetensors``, anything else is written as a TF checkpoint prefix.

``.npz`` layout (read back with ``numpy.load(path)``, no pickles): one array per tensor, keyed by tensor
name. String tensors become fixed-width ``S`` arrays; numpy's ``S`` type drops trailing NUL bytes, so a
string tensor with an element ending in ``b"\\0"`` (or one that would be huge at fixed width) is skipped
with a warning rather than stored wrongly. Types numpy's file format cannot name (bfloat16, float8_*,
int4... from ml_dtypes) are stored as same-width unsigned-integer bit patterns, and a JSON object under the
key ``__saverkit_dtypes__`` (a 0-d ``S`` array) gives the real TF dtype of every tensor whose array dtype
alone does not say it. ``.safetensors`` holds numeric tensors only (bfloat16 as BF16); strings,
complex128, quantized, float8 and 2/4-bit types are skipped with a warning (safetensors' numpy loader cannot
read float8 back). It needs the ``safetensors`` package, and holds the whole checkpoint in memory while
writing (as does writing a TF checkpoint; ``.npz`` is written one tensor at a time).

Exit status: 0 success (``diff``: identical), 1 ``diff``: different, 2 error.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import logging
import os
import shutil
import sys
import time
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import IO, Any

import numpy as np

from saverkit import checkpoint_paths, errors, tempfiles
from saverkit import dtypes as _dtypes
from saverkit.train import checkpoint_management as _cm

NPZ_DTYPES_KEY = "__saverkit_dtypes__"
_PROGRESS_DELAY = 0.5  # seconds before a progress line appears: quick runs stay quiet
# safetensors dtype code -> TF dtype name, for the types its numpy loader reads back (not float8, in 0.8).
_SAFETENSORS_DTYPES = {"BOOL": "bool", "I8": "int8", "U8": "uint8", "I16": "int16", "U16": "uint16",
                       "I32": "int32", "U32": "uint32", "I64": "int64", "U64": "uint64", "F16": "float16",
                       "F32": "float32", "F64": "float64", "BF16": "bfloat16", "C64": "complex64"}


class CliError(Exception):
    """A problem to report in one line, without a traceback."""


# --- tensor sources --------------------------------------------------------------------------------------

class TensorSource:
    """Named tensors with their TF dtype and shape, read one at a time."""

    path: str

    def names(self) -> list[str]:
        raise NotImplementedError

    def dtype(self, name: str) -> _dtypes.DType:
        raise NotImplementedError

    def shape(self, name: str) -> tuple[int, ...]:
        raise NotImplementedError

    def get(self, name: str) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> TensorSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check_name(self, name: str) -> None:
        if name not in self.names():
            close = difflib.get_close_matches(name, self.names(), n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise errors.NotFoundError(None, None, f"{self.path}: no tensor named {name!r}{hint}")


class CheckpointSource(TensorSource):
    def __init__(self, prefix: str, storage_options: dict | None = None) -> None:
        from saverkit.train import load_checkpoint  # imports the compiled engine: only when needed

        self.path = prefix
        self._reader = load_checkpoint(prefix, storage_options)
        # Partitioned tensors appear whole, as TF's reader shows them.
        self._dtypes = self._reader.get_variable_to_dtype_map()
        self._shapes = {k: tuple(v) for k, v in self._reader.get_variable_to_shape_map().items()}

    def names(self) -> list[str]:
        return sorted(self._shapes)

    def dtype(self, name: str) -> _dtypes.DType:
        return self._dtypes[name]

    def shape(self, name: str) -> tuple[int, ...]:
        return self._shapes[name]

    def get(self, name: str) -> np.ndarray:
        return self._reader.get_array(name)  # get_tensor gives 0-d tensors as scalars, as TF's reader


class NpzSource(TensorSource):
    """An ``.npz`` read one entry at a time, trusting none of its sizes: every entry's ``.npy`` header is
    checked against its ZIP directory entry, and the directory against the archive, before anything is
    allocated; data is then decompressed into the array the header promises and no further (a small
    member may expand to many GiB: a "deflate bomb")."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._zip = zipfile.ZipFile(path)
            self._archive_size = os.path.getsize(path)
        except (zipfile.BadZipFile, OSError, ValueError) as e:  # ValueError: e.g. a negative offset
            raise CliError(f"{path}: not a readable .npz file ({e})") from None
        self._members = {m[:-4]: m for m in self._zip.namelist() if m.endswith(".npy")}
        self._headers: dict[str, _NpyHeader] = {}
        self._dtypes: dict[str, _dtypes.DType] = {}
        self._declared: dict[str, str] = {}
        if NPZ_DTYPES_KEY in self._members:
            raw = self._read(NPZ_DTYPES_KEY)
            try:
                self._declared = dict(json.loads(bytes(raw[()]).decode("utf-8")))
            except (ValueError, TypeError, UnicodeDecodeError) as e:
                raise CliError(f"{path}: bad {NPZ_DTYPES_KEY} entry ({e})") from None
            del self._members[NPZ_DTYPES_KEY]

    def close(self) -> None:
        self._zip.close()

    def names(self) -> list[str]:
        return sorted(self._members)

    def _header(self, name: str) -> _NpyHeader:
        header = self._headers.get(name)
        if header is None:
            info = self._zip.getinfo(self._members[name])
            self._check_directory(name, info)
            try:
                with self._zip.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    read = {(1, 0): np.lib.format.read_array_header_1_0,
                            (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                    if read is None:
                        raise ValueError(f"unsupported .npy version {version}")
                    shape, fortran_order, dtype = read(f)  # numpy bounds the header's own length
                    header = _NpyHeader(tuple(shape), fortran_order, dtype, f.tell())
            except (ValueError, EOFError, OSError, zipfile.BadZipFile, zlib.error, NotImplementedError,
                    RuntimeError) as e:  # the last two: an unsupported compression, an encrypted entry
                raise CliError(f"{self.path}: entry {name!r}: {e}") from None
            self._check_header(name, info, header)
            self._headers[name] = header
        return header

    def _check_directory(self, name: str, info: zipfile.ZipInfo) -> None:
        """The ZIP directory's sizes for an entry must be possible for this archive."""
        problem = None
        if info.compress_size > self._archive_size:
            problem = f"{info.compress_size} compressed bytes in a file of {self._archive_size}"
        elif info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
            problem = f"{info.file_size} bytes stored uncompressed in {info.compress_size}"
        elif (info.compress_type == zipfile.ZIP_DEFLATED
              and info.file_size > info.compress_size * _DEFLATE_MAX_RATIO + 4096):
            problem = (f"{info.file_size} bytes deflated into {info.compress_size}, more than deflate "
                       "can expand")
        if problem:
            raise errors.DataLossError(None, None, f"{self.path}: entry {name!r}: the ZIP directory "
                                       f"claims {problem}")

    def _check_header(self, name: str, info: zipfile.ZipInfo, header: _NpyHeader) -> None:
        """The .npy header's shape and dtype must be possible, and its data must fit in the member."""
        shape, dtype = header.shape, header.dtype
        if any(d < 0 for d in shape):
            raise CliError(f"{self.path}: entry {name!r} has a negative dimension in its shape "
                           f"{list(shape)}")
        if dtype.hasobject:
            raise CliError(f"{self.path}: entry {name!r} holds Python objects (pickles), which saverkit "
                           "does not load")
        held = info.file_size - header.offset
        if header.nbytes > held:
            raise errors.DataLossError(
                None, None, f"{self.path}: entry {name!r} claims shape {list(shape)} of {dtype} "
                f"({header.nbytes} bytes) but holds only {max(held, 0)} bytes of data")

    def dtype(self, name: str) -> _dtypes.DType:
        dtype = self._dtypes.get(name)
        if dtype is None:
            dtype = self._dtypes[name] = self._dtype(name)
        return dtype

    def _dtype(self, name: str) -> _dtypes.DType:
        np_dtype = _native(self._header(name).dtype)
        if name not in self._declared:
            try:
                return _dtypes.as_dtype(np_dtype)
            except TypeError:
                raise CliError(f"{self.path}: entry {name!r} has dtype {np_dtype} which is no TF dtype "
                               f"(and {NPZ_DTYPES_KEY} does not name one)") from None
        declared = self._declared[name]
        try:
            if not isinstance(declared, str):
                raise TypeError
            dtype = _dtypes.as_dtype(declared)
        except TypeError:
            raise CliError(f"{self.path}: {NPZ_DTYPES_KEY} gives {name!r} the unknown dtype "
                           f"{declared!r}") from None
        if not _carries(np_dtype, dtype):
            stored = str(np_dtype).lstrip("|")  # "S4", not "|S4"
            raise CliError(f"{self.path}: entry {name!r} is stored as {stored}, which cannot hold the "
                           f"{dtype.name} that {NPZ_DTYPES_KEY} declares for it")
        return dtype

    def shape(self, name: str) -> tuple[int, ...]:
        return self._header(name).shape

    def _read(self, name: str) -> np.ndarray:
        header = self._header(name)
        shape, dtype = header.shape, header.dtype
        # Allocated as promised (which the directory and archive sizes bound) and filled as the member
        # is decompressed: a member holding less is an error before its promise is ever touched.
        _check_memory(self.path, name, shape, dtype, header.nbytes)
        try:
            flat = np.empty(int(np.prod(shape, dtype=object)), dtype)
        except (MemoryError, ValueError) as e:  # ValueError: e.g. more than numpy's 64 dimensions
            if isinstance(e, MemoryError):
                raise _out_of_memory(self.path, name, shape, dtype, header.nbytes) from None
            raise CliError(f"{self.path}: entry {name!r}: {e}") from None
        view = flat.view(np.uint8).data if flat.nbytes else memoryview(b"")
        done = 0
        try:
            with self._zip.open(self._members[name]) as f:
                f.read(header.offset)
                while done < len(view):
                    chunk = f.read(min(len(view) - done, _READ_CHUNK))
                    if not chunk:
                        break
                    view[done:done + len(chunk)] = chunk
                    done += len(chunk)
                if done == len(view):
                    f.read(1)  # at the member's end, zipfile checks its CRC-32
        except (EOFError, OSError, zipfile.BadZipFile, zlib.error) as e:
            raise errors.DataLossError(None, None, f"{self.path}: entry {name!r}: {e}") from None
        if done < len(view):
            raise errors.DataLossError(
                None, None, f"{self.path}: entry {name!r} claims shape {list(shape)} of {dtype} "
                f"({header.nbytes} bytes) but holds only {done} bytes of data")
        if header.fortran_order:
            return flat.reshape(shape[::-1]).transpose()
        try:
            return flat.reshape(shape)
        except ValueError as e:  # more than numpy's 64 dimensions
            raise CliError(f"{self.path}: entry {name!r}: {e}") from None

    def get(self, name: str) -> np.ndarray:
        dtype = self.dtype(name)
        arr = self._read(name)
        if dtype == _dtypes.string:
            # One bytes object (33 bytes + its length) and one pointer per element.
            _check_memory(self.path, name, arr.shape, arr.dtype, arr.size * (41 + arr.dtype.itemsize))
            if arr.dtype.kind == "U":
                return np.vectorize(lambda s: s.encode("utf-8"), otypes=[object])(arr).reshape(arr.shape)
            return arr.astype(object)  # S -> bytes elements
        if _native(arr.dtype) != arr.dtype:
            arr = arr.astype(_native(arr.dtype))
        want = np.dtype(dtype.as_numpy_dtype)
        if arr.dtype != want:
            arr = arr.view(want)  # a bit pattern of the same width: _carries checked it
        return arr


class _NpyHeader:
    """What an entry's .npy header says: shape, order, dtype, and where the data starts."""

    __slots__ = ("shape", "fortran_order", "dtype", "offset", "nbytes")

    def __init__(self, shape: tuple[int, ...], fortran_order: bool, dtype: np.dtype, offset: int) -> None:
        self.shape, self.fortran_order, self.dtype, self.offset = shape, fortran_order, dtype, offset
        n = 1
        for d in shape:  # Python ints: the product of a hostile shape must not wrap around
            n *= d
        self.nbytes = n * dtype.itemsize


# Deflate writes at least two bits per 258-byte match: no member expands more than this (zeros do).
_DEFLATE_MAX_RATIO = 1032
_READ_CHUNK = 1 << 20


def _native(dt: np.dtype) -> np.dtype:
    """``dt`` in this machine's byte order (a .npy written on a big-endian machine says '>f4')."""
    return dt.newbyteorder("=") if dt.byteorder in "<>" else dt


def _carries(stored: np.dtype, dtype: _dtypes.DType) -> bool:
    """Whether an .npz array of ``stored`` dtype can hold a tensor of ``dtype``, as saverkit writes them:
    strings as ``S`` (or ``U``) arrays, other types as themselves or as the same-width bit pattern in an
    unsigned (or, for quantized types, any) integer."""
    if dtype == _dtypes.string:
        return stored.kind in "SU"
    if dtype.is_ref_dtype or dtype in (_dtypes.resource, _dtypes.variant) or stored.kind in "SUOMm":
        return False
    want = np.dtype(dtype.as_numpy_dtype)
    if stored == want:
        return True
    if stored.itemsize != want.itemsize or stored.fields is not None:
        return False
    return stored.kind == "u" or (dtype.is_quantized and stored.kind == "i")


def _available_memory() -> int | None:
    """Bytes of memory this machine can still give (MemAvailable), None where that is unknown."""
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _check_memory(path: str, name: str, shape: tuple, dtype: np.dtype, nbytes: int) -> None:
    """Refuse, with a clear error, an entry bigger than the memory left: numpy would raise a bare
    MemoryError, or Linux's overcommit would let it grow until the process is killed."""
    if nbytes < _MEMORY_CHECK_FROM:
        return
    available = _available_memory()
    if available is not None and nbytes > available:
        raise _out_of_memory(path, name, shape, dtype, nbytes, available)


_MEMORY_CHECK_FROM = 64 << 20  # smaller entries are not worth reading /proc/meminfo for


def _out_of_memory(path: str, name: str, shape: tuple, dtype: np.dtype, nbytes: int,
                   available: int | None = None) -> errors.ResourceExhaustedError:
    left = f"only {_human(available)} is available" if available is not None else "more than this " \
        "process may allocate"
    return errors.ResourceExhaustedError(
        None, None, f"{path}: entry {name!r} (shape {list(shape)} of {dtype}) needs {_human(nbytes)} of "
        f"memory: {left}")


class SafetensorsSource(TensorSource):
    def __init__(self, path: str) -> None:
        safetensors = _import_safetensors()
        self.path = path
        try:
            self._file = safetensors.safe_open(path, framework="numpy")
            self._file.__enter__()
        except Exception as e:  # SafetensorError / OSError: report, do not trace
            raise CliError(f"{path}: not a readable .safetensors file ({e})") from None
        self._names = sorted(self._file.keys())

    def close(self) -> None:
        self._file.__exit__(None, None, None)

    def names(self) -> list[str]:
        return self._names

    def get(self, name: str) -> np.ndarray:
        try:
            return self._file.get_tensor(name)
        except Exception as e:
            raise CliError(f"{self.path}: tensor {name!r}: {e}") from None

    def dtype(self, name: str) -> _dtypes.DType:
        code = self._file.get_slice(name).get_dtype()  # header only: no data read
        if code not in _SAFETENSORS_DTYPES:
            raise CliError(f"{self.path}: tensor {name!r} has safetensors dtype {code}, which saverkit "
                           "cannot read")
        return _dtypes.as_dtype(_SAFETENSORS_DTYPES[code])

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._file.get_slice(name).get_shape())


def _import_safetensors() -> Any:
    try:
        import safetensors
        import safetensors.numpy  # noqa: F401
    except ImportError:
        raise CliError("the .safetensors format needs the 'safetensors' package: "
                       "pip install safetensors (or saverkit[safetensors])") from None
    return safetensors


def resolve_checkpoint(path: str, storage_options: dict | None = None) -> str:
    """The checkpoint prefix meant by ``path`` (saverkit.checkpoint_paths.resolve_prefix); a directory whose
    state file is missing or stale falls back, with a warning, to its newest complete checkpoint.
    A URL (``s3://...``, saverkit.storage) names a prefix, one of its objects, or a directory whose state
    file names one."""
    from saverkit import storage

    if storage.is_url(path):
        from saverkit.bundle import BundleReader

        try:
            return BundleReader(path, storage_options).prefix
        except errors.NotFoundError as e:
            found = _cm.find_latest_checkpoint(path, storage_options)  # a directory without a usable state
            if found is None:
                raise CliError(f"{path}: {e.message}") from None
            _warn(f"{path}: {e.message}; using the newest complete checkpoint {found}")
            return found
    path = storage.local_path(path)
    try:
        return checkpoint_paths.resolve_prefix(path)
    except errors.NotFoundError:
        if not os.path.isdir(path):
            raise CliError(_not_found_message(path)) from None
    _, why = checkpoint_paths.checkpoint_in_directory(path)
    found = _cm.find_latest_checkpoint(path)
    if found is None:
        raise CliError(f"{path}: directory holds no checkpoint (no usable 'checkpoint' state file "
                       "and no complete <prefix>.index + .data-* files)")
    _warn(f"{path}: {why}; using the newest complete checkpoint {found}")
    return found


def _not_found_message(path: str) -> str:
    if os.path.isfile(path):
        return (f"{path}: not a checkpoint: expected a prefix P with a file P.index, a directory, or one "
                "of the files P.index / P.data-*-of-* / P.meta (or a .npz / .safetensors file)")
    dirname, base = os.path.split(path)
    try:
        near = sorted(n[: -len(".index")] for n in os.listdir(dirname or ".")
                      if n.endswith(".index") and n.startswith(base[:1]))
    except OSError:
        return f"{path}: no such file or directory"
    hint = f"; checkpoints there: {', '.join(near[:5])}" if near else ""
    return f"{path}: no such checkpoint (neither {path} nor {path}.index exists){hint}"


def open_source(path: str, storage_options: dict | None = None) -> TensorSource:
    """A checkpoint, ``.npz`` or ``.safetensors`` file; a URL too (saverkit.storage): a checkpoint is read
    in place (ranged reads), a file is downloaded to a temporary file first (removed on close)."""
    from saverkit import storage

    lowered = path.lower()
    if storage.is_url(path) and lowered.endswith((".npz", ".safetensors")):
        return _downloaded(path, storage_options)
    path = storage.local_path(path) if not storage.is_url(path) else path
    if lowered.endswith(".npz"):
        if not os.path.isfile(path):
            raise CliError(f"{path}: no such file")
        return NpzSource(path)
    if lowered.endswith(".safetensors"):
        if not os.path.isfile(path):
            raise CliError(f"{path}: no such file")
        return SafetensorsSource(path)
    return CheckpointSource(resolve_checkpoint(path, storage_options), storage_options)


def _downloaded(url: str, storage_options: dict | None) -> TensorSource:
    import tempfile

    from saverkit import storage

    loc = storage.Location(url, storage_options)
    if not loc.isfile(url):
        raise CliError(f"{url}: no such object")
    tmp = tempfile.mkdtemp(prefix="saverkit-convert-")
    local = os.path.join(tmp, storage.basename(url))
    try:
        loc.fs.get_file(loc.path(url), local)
        src: TensorSource = NpzSource(local) if url.lower().endswith(".npz") else SafetensorsSource(local)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    src.path = url  # errors name the URL
    close = src.close

    def close_and_remove() -> None:
        try:
            close()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    src.close = close_and_remove  # type: ignore[method-assign]
    return src


# --- output helpers ------------------------------------------------------------------------------------

def _warn(message: str) -> None:
    print(f"saverkit: warning: {message}", file=sys.stderr)


def _shape_str(shape: Iterable[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _nbytes(source: TensorSource, name: str) -> int | None:
    """Bytes of the tensor's values; strings count their element lengths (read to find out)."""
    dtype = source.dtype(name)
    if dtype == _dtypes.string:
        return sum(len(x) for x in source.get(name).reshape(-1))
    if dtype in (_dtypes.resource, _dtypes.variant):
        return None
    return int(np.prod(source.shape(name), dtype=np.int64)) * dtype.size  # no ml_dtypes import needed


class Progress:
    """One self-overwriting status line on stderr, only on a terminal and only for runs > 0.5 s."""

    def __init__(self, label: str, total: int, stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.label, self.total = label, total
        self.start = self.last = time.monotonic()
        self.shown = False

    def update(self, done: int, item: str = "") -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.start < _PROGRESS_DELAY or (self.shown and now - self.last < 0.1):
            return
        self.last, self.shown = now, True
        width = max(20, shutil.get_terminal_size().columns - 1)
        line = f"{self.label} {done}/{self.total} ({100 * done // max(self.total, 1)}%) {item}"
        self.stream.write("\r" + line[:width].ljust(width))
        self.stream.flush()

    def close(self) -> None:
        if self.shown:
            width = max(20, shutil.get_terminal_size().columns - 1)
            self.stream.write("\r" + " " * width + "\r")
            self.stream.flush()


# --- inspect -------------------------------------------------------------------------------------------

def _show_saved_model(path: str) -> bool:
    """For a SavedModel directory (or its saved_model.pb/.pbtxt): prints its tag sets and signatures like
    ``saved_model_cli show --all``, then a heading for its variables; returns whether it did. False when it
    has no variables (nothing more to list)."""
    from saverkit.saved_model import reader, show

    export_dir = reader.export_dir_of(path)
    if not reader.contains_saved_model(export_dir):
        return True
    show.show_all(reader.parse_saved_model(export_dir), sys.stdout)
    prefix = reader.variables_prefix(export_dir)
    if not os.path.isfile(prefix + ".index"):
        print(f"Variables: none ({prefix}.index does not exist)")
        return False
    print(f"Variables ({prefix}):")
    return True


def cmd_inspect(args: argparse.Namespace) -> int:
    if not (args.tensor or args.all or args.object_graph) and not _show_saved_model(args.path):
        return 0
    with open_source(args.path) as src:
        if args.object_graph:
            print_object_graph(src)
            return 0
        names = src.names() if args.all else (args.tensor or [])
        for name in names:
            src.check_name(name)
        if names:
            with np.printoptions(threshold=sys.maxsize) if args.full else contextlib.nullcontext():
                for name in names:
                    shape_str = _shape_str(src.shape(name))
                    print(f"tensor_name: {name}  dtype: {src.dtype(name).name}  shape: {shape_str}")
                    print(repr(src.get(name)))
            return 0
        rows = []
        total_bytes, total_elems, unknown = 0, 0, 0
        for name in src.names():
            shape = src.shape(name)
            size = _nbytes(src, name)
            total_elems += int(np.prod(shape, dtype=np.int64))
            if size is None:
                unknown += 1
            else:
                total_bytes += size
            rows.append((name, src.dtype(name).name, _shape_str(shape), "?" if size is None else f"{size:,}"))
        header = ("name", "dtype", "shape", "bytes")
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
        for r in [header, *rows]:
            left = [f"{c:<{w}}" for c, w in zip(r[:3], widths, strict=False)]
            print("  ".join([*left, f"{r[3]:>{widths[3]}}"]))
        more = f" (+{unknown} of unknown size)" if unknown else ""
        human = f" ({_human(total_bytes)})" if total_bytes >= 1024 else ""
        print(f"total: {len(rows)} tensors, {total_elems:,} elements, {total_bytes:,} bytes{human}{more}")
    return 0


def print_object_graph(src: TensorSource, out: IO[str] | None = None) -> None:
    """The object tree of an object-based checkpoint (what ``tf.train.Checkpoint`` wrote): each node with
    its id and path, its children, its attributes with their checkpoint keys, dtypes and shapes, and its
    slot variables, so that a program can mirror the tree to restore it."""
    from saverkit.protobuf import trackable_object_graph_pb2
    from saverkit.trackable import OBJECT_GRAPH_PROTO_KEY
    from saverkit.train._checkpoint_restore import _node_names

    out = out if out is not None else sys.stdout
    if not isinstance(src, CheckpointSource):
        raise CliError(f"{src.path}: only TF checkpoints have an object graph")
    if OBJECT_GRAPH_PROTO_KEY not in src.names():
        raise CliError(
            f"{src.path}: no object graph ({OBJECT_GRAPH_PROTO_KEY}): a name-based checkpoint (a TF1 Saver "
            "wrote it), whose keys are the variables' graph names"
        )
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    try:
        graph.ParseFromString(bytes(src.get(OBJECT_GRAPH_PROTO_KEY).reshape(())[()]))
    except Exception as e:
        raise CliError(f"{src.path}: {OBJECT_GRAPH_PROTO_KEY} is not a TrackableObjectGraph ({e})") from e
    names = _node_names(graph)
    n = len(graph.nodes)

    keys = set(src.names())

    def ref(node_id: int) -> str:
        where = names.get(node_id, "(unreachable)") if 0 <= node_id < n else "(no such node)"
        return f"[{node_id}] {where}"

    print(f"object graph of {src.path}: {n} nodes", file=out)
    for node_id, node in enumerate(graph.nodes):
        print(ref(node_id), file=out)
        for child in node.children:
            print(f"    child {child.local_name!r} -> {ref(child.node_id)}", file=out)
        for attr in node.attributes:
            key = attr.checkpoint_key
            if key in keys:
                what = f"{src.dtype(key).name} {_shape_str(src.shape(key))}"
            else:
                what = "missing from the checkpoint"
            full = f"  (full_name {attr.full_name!r})" if attr.full_name else ""
            print(f"    attribute {attr.name}: {key}  {what}{full}", file=out)
        for slot in node.slot_variables:
            print(f"    slot {slot.slot_name!r} for {ref(slot.original_variable_node_id)} -> "
                  f"[{slot.slot_variable_node_id}]", file=out)


# --- diff ----------------------------------------------------------------------------------------------

def compare_values(a: np.ndarray, b: np.ndarray, dtype: _dtypes.DType) -> str | None:
    """None if the tensors are identical bit for bit, else a short description of how they differ."""
    n = a.size
    if dtype == _dtypes.string:
        differ = sum(x != y for x, y in zip(a.reshape(-1), b.reshape(-1), strict=True))
        return f"{differ} of {n} strings differ" if differ else None
    a = np.ascontiguousarray(a).reshape(-1)
    b = np.ascontiguousarray(b).reshape(-1)
    size = a.dtype.itemsize
    mask = (a.view(np.uint8).reshape(n, size) != b.view(np.uint8).reshape(n, size)).any(axis=1)
    differ = int(mask.sum())
    if not differ:
        return None
    text = f"{differ} of {n} elements differ"
    da, db = a[mask], b[mask]
    if a.dtype.kind in "iu" and _npy_native(a.dtype):
        # The true |a-b| of n-bit integers fits in n unsigned bits: compute it there, no overflow.
        u = np.dtype(f"u{size}")
        hi, lo = np.maximum(da, db).astype(u), np.minimum(da, db).astype(u)
        return f"{text}, max abs diff {int((hi - lo).max())}"
    if dtype.is_floating or dtype.is_complex:
        wide = np.complex128 if dtype.is_complex else np.float64
        d = np.abs(da.astype(wide) - db.astype(wide))
        nan = int(np.isnan(d).sum())
        finite = d[~np.isnan(d)]
        text += f", max abs diff {finite.max():.6g}" if finite.size else ""
        return text + (f" ({nan} involve NaN)" if nan else "")
    return text


def cmd_diff(args: argparse.Namespace) -> int:
    out = (lambda *a, **k: None) if args.quiet else print
    with open_source(args.a) as a, open_source(args.b) as b:
        names_a, names_b = set(a.names()), set(b.names())
        differences = 0
        for name in sorted(names_a - names_b):
            out(f"only in A: {name} ({a.dtype(name).name} {_shape_str(a.shape(name))})")
            differences += 1
        for name in sorted(names_b - names_a):
            out(f"only in B: {name} ({b.dtype(name).name} {_shape_str(b.shape(name))})")
            differences += 1
        common = sorted(names_a & names_b)
        progress = Progress("diff", len(common))
        try:
            for i, name in enumerate(common):
                progress.update(i, name)
                da, db = a.dtype(name), b.dtype(name)
                sa, sb = a.shape(name), b.shape(name)
                if da != db:
                    out(f"dtype differs: {name}: {da.name} vs {db.name}")
                elif sa != sb:
                    out(f"shape differs: {name}: {_shape_str(sa)} vs {_shape_str(sb)}")
                elif da in (_dtypes.resource, _dtypes.variant):
                    continue  # opaque payloads: not compared
                else:
                    how = compare_values(a.get(name), b.get(name), da)
                    if how is None:
                        continue
                    out(f"values differ: {name}: {how}")
                differences += 1
        finally:
            progress.close()
        if differences:
            out(f"{differences} difference(s); {len(common)} tensors in both, "
                f"{len(names_a - names_b)} only in A, {len(names_b - names_a)} only in B")
            return 1
        out(f"identical: {len(common)} tensors")
        return 0


# --- convert -------------------------------------------------------------------------------------------

def _contiguous(arr: np.ndarray) -> np.ndarray:
    # np.ascontiguousarray alone turns a 0-d array into shape [1] (spec pitfall 1).
    return np.ascontiguousarray(arr).reshape(arr.shape)


def _npy_native(dt: np.dtype) -> bool:
    """Whether numpy's .npy header can name ``dt`` (ml_dtypes' types it cannot: they load as void)."""
    try:
        back = np.lib.format.descr_to_dtype(np.lib.format.dtype_to_descr(dt))
    except (TypeError, ValueError):
        return False
    return back == dt and back.type is dt.type


def _npz_array(name: str, arr: np.ndarray, dtype: _dtypes.DType) -> tuple[np.ndarray | None, bool]:
    """(array to store or None to skip, whether its dtype must be declared in the metadata)."""
    if dtype == _dtypes.string:
        items = [bytes(x) for x in arr.reshape(-1)]
        if any(x.endswith(b"\0") for x in items):
            _warn(f"skipping string tensor {name!r}: an element ends with a NUL byte, which numpy's "
                  "fixed-width 'S' type cannot keep")
            return None, False
        width = max((len(x) for x in items), default=0)
        if width * len(items) > 2 * sum(map(len, items)) + (64 << 20):
            _warn(f"skipping string tensor {name!r}: as fixed-width 'S{width}' it would take "
                  f"{_human(width * len(items))}")
            return None, False
        return np.array(items, dtype=f"S{max(width, 1)}").reshape(arr.shape), False
    if _npy_native(arr.dtype):
        try:
            exact = _dtypes.as_dtype(arr.dtype) == dtype
        except TypeError:
            exact = False
        return arr, not exact
    return arr.view(f"u{arr.dtype.itemsize}"), True


def _write_npz(dst: str, src: TensorSource, names: Sequence[str], progress: Progress,
               storage_options: dict | None = None) -> list[str]:
    declared: dict[str, str] = {}
    written = []

    def write(zf: zipfile.ZipFile) -> None:
        for i, name in enumerate(names):
            progress.update(i, name)
            if name == NPZ_DTYPES_KEY:
                raise CliError(f"tensor name {name!r} is reserved in saverkit's .npz layout")
            dtype = src.dtype(name)
            if dtype in (_dtypes.resource, _dtypes.variant):
                _warn(f"skipping {dtype.name} tensor {name!r}: it has no array form")
                continue
            arr, declare = _npz_array(name, src.get(name), dtype)
            if arr is None:
                continue
            if declare:
                declared[name] = dtype.name
            with zf.open(name + ".npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, _contiguous(arr), allow_pickle=False)
            written.append(name)
        if declared:
            with zf.open(NPZ_DTYPES_KEY + ".npy", "w", force_zip64=True) as f:
                meta = np.array(json.dumps(declared, sort_keys=True).encode("utf-8"))
                np.lib.format.write_array(f, meta, allow_pickle=False)

    def writer(tmp: str) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            write(zf)

    _atomic_file(dst, writer, storage_options)
    return written


def _write_safetensors(dst: str, src: TensorSource, names: Sequence[str], progress: Progress,
                       storage_options: dict | None = None) -> list[str]:
    safetensors = _import_safetensors()
    tensors = {}
    for i, name in enumerate(names):
        progress.update(i, name)
        dtype = src.dtype(name)
        if dtype.name not in _SAFETENSORS_DTYPES.values():
            _warn(f"skipping {dtype.name} tensor {name!r}: not a safetensors dtype saverkit can read back")
            continue
        tensors[name] = _contiguous(src.get(name))
    _atomic_file(dst, lambda tmp: safetensors.numpy.save_file(tensors, tmp), storage_options)
    return list(tensors)


def _write_checkpoint(dst: str, src: TensorSource, names: Sequence[str], progress: Progress,
                      storage_options: dict | None = None) -> list[str]:
    from saverkit.bundle import write_bundle  # imports the compiled engine: only when needed

    kept, tensors, kept_dtypes = [], [], []
    for i, name in enumerate(names):
        progress.update(i, name)
        dtype = src.dtype(name)
        if dtype in (_dtypes.resource, _dtypes.variant):
            _warn(f"skipping {dtype.name} tensor {name!r}: it cannot be rebuilt from its value")
            continue
        kept.append(name)
        tensors.append(src.get(name))
        kept_dtypes.append(dtype)
    from saverkit import storage

    if not storage.is_url(dst) and os.path.dirname(dst):
        os.makedirs(os.path.dirname(dst), exist_ok=True)
    # A URL: published as a re-save is (saverkit.remote_bundle): a replaced DST stays whole until the new
    # index is in.
    write_bundle(dst, kept, tensors, dtypes=kept_dtypes, storage_options=storage_options)
    return kept


def _atomic_file(dst: str, write: Callable[[str], Any], storage_options: dict | None = None) -> None:
    """Write via a temp name then rename: a reader (or mmap) of an old DST never sees a half file. A URL:
    written locally first, then uploaded as one object (saverkit.storage: complete or not at all)."""
    from saverkit import storage

    if storage.is_url(dst):
        _upload_file(dst, write, storage_options)
        return
    if os.path.dirname(dst):
        os.makedirs(os.path.dirname(dst), exist_ok=True)
    tmp = tempfiles.temp_path(dst)
    try:
        write(tmp)
        os.replace(tmp, dst)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError):
            raise CliError(f"{dst}: cannot write: {e.strerror or e}") from e
        raise


def _upload_file(dst: str, write: Callable[[str], Any], storage_options: dict | None) -> None:
    import mmap
    import tempfile

    from saverkit import storage

    loc = storage.Location(dst, storage_options)
    with tempfile.TemporaryDirectory(prefix="saverkit-convert-") as tmp:
        local = os.path.join(tmp, storage.basename(dst))
        write(local)
        size = os.path.getsize(local)
        with open(local, "rb") as f:
            if size == 0:
                loc.write_bytes(dst, b"")
                return
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
                loc.write_segments(dst, [(0, view)], size)


def _output_format(dst: str) -> str:
    lowered = dst.lower()
    return "npz" if lowered.endswith(".npz") else "safetensors" if lowered.endswith(".safetensors") else "tf"


def _output_exists(dst: str, fmt: str, storage_options: dict | None = None) -> bool:
    from saverkit import storage

    if storage.is_url(dst):
        loc = storage.Location(dst, storage_options)
        if fmt != "tf":
            return loc.exists(dst)
        base = storage.basename(dst)
        return loc.isfile(dst + ".index") or any(
            n.startswith(base + ".data-") and checkpoint_paths.DATA_FILE_RE.fullmatch(n, len(base))
            for n in loc.listdir(storage.dirname(dst)))
    if fmt != "tf":
        return os.path.exists(dst)
    return os.path.exists(dst + ".index") or bool(checkpoint_paths.data_files(dst))


def cmd_convert(args: argparse.Namespace) -> int:
    convert(args.src, args.dst, force=args.force)
    return 0


def convert(src_path: str, dst: str, *, force: bool = False,
            storage_options: dict | None = None) -> list[str]:
    """``saverkit convert SRC DST``: write the tensors of ``src_path`` (a TF checkpoint, ``.npz`` or
    ``.safetensors``) to ``dst`` in the format its extension names (``.npz``, ``.safetensors``, otherwise
    a TF checkpoint prefix). Either may be a URL (``s3://...``, saverkit.storage; ``storage_options``:
    the store's options): a checkpoint DST is published like a save (its index last, a replaced one kept
    whole until then), a file DST is uploaded as one object. Returns the names written; raises
    :class:`CliError` for problems worth one line (an existing DST without ``force``...)."""
    from saverkit import storage

    fmt = _output_format(dst)
    if fmt == "safetensors":
        _import_safetensors()  # fail before reading anything
    remote = storage.is_url(dst)
    dst = dst if remote else storage.local_path(dst)
    if not remote and os.path.isdir(dst):
        # A checkpoint "into" a folder would land beside it as DST.index, where nobody looks for it.
        example = os.path.join(dst, "model" if fmt == "tf" else f"model.{fmt}")
        raise CliError(f"{dst}: is an existing directory; give the output's file name or checkpoint "
                       f"prefix inside it, such as {example}")
    if _output_exists(dst, fmt, storage_options) and not force:
        raise CliError(f"{dst}: already exists (pass --force to overwrite)")
    with open_source(src_path, storage_options) as src:
        names = src.names()
        progress = Progress("convert", len(names))
        try:
            write = {"npz": _write_npz, "safetensors": _write_safetensors, "tf": _write_checkpoint}[fmt]
            written = write(dst, src, names, progress, storage_options)
        finally:
            progress.close()
    if not remote:
        tempfiles.remove_stale(os.path.dirname(dst) or ".")  # what killed earlier conversions left
    skipped = len(names) - len(written)
    print(f"wrote {dst}: {len(written)} tensors" + (f", {skipped} skipped" if skipped else ""))
    return written


# --- entry point ---------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="saverkit", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Inspect, compare and convert TensorFlow checkpoints without TensorFlow.",
        epilog=(__doc__ or "").split("\n\n", 2)[-1].replace("``", ""))
    parser.add_argument("--traceback", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("inspect", help="list a checkpoint's tensors, or print some",
                       description="List names, dtypes, shapes and sizes; or print tensors' values.")
    p.add_argument("path", help="checkpoint prefix, directory or file; a SavedModel directory (its "
                   "signatures, then its variables); or a .npz / .safetensors file")
    p.add_argument("--tensor", action="append", metavar="NAME", help="print this tensor (repeatable)")
    p.add_argument("--all", action="store_true", help="print every tensor")
    p.add_argument("--full", action="store_true", help="print whole arrays, without '...'")
    p.add_argument("--object-graph", action="store_true",
                   help="print the object tree of a tf.train.Checkpoint-style checkpoint: node ids, "
                   "children, attributes with their checkpoint keys, slot variables")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("diff", help="compare two checkpoints tensor by tensor",
                       description="Exit status 0 if identical (bit for bit), 1 if different, 2 on error.")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing, only set the exit status")
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser("convert", help="convert between TF checkpoints, .npz and .safetensors",
                       description="Output format by DST's extension: .npz, .safetensors, otherwise a TF "
                       "checkpoint prefix.")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--force", action="store_true", help="overwrite DST if it exists")
    p.set_defaults(func=cmd_convert)
    return parser


class _StderrLog(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        print(f"saverkit: {record.levelname.lower()}: {record.getMessage()}", file=sys.stderr)


def _show_warning(
    message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: str | None = None
) -> None:
    _warn(" ".join(str(message).split()))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Library warnings and log records become one "saverkit: warning: ..." line each.
    log, handler = logging.getLogger("saverkit"), _StderrLog(logging.WARNING)
    log.addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = _show_warning
            return _run(args)
    finally:
        log.removeHandler(handler)


def _run(args: argparse.Namespace) -> int:
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("saverkit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into e.g. `head`: stop quietly, and keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:  # one line for users; --traceback for bug reports
        if args.traceback:
            raise
        message = " ".join(str(e).split()) or type(e).__name__
        if not isinstance(e, (CliError, errors.OpError)):
            message = f"{type(e).__name__}: {message}"
        print(f"saverkit {args.command}: error: {message}", file=sys.stderr)
        return 2
