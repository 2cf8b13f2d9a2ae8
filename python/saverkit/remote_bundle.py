"""Publishing a checkpoint on a store (``s3://``, ``gs://``, ``memory://``...: see :mod:`saverkit.storage`).

A store has no rename, and a checkpoint's object names are fixed by the format (``<prefix>.index``,
``<prefix>.data-%05d-of-%05d``), so the one atomic step is the index: a single object, written whole by
one PUT, after every data object it names exists. Readers find the data objects through the index
header's ``num_shards``; that is what makes a re-save of an existing prefix safe: it picks a shard count
that no data object of the prefix has (an extra empty shard: ``model.data-00000-of-00002`` + an empty
``model.data-00001-of-00002`` after ``model.data-00000-of-00001``, and back), so its data objects never
overwrite those the current index names. TensorFlow reads such a checkpoint (it opens a data file only for
the entries that name it). The first save of a prefix is byte for byte a local save's. The order:

1. an intent object ``<prefix>.skwrite-<owner>-<rand8>`` (JSON) naming the data objects about to be
   written and those the new index replaces;
2. the new data objects (S3: multipart uploads, aborted on error; GCS: one upload, finalized only whole);
3. the index: the commit. Before it readers see the old checkpoint, after it the new one;
4. the replaced data objects deleted, then the intent object.

A writer that fails deletes what it wrote; one killed anywhere leaves the old or the new checkpoint
complete, and its intent object. The next publish in that directory settles the intent objects of dead
writers (``_core.owner_is_stale``: a dead process of this host, or an hour without news from another
host): it deletes the data objects that the prefix's index does not name — only those the intent object
lists, so nothing saverkit did not write is ever deleted — and then the intent object.

Sharded saves (one SaveV2 per device): each SaveV2 of a part ``<prefix>_temp_<hex32>/part-K-of-N`` on a
URL encodes its bundle in memory and stages it here; MergeV2Checkpoints then publishes the parts as
``<prefix>.data-0000k-of-0000n`` in place (no temporary objects, no copy), with the index merged in
memory (``_core.merge_indexes``: the bytes MergeV2Checkpoints writes locally), written last.
"""

from __future__ import annotations

import contextlib
import json
import logging
import posixpath
import re
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from saverkit import _core, errors, storage

__all__ = ["Part", "clean_stale_intents", "publish", "remove_checkpoint", "stage_part", "take_parts"]

_logger = logging.getLogger(__name__)

_OWNER = r"[0-9a-f]{8}-\d+-[0-9a-f]{8}"
_INTENT_RE = re.compile(rf"^(?P<prefix>.+)\.skwrite-(?P<owner>{_OWNER})-[0-9a-f]{{8}}\Z")
_DATA_RE = re.compile(r"^(?P<prefix>.+)\.data-(?P<shard>\d{5,})-of-(?P<num>\d{5,})\Z")
_PART_RE = re.compile(r"_temp_[0-9a-f]{32}/part-\d{5,}-of-\d{5,}\Z")

# A part: what encode_bundle made of one SaveV2 (data segments, data size, index bytes), and the arrays
# the segments are views of (kept alive until the part is written).
Part = tuple[Sequence[tuple[int, Any]], int, bytes, Any]

# Parts of sharded saves in flight, by part prefix (unique: the Saver's _temp_<hex32> and the step).
_staged: dict[str, Part] = {}
_staged_lock = threading.Lock()
# Intent objects of this process's publishes in flight: never settled by another thread's cleanup.
_active: set[str] = set()


def is_part(prefix: str) -> bool:
    """Whether ``prefix`` is a part of a sharded save (``<prefix>_temp_<hex32>/part-K-of-N``)."""
    return _PART_RE.search(prefix) is not None


def stage_part(prefix: str, part: Part) -> None:
    with _staged_lock:
        _staged[prefix] = part


def take_parts(prefixes: Sequence[str]) -> list[Part | None]:
    """The staged parts (None for a missing one), removed from the stage."""
    with _staged_lock:
        return [_staged.pop(p, None) for p in prefixes]


def drop_parts(destination: str) -> None:
    """Forget the staged parts of a sharded save of ``destination`` that failed before its merge."""
    with _staged_lock:
        for p in [p for p in _staged if p.startswith(destination + "_temp_")]:
            del _staged[p]


def _data_name(base: str, shard: int, num_shards: int) -> str:
    return f"{base}.data-{shard:05d}-of-{num_shards:05d}"


def _shard_counts(names: Sequence[str], base: str) -> dict[int, list[str]]:
    """num_shards -> the data objects of prefix ``base`` with that count, among ``names``."""
    out: dict[int, list[str]] = {}
    for name in names:
        m = _DATA_RE.match(name)
        if m and m.group("prefix") == base:
            out.setdefault(int(m.group("num")), []).append(name)
    return out


def _index_shards(loc: storage.Location, prefix: str) -> int | None:
    """num_shards of the index of ``prefix``; None when there is none."""
    try:
        index = loc.read_bytes(prefix + ".index")
    except errors.NotFoundError:
        return None
    return _core.Reader(prefix, index).num_shards


def publish(loc: storage.Location, prefix: str, parts: Sequence[Part]) -> list[str]:
    """Writes the checkpoint ``prefix`` made of ``parts`` (single-shard bundles, in shard order) with the
    protocol above. Returns the URLs of its index and data objects."""
    directory, base = storage.dirname(prefix), storage.basename(prefix)
    names = loc.listdir(directory)
    taken = _shard_counts(names, base)
    replaced: list[str] = []
    if base + ".index" in names and taken:
        # The data objects the current index names: replaced once the new index is in.
        old = next(iter(taken)) if len(taken) == 1 else _index_shards(loc, prefix)
        if old is not None and old in taken:
            replaced = [n for n in taken[old] if int(_DATA_RE.match(n).group("shard")) < old]  # type: ignore[union-attr]
    indexes = [p[2] for p in parts]
    if len(parts) == 1:
        natural, shard_of = 1, [0]
        index = indexes[0]
    else:
        index, shard_of = _core.merge_indexes(indexes, prefix)
        natural = max(max(shard_of) + 1, 0)
    num_shards = natural
    while num_shards in taken:  # never a name an index may name: the next count up
        num_shards += 1
    if num_shards != natural:
        index, shard_of = _core.merge_indexes(indexes, prefix, num_shards)
    by_shard: dict[int, Part] = {s: p for s, p in zip(shard_of, parts, strict=True) if s >= 0}
    data = [storage.join(directory, _data_name(base, s, num_shards)) for s in range(num_shards)]
    intent = storage.join(directory, f"{base}.skwrite-{_core.temp_owner()}-{_rand8()}")
    index_url = prefix + ".index"
    _active.add(intent)
    try:
        loc.write_bytes(intent, json.dumps({
            "prefix": base, "num_shards": num_shards,
            "write": [storage.basename(u) for u in data], "replace": replaced}).encode())
        try:
            _write_data(loc, data, by_shard)
            try:
                loc.write_bytes(index_url, index)
            except BaseException:
                if not _is_ours(loc, index_url, index):  # a lost response after the PUT succeeded
                    raise
        except BaseException:
            # Nothing of ours is named by an index: remove it (the old checkpoint stays as it was).
            _remove_quietly(loc, data)
            _remove_quietly(loc, [intent])
            raise
        try:
            loc.remove([storage.join(directory, n) for n in replaced])
            loc.remove([intent])
        except errors.OpError as e:  # the new checkpoint is complete: the next save finishes this
            _logger.warning("Could not delete the data objects %s replaced by %s: %s", replaced, prefix, e)
    finally:
        _active.discard(intent)
    try:
        clean_stale_intents(loc, directory, names)
    except Exception as e:  # noqa: BLE001 - cleanup is best effort; the save succeeded
        _logger.warning("Could not clean up after interrupted saves in %s: %s", directory, e)
    return [index_url, *data]


def _rand8() -> str:
    import secrets

    return secrets.token_hex(4)


def _write_data(loc: storage.Location, urls: Sequence[str], by_shard: dict[int, Part]) -> None:
    """Every data object: a part's bytes, or empty for a shard no entry names. Shards go up concurrently."""

    def one(shard: int) -> None:
        part = by_shard.get(shard)
        if part is None:
            loc.write_segments(urls[shard], [], 0)
        else:
            loc.write_segments(urls[shard], part[0], part[1])

    if len(urls) == 1:
        one(0)
        return
    with ThreadPoolExecutor(max_workers=min(len(urls), 4)) as pool:
        futures = [pool.submit(one, s) for s in range(len(urls))]
    for f in futures:
        f.result()  # the first error, once every upload has finished (or been aborted)


def _is_ours(loc: storage.Location, url: str, data: bytes) -> bool:
    try:
        return loc.read_bytes(url) == data
    except Exception:  # noqa: BLE001 - unknown: treated as not written
        return False


def _remove_quietly(loc: storage.Location, urls: Sequence[str]) -> None:
    with contextlib.suppress(Exception):
        loc.remove(urls)


def remove_checkpoint(loc: storage.Location, prefix: str) -> None:
    """Deletes the checkpoint ``prefix`` that this save wrote (a later step of the save failed): its index
    first (it stops being a checkpoint), then the data objects that index names."""
    num_shards = _index_shards(loc, prefix)
    loc.remove([prefix + ".index"])
    if num_shards is not None:
        directory, base = storage.dirname(prefix), storage.basename(prefix)
        loc.remove([storage.join(directory, _data_name(base, s, num_shards)) for s in range(num_shards)])


def _age(loc: storage.Location, url: str) -> float | None:
    """Seconds since object ``url`` was written; None when it is gone."""
    info = loc.info(url)  # one request: whether it is there, and when it was written
    if info is None:
        return None
    stamp = storage.modified_time(info)
    if stamp is None:
        return 0.0  # unknown: only a dead process of this host counts as gone
    return max(0.0, time.time() - stamp)


def _intents(names: Sequence[str]) -> Iterator[tuple[str, str, str]]:
    for name in names:
        m = _INTENT_RE.match(name)
        if m:
            yield name, m.group("prefix"), m.group("owner")


def clean_stale_intents(loc: storage.Location, directory: str,
                        names: Sequence[str] | None = None) -> list[str]:
    """Settles the intent objects (in ``names``, the listing of ``directory``; listed when None) of
    publishes whose writer is gone: deletes the data objects they list that the prefix's index does not
    name, then the intent object. Returns the URLs deleted."""
    if names is None:
        names = loc.listdir(directory)
    removed: list[str] = []
    for name, base, owner in _intents(names):
        url = storage.join(directory, name)
        if url in _active:
            continue
        age = _age(loc, url)
        if age is None or not _core.owner_is_stale(owner, age) and owner != _core.temp_owner():
            continue
        try:
            intent = json.loads(loc.read_bytes(url))
            prefix = storage.join(directory, base)
            current = _index_shards(loc, prefix)
            doomed = [n for n in [*intent.get("write", []), *intent.get("replace", [])]
                      if isinstance(n, str) and _orphan(n, base, current)]
        except errors.NotFoundError:
            continue
        except (ValueError, TypeError, AttributeError, errors.OpError) as e:
            _logger.warning("Ignoring unreadable intent object %s: %s", url, e)
            continue
        urls = [storage.join(directory, n) for n in doomed]
        loc.remove(urls)
        loc.remove([url])
        removed += [*urls, url]
    return removed


def _orphan(name: str, base: str, current: int | None) -> bool:
    """Whether data object ``name`` of prefix ``base`` is named by no index (the prefix's index has
    ``current`` shards, None: no index)."""
    m = _DATA_RE.match(posixpath.basename(name))
    if not m or m.group("prefix") != base:
        return False  # not a data object of that prefix: never ours to delete
    return current is None or int(m.group("num")) != current
