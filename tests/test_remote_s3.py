"""Checkpoints on S3 (s3fs) against moto's S3 server on 127.0.0.1, started by these tests: every entry
point, multipart uploads aborted on failure (nothing partial ever visible), retention, explicit
storage_options, TF interop both ways."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("s3fs")
pytest.importorskip("moto")

import saverkit as sk  # noqa: E402
from remote_helpers import S3_ENV, EnvPatch, start_moto_s3  # noqa: E402
from saverkit import bundle, errors, storage  # noqa: E402
from saverkit.train import checkpoint_management, checkpoint_utils  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "tf-2.21")


@pytest.fixture(scope="module")
def s3():
    server, endpoint = start_moto_s3()
    with EnvPatch({**S3_ENV, "AWS_ENDPOINT_URL": endpoint}):
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        fs = s3fs.S3FileSystem()
        yield fs, endpoint
        s3fs.S3FileSystem.clear_instance_cache()
    server.stop()


_bucket_counter = [0]


@pytest.fixture
def bucket(s3):
    fs, _ = s3
    _bucket_counter[0] += 1
    name = f"ckpt{_bucket_counter[0]}"
    fs.mkdir(name)
    return name


def _keys(fs, bucket):
    fs.invalidate_cache()
    return sorted(p[len(bucket) + 1:] for p in fs.find(bucket))


def _uploads_in_progress(fs, bucket):
    return fs.call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads", [])


def _model(values, max_to_keep=2):
    g = sk.Graph()
    with g.as_default():
        vs = {name: sk.Variable(v, name=name) for name, v in values.items()}
        saver = sk.train.Saver(max_to_keep=max_to_keep)
    sess = sk.Session(graph=g)
    with g.as_default():
        sess.run([v.initializer for v in vs.values()])
    return g, sess, saver, vs


def _values(seed=0, big=False):
    rng = np.random.default_rng(seed)
    n = (3 << 20) if big else 1000  # big: 12 MiB of float32, several multipart parts
    return {"w": rng.standard_normal(n).astype(np.float32), "b": rng.standard_normal(7),
            "names": np.array([b"a", b"bc" * 50], dtype=object), "step": np.int64(seed)}


def _assert_restores(url, values):
    zeros = {k: np.array([b""] * len(v), dtype=object) if v.dtype == object else np.zeros_like(v)
             for k, v in values.items()}
    g, sess, saver, vs = _model(zeros)
    saver.restore(sess, url)
    with g.as_default():
        for k, v in values.items():
            np.testing.assert_array_equal(sess.run(vs[k]), v)


def test_saver_save_restore_latest_retention(s3, bucket, monkeypatch):
    fs, _ = s3
    monkeypatch.setattr(storage, "PART_SIZE", 5 << 20)
    base = f"s3://{bucket}/run"
    values = _values(1, big=True)
    g, sess, saver, vs = _model(values)
    paths = [saver.save(sess, base + "/model", global_step=s) for s in (1, 2, 3)]
    assert checkpoint_management.latest_checkpoint(base) == paths[-1]
    assert list(checkpoint_management.get_checkpoint_state(base).all_model_checkpoint_paths) == paths[1:]
    files = [f"run/model-{s}.{x}" for s in (2, 3) for x in ("index", "meta", "data-00000-of-00001")]
    assert _keys(fs, bucket) == sorted(["run/checkpoint", *files])
    assert _uploads_in_progress(fs, bucket) == []
    _assert_restores(checkpoint_management.latest_checkpoint(base), values)
    # inspection entry points
    assert [n for n, _ in checkpoint_utils.list_variables(base)] == sorted(values)
    np.testing.assert_array_equal(checkpoint_utils.load_variable(base, "b"), values["b"])


def test_failure_mid_multipart_upload_publishes_nothing(s3, bucket, monkeypatch):
    fs, _ = s3
    monkeypatch.setattr(storage, "PART_SIZE", 5 << 20)
    base = f"s3://{bucket}/run"
    values = _values(2, big=True)
    g, sess, saver, vs = _model(values)
    first = saver.save(sess, base + "/model", global_step=1)
    before = _keys(fs, bucket)

    real = fs._call_s3  # noqa: SLF001
    sent = []

    async def flaky(method, *args, **kwargs):
        if method == "upload_part":
            sent.append(kwargs["PartNumber"])
            if kwargs["PartNumber"] == 2:
                raise ConnectionResetError("injected: connection lost during part 2")
        return await real(method, *args, **kwargs)

    monkeypatch.setattr(fs, "_call_s3", flaky)
    with pytest.raises(errors.OpError, match="injected"):
        saver.save(sess, base + "/model", global_step=2)
    monkeypatch.setattr(fs, "_call_s3", real)
    assert sent  # the failure happened mid-upload
    assert _keys(fs, bucket) == before  # no partial data object, no index of step 2
    assert _uploads_in_progress(fs, bucket) == []  # the multipart upload was aborted
    assert checkpoint_management.latest_checkpoint(base) == first
    _assert_restores(first, values)


def test_multipart_parts_are_sent_from_the_arrays_memory(s3, bucket, monkeypatch):
    """Upload parts are views of the saved arrays (no bytes made of them), and the object is exact."""
    fs, _ = s3
    monkeypatch.setattr(storage, "PART_SIZE", 5 << 20)
    w = np.random.default_rng(7).standard_normal(3 << 20).astype(np.float32)  # 12 MiB: 3 parts
    real = fs._call_s3  # noqa: SLF001
    bodies = []

    async def spy(method, *args, **kwargs):
        if method == "upload_part":
            bodies.append(kwargs["Body"])
        return await real(method, *args, **kwargs)

    monkeypatch.setattr(fs, "_call_s3", spy)
    url = f"s3://{bucket}/nocopy/model"
    bundle.write_bundle(url, ["w"], [w])
    monkeypatch.setattr(fs, "_call_s3", real)
    assert len(bodies) == 3
    for body in bodies:
        assert not isinstance(body, (bytes, bytearray))
        for view in body.views:
            assert np.shares_memory(np.frombuffer(view, np.uint8), w.view(np.uint8))
    np.testing.assert_array_equal(bundle.read_tensors(url, ["w"])[0], w)


def test_single_put_is_sent_from_the_arrays_memory(s3, bucket, monkeypatch):
    """A data object of one part: one PUT whose body is views of the arrays; an empty one works too."""
    fs, _ = s3
    w = np.arange(1000, dtype=np.float64)
    real = fs._call_s3  # noqa: SLF001
    bodies = []

    async def spy(method, *args, **kwargs):
        if method == "put_object" and ".data-" in kwargs["Key"]:
            bodies.append(kwargs["Body"])
        return await real(method, *args, **kwargs)

    monkeypatch.setattr(fs, "_call_s3", spy)
    bundle.write_bundle(f"s3://{bucket}/small/model", ["w", "s"], [w, np.array([b"x"], dtype=object)])
    bundle.write_bundle(f"s3://{bucket}/empty/model", [], [])
    monkeypatch.setattr(fs, "_call_s3", real)
    assert len(bodies) == 2
    assert any(np.shares_memory(np.frombuffer(v, np.uint8), w.view(np.uint8)) for v in bodies[0].views)
    assert len(bodies[1]) == 0
    got = bundle.read_tensors(f"s3://{bucket}/small/model", ["w", "s"])
    np.testing.assert_array_equal(got[0], w)
    assert list(got[1]) == [b"x"]
    assert fs.cat_file(f"{bucket}/empty/model.data-00000-of-00001") == b""
    assert bundle.BundleReader(f"s3://{bucket}/empty/model").entries() == {}


def test_part_body_reads_seeks_and_iterates_its_views():
    """What botocore (read/seek/tell/len, again after a rewind to retry) and aiohttp (async iteration)
    use of a part's body gives its bytes exactly, across views of any size, empty ones included."""
    import asyncio

    src = np.arange(3000, dtype=np.uint8)
    views = [memoryview(src[:10]), memoryview(src[10:10]), memoryview(src[10:2500]), memoryview(src[2500:])]
    body = storage._PartBody(views)  # noqa: SLF001
    assert len(body) == 3000 and body.tell() == 0
    assert body.seek(0, 2) == 3000 and len(body) == 0 and bytes(body.read()) == b""
    body.seek(0)

    def drain(n):
        out = b""
        while chunk := body.read(n):
            out += bytes(chunk)
        return out

    for n in (1, 7, 1000, -1):
        body.seek(0)
        assert drain(n) == src.tobytes()
    body.seek(5)
    assert body.tell() == 5 and len(body) == 2995 and bytes(body.read(3)) == src[5:8].tobytes()
    body.seek(-3, 1)
    assert body.tell() == 5
    saved_chunk = storage._PartBody.CHUNK  # noqa: SLF001
    try:
        storage._PartBody.CHUNK = 1000  # noqa: SLF001
        body.seek(0)

        async def collect():
            return [bytes(c) async for c in body]

        chunks = asyncio.run(collect())
    finally:
        storage._PartBody.CHUNK = saved_chunk  # noqa: SLF001
    assert b"".join(chunks) == src.tobytes() and max(map(len, chunks)) <= 1000


def test_checksum_error_in_a_multipart_object_names_the_object(s3, bucket, monkeypatch):
    """A flipped byte far into a multipart-uploaded object, read back by ranged requests, is a
    DataLossError naming the data object and the tensor."""
    fs, _ = s3
    monkeypatch.setattr(storage, "PART_SIZE", 5 << 20)
    rng = np.random.default_rng(8)
    arrays = [rng.standard_normal(1 << 20).astype(np.float32) for _ in range(3)]  # 12 MiB
    url = f"s3://{bucket}/crc/model"
    bundle.write_bundle(url, ["a", "b", "c"], arrays)
    obj = f"{bucket}/crc/model.data-00000-of-00001"
    data = bytearray(fs.cat_file(obj))
    data[(9 << 20) + 123] ^= 0x40  # inside the third tensor, in the object's second part
    fs.pipe_file(obj, bytes(data))
    np.testing.assert_array_equal(bundle.read_tensors(url, ["a"])[0], arrays[0])
    with pytest.raises(errors.DataLossError, match=r"Checksum.*'c'.*model\.data-00000-of-00001"):
        bundle.read_tensors(url, ["a", "b", "c"])


@pytest.mark.parametrize("big", [False, True], ids=["one-put", "multipart"])
def test_async_saves_to_s3_upload_in_the_background_with_storage_options(s3, bucket, monkeypatch, big):
    """CheckpointOptions(enable_async=True) on S3: the values of the moment save returned, uploaded in the
    background through the store given only by storage_options (a wrong endpoint in the environment)."""
    from saverkit.train import CheckpointOptions

    _, endpoint = s3
    monkeypatch.setattr(storage, "PART_SIZE", 5 << 20)
    opts = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
    values, later = _values(5, big=big), _values(6, big=big)
    g, sess, saver, vs = _model(values)
    ckpt = sk.train.Checkpoint(**vs)
    asynchronous = CheckpointOptions(enable_async=True)
    with EnvPatch({"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}):
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        url = saver.save(sess, f"s3://{bucket}/async/model", global_step=5, options=asynchronous,
                         storage_options=opts)
        manager = sk.train.CheckpointManager(ckpt, f"s3://{bucket}/async-tf2", max_to_keep=1, session=sess,
                                             storage_options=opts)
        saver.sync()
        managed = manager.save(options=asynchronous)
        with g.as_default():
            sess.run([vs[k].assign(v) for k, v in later.items()])  # after both returned: in neither
        manager.sync()
        assert checkpoint_management.latest_checkpoint(f"s3://{bucket}/async", storage_options=opts) == url
        assert manager.latest_checkpoint == managed
        for path, key in ((url, "{}"), (managed, "{}/.ATTRIBUTES/VARIABLE_VALUE")):
            reader = checkpoint_utils.load_checkpoint(path, storage_options=opts)
            for k, v in values.items():
                np.testing.assert_array_equal(reader.get_tensor(key.format(k)), v)
    s3fs.S3FileSystem.clear_instance_cache()


def test_explicit_storage_options_without_environment(s3, bucket):
    _, endpoint = s3
    opts = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
    values = _values(3)
    g, sess, saver, vs = _model(values)
    with EnvPatch({"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}):  # a wrong endpoint in the environment
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        url = saver.save(sess, f"s3://{bucket}/opts/model", global_step=4, storage_options=opts)
        assert checkpoint_management.latest_checkpoint(f"s3://{bucket}/opts", storage_options=opts) == url
        reader = checkpoint_utils.load_checkpoint(url, storage_options=opts)
        np.testing.assert_array_equal(reader.get_tensor("w"), values["w"])
        g2, sess2, saver2, vs2 = _model({k: v for k, v in values.items()})
        saver2.restore(sess2, url, storage_options=opts)
        # the object-based API and import_meta_graph take them too
        g3 = sk.Graph()
        with g3.as_default(), sk.Session(graph=g3) as sess3:
            v = sk.Variable(np.arange(4, dtype=np.float32), name="v")
            sess3.run(v.initializer)
            ckpt = sk.train.Checkpoint(v=v)
            manager = sk.train.CheckpointManager(ckpt, f"s3://{bucket}/opts/mgr", max_to_keep=1,
                                                 storage_options=opts)
            saved = [manager.save(session=sess3) for _ in range(2)]
            sess3.run(v.assign(np.zeros(4, np.float32)))
            assert manager.restore_or_initialize(session=sess3) == saved[-1]
            np.testing.assert_array_equal(sess3.run(v), np.arange(4, dtype=np.float32))
            sess3.run(v.assign(np.zeros(4, np.float32)))
            ckpt.restore(saved[-1], session=sess3, storage_options=opts).assert_consumed()
            np.testing.assert_array_equal(sess3.run(v), np.arange(4, dtype=np.float32))
        with sk.Graph().as_default():
            sk.train.import_meta_graph(url + ".meta", storage_options=opts)
            # export_meta_graph (function and Saver method) and init_from_checkpoint too
            sk.train.export_meta_graph(f"s3://{bucket}/opts/exported.meta", storage_options=opts)
            w = sk.Variable(np.zeros_like(values["w"]), name="other_w")
            sk.train.init_from_checkpoint(f"s3://{bucket}/opts", {"w": w}, storage_options=opts)
            saver5 = sk.train.Saver([w])
            saver5.export_meta_graph(f"s3://{bucket}/opts/saver.meta", storage_options=opts)
            with sk.Session() as s5:  # the initializer's run has no storage_options: bound to its op
                s5.run(sk.global_variables_initializer())
                np.testing.assert_array_equal(s5.run(w), values["w"])
            graph_def = sk.get_default_graph().as_graph_def().SerializeToString()
            assert b"testing" not in graph_def  # the credentials stay out of the graph (and of .meta files)
        for name in ("exported.meta", "saver.meta"):
            with sk.Graph().as_default():
                sk.train.import_meta_graph(f"s3://{bucket}/opts/{name}", storage_options=opts)
        # TF1's checkpoint_management helpers
        (mtime,) = checkpoint_management.get_checkpoint_mtimes([url], storage_options=opts)
        assert abs(mtime - time.time()) < 300, mtime
        checkpoint_management.remove_checkpoint(url, storage_options=opts)
        assert not checkpoint_management.checkpoint_exists(url, storage_options=opts)
        assert checkpoint_management.get_checkpoint_mtimes([url], storage_options=opts) == []
    s3fs.S3FileSystem.clear_instance_cache()


def test_checkpoint_and_manager_retention(s3, bucket):
    fs, _ = s3
    g = sk.Graph()
    with g.as_default(), sk.Session(graph=g) as sess:
        v = sk.Variable(np.arange(5, dtype=np.float32), name="v")
        sess.run(v.initializer)
        ckpt = sk.train.Checkpoint(v=v)
        manager = sk.train.CheckpointManager(ckpt, f"s3://{bucket}/mgr", max_to_keep=2)
        saved = [manager.save(session=sess) for _ in range(4)]
        assert manager.latest_checkpoint == saved[-1]
        assert checkpoint_management.latest_checkpoint(f"s3://{bucket}/mgr") == saved[-1]
        keys = _keys(fs, bucket)
        assert not any("ckpt-1." in k or "ckpt-2." in k for k in keys), keys
        assert {"mgr/ckpt-4.index", "mgr/ckpt-4.data-00000-of-00001", "mgr/checkpoint"} <= set(keys)
        sess.run(v.assign(np.zeros(5, np.float32)))
        ckpt.restore(saved[-1], session=sess).assert_consumed()
        np.testing.assert_array_equal(sess.run(v), np.arange(5, dtype=np.float32))


def test_init_from_checkpoint_and_meta_graph(s3, bucket):
    values = _values(5)
    g, sess, saver, vs = _model(values)
    url = saver.save(sess, f"s3://{bucket}/meta/model", global_step=1)
    # import_meta_graph from the store, then restore through the imported saver
    g2 = sk.Graph()
    with g2.as_default():
        imported = sk.train.import_meta_graph(url + ".meta")
        with sk.Session(graph=g2) as s2:
            imported.restore(s2, url)
            np.testing.assert_array_equal(s2.run("w:0"), values["w"])
        # export_meta_graph to the store
        sk.train.export_meta_graph(f"s3://{bucket}/meta/exported.meta")
    g3 = sk.Graph()
    with g3.as_default():
        sk.train.import_meta_graph(f"s3://{bucket}/meta/exported.meta")
    # init_from_checkpoint
    g4 = sk.Graph()
    with g4.as_default():
        w = sk.Variable(np.zeros_like(values["w"]), name="other_w")
        sk.train.init_from_checkpoint(f"s3://{bucket}/meta", {"w": w})
        with sk.Session(graph=g4) as s4:
            s4.run(sk.global_variables_initializer())
            np.testing.assert_array_equal(s4.run(w), values["w"])


def test_cli_inspects_a_checkpoint_on_s3(s3, bucket):
    values = _values(6)
    g, sess, saver, vs = _model(values)
    url = saver.save(sess, f"s3://{bucket}/cli/model", global_step=9)
    out = subprocess.run([sys.executable, "-m", "saverkit", "inspect", f"s3://{bucket}/cli"],
                         capture_output=True, text=True, env=os.environ.copy(), timeout=120)
    assert out.returncode == 0, out.stderr
    assert "w" in out.stdout and "names" in out.stdout
    out = subprocess.run([sys.executable, "-m", "saverkit", "inspect", url + "-nope"],
                         capture_output=True, text=True, env=os.environ.copy(), timeout=120)
    assert out.returncode != 0 and "nope" in out.stderr and "Traceback" not in out.stderr


def test_cli_converts_between_s3_and_local_in_both_directions(s3, bucket, tmp_path):
    fs, _ = s3
    values = _values(12)
    g, sess, saver, vs = _model(values)
    url = saver.save(sess, f"s3://{bucket}/conv/model", global_step=1)

    def cli(*argv):
        return subprocess.run([sys.executable, "-m", "saverkit", *argv], capture_output=True, text=True,
                              env=os.environ.copy(), timeout=120)

    npz, back = f"s3://{bucket}/conv/m.npz", f"s3://{bucket}/conv/back"
    for argv in ([url, npz], [npz, back], [back, str(tmp_path / "local")], [url, back, "--force"]):
        out = cli("convert", *argv)
        assert out.returncode == 0, (argv, out.stderr)
    assert cli("diff", url, str(tmp_path / "local")).returncode == 0
    assert cli("diff", url, f"s3://{bucket}/conv/back").returncode == 0
    keys = _keys(fs, bucket)
    assert "conv/m.npz" in keys and not [k for k in keys if "skwrite" in k]
    _assert_restores(f"s3://{bucket}/conv/back", values)


def test_missing_and_corrupt_objects(s3, bucket):
    fs, _ = s3
    with pytest.raises(errors.NotFoundError, match=f"s3://{bucket}/none/model"):
        checkpoint_utils.load_checkpoint(f"s3://{bucket}/none/model")
    assert checkpoint_management.latest_checkpoint(f"s3://{bucket}/none") is None
    url = f"s3://{bucket}/bad/model"
    bundle.write_bundle(url, ["a"], [np.arange(100, dtype=np.float32)])
    data = fs.cat_file(f"{bucket}/bad/model.data-00000-of-00001")
    fs.pipe_file(f"{bucket}/bad/model.data-00000-of-00001", data[:10] + bytes([data[10] ^ 1]) + data[11:])
    with pytest.raises(errors.DataLossError, match="Checksum"):
        bundle.read_tensors(url, ["a"])
    fs.pipe_file(f"{bucket}/bad/model.data-00000-of-00001", data[:50])
    with pytest.raises(errors.DataLossError, match="model.data-00000-of-00001"):
        bundle.read_tensors(url, ["a"])


def _s3_calls(monkeypatch):
    """Every S3 API call made from now on, as (method, key)."""
    import s3fs

    calls = []
    real = s3fs.S3FileSystem._call_s3

    async def call(self, method, *args, **kwargs):
        calls.append((method, kwargs.get("Key")))
        return await real(self, method, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", call)
    return calls


def test_a_restore_asks_the_store_only_what_it_needs(s3, bucket, monkeypatch, tmp_path):
    """Each request before the tensor bytes is a round trip a restore waits for: one GET of the index, one
    HEAD per data object (the shards' all at once), then the ranged GETs; no HEAD of the index first."""
    fs, _ = s3
    values = [np.full(1000, i, np.float32) for i in range(3)]
    parts = [str(tmp_path / f"part-{k}" / "p") for k in range(3)]
    for k, part in enumerate(parts):
        bundle.write_bundle(part, [f"v{k}"], [values[k]])
    bundle.merge_bundles(parts, str(tmp_path / "model"))
    for name in os.listdir(tmp_path):
        if name.startswith("model."):
            fs.put(str(tmp_path / name), f"{bucket}/rt/{name}")
    url = f"s3://{bucket}/rt/model"
    data = {f"rt/model.data-{k:05d}-of-00003" for k in range(3)}
    calls = _s3_calls(monkeypatch)
    got = bundle.read_tensors(url, ["v0", "v1", "v2"])
    assert all(np.array_equal(g, v) for g, v in zip(got, values, strict=True))
    keys = list(calls)
    assert keys[0] == ("get_object", "rt/model.index"), keys
    assert sorted(keys[1:4]) == sorted(("head_object", d) for d in data), keys
    assert {m for m, _ in keys[4:]} == {"get_object"} and {k for _, k in keys[4:]} == data, keys

    # Other spellings still resolve: the index's own URL, a directory with a state file.
    assert bundle.read_tensors(url + ".index", ["v1"])[0][0] == 1
    checkpoint_management.update_checkpoint_state_internal(f"s3://{bucket}/rt", url)
    assert bundle.read_tensors(f"s3://{bucket}/rt", ["v2"])[0][0] == 2


@pytest.mark.parametrize("fixture", ["v1_dtypes", "v1_sharded", "v1_partitioned", "tf2_object"])
def test_tf_written_fixtures_uploaded_are_read(s3, bucket, fixture):
    fs, _ = s3
    src = os.path.join(FIXTURES, fixture)
    for f in os.listdir(src):
        fs.put_file(os.path.join(src, f), f"{bucket}/{fixture}/{f}")
    local = checkpoint_utils.load_checkpoint(src)
    remote = checkpoint_utils.load_checkpoint(f"s3://{bucket}/{fixture}")  # through the state file
    assert remote.get_variable_to_shape_map() == local.get_variable_to_shape_map()
    for key in local.get_variable_to_shape_map():
        np.testing.assert_array_equal(np.asarray(remote.get_tensor(key)), np.asarray(local.get_tensor(key)))


def test_saverkit_written_to_s3_is_read_by_tensorflow(s3, bucket, tmp_path):
    fs, _ = s3
    # saverkit -> S3 -> download -> TensorFlow
    values = _values(7)
    g, sess, saver, vs = _model(values)
    url = saver.save(sess, f"s3://{bucket}/fortf/model", global_step=3)
    fs.get(f"{bucket}/fortf/", str(tmp_path) + "/", recursive=True)
    code = (
        "import sys, numpy as np, tensorflow as tf\n"
        "r = tf.train.load_checkpoint(sys.argv[1])\n"
        "print(sorted(r.get_variable_to_shape_map()))\n"
        "np.save(sys.argv[2], r.get_tensor('w'))\n"
    )
    pytest.importorskip("tensorflow")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "model-3"), str(tmp_path / "w.npy")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    np.testing.assert_array_equal(np.load(tmp_path / "w.npy"), values["w"])
    assert storage.basename(url) == "model-3"


def _sharded_model(values):
    g = sk.Graph()
    with g.as_default():
        vs = {}
        for i, (name, v) in enumerate(values.items()):
            with sk.device(f"/cpu:{i % 2}"):
                vs[name] = sk.Variable(v, name=name)
        saver = sk.train.Saver(sharded=True)
    sess = sk.Session(graph=g)
    with g.as_default():
        sess.run([v.initializer for v in vs.values()])
    return g, sess, saver, vs


def test_sharded_and_resaved_checkpoints_on_s3_are_a_local_saves_bytes_and_read_by_tensorflow(
        s3, bucket, tmp_path, monkeypatch):
    fs, _ = s3
    monkeypatch.setattr(storage, "PART_SIZE", 5 << 20)
    values = _values(9, big=True)  # "w" is a 2-part multipart upload
    g, sess, saver, vs = _sharded_model(values)
    local = tmp_path / "local"
    local.mkdir()
    saver.save(sess, str(local / "model"), global_step=1)
    url = saver.save(sess, f"s3://{bucket}/sh/model", global_step=1)
    names = sorted(n for n in os.listdir(local) if n.startswith("model-1.") and not n.endswith(".meta"))
    assert names == ["model-1.data-00000-of-00002", "model-1.data-00001-of-00002", "model-1.index"]
    for n in names:
        assert fs.cat_file(f"{bucket}/sh/{n}") == (local / n).read_bytes(), n
    _assert_restores(url, values)
    # a re-save of one prefix, sharded and not: an extra, empty shard keeps its names new
    saver.save(sess, f"s3://{bucket}/sh/same")
    saver.save(sess, f"s3://{bucket}/sh/same")
    g1, sess1, saver1, _ = _model(values)
    saver1.save(sess1, f"s3://{bucket}/sh/single")
    saver1.save(sess1, f"s3://{bucket}/sh/single")
    keys = _keys(fs, bucket)
    assert [k for k in keys if k.startswith("sh/same.data")] == [
        f"sh/same.data-0000{k}-of-00003" for k in range(3)]
    assert [k for k in keys if k.startswith("sh/single.data")] == [
        "sh/single.data-00000-of-00002", "sh/single.data-00001-of-00002"]
    assert fs.size(f"{bucket}/sh/single.data-00001-of-00002") == 0
    assert not [k for k in keys if "skwrite" in k] and _uploads_in_progress(fs, bucket) == []
    _assert_restores(f"s3://{bucket}/sh/single", values)
    pytest.importorskip("tensorflow")
    down = tmp_path / "down"
    fs.get(f"{bucket}/sh/", str(down) + "/", recursive=True)
    code = (
        "import sys, numpy as np, tensorflow as tf\n"
        "for i, p in enumerate(sys.argv[2:]):\n"
        "    r = tf.train.load_checkpoint(p)\n"
        "    np.save(f'{sys.argv[1]}/{i}.npy', r.get_tensor('w'))\n"
        "    assert r.get_tensor('step') == 9 and list(r.get_tensor('names')) == [b'a', b'bc' * 50]\n"
    )
    prefixes = [str(down / p) for p in ("model-1", "same", "single")]
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path), *prefixes],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    for i in range(3):
        np.testing.assert_array_equal(np.load(tmp_path / f"{i}.npy"), values["w"])


def test_a_resave_on_s3_killed_at_any_step_keeps_a_complete_checkpoint(s3, bucket, monkeypatch):
    from remote_helpers import KillAt, Killed

    fs, _ = s3
    old, new = _values(10), _values(11)
    url = f"s3://{bucket}/same/model"
    steps, at = None, 0
    while steps is None or at < steps:
        g, sess, saver, vs = _model(old)
        saver.save(sess, url, write_meta_graph=False)
        with g.as_default():
            sess.run([vs[k].assign(v) for k, v in new.items()])
        with monkeypatch.context() as m:
            killer = KillAt(m, storage.Location(url).fs, None if steps is None else at)  # the save's
            if steps is None:
                saver.save(sess, url, write_meta_graph=False)
                steps = len(killer.changes)
                continue
            with pytest.raises(Killed):
                saver.save(sess, url, write_meta_graph=False)
        reader = checkpoint_utils.load_checkpoint(url)
        want = new if reader.get_tensor("step") == 11 else old
        for k, v in want.items():
            np.testing.assert_array_equal(reader.get_tensor(k), v)
        saver.save(sess, url, write_meta_graph=False)  # cleans up what the killed save left
        n = bundle.BundleReader(url).num_shards
        data = [f"same/model.data-{k:05d}-of-{n:05d}" for k in range(n)]
        assert _keys(fs, bucket) == sorted(["same/checkpoint", "same/model.index", *data])
        _assert_restores(url, new)
        at += 1
    assert steps == 7  # intent, 2 data objects, index, the old data object, intent, state file


def test_next_save_cleans_what_interrupted_saves_of_this_model_left_and_nothing_else(s3, bucket):
    import time

    fs, _ = s3
    d = f"{bucket}/clean"
    # a killed writer's multipart upload, and one whose data object completed but whose index never came
    up = fs.call_s3("create_multipart_upload", Bucket=bucket, Key="clean/model-5.data-00000-of-00001")
    fs.call_s3("upload_part", Bucket=bucket, Key="clean/model-5.data-00000-of-00001", UploadId=up["UploadId"],
               PartNumber=1, Body=b"x" * 100)
    fs.pipe_file(f"{d}/model-6.data-00000-of-00001", b"y" * 100, Metadata={storage.WRITER_KEY: "h-1-x"})
    # not saverkit's (no marker), another model's, and a complete checkpoint: all left alone
    fs.pipe_file(f"{d}/model-7.data-00000-of-00001", b"z" * 100)
    fs.pipe_file(f"{d}/other-1.data-00000-of-00001", b"w" * 100, Metadata={storage.WRITER_KEY: "h-1-x"})
    time.sleep(1.1)  # S3 times have a resolution of a second
    g, sess, saver, vs = _model(_values(8))
    saver.save(sess, f"s3://{d}/model", global_step=8)
    keys = _keys(fs, bucket)
    assert "clean/model-6.data-00000-of-00001" not in keys
    assert {"clean/model-7.data-00000-of-00001", "clean/other-1.data-00000-of-00001",
            "clean/model-8.index", "clean/model-8.data-00000-of-00001"} <= set(keys)
    assert _uploads_in_progress(fs, bucket) == []


_N = 3 << 19  # 6 MiB of float32
_KILL_CHILD = f"N = {_N}\n" + r"""
import sys, numpy as np, saverkit as sk
from saverkit import storage
storage.PART_SIZE = 5 << 20  # S3's smallest part: 6 MiB of data is a multipart upload of 2 parts
url = sys.argv[1]
g = sk.Graph()
with g.as_default():
    w = sk.Variable(np.zeros(N, np.float32), name="w")
    step = sk.Variable(np.int64(0), name="step")
    saver = sk.train.Saver(max_to_keep=3)
    sess = sk.Session(graph=g)
    sess.run([w.initializer, step.initializer])
    for s in range(int(sys.argv[2]), 10**6):
        sess.run([w.assign(np.full(N, s, np.float32)), step.assign(np.int64(s))])
        if sys.argv[3] == "same":  # one prefix re-saved: the old checkpoint must survive a killed re-save
            saver.save(sess, url + "/model")
        else:
            saver.save(sess, url + "/model", global_step=s)
        print(s, flush=True)
"""


KILLS = int(os.environ.get("SAVERKIT_S3_KILLS", "3"))  # the long run: SAVERKIT_S3_KILLS=100


@pytest.mark.parametrize("mode", ["steps", "same"])
def test_sigkill_during_s3_saves_loses_no_checkpoint_and_shows_no_partial_object(s3, bucket, mode):
    import random
    import signal
    import time

    fs, _ = s3
    rng = random.Random(3)
    url = f"s3://{bucket}/kill"
    next_step, last_saved, kills, orphans_seen = 1, 0, 0, 0
    for _ in range(KILLS):
        child = subprocess.Popen([sys.executable, "-c", _KILL_CHILD, url, str(next_step), mode],
                                 stdout=subprocess.PIPE, text=True, env=os.environ.copy())
        first = child.stdout.readline()  # one save done: the next is in flight from here on
        assert first, "child failed before its first save"
        last_saved = int(first)
        time.sleep(rng.uniform(0.0, 0.3))
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate()
        kills += 1
        for line in out.split():
            last_saved = int(line)
        # a fresh reader: the latest checkpoint is complete, exact, and the last saved or the one in flight
        latest = checkpoint_management.latest_checkpoint(url)
        reader = checkpoint_utils.load_checkpoint(latest)
        step = int(reader.get_tensor("step")) if mode == "same" else int(latest.rsplit("-", 1)[1])
        assert step in (last_saved, last_saved + 1), (step, last_saved)
        assert reader.get_tensor("step") == step
        np.testing.assert_array_equal(reader.get_tensor("w"), np.full(_N, step, np.float32))
        # every checkpoint object visible is whole: each index's data reads back with its CRCs
        keys = _keys(fs, bucket)
        for k in keys:
            if k.endswith(".index"):
                r = checkpoint_utils.load_checkpoint(f"s3://{bucket}/{k[:-len('.index')]}")
                for name in r.get_variable_to_shape_map():
                    r.get_tensor(name)
            elif ".data-" in k and k[: k.index(".data-")] + ".index" not in keys:
                orphans_seen += 1  # complete (objects appear whole) but unnamed: the next save removes it
        next_step = step + 1
    # one more save in a fresh process cleans up what the kills left
    time.sleep(1.1)
    once = _KILL_CHILD.replace("10**6", "int(sys.argv[2]) + 1")
    done = subprocess.run([sys.executable, "-c", once, url, str(next_step), mode], capture_output=True,
                          text=True, env=os.environ.copy(), timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    keys = _keys(fs, bucket)
    assert all(k[: k.index(".data-")] + ".index" in keys for k in keys if ".data-" in k), keys
    for k in keys:  # and no data object beside an index that does not name it, nor an intent object
        assert "skwrite" not in k, keys
        if ".data-" in k:
            n = bundle.BundleReader(f"s3://{bucket}/{k[: k.index('.data-')]}").num_shards
            assert k.endswith(f"-of-{n:05d}"), keys
    assert _uploads_in_progress(fs, bucket) == []
    assert kills == KILLS
