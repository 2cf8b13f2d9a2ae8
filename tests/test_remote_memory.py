"""Checkpoints at fsspec URLs (saverkit.storage), over in-memory stores: memory:// and a byte-counting
countmem:// (tests/remote_helpers.py), and file:// URLs (local paths). The engine encodes and checks;
fsspec moves the bytes; the commit order is data, index, .meta, state file."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("fsspec")

import saverkit as sk  # noqa: E402
from remote_helpers import CountingMemoryFS  # noqa: E402
from saverkit import bundle, errors, storage  # noqa: E402
from saverkit.train import checkpoint_management, checkpoint_utils  # noqa: E402


@pytest.fixture(autouse=True)
def _clean_stores():
    from fsspec.implementations.memory import MemoryFileSystem

    CountingMemoryFS.reset()
    MemoryFileSystem.store.clear()
    yield
    CountingMemoryFS.reset()
    MemoryFileSystem.store.clear()


def _objects():
    return sorted(CountingMemoryFS.store)


def _model(values):
    g = sk.Graph()
    with g.as_default():
        vs = {name: sk.Variable(v, name=name) for name, v in values.items()}
        saver = sk.train.Saver(max_to_keep=2)
    sess = sk.Session(graph=g)
    with g.as_default():
        sess.run([v.initializer for v in vs.values()])
    return g, sess, saver, vs


VALUES = {
    "w": np.arange(12, dtype=np.float32).reshape(3, 4),
    "b": np.array([1.5, -2.0], dtype=np.float64),
    "step": np.int64(7),
    "names": np.array([b"alpha", b"", b"\x00\xff" * 70], dtype=object),
}


def test_is_url_and_local_paths():
    assert storage.is_url("s3://b/k") and storage.is_url("memory://x") and storage.is_url("gs://b/x")
    assert not storage.is_url("/tmp/x") and not storage.is_url("file:///tmp/x") and not storage.is_url("a/b")
    assert storage.local_path("file:///tmp/x") == "/tmp/x"
    assert storage.join("s3://b/d", "model") == "s3://b/d/model"
    assert storage.dirname("s3://b/d/model-1") == "s3://b/d"


def test_bundle_round_trip_every_kind_of_tensor():
    names = ["f", "i8", "s", "scalar", "empty", "part"]
    tensors = [np.random.default_rng(0).standard_normal((5, 7)).astype(np.float32),
               np.arange(10, dtype=np.int8), np.array([b"x", b"yz" * 1000, b""], dtype=object),
               np.float64(3.25), np.zeros((0, 3), np.int32), np.arange(6, dtype=np.float32).reshape(2, 3)]
    specs = ["", "", "", "", "", "4 3 0,2:-"]
    bundle.write_bundle("memory://ck/b/model", names, tensors, specs)
    got = bundle.read_tensors("memory://ck/b/model", names[:5])
    for want, have in zip(tensors[:5], got, strict=True):
        np.testing.assert_array_equal(np.asarray(want), have)
    (part,) = bundle.read_tensors("memory://ck/b/model", ["part"], ["4 3 0,2:-"])
    np.testing.assert_array_equal(part, tensors[5])
    # the full partitioned tensor's rows not saved are not there: reading it whole is an error
    with pytest.raises(errors.OpError):
        bundle.read_tensors("memory://ck/b/model", ["part"])


def test_saver_save_restore_latest_and_retention_on_memory_store():
    g, sess, saver, vs = _model(VALUES)
    base = "countmem://bucket/run"
    paths = [saver.save(sess, base + "/model", global_step=s) for s in (1, 2, 3)]
    assert paths == [f"{base}/model-{s}" for s in (1, 2, 3)]
    assert checkpoint_management.latest_checkpoint(base) == paths[-1]
    state = checkpoint_management.get_checkpoint_state(base)
    assert list(state.all_model_checkpoint_paths) == paths[1:]
    # max_to_keep=2: model-1's objects are gone, the others complete
    objs = _objects()
    assert not any("model-1." in o for o in objs)
    for p in paths[1:]:
        stem = CountingMemoryFS._strip_protocol(p)
        assert {stem + ".index", stem + ".data-00000-of-00001", stem + ".meta"} <= set(objs)
    # restore into a fresh graph/session, values exact
    zeros = {k: np.array([b""] * 3, dtype=object) if k == "names" else np.zeros_like(v)
             for k, v in VALUES.items()}
    g2, sess2, saver2, vs2 = _model(zeros)
    saver2.restore(sess2, checkpoint_management.latest_checkpoint(base))
    with g2.as_default():
        for k, v in VALUES.items():
            np.testing.assert_array_equal(sess2.run(vs2[k]), v)
    # inspection
    assert [n for n, _ in checkpoint_utils.list_variables(base)] == sorted(VALUES)
    np.testing.assert_array_equal(checkpoint_utils.load_variable(base, "w"), VALUES["w"])
    assert checkpoint_utils.load_checkpoint(paths[-1] + ".index").get_tensor("step") == 7


def test_checkpoint_mtimes_and_remove_checkpoint_on_a_store():
    import time

    g, sess, saver, vs = _model(VALUES)
    base = "countmem://bucket/tools"
    before = time.time()
    p1 = saver.save(sess, base + "/model", global_step=1)
    p2 = saver.save(sess, base + "/model", global_step=2, write_meta_graph=False)
    bundle.write_bundle(base + "/model-10", ["x"], [np.zeros(2)], [""])  # a prefix starting alike: kept
    mtimes = checkpoint_management.get_checkpoint_mtimes([p1, base + "/missing", p2])
    assert len(mtimes) == 2 and all(before - 1 <= t <= time.time() + 1 for t in mtimes), mtimes
    checkpoint_management.remove_checkpoint(p1)
    checkpoint_management.remove_checkpoint(p2)  # no .meta: nothing to complain about
    assert not any("/model-1." in o or "/model-2." in o for o in _objects()), _objects()
    assert "/bucket/tools/model-10.index" in _objects()
    assert not checkpoint_management.checkpoint_exists(p1)
    assert checkpoint_management.get_checkpoint_mtimes([p1, p2]) == []
    with pytest.raises(errors.InvalidArgumentError, match="V2"):
        checkpoint_management.remove_checkpoint(p1, checkpoint_format_version=1)


def test_find_latest_checkpoint_from_the_objects_of_a_store_directory():
    g, sess, saver, vs = _model(VALUES)
    base = "countmem://bucket/find"
    assert checkpoint_management.find_latest_checkpoint(base) is None
    for step in (2, 10, 9):
        saver.save(sess, base + "/model", global_step=step, write_state=False)
    # higher steps whose data objects are missing (an index without its data): not complete
    store = CountingMemoryFS.store
    store["/bucket/find/model-11.index"] = store["/bucket/find/model-10.index"]
    bundle.write_bundle(base + "/other-12", ["x"], [np.zeros(2)], [""])
    del CountingMemoryFS.store["/bucket/find/other-12.data-00000-of-00001"]
    assert checkpoint_management.find_latest_checkpoint(base) == base + "/model-10"
    # the same step: the newer index wins (its name sorts first, so the time decides)
    bundle.write_bundle(base + "/a-10", ["x"], [np.zeros(2)], [""])
    assert checkpoint_management.find_latest_checkpoint(base) == base + "/a-10"
    del store["/bucket/find/a-10.index"]
    assert checkpoint_management.latest_checkpoint(base) is None  # no state file: TF's answer
    from saverkit import cli  # the CLI falls back to it, with a warning, as for a local directory

    assert cli.resolve_checkpoint(base) == base + "/model-10"
    with pytest.raises(cli.CliError, match="countmem://bucket/nothing"):
        cli.resolve_checkpoint("countmem://bucket/nothing")


def test_commit_order_is_data_index_meta_state_file():
    g, sess, saver, vs = _model(VALUES)
    saver.save(sess, "countmem://bucket/order/model", global_step=5)
    intent, *rest = CountingMemoryFS.writes
    # the intent object (what the save is about to write: see saverkit.remote_bundle), deleted at the end
    assert intent.startswith("/bucket/order/model-5.skwrite-")
    assert rest == [
        "/bucket/order/model-5.data-00000-of-00001", "/bucket/order/model-5.index",
        "/bucket/order/model-5.meta", "/bucket/order/checkpoint"]
    assert _objects() == sorted(rest)


@pytest.mark.parametrize("failing", [".index", ".meta", "checkpoint"])
def test_failed_save_leaves_previous_checkpoint_latest_and_no_new_objects(failing):
    g, sess, saver, vs = _model(VALUES)
    base = "countmem://bucket/fail"
    first = saver.save(sess, base + "/model", global_step=1)
    before = {k: bytes(v.getbuffer()) for k, v in CountingMemoryFS.store.items()}
    CountingMemoryFS.fail_write = lambda p: p.endswith(failing) and "model-1" not in p
    with pytest.raises(errors.OpError, match="injected failure"):
        saver.save(sess, base + "/model", global_step=2)
    CountingMemoryFS.fail_write = None
    after = {k: bytes(v.getbuffer()) for k, v in CountingMemoryFS.store.items()}
    assert after == before  # nothing of step 2 visible (no data object without its index either)
    assert checkpoint_management.latest_checkpoint(base) == first
    # and the next save works and is found
    assert saver.save(sess, base + "/model", global_step=3) == base + "/model-3"
    assert checkpoint_management.latest_checkpoint(base) == base + "/model-3"


def test_lazy_get_tensor_fetches_the_index_once_and_only_that_tensors_bytes():
    rng = np.random.default_rng(1)
    names = [f"layer{i:02d}/kernel" for i in range(16)]
    tensors = [rng.standard_normal(1 << 20).astype(np.float32) for _ in names]  # 4 MiB each, 64 MiB in all
    url = "countmem://bucket/big/model"
    bundle.write_bundle(url, names, tensors)
    index_size = len(CountingMemoryFS.store["/bucket/big/model.index"].getbuffer())
    CountingMemoryFS.bytes_read = 0
    CountingMemoryFS.reads = []
    reader = checkpoint_utils.load_checkpoint(url)
    value = reader.get_tensor("layer05/kernel")
    np.testing.assert_array_equal(value, tensors[5])
    fetched = CountingMemoryFS.bytes_read
    assert fetched <= index_size + 1.1 * tensors[5].nbytes, (fetched, index_size, CountingMemoryFS.reads)
    # a second tensor costs only its own bytes (the index is not fetched again)
    CountingMemoryFS.bytes_read = 0
    np.testing.assert_array_equal(reader.get_tensor("layer11/kernel"), tensors[11])
    assert CountingMemoryFS.bytes_read == tensors[11].nbytes


def test_corrupt_and_truncated_remote_objects_are_clear_errors():
    url = "countmem://bucket/bad/model"
    bundle.write_bundle(url, ["a", "b"], [np.arange(1000, dtype=np.float32), np.ones(10, np.int64)])
    data = "/bucket/bad/model.data-00000-of-00001"
    buf = bytearray(CountingMemoryFS.store[data].getbuffer())
    buf[100] ^= 0x40
    CountingMemoryFS.store[data].seek(0)
    CountingMemoryFS.store[data].write(bytes(buf))
    with pytest.raises(errors.DataLossError, match="a"):
        bundle.read_tensors(url, ["a"])
    np.testing.assert_array_equal(bundle.read_tensors(url, ["b"])[0], np.ones(10, np.int64))
    CountingMemoryFS.store[data].truncate(2000)
    with pytest.raises(errors.DataLossError, match="model.data-00000-of-00001"):
        bundle.read_tensors(url, ["b"])
    index = "/bucket/bad/model.index"
    CountingMemoryFS.store[index].truncate(10)
    with pytest.raises(errors.DataLossError, match="model.index"):
        bundle.read_tensors(url, ["b"])


def test_missing_objects_and_bad_urls_name_what_was_looked_for():
    with pytest.raises(errors.NotFoundError, match="countmem://bucket/none/model"):
        checkpoint_utils.load_checkpoint("countmem://bucket/none/model")
    assert checkpoint_management.latest_checkpoint("countmem://bucket/none") is None
    bundle.write_bundle("countmem://bucket/nodata/model", ["a"], [np.ones(3, np.float32)])
    del CountingMemoryFS.store["/bucket/nodata/model.data-00000-of-00001"]
    with pytest.raises(errors.NotFoundError, match="data-00000-of-00001"):
        bundle.read_tensors("countmem://bucket/nodata/model", ["a"])
    with pytest.raises(errors.InvalidArgumentError, match="nosuchproto"):
        checkpoint_utils.load_checkpoint("nosuchproto://x/y")
    g, sess, saver, vs = _model(VALUES)
    with pytest.raises(errors.NotFoundError):
        saver.restore(sess, "countmem://bucket/none/model-3")


def test_file_urls_are_local_paths(tmp_path):
    g, sess, saver, vs = _model(VALUES)
    url = "file://" + str(tmp_path / "model")
    prefix = saver.save(sess, url, global_step=1)
    assert os.path.exists(str(tmp_path / "model-1.index"))
    assert checkpoint_management.latest_checkpoint("file://" + str(tmp_path)) is not None
    np.testing.assert_array_equal(checkpoint_utils.load_variable(prefix, "w"), VALUES["w"])
    saver.restore(sess, prefix)


def test_local_paths_do_not_import_fsspec(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys, numpy as np, saverkit as sk\n"
        "from saverkit import bundle\n"
        f"bundle.write_bundle({str(tmp_path / 'm')!r}, ['a'], [np.ones(3)])\n"
        f"bundle.read_tensors({str(tmp_path / 'm')!r}, ['a'])\n"
        "assert 'fsspec' not in sys.modules, 'fsspec imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_failed_resave_of_a_prefix_keeps_the_previous_checkpoint():
    url = "countmem://bucket/resave/model"
    bundle.write_bundle(url, ["a"], [np.arange(10, dtype=np.float32)])
    before = {k: bytes(v.getbuffer()) for k, v in CountingMemoryFS.store.items()}
    for failing in (".data-00000-of-00002", ".data-00001-of-00002", ".index"):
        CountingMemoryFS.fail_write = lambda p, f=failing: p.endswith(f)
        with pytest.raises(errors.OpError, match="injected"):
            bundle.write_bundle(url, ["a"], [np.arange(10, 20, dtype=np.float32)])
        CountingMemoryFS.fail_write = None
        # the old checkpoint is untouched, and nothing of the failed re-save is left
        assert {k: bytes(v.getbuffer()) for k, v in CountingMemoryFS.store.items()} == before
        np.testing.assert_array_equal(bundle.read_tensors(url, ["a"])[0], np.arange(10, dtype=np.float32))
    bundle.write_bundle(url, ["a"], [np.arange(20, 30, dtype=np.float32)])
    np.testing.assert_array_equal(bundle.read_tensors(url, ["a"])[0], np.arange(20, 30, dtype=np.float32))
    # the re-save took an extra, empty shard so its names differ from the replaced ones (deleted)
    assert _objects() == ["/bucket/resave/model.data-00000-of-00002",
                          "/bucket/resave/model.data-00001-of-00002", "/bucket/resave/model.index"]
    assert CountingMemoryFS.store["/bucket/resave/model.data-00001-of-00002"].getbuffer().nbytes == 0
    bundle.write_bundle(url, ["a"], [np.arange(30, 40, dtype=np.float32)])  # and back to one shard
    assert _objects() == ["/bucket/resave/model.data-00000-of-00001", "/bucket/resave/model.index"]
    np.testing.assert_array_equal(bundle.read_tensors(url, ["a"])[0], np.arange(30, 40, dtype=np.float32))


@pytest.mark.parametrize(("blocked", "url", "hint"), [
    ("fsspec", "memory://x/model", "saverkit[remote]"),
    ("s3fs", "s3://bucket/model", "saverkit[s3]"),
])
def test_a_missing_optional_extra_is_a_clear_error(blocked, url, hint):
    import subprocess
    import sys

    code = (
        "import sys\n"
        f"sys.modules[{blocked!r}] = None  # as if not installed\n"
        "from saverkit import errors\n"
        "from saverkit.train import load_checkpoint\n"
        "try:\n"
        f"    load_checkpoint({url!r})\n"
        "except errors.UnimplementedError as e:\n"
        "    print(e.message)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert hint in out.stdout and url in out.stdout


def _sharded_model(values):
    """Variables on three devices: a sharded Saver writes one data file per device."""
    g = sk.Graph()
    with g.as_default():
        vs = {}
        for i, (name, v) in enumerate(values.items()):
            with sk.device(f"/cpu:{i % 3}"):
                vs[name] = sk.Variable(v, name=name)
        saver = sk.train.Saver(sharded=True, max_to_keep=2)
    sess = sk.Session(graph=g)
    with g.as_default():
        sess.run([v.initializer for v in vs.values()])
    return g, sess, saver, vs


def test_sharded_save_writes_each_shard_in_place_with_the_bytes_of_a_local_sharded_save(tmp_path):
    g, sess, saver, vs = _sharded_model(VALUES)
    assert saver.save(sess, str(tmp_path / "model"), global_step=4) == str(tmp_path / "model-4")
    remote = saver.save(sess, "countmem://bucket/sharded/model", global_step=4)
    assert remote == "countmem://bucket/sharded/model-4"
    names = sorted(n for n in os.listdir(tmp_path) if n.startswith("model-4.") and not n.endswith(".meta"))
    assert names == ["model-4.data-00000-of-00003", "model-4.data-00001-of-00003",
                     "model-4.data-00002-of-00003", "model-4.index"]
    for n in names:  # identical objects: TF reads them as it reads the local checkpoint
        with open(tmp_path / n, "rb") as f:
            assert bytes(CountingMemoryFS.store["/bucket/sharded/" + n].getbuffer()) == f.read(), n
    # each data object written once, in place (no temporary objects, no copies); the index after them
    data = [w for w in CountingMemoryFS.writes if ".data-" in w]
    assert sorted(data) == ["/bucket/sharded/" + n for n in names[:3]]
    assert CountingMemoryFS.writes.index("/bucket/sharded/model-4.index") > max(
        CountingMemoryFS.writes.index(d) for d in data)
    assert not [k for k in CountingMemoryFS.store if "_temp" in k or "skwrite" in k]
    assert checkpoint_management.latest_checkpoint("countmem://bucket/sharded") == remote
    zeros = {k: np.array([b""] * len(v), dtype=object) if np.asarray(v).dtype.kind == "O"
             else np.zeros_like(v) for k, v in VALUES.items()}
    g2, sess2, saver2, vs2 = _sharded_model(zeros)
    saver2.restore(sess2, remote)
    with g2.as_default():
        for k, v in VALUES.items():
            np.testing.assert_array_equal(sess2.run(vs2[k]), v)


def test_failed_sharded_save_publishes_nothing_and_leaves_no_staged_part():
    from saverkit import remote_bundle

    g, sess, saver, vs = _sharded_model(VALUES)
    first = saver.save(sess, "countmem://bucket/sfail/model", global_step=1)
    before = {k: bytes(v.getbuffer()) for k, v in CountingMemoryFS.store.items()}
    CountingMemoryFS.fail_write = lambda p: p.endswith(".data-00001-of-00003")
    with pytest.raises(errors.OpError, match="injected"):
        saver.save(sess, "countmem://bucket/sfail/model", global_step=2)
    CountingMemoryFS.fail_write = None
    assert {k: bytes(v.getbuffer()) for k, v in CountingMemoryFS.store.items()} == before
    assert checkpoint_management.latest_checkpoint("countmem://bucket/sfail") == first
    assert remote_bundle._staged == {}  # noqa: SLF001 - no part of the failed save is kept in memory


def _read_all(url):
    return {k: checkpoint_utils.load_variable(url, k) for k in checkpoint_utils.load_checkpoint(url)
            .get_variable_to_shape_map()}


def _named_objects(fs, prefix):
    """The prefix's index and the data objects its header names."""
    r = bundle.BundleReader(prefix)
    n = r.num_shards
    return {f"{prefix}.index", *(f"{prefix}.data-{k:05d}-of-{n:05d}" for k in range(n))}


@pytest.mark.parametrize("sharded", [False, True])
def test_a_resave_killed_at_any_step_keeps_the_previous_or_the_new_checkpoint(monkeypatch, sharded):
    """The re-save of one prefix (no global_step) killed at each of its changes to the store in turn:
    the prefix always holds a complete checkpoint, the old values until the index is written and the new
    ones after; the next save removes what the killed one left and nothing else."""
    from fsspec.implementations.memory import MemoryFileSystem
    from remote_helpers import KillAt, Killed

    fs = storage.Location("memory://bucket").fs  # the instance the saves use
    old = {k: (v * 2 if np.asarray(v).dtype.kind != "O" else v) for k, v in VALUES.items()}
    new = {k: (v * 3 if np.asarray(v).dtype.kind != "O" else v[::-1].copy()) for k, v in VALUES.items()}
    make = _sharded_model if sharded else _model
    url = "memory://bucket/same/model"
    steps = None
    at = 0
    while steps is None or at < steps:
        MemoryFileSystem.store.clear()
        g, sess, saver, vs = make(old)
        saver.save(sess, url, write_meta_graph=False)
        with g.as_default():
            sess.run([vs[k].assign(v) for k, v in new.items()])
        with monkeypatch.context() as m:
            killer = KillAt(m, fs, None if steps is None else at)
            if steps is None:  # a first, uninterrupted run counts the steps
                saver.save(sess, url, write_meta_graph=False)
                steps = len(killer.changes)
                assert steps >= 6, killer.changes  # intent, data, index, deletions, state file
                continue
            with pytest.raises(Killed):
                saver.save(sess, url, write_meta_graph=False)
        # a fresh reader finds a complete checkpoint: the old values, or the new ones
        fs.invalidate_cache()
        got = _read_all(url)
        want = new if np.array_equal(got["w"], new["w"]) else old
        for k, v in want.items():
            np.testing.assert_array_equal(got[k], v)
        # the next save (this process's earlier owner counts as gone once its save is over) cleans up
        saver.save(sess, url, write_meta_graph=False)
        left = {"memory:/" + k for k in MemoryFileSystem.store}
        assert left == _named_objects(fs, url) | {"memory://bucket/same/checkpoint"}, (at, killer.changes)
        for k, v in new.items():
            np.testing.assert_array_equal(_read_all(url)[k], v)
        at += 1


def test_convert_to_and_from_urls_in_every_format(tmp_path, capsys):
    from saverkit import cli

    src = str(tmp_path / "src")
    bundle.write_bundle(src, list(VALUES), list(VALUES.values()))
    dst = "countmem://bucket/conv/model"
    assert cli.main(["convert", src, dst]) == 0
    assert cli.main(["convert", src, str(tmp_path / "model")]) == 0
    for n in ("model.index", "model.data-00000-of-00001"):  # a local conversion's bytes
        with open(tmp_path / n, "rb") as f:
            assert bytes(CountingMemoryFS.store["/bucket/conv/" + n].getbuffer()) == f.read()
    # URL -> URL as .npz and back, URL -> local; every hop keeps every value
    assert cli.main(["convert", dst, "countmem://bucket/conv/m.npz"]) == 0
    assert cli.main(["convert", "countmem://bucket/conv/m.npz", "countmem://bucket/conv/back"]) == 0
    assert cli.main(["convert", "countmem://bucket/conv/back", str(tmp_path / "local")]) == 0
    assert cli.main(["diff", src, str(tmp_path / "local")]) == 0
    capsys.readouterr()
    # an existing destination needs --force; with it, the checkpoint is replaced as a re-save is
    assert cli.main(["convert", src, dst]) == 2
    assert "already exists" in capsys.readouterr().err
    assert cli.main(["convert", "countmem://bucket/conv/m.npz", "countmem://bucket/conv/m.npz"]) == 2
    assert cli.main(["convert", src, dst, "--force"]) == 0
    assert cli.main(["diff", src, dst]) == 0
    assert not [k for k in CountingMemoryFS.store if "skwrite" in k or "saverkit-convert" in k]
    # the Python function
    assert sorted(cli.convert(src, "countmem://bucket/conv/fn.npz")) == sorted(VALUES)
    assert cli.main(["convert", "countmem://bucket/conv/nope.npz", str(tmp_path / "x")]) == 2
    assert "nope.npz: no such object" in capsys.readouterr().err


def test_convert_failing_upload_leaves_the_previous_destination():
    from saverkit import cli

    bundle.write_bundle("countmem://bucket/cf/src", ["a"], [np.arange(5, dtype=np.float32)])
    bundle.write_bundle("countmem://bucket/cf/dst", ["a"], [np.zeros(5, dtype=np.float32)])
    cli.convert("countmem://bucket/cf/src", "countmem://bucket/cf/x.npz")
    before = {k: bytes(v.getbuffer()) for k, v in CountingMemoryFS.store.items()}
    CountingMemoryFS.fail_write = lambda p: "/cf/dst." in p or p.endswith("/cf/x.npz")
    with pytest.raises(errors.OpError, match="injected"):
        cli.convert("countmem://bucket/cf/src", "countmem://bucket/cf/dst", force=True)
    with pytest.raises(errors.OpError, match="injected"):
        cli.convert("countmem://bucket/cf/src", "countmem://bucket/cf/x.npz", force=True)
    CountingMemoryFS.fail_write = None
    assert {k: bytes(v.getbuffer()) for k, v in CountingMemoryFS.store.items()} == before
