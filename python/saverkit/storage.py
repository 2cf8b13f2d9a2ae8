"""Where a checkpoint lives: a local path, or an fsspec URL (``s3://``, ``gs://``, ``http(s)://``,
``memory://``, ...).

Local paths (and ``file://`` URLs, which become local paths) keep the engine's own file I/O: nothing here
is imported or called for them beyond :func:`is_url`. For other URLs the engine produces and consumes bytes
in memory (``_core.encode_bundle``, ``_core.Reader(prefix, index)``) and fsspec moves them:

* writes: the data object (a multipart upload on S3, whose parts are sent in parallel and which is
  aborted on any error: a failed writer never publishes a partial object), then the index, then the
  ``.meta``, then the state file. A checkpoint is visible when its index exists, so the order is the
  commit protocol: no rename is needed. A re-save of an existing prefix writes its data under a shard
  count the current index does not name and deletes the old data objects only after the new index is in;
  an intent object (``<prefix>.skwrite-<owner>-<rand>``) lists what a save is about to write, so that the
  next save removes what a killed one left (saverkit.remote_bundle). On S3, :meth:`Location.clean_interrupted`
  also aborts the multipart uploads of killed saves;
* reads: the index once, then, per read, only the byte ranges of the tensors asked for (``cat_ranges``,
  concurrent on async backends), checked by the engine (CRC32C, sizes, offsets) as for local files.

Options (credentials, endpoints) come from each backend's standard environment (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``GOOGLE_APPLICATION_CREDENTIALS``, ...) or from ``storage_options=``, passed
along with the call (the Saver puts them in the run's ``RunOptions``): there is no process-wide registry.
fsspec and the backend packages are optional (``pip install saverkit[s3]``, ``saverkit[gcs]``,
``saverkit[http]``) and imported only when a URL is used.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import os
import posixpath
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from saverkit import errors

__all__ = ["Location", "is_url", "join", "locate", "local_path"]

_URL_RE = re.compile(r"\A([A-Za-z][A-Za-z0-9+.-]*)://")
# Backend package of each protocol, for the message when it is missing.
_EXTRA = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "http": "http", "https": "http"}
# Bytes per part of a multipart upload (S3 needs >= 5 MiB for all parts but the last) and parts in flight.
PART_SIZE = 16 << 20
MAX_PARTS_IN_FLIGHT = 8
# Reads: payloads at most this far apart are fetched as one range (the bytes between cost less than a
# request).
COALESCE_GAP = 256 << 10
_READ_ONLY = ("http", "https")
# S3 metadata naming the saverkit process that wrote a data object: cleanup deletes only objects it carries.
WRITER_KEY = "saverkit-writer"


def _owner() -> str:
    from saverkit import _core

    return _core.temp_owner()


def _fspath(path: Any) -> str:
    return os.fsdecode(os.fspath(path))


def is_url(path: Any) -> bool:
    """Whether ``path`` is a URL other than ``file://`` (those are local paths)."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        return False
    m = _URL_RE.match(_fspath(path))
    return m is not None and m.group(1).lower() not in ("file", "local")


def local_path(path: Any) -> str:
    """``path`` as a local path: ``file:///x`` becomes ``/x``; other paths are returned as they are."""
    p = _fspath(path)
    m = _URL_RE.match(p)
    if m and m.group(1).lower() in ("file", "local"):
        rest = p[m.end():]
        return rest if rest.startswith("/") else "/" + rest
    return p


def join(base: str, *names: str) -> str:
    """``os.path.join`` for local paths, ``/``-joining for URLs."""
    if is_url(base):
        return posixpath.join(base, *names)
    return os.path.join(base, *names)


def dirname(path: str) -> str:
    m = _URL_RE.match(path) if is_url(path) else None
    if m is not None:
        head, _ = posixpath.split(path[m.end():])
        return path[: m.end()] + head
    return os.path.dirname(path)


def basename(path: str) -> str:
    return posixpath.basename(path) if is_url(path) else os.path.basename(path)


def _import_fsspec(url: str) -> Any:
    try:
        import fsspec  # type: ignore[import-untyped]
    except ImportError:
        raise errors.UnimplementedError(
            None, None, f"Cannot open {url}: URLs need fsspec (pip install 'saverkit[remote]', or "
            "'saverkit[s3]' / 'saverkit[gcs]' / 'saverkit[http]' for those backends)") from None
    return fsspec


@functools.cache
def _whole_read_kwargs(fs_type: Any) -> dict[str, Any]:
    """Arguments of ``cat_file`` for reading a whole object in one GET. s3fs (2024.12+) first asks the
    object's size (a HEAD: one more round trip before every index, state file or .meta) to decide
    whether to fetch it in concurrent ranges; the objects read whole here are small, so it is told not
    to."""
    import inspect

    impl = getattr(fs_type, "_cat_file", None)
    try:
        params = inspect.signature(impl).parameters if impl is not None else {}
    except (TypeError, ValueError):
        params = {}
    return {"max_concurrency": 1} if "max_concurrency" in params else {}


class Location:
    """A checkpoint store reached through fsspec: the file system and how to address objects on it.

    Paths given to its methods are URLs as the user writes them (``s3://bucket/dir/model-7.index``).
    """

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None) -> None:
        fsspec = _import_fsspec(url)
        m = _URL_RE.match(url)
        if m is None:
            raise errors.InvalidArgumentError(None, None, f"{url} is not a URL")
        self.protocol = m.group(1).lower()
        try:
            self.fs, _ = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
        except ImportError as e:
            extra = _EXTRA.get(self.protocol, "remote")
            raise errors.UnimplementedError(
                None, None, f"Cannot open {url}: the {self.protocol}:// backend is not installed "
                f"(pip install 'saverkit[{extra}]'): {e}") from None
        except ValueError as e:
            raise errors.InvalidArgumentError(None, None, f"Cannot open {url}: {e}") from None
        self.read_only = self.protocol in _READ_ONLY
        self._whole_read = _whole_read_kwargs(self.fs.__class__)  # one signature look-up per backend

    def path(self, url: str) -> str:
        """The backend's path of ``url`` (protocol stripped)."""
        return self.fs._strip_protocol(url)  # noqa: SLF001 - fsspec's documented classmethod

    def _error(self, e: BaseException, url: str, what: str) -> errors.OpError:
        if isinstance(e, errors.OpError):
            return e
        if isinstance(e, FileNotFoundError):
            return errors.NotFoundError(None, None, f"{what} {url}: no such object")
        if isinstance(e, PermissionError):
            return errors.PermissionDeniedError(None, None, f"{what} {url}: {e}")
        return errors.UnavailableError(None, None, f"{what} {url}: {type(e).__name__}: {e}")

    # --- queries
    def _fresh(self, url: str) -> str:
        """The backend path of ``url``, its listing cache dropped: another process may have written it
        since (a checkpoint's existence is never taken from a cached listing)."""
        path = self.path(url)
        try:
            self.fs.invalidate_cache(path)
        except Exception:  # noqa: BLE001 - a cache is only a cache
            pass
        return path

    def exists(self, url: str) -> bool:
        try:
            return bool(self.fs.exists(self._fresh(url)))
        except Exception as e:  # noqa: BLE001 - transport errors become OpErrors naming the object
            raise self._error(e, url, "Failed to look up") from e

    def isfile(self, url: str) -> bool:
        try:
            return bool(self.fs.isfile(self._fresh(url)))
        except Exception as e:  # noqa: BLE001
            raise self._error(e, url, "Failed to look up") from e

    def info(self, url: str) -> dict[str, Any] | None:
        """What the store reports of object ``url`` (fsspec's ``info``); None when it does not exist."""
        try:
            return dict(self.fs.info(self._fresh(url)))
        except FileNotFoundError:
            return None
        except Exception as e:  # noqa: BLE001
            raise self._error(e, url, "Failed to look up") from e

    def size(self, url: str) -> int | None:
        """Bytes of object ``url``; None when it does not exist."""
        info = self.info(url)
        if info is None or info.get("type") == "directory":
            return None
        size = info.get("size")
        if size is None:
            raise errors.UnavailableError(None, None, f"{url}: the server does not report its size")
        return int(size)

    def mtime(self, url: str) -> float | None:
        """When object ``url`` was last written (seconds since the epoch), from what its store reports;
        None when it does not exist or the store reports no time."""
        info = self.info(url)
        return None if info is None else modified_time(info)

    def listdir(self, url: str) -> list[str]:
        """Names (not paths) of the objects directly under directory ``url``; [] when there is none."""
        try:
            entries = self.fs.ls(self.path(url), detail=False, refresh=True) \
                if self.protocol not in _READ_ONLY else []
        except FileNotFoundError:
            return []
        except TypeError:
            entries = self.fs.ls(self.path(url), detail=False)
        except Exception as e:  # noqa: BLE001
            raise self._error(e, url, "Failed to list") from e
        return sorted({posixpath.basename(str(p).rstrip("/")) for p in entries})

    # --- reading
    def read_bytes(self, url: str, limit: int | None = None) -> bytes:
        try:
            if limit is not None:
                size = self.size(url)
                if size is None:
                    raise FileNotFoundError(url)
                if size > limit:
                    raise errors.FailedPreconditionError(
                        None, None, f"{url} is larger than {limit} bytes")
            return self.fs.cat_file(self.path(url), **self._whole_read)
        except Exception as e:  # noqa: BLE001
            raise self._error(e, url, "Failed to read") from e

    def read_ranges(self, urls: Sequence[str], starts: Sequence[int], ends: Sequence[int]) -> list[bytes]:
        """Bytes [starts[i], ends[i]) of urls[i], fetched concurrently where the backend can."""
        if not urls:
            return []
        paths = [self.path(u) for u in urls]
        try:
            out = self.fs.cat_ranges(paths, list(starts), list(ends), on_error="raise")
        except Exception as e:  # noqa: BLE001
            raise self._error(e, urls[0], "Failed to read") from e
        for u, s, e_, data in zip(urls, starts, ends, out, strict=True):
            if isinstance(data, BaseException):
                raise self._error(data, u, "Failed to read")
            if len(data) != e_ - s:
                raise errors.DataLossError(
                    None, None, f"Read of bytes [{s}, {e_}) of {u} returned {len(data)} bytes: object "
                    "truncated or changed while it was read")
        return out

    # --- writing
    def _check_writable(self, url: str) -> None:
        if self.read_only:
            raise errors.PermissionDeniedError(
                None, None, f"Cannot write {url}: {self.protocol}:// is read-only")

    def write_bytes(self, url: str, data: bytes) -> None:
        """One object, created whole (a single PUT: readers see it complete or not at all)."""
        self._check_writable(url)
        try:
            self.fs.pipe_file(self.path(url), bytes(data))
        except Exception as e:  # noqa: BLE001
            raise self._error(e, url, "Failed to write") from e

    def write_segments(self, url: str, segments: Sequence[tuple[int, Any]], size: int) -> None:
        """One object made of ``segments`` ((offset, buffer) in order, back to back, ``size`` bytes in
        all). On S3: a multipart upload whose parts go out in parallel, completed only when every part
        is in, aborted on any error (nothing becomes visible). Elsewhere: one PUT of the whole."""
        self._check_writable(url)
        try:
            if self.protocol in ("s3", "s3a") and size > PART_SIZE and hasattr(self.fs, "_call_s3"):
                _s3_multipart(self.fs, self.path(url), segments, size)
            elif self.protocol in ("s3", "s3a") and hasattr(self.fs, "_call_s3"):
                _s3_put(self.fs, self.path(url), segments)
            elif self.protocol in ("s3", "s3a"):  # one PUT, marked as saverkit's (see clean_interrupted)
                self.fs.pipe_file(self.path(url), b"".join(b for _, b in segments),
                                  Metadata={WRITER_KEY: _owner()})
            else:
                self.fs.pipe_file(self.path(url), b"".join(b for _, b in segments))
        except Exception as e:  # noqa: BLE001
            raise self._error(e, url, "Failed to write") from e

    def remove(self, urls: Sequence[str]) -> None:
        """Deletes the objects ``urls`` (missing ones are not an error)."""
        if not urls:
            return
        self._check_writable(urls[0])
        for u in urls:
            try:
                self.fs.rm_file(self.path(u))
            except FileNotFoundError:
                pass
            except Exception as e:  # noqa: BLE001
                raise self._error(e, u, "Failed to delete") from e
        self.invalidate()

    def clean_interrupted(self, directory: str, base: str, before: float) -> list[str]:
        """What saves of model ``base`` in ``directory`` interrupted before ``before`` (epoch seconds) left
        on S3: their multipart uploads (invisible, but stored) are aborted, and data objects that no index
        names (the writer died between the data and the index) are deleted when their metadata says
        saverkit wrote them. Returns what was removed. Other stores: nothing to do (their objects appear
        whole, and a data object without its index is left alone)."""
        if self.protocol not in ("s3", "s3a") or not hasattr(self.fs, "call_s3"):
            return []
        import re as _re

        dir_path = self.path(directory).rstrip("/")
        bucket, key_dir, _ = self.fs.split_path(dir_path)
        key_prefix = (key_dir + "/" if key_dir else "") + base
        ours = _re.compile(_re.escape(key_prefix) + r"(-\d+)?(\.index|\.data-\d{5,}-of-\d{5,})\Z")
        removed = []
        listed = self.fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=key_prefix)
        uploads = listed.get("Uploads", [])
        for up in uploads:
            if ours.match(up["Key"]) and up["Initiated"].timestamp() < before:
                self.fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=up["Key"],
                                UploadId=up["UploadId"])
                removed.append(f"upload {up['Key']}")
        self.invalidate()
        names = self.listdir(directory)
        have = set(names)
        for name in names:
            m = ours.match((key_dir + "/" if key_dir else "") + name)
            if not m or m.group(2) == ".index":
                continue
            prefix = name[: name.rindex(".data-")]
            if prefix + ".index" in have:
                continue
            key = (key_dir + "/" if key_dir else "") + name
            head = self.fs.call_s3("head_object", Bucket=bucket, Key=key)
            if WRITER_KEY not in head.get("Metadata", {}) or head["LastModified"].timestamp() >= before:
                continue
            self.remove([join(directory, name)])
            removed.append(join(directory, name))
        return removed

    def invalidate(self) -> None:
        try:
            self.fs.invalidate_cache()
        except Exception:  # noqa: BLE001 - a cache is only a cache
            pass


def _parts(segments: Sequence[tuple[int, Any]], size: int) -> Iterator[tuple[int, list[memoryview]]]:
    """(part number, list of memoryviews) of PART_SIZE bytes each (the last shorter): views of the
    segments, no copy."""
    part: list[memoryview] = []
    used, number = 0, 1
    for _, buf in segments:
        mv = memoryview(buf).cast("B")
        at = 0
        while at < len(mv):
            take = min(len(mv) - at, PART_SIZE - used)
            part.append(mv[at:at + take])
            used += take
            at += take
            if used == PART_SIZE:
                yield number, part
                part, used, number = [], 0, number + 1
    if part or number == 1:
        yield number, part


class _PartBody:
    """One multipart part's bytes as botocore and aiohttp send them without copying: the memoryviews of
    the arrays' buffers (from ``_parts``), not a ``bytes`` made of them.

    botocore accepts a ``Body`` that is bytes or has ``read`` (bytes would be wrapped in a BytesIO, which
    aiohttp copies again); it reads it through ``read``/``seek``/``tell`` for the payload's length,
    checksum and signature, and rewinds it with ``seek`` to retry. aiohttp sends it as an async iterable
    (this is not an ``io.IOBase``, so aiobotocore hands it over as it is): chunks are views, written to
    the socket from the arrays' memory."""

    CHUNK = 1 << 20  # bytes per chunk handed to aiohttp (a view, not a copy)

    def __init__(self, views: Sequence[memoryview]) -> None:
        self.views = list(views)
        self._starts: list[int] = []
        at = 0
        for v in self.views:
            self._starts.append(at)
            at += len(v)
        self._size = at
        self._pos = 0

    def __len__(self) -> int:
        return self._size - self._pos

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = (0, self._pos, self._size)[whence]
        self._pos = min(max(base + offset, 0), self._size)
        return self._pos

    def _view_at(self, pos: int, most: int) -> memoryview:
        """A view of up to ``most`` bytes from ``pos``, within one of the views (a short read at a
        view's end: readers loop until an empty read)."""
        i = bisect.bisect_right(self._starts, pos) - 1
        at = pos - self._starts[i]
        v = self.views[i]
        while at == len(v) and i + 1 < len(self.views):  # empty views
            i, at, v = i + 1, 0, self.views[i + 1]
        return v[at:at + most]

    def read(self, n: int = -1) -> memoryview:
        if self._pos >= self._size:
            return memoryview(b"")
        most = self._size - self._pos if n is None or n < 0 else n
        chunk = self._view_at(self._pos, most)
        self._pos += len(chunk)
        return chunk

    async def __aiter__(self) -> Any:
        while self._pos < self._size:
            yield self.read(self.CHUNK)


def _s3_put(fs: Any, path: str, segments: Sequence[tuple[int, Any]]) -> None:
    """A data object of at most PART_SIZE bytes: one PUT, its body the segments' views (no copy), marked
    as saverkit's (see clean_interrupted)."""
    from fsspec.asyn import sync  # type: ignore[import-untyped]

    bucket, key, _ = fs.split_path(path)
    views = [memoryview(buf).cast("B") for _, buf in segments]
    sync(fs.loop, fs._call_s3, "put_object", Bucket=bucket, Key=key,  # noqa: SLF001 - see _s3_multipart
         Body=_PartBody(views), Metadata={WRITER_KEY: _owner()})
    fs.invalidate_cache(path)


def _s3_multipart(fs: Any, path: str, segments: Sequence[tuple[int, Any]], size: int) -> None:
    import asyncio

    from fsspec.asyn import sync

    bucket, key, _ = fs.split_path(path)

    async def upload() -> None:
        # s3fs's async call (call_s3 is its sync wrapper): the multipart API under our control.
        mpu = await fs._call_s3(  # noqa: SLF001
            "create_multipart_upload", Bucket=bucket, Key=key, Metadata={WRITER_KEY: _owner()})
        upload_id = mpu["UploadId"]
        try:
            gate = asyncio.Semaphore(MAX_PARTS_IN_FLIGHT)

            async def one(number: int, views: list) -> dict:
                async with gate:
                    r = await fs._call_s3(  # noqa: SLF001
                        "upload_part", Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number,
                        Body=_PartBody(views))
                    return {"PartNumber": number, "ETag": r["ETag"]}

            parts = await asyncio.gather(*(one(n, v) for n, v in _parts(segments, size)))
            await fs._call_s3(  # noqa: SLF001
                "complete_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id,
                MultipartUpload={"Parts": sorted(parts, key=lambda p: p["PartNumber"])})
        except BaseException:
            try:
                await fs._call_s3(  # noqa: SLF001
                    "abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id)
            except Exception:  # noqa: BLE001 - the first error is the one to report
                pass
            raise

    sync(fs.loop, upload)
    fs.invalidate_cache(path)


def modified_time(info: Mapping[str, Any]) -> float | None:
    """The last-write time (seconds since the epoch) in an object's ``info`` (S3's LastModified, GCS's
    updated, ...); None when the store reports none."""
    for key in ("LastModified", "updated", "mtime", "created", "timeCreated"):
        value = info.get(key)
        if value is None:
            continue
        if hasattr(value, "timestamp"):
            return float(value.timestamp())
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            from datetime import datetime  # noqa: PLC0415

            with contextlib.suppress(ValueError):
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return None


def locate(path: Any, storage_options: Mapping[str, Any] | None = None) -> Location | None:
    """The :class:`Location` of a URL path, None for a local one."""
    if not is_url(path):
        return None
    return Location(_fspath(path), storage_options)
