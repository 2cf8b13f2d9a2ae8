"""saverkit.distributed and Saver(coordinator=...): ranks played by threads (ThreadGroup).

The same protocol runs over MPI (test_distributed_mpi.py) and torch.distributed (test_distributed_torch.py).
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time

import numpy as np
import pytest
import saverkit as sk
from dist_helpers import build_rank_model, emb_full, expected_values, own, shared
from saverkit import bundle, errors
from saverkit import distributed as dist
from saverkit.train import distributed_save


def run_ranks(world: int, fn, timeout: float = 20.0, group: dist.ThreadGroup | None = None) -> list:
    """fn(coord) on ``world`` threads; returns each rank's result or exception."""
    group = group or dist.ThreadGroup(world, timeout=timeout)
    out: list = [None] * world

    def main(rank):
        try:
            out[rank] = fn(group.coordinator(rank))
        except BaseException as e:  # noqa: BLE001 - returned to the test
            out[rank] = e

    threads = [threading.Thread(target=main, args=(r,), daemon=True) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout * 3)
        assert not t.is_alive(), "a rank hung"
    return out


def raise_first(results: list) -> list:
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results


# --- the protocol
def test_all_gather_broadcast_barrier():
    def fn(c):
        got = c.all_gather({"rank": c.rank})
        b = c.broadcast(f"from {c.rank}", root=2)
        c.barrier()
        return got, b, c.world_size

    for got, b, n in raise_first(run_ranks(4, fn)):
        assert got == [{"rank": r} for r in range(4)] and b == "from 2" and n == 4


def test_payloads_are_copies_not_shared_objects():
    def fn(c):
        x = c.broadcast([1, 2] if c.rank == 0 else None)
        x.append(c.rank)
        return x

    assert raise_first(run_ranks(3, fn)) == [[1, 2, 0], [1, 2, 1], [1, 2, 2]]


def test_a_missing_rank_makes_every_other_rank_time_out_and_the_coordinator_breaks():
    def fn(c):
        if c.rank == 1:
            return "absent"
        t0 = time.monotonic()
        with pytest.raises(dist.CollectiveTimeoutError, match=r"rank\(s\) 1") as e:
            c.all_gather(c.rank, timeout=0.3)
        assert 0.25 < time.monotonic() - t0 < 5
        assert isinstance(e.value, errors.DeadlineExceededError) and e.value.rank == c.rank
        with pytest.raises(dist.DistributedError, match="unusable"):
            c.barrier()
        return "timed out"

    assert run_ranks(3, fn) == ["timed out", "absent", "timed out"]


def test_an_error_on_one_rank_is_raised_on_every_rank_naming_it():
    def fn(c):
        def step():
            if c.rank == 2:
                raise errors.ResourceExhaustedError(None, None, "disk full on rank two")
            return c.rank * 10

        want = "failed on rank 2: ResourceExhaustedError: disk full"
        with pytest.raises(dist.RankFailedError, match=want) as e:
            dist.run_everywhere(c, step, "step")
        assert e.value.rank == 2 and e.value.error_type == "ResourceExhaustedError"
        assert isinstance(e.value, errors.OpError) and e.value.error_code_of_rank == errors.RESOURCE_EXHAUSTED
        assert dist.run_everywhere(c, lambda: c.rank, "again") == [0, 1, 2, 3]  # still usable
        return True

    assert raise_first(run_ranks(4, fn)) == [True] * 4


def test_several_failed_ranks_are_all_named():
    def fn(c):
        def step():
            if c.rank in (1, 3):
                raise ValueError(f"bad {c.rank}")

        with pytest.raises(dist.RankFailedError, match=r"rank 1 \(ranks 1, 3 failed\)") as e:
            dist.run_everywhere(c, step, "step")
        return e.value.ranks

    assert raise_first(run_ranks(4, fn)) == [(1, 3)] * 4


def test_abandoned_rank_fails_the_others_at_once():
    group = dist.ThreadGroup(3, timeout=60)

    def fn(c):
        if c.rank == 0:
            group.abandon(0)
            return "dead"
        t0 = time.monotonic()
        with pytest.raises(dist.CollectiveTimeoutError):
            c.all_gather(1)
        return time.monotonic() - t0

    out = run_ranks(3, fn, group=group)
    assert out[0] == "dead" and all(t < 5 for t in out[1:])


def test_errors_pickle_with_their_ranks():
    import pickle

    e = dist.RankFailedError(None, None, "m", rank=3, ranks=(1, 3), error_type="X", error_code_of_rank=8)
    f = pickle.loads(pickle.dumps(e))
    assert (type(f), f.rank, f.ranks, f.error_type, f.message) == (dist.RankFailedError, 3, (1, 3), "X", "m")


# --- the plan
def test_plan_writes_replicas_once_and_rejects_conflicts():
    f32, i64 = sk.float32.as_datatype_enum, sk.int64.as_datatype_enum
    a = [("shared", i64, (4,), ""), ("emb", f32, (12, 5), "12 5 0,6:0,5")]
    b = [("shared", i64, (4,), ""), ("emb", f32, (12, 5), "12 5 6,6:0,5"), ("emb2", f32, (2,), "")]
    c = [("emb", f32, (12, 5), "12 5 6,6:0,5")]  # the same slice as rank 1: written once
    assert distributed_save.plan_save([a, b, c]) == [[0, 1], [1, 2], []]
    with pytest.raises(errors.InvalidArgumentError, match="rank 0 saves int64\\[4\\], rank 1 saves float32"):
        distributed_save.plan_save([a, [("shared", f32, (4,), "")]])
    with pytest.raises(errors.InvalidArgumentError, match=r"int64\[4\], rank 1 saves int64\[5\]"):
        distributed_save.plan_save([a, [("shared", i64, (5,), "")]])
    with pytest.raises(errors.InvalidArgumentError, match="overlap but differ"):
        distributed_save.plan_save([a, [("emb", f32, (12, 5), "12 5 3,6:0,5")]])
    with pytest.raises(errors.InvalidArgumentError, match="the whole tensor"):
        distributed_save.plan_save([a, [("emb", f32, (12, 5), "")]])
    many = [[("e", f32, (1000, 2), f"1000 2 {r * 10},10:-")] for r in range(100)]
    assert distributed_save.plan_save(many) == [[0]] * 100
    many[57] = [("e", f32, (1000, 2), "1000 2 565,10:-")]
    with pytest.raises(errors.InvalidArgumentError, match="overlap"):
        distributed_save.plan_save(many)


# --- Saver(coordinator=)
def _save_rank(c, directory, step, world=None, **save_kw):
    g = sk.Graph()
    with g.as_default():
        build_rank_model(c.rank, world or c.world_size, step)
        saver = sk.train.Saver(coordinator=c, max_to_keep=2)
        with sk.Session(graph=g) as sess:
            sess.run(sk.global_variables_initializer())
            return saver.save(sess, os.path.join(directory, "model"), global_step=step, **save_kw)


def _check_checkpoint(prefix, world, step):
    with bundle.BundleReader(prefix) as r:
        assert r.num_shards == world
        want = expected_values(world, step)
        assert sorted(r.entries()) == sorted(want)
        for k, v in want.items():
            np.testing.assert_array_equal(r.read(k), v)
            assert r.read(k).dtype == v.dtype


def test_four_ranks_save_one_checkpoint(tmp_path):
    out = raise_first(run_ranks(4, lambda c: _save_rank(c, str(tmp_path), 7)))
    prefix = str(tmp_path / "model-7")
    assert out == [prefix] * 4
    names = sorted(os.listdir(tmp_path))
    assert names == ["checkpoint", "model-7.data-00000-of-00004", "model-7.data-00001-of-00004",
                     "model-7.data-00002-of-00004", "model-7.data-00003-of-00004", "model-7.index",
                     "model-7.meta"]
    _check_checkpoint(prefix, 4, 7)
    assert sk.train.latest_checkpoint(str(tmp_path)) == prefix


def test_retention_across_saves_and_every_rank_knows_the_checkpoints(tmp_path):
    group = dist.ThreadGroup(3, timeout=20)

    def fn(c):
        g = sk.Graph()
        with g.as_default():
            build_rank_model(c.rank, 3, 0)
            saver = sk.train.Saver(coordinator=c, max_to_keep=2)
            with sk.Session(graph=g) as sess:
                sess.run(sk.global_variables_initializer())
                for step in range(4):
                    saver.save(sess, str(tmp_path / "m"), global_step=step, write_meta_graph=False)
                return saver.last_checkpoints

    out = raise_first(run_ranks(3, fn, group=group))
    assert out == [[str(tmp_path / "m-2"), str(tmp_path / "m-3")]] * 3
    assert sorted(n for n in os.listdir(tmp_path) if n.endswith(".index")) == ["m-2.index", "m-3.index"]
    state = sk.train.get_checkpoint_state(str(tmp_path))
    assert list(state.all_model_checkpoint_paths) == [str(tmp_path / "m-2"), str(tmp_path / "m-3")]


def test_conflicting_duplicates_fail_on_every_rank_and_leave_nothing(tmp_path):
    def fn(c):
        g = sk.Graph()
        with g.as_default():
            sk.Variable(np.zeros(3 + (c.rank == 2), np.float32), name="shared")
            saver = sk.train.Saver(coordinator=c)
            with sk.Session(graph=g) as sess:
                sess.run(sk.global_variables_initializer())
                saver.save(sess, str(tmp_path / "model"))

    out = run_ranks(3, fn)
    assert all(isinstance(e, errors.InvalidArgumentError) for e in out), out
    assert all("rank 0 saves float32[3], rank 2 saves float32[4]" in str(e) for e in out)
    assert os.listdir(tmp_path) == []


def test_a_failed_write_raises_on_every_rank_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    raise_first(run_ranks(3, lambda c: _save_rank(c, str(tmp_path), 1)))
    real = bundle.write_bundle

    def failing(prefix, *a, **k):
        if "part-00001-of" in prefix:
            raise errors.ResourceExhaustedError(None, None, f"No space left on device: {prefix}")
        return real(prefix, *a, **k)

    monkeypatch.setattr(bundle, "write_bundle", failing)
    out = run_ranks(3, lambda c: _save_rank(c, str(tmp_path), 2))
    assert all(isinstance(e, dist.RankFailedError) for e in out), out
    assert all("save (write) failed on rank 1: ResourceExhaustedError: No space left" in str(e) for e in out)
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["checkpoint", "model-1.index", "model-1.meta"]
        + [f"model-1.data-0000{k}-of-00003" for k in range(3)])
    assert sk.train.latest_checkpoint(str(tmp_path)) == str(tmp_path / "model-1")
    _check_checkpoint(str(tmp_path / "model-1"), 3, 1)


def test_a_rank_that_dies_mid_save_fails_the_others_within_the_timeout(tmp_path):
    raise_first(run_ranks(3, lambda c: _save_rank(c, str(tmp_path), 1)))
    group = dist.ThreadGroup(3, timeout=1.0)

    def fn(c):
        if c.rank == 1:  # dies after the prepare step: never reports its write
            real = c._all_gather
            calls = []

            def dying(obj, *, deadline):
                calls.append(1)
                if len(calls) == 2:
                    raise SystemExit("killed")
                return real(obj, deadline=deadline)

            c._all_gather = dying
        t0 = time.monotonic()
        try:
            _save_rank(c, str(tmp_path), 2)
        except BaseException as e:  # noqa: BLE001
            return e, time.monotonic() - t0
        return None, 0

    out = run_ranks(3, fn, group=group)
    for rank in (0, 2):
        e, t = out[rank]
        assert isinstance(e, dist.CollectiveTimeoutError) and t < 5, out
    assert sk.train.latest_checkpoint(str(tmp_path)) == str(tmp_path / "model-1")
    _check_checkpoint(str(tmp_path / "model-1"), 3, 1)
    assert not [n for n in os.listdir(tmp_path) if "_temp_" in n]  # rank 0 removed the part directory


def test_a_rank_may_hold_nothing_to_write(tmp_path):
    def fn(c):
        g = sk.Graph()
        with g.as_default():
            sk.Variable(shared(0), name="shared")  # every rank: written once, by rank 0
            saver = sk.train.Saver(coordinator=c)
            with sk.Session(graph=g) as sess:
                sess.run(sk.global_variables_initializer())
                return saver.save(sess, str(tmp_path / "model"))

    assert raise_first(run_ranks(3, fn)) == [str(tmp_path / "model")] * 3
    with bundle.BundleReader(str(tmp_path / "model")) as r:
        assert r.num_shards == 1 and list(r.entries()) == ["shared"]


# --- restore
def _restore_rank(c, prefix, world, saved_world, coordinated=True, with_own=True, **restore_kw):
    g = sk.Graph()
    with g.as_default():
        model = build_rank_model(c.rank, world, step=-1, emb_world=saved_world, with_own=with_own)
        saver = sk.train.Saver(coordinator=c if coordinated else None)
        with sk.Session(graph=g) as sess:
            saver.restore(sess, prefix, **restore_kw)
            return {k: sess.run(v) for k, v in model.items()}


def _check_restored(values, rank, world, saved_world, step, with_own=True):
    full = emb_full(saved_world, step)
    bounds = np.linspace(0, full.shape[0], world + 1).astype(int)
    np.testing.assert_array_equal(values["emb"], full[bounds[rank]:bounds[rank + 1]])
    np.testing.assert_array_equal(values["shared"], shared(step))
    if with_own:
        np.testing.assert_array_equal(values["own"], own(rank, step))


def test_restore_same_world_each_rank_gets_its_own(tmp_path):
    raise_first(run_ranks(4, lambda c: _save_rank(c, str(tmp_path), 3)))
    out = raise_first(run_ranks(4, lambda c: _restore_rank(c, str(tmp_path / "model-3"), 4, 4)))
    for rank, values in enumerate(out):
        _check_restored(values, rank, 4, 4, 3)


@pytest.mark.parametrize("saved, restored", [(4, 2), (4, 1), (2, 4), (1, 3), (3, 2)])
def test_restore_with_a_different_world_size_through_slices(tmp_path, saved, restored):
    raise_first(run_ranks(saved, lambda c: _save_rank(c, str(tmp_path), 5)))
    out = raise_first(run_ranks(
        restored, lambda c: _restore_rank(c, str(tmp_path / "model-5"), restored, saved, with_own=False)))
    for rank, values in enumerate(out):
        _check_restored(values, rank, restored, saved, 5, with_own=False)


def test_a_plain_saver_restores_the_whole_partitioned_variable(tmp_path):
    raise_first(run_ranks(4, lambda c: _save_rank(c, str(tmp_path), 9)))
    g = sk.Graph()
    with g.as_default():
        emb = sk.Variable(np.zeros((24, 5), np.float32), name="emb")
        w3 = sk.Variable(np.zeros((3, 5)), name="rank3/w")
        with sk.Session(graph=g) as sess:
            sk.train.Saver([emb, w3]).restore(sess, str(tmp_path / "model-9"))
            np.testing.assert_array_equal(sess.run(emb), emb_full(4, 9))
            np.testing.assert_array_equal(sess.run(w3), own(3, 9))


def test_restore_errors_are_raised_on_every_rank(tmp_path):
    raise_first(run_ranks(2, lambda c: _save_rank(c, str(tmp_path), 1)))
    # rank 2 of 3 asks for rank2/w, which a world of 2 never saved
    out = run_ranks(3, lambda c: _restore_rank(c, str(tmp_path / "model-1"), 3, 2))
    assert all(isinstance(e, dist.RankFailedError) for e in out), out
    assert all("restore failed on rank 2: NotFoundError: Key rank2/w not found" in str(e) for e in out)
    out = run_ranks(2, lambda c: _restore_rank(c, str(tmp_path / "nothing"), 2, 2))
    assert all(isinstance(e, dist.RankFailedError) and "restore (index) failed on rank 0" in str(e)
               for e in out), out


# --- CheckpointManager(coordinator=): object-based checkpoints, object graphs merged by path
def _manager_rank(c, directory, value, max_to_keep=2, saves=3, restore=False, storage_options=None):
    g = sk.Graph()
    with g.as_default(), sk.Session(graph=g) as sess:
        shared_v = sk.Variable(np.float32(0.0), name="shared")
        mine = sk.Variable(np.zeros(c.rank + 1, np.float32), name=f"w{c.rank}")
        ckpt = sk.train.Checkpoint(shared=shared_v, **{f"w{c.rank}": mine})
        mgr = sk.train.CheckpointManager(ckpt, directory, max_to_keep=max_to_keep, coordinator=c,
                                         storage_options=storage_options)
        sess.run(sk.global_variables_initializer())
        if restore:
            path = mgr.restore_or_initialize(session=sess)
            return path, sess.run(shared_v), sess.run(mine)
        paths = []
        for i in range(saves):
            sess.run(shared_v.assign(np.float32(value + i)))
            sess.run(mine.assign(np.full(c.rank + 1, value + i + c.rank, np.float32)))
            paths.append(mgr.save(session=sess))
        return paths, mgr.checkpoints


def test_checkpoint_manager_four_ranks_one_checkpoint_then_restore(tmp_path):
    out = raise_first(run_ranks(4, lambda c: _manager_rank(c, str(tmp_path), 10.0)))
    want = [str(tmp_path / f"ckpt-{i}") for i in (1, 2, 3)]
    assert all(o == (want, want[1:]) for o in out), out
    assert sorted(n for n in os.listdir(tmp_path) if n.endswith(".index")) == ["ckpt-2.index", "ckpt-3.index"]
    with bundle.BundleReader(want[-1]) as r:
        assert r.num_shards == 4
        names = set(r.entries())
        assert {f"w{k}/.ATTRIBUTES/VARIABLE_VALUE" for k in range(4)} <= names
        np.testing.assert_array_equal(r.read("w3/.ATTRIBUTES/VARIABLE_VALUE"), np.full(4, 15, np.float32))
        assert r.read("shared/.ATTRIBUTES/VARIABLE_VALUE") == 12
    # a single process restores every rank's objects from the merged object graph
    g = sk.Graph()
    with g.as_default(), sk.Session(graph=g) as sess:
        vs = {f"w{k}": sk.Variable(np.zeros(k + 1, np.float32), name=f"w{k}") for k in range(4)}
        sk.train.Checkpoint(**vs).restore(want[-1], session=sess).assert_existing_objects_matched()
        for k in range(4):
            np.testing.assert_array_equal(sess.run(vs[f"w{k}"]), np.full(k + 1, 12 + k, np.float32))
    # and the ranks restore their own (2 ranks: a smaller world finds its objects too)
    out = raise_first(run_ranks(2, lambda c: _manager_rank(c, str(tmp_path), 0.0, restore=True)))
    for rank, (path, s, mine) in enumerate(out):
        assert path == want[-1] and s == 12
        np.testing.assert_array_equal(mine, np.full(rank + 1, 12 + rank, np.float32))


@pytest.mark.tf
def test_tensorflow_reads_a_distributed_checkpoint_manager_checkpoint(tmp_path):
    raise_first(run_ranks(3, lambda c: _manager_rank(c, str(tmp_path), 1.0, saves=1)))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    tf = pytest.importorskip("tensorflow")
    path = tf.train.latest_checkpoint(str(tmp_path))
    assert path == str(tmp_path / "ckpt-1")
    vs = {f"w{k}": tf.Variable(np.zeros(k + 1, np.float32)) for k in range(3)}
    shared_v = tf.Variable(np.float32(0))
    tf.train.Checkpoint(shared=shared_v, **vs).restore(path).assert_existing_objects_matched()
    assert shared_v.numpy() == 1
    for k in range(3):
        np.testing.assert_array_equal(vs[f"w{k}"].numpy(), np.full(k + 1, 1 + k, np.float32))


@pytest.mark.tf
def test_tensorflow_reads_a_four_rank_saver_checkpoint(tmp_path):
    raise_first(run_ranks(4, lambda c: _save_rank(c, str(tmp_path), 4)))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    tf = pytest.importorskip("tensorflow")
    prefix = tf.train.latest_checkpoint(str(tmp_path))
    reader = tf.train.load_checkpoint(prefix)
    for k, v in expected_values(4, 4).items():
        np.testing.assert_array_equal(reader.get_tensor(k), v)
    # TF's own Saver restores the partitioned variable whole
    g = tf.Graph()
    with g.as_default():
        emb = tf.compat.v1.get_variable("emb", shape=[24, 5], dtype=tf.float32)
        with tf.compat.v1.Session(graph=g) as sess:
            tf.compat.v1.train.Saver([emb]).restore(sess, prefix)
            np.testing.assert_array_equal(sess.run(emb), emb_full(4, 4))


# --- the engine's slice assembly (what a restore with another world size reads)
@pytest.mark.parametrize("region", [
    ((0, 6), (0, 5), (0, 4)), ((1, 4), (0, 5), (0, 4)), ((1, 4), (1, 3), (0, 4)), ((0, 6), (0, 5), (1, 2)),
    ((2, 2), (0, 5), (0, 4)), ((5, 1), (4, 1), (3, 1)), ((0, 3), (0, 2), (0, 4)),
])
def test_slices_read_across_stored_slices_equal_numpy(tmp_path, region):
    full = np.arange(6 * 5 * 4, dtype=np.float32).reshape(6, 5, 4)
    pieces = [((0, 3), (0, 2)), ((0, 3), (2, 3)), ((3, 3), (0, 2)), ((3, 3), (2, 3))]
    names, values, specs = [], [], []
    for (r0, rl), (c0, cl) in pieces:
        names.append("t")
        values.append(full[r0:r0 + rl, c0:c0 + cl])
        specs.append(f"6 5 4 {r0},{rl}:{c0},{cl}:-")
    for i, (n, v, s) in enumerate(zip(names, values, specs, strict=True)):
        bundle.write_bundle(str(tmp_path / f"p{i}"), [n], [v], [s])
    bundle.merge_bundles([str(tmp_path / f"p{i}") for i in range(4)], str(tmp_path / "m"))
    spec = "6 5 4 " + ":".join(f"{s},{n}" for s, n in region)
    want = full[tuple(slice(s, s + n) for s, n in region)]
    with bundle.BundleReader(str(tmp_path / "m")) as r:
        np.testing.assert_array_equal(r.read_slice("t", spec), want)
        np.testing.assert_array_equal(r.read("t"), full)


def test_a_corrupt_stored_slice_is_detected_when_only_part_of_it_is_read(tmp_path):
    full = np.arange(64 * 1024, dtype=np.float32).reshape(1024, 64)  # 256 KiB: several stream pieces
    for i in range(2):
        bundle.write_bundle(str(tmp_path / f"p{i}"), ["t"], [full[i * 512:(i + 1) * 512]],
                            [f"1024 64 {i * 512},512:-"])
    bundle.merge_bundles([str(tmp_path / "p0"), str(tmp_path / "p1")], str(tmp_path / "m"))
    data = tmp_path / "m.data-00001-of-00002"
    raw = bytearray(data.read_bytes())
    raw[-5] ^= 0x40  # in rows the request below does not need
    data.write_bytes(bytes(raw))
    with bundle.BundleReader(str(tmp_path / "m")) as r:
        np.testing.assert_array_equal(r.read_slice("t", "1024 64 0,100:-"), full[:100])  # other shard: fine
        with pytest.raises(errors.DataLossError, match="Checksum does not match"):
            r.read_slice("t", "1024 64 500,20:-")


def test_durable_save_and_a_sharded_saver_per_rank(tmp_path):
    def fn(c):
        g = sk.Graph()
        with g.as_default():
            build_rank_model(c.rank, c.world_size, 6)
            saver = sk.train.Saver(coordinator=c, sharded=c.rank == 1, durable=True)  # rank 1: its own shards
            with sk.Session(graph=g) as sess:
                sess.run(sk.global_variables_initializer())
                return saver.save(sess, str(tmp_path / "model"), global_step=6)

    assert raise_first(run_ranks(3, fn)) == [str(tmp_path / "model-6")] * 3
    _check_checkpoint(str(tmp_path / "model-6"), 3, 6)
    assert not [n for n in os.listdir(tmp_path) if "_temp_" in n or ".sktmp-" in n]


# --- restore: the index read once, each rank reading its own bytes
def _index_opens(monkeypatch) -> list:
    """Records (rank, how) each time a checkpoint index is opened: a Reader opened from the file, or the
    file read; ranks are known by the thread's name (set by _named)."""
    from saverkit import _core

    opened: list = []
    real_reader, real_open = _core.Reader, open

    def reader(prefix, *args):
        if not args:
            opened.append((threading.current_thread().name, "Reader"))
        return real_reader(prefix, *args)

    def tracking_open(path, *args, **kwargs):
        if str(path).endswith(".index"):
            opened.append((threading.current_thread().name, "open"))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(_core, "Reader", reader)
    monkeypatch.setattr("builtins.open", tracking_open)
    return opened


def _named(fn):
    def run(c):
        threading.current_thread().name = f"rank{c.rank}"
        return fn(c)
    return run


def test_only_rank_0_reads_the_index_and_every_rank_restores_its_own(tmp_path, monkeypatch):
    raise_first(run_ranks(4, lambda c: _save_rank(c, str(tmp_path), 3)))
    opened = _index_opens(monkeypatch)
    out = raise_first(run_ranks(4, _named(lambda c: _restore_rank(c, str(tmp_path / "model-3"), 4, 4))))
    for rank, values in enumerate(out):
        _check_restored(values, rank, 4, 4, 3)
    assert opened == [("rank0", "open")]


def _partitioned(tmp_path, full: np.ndarray, bounds: list[int] | None) -> str:
    """``full`` saved as stored slices of rows [bounds[k], bounds[k+1]) (one data file each); None: as
    one unpartitioned tensor."""
    rows = full.shape[0]
    if bounds is None:  # one unpartitioned tensor
        bundle.write_bundle(str(tmp_path / "m"), ["t"], [full])
        return str(tmp_path / "m")
    spec_dims = " ".join(str(d) for d in full.shape)
    parts = []
    for k, (lo, hi) in enumerate(zip(bounds, bounds[1:], strict=False)):
        parts.append(str(tmp_path / f"p{k}"))
        bundle.write_bundle(parts[-1], ["t"], [full[lo:hi]],
                            [f"{spec_dims} {lo},{hi - lo}" + ":-" * (full.ndim - 1)])
    assert bounds[0] == 0 and bounds[-1] == rows
    bundle.merge_bundles(parts, str(tmp_path / "m"))
    return str(tmp_path / "m")


def _restore_rows(prefix: str, full: np.ndarray, rows_of_rank: list[tuple[int, int]]):
    """fn(coord): rank r restores rows rows_of_rank[r] of ``t`` with a coordinated Saver."""
    def fn(c):
        lo, hi = rows_of_rank[c.rank]
        g = sk.Graph()
        with g.as_default():
            v = sk.Variable(np.zeros((hi - lo, *full.shape[1:]), full.dtype), name=f"t/part_{c.rank}")
            v._set_save_slice_info(sk.Variable.SaveSliceInfo(
                "t", list(full.shape), [lo] + [0] * (full.ndim - 1), [hi - lo, *full.shape[1:]]))
            saver = sk.train.Saver([v], coordinator=c)
            with sk.Session(graph=g) as sess:
                sess.run(sk.global_variables_initializer())
                saver.restore(sess, prefix)
                return sess.run(v)
    return fn


def _count_run_reads(monkeypatch) -> dict:
    """Bytes each rank reads by ranges (its runs and the bytes it checksums for others)."""
    read: dict = {}
    lock = threading.Lock()
    real = distributed_save._read_ranges

    def counting(core, shards, offsets, sizes, outs):
        name = re.search(r"rank\d+", threading.current_thread().name).group()
        with lock:
            read[name] = read.get(name, 0) + sum(sizes)
        return real(core, shards, offsets, sizes, outs)

    monkeypatch.setattr(distributed_save, "_read_ranges", counting)
    return read


@pytest.mark.parametrize("bounds, rows_of_rank", [
    ([0, 512, 1024], [(0, 256), (256, 512), (512, 768), (768, 1024)]),  # 2 saved, 4 restore
    ([0, 256, 512, 768, 1024], [(0, 341), (341, 682), (682, 1024)]),   # 4 saved, 3 restore
    ([0, 1024], [(0, 300), (300, 1024)]),                              # one stored slice, 2 restore
    (None, [(0, 300), (300, 1000), (1000, 1024)]),                     # saved unpartitioned, 3 restore
])
def test_a_stored_slice_shared_by_ranks_is_read_once_in_all(tmp_path, monkeypatch, bounds, rows_of_rank):
    full = np.arange(1024 * 64, dtype=np.float32).reshape(1024, 64)
    prefix = _partitioned(tmp_path, full, bounds)
    read = _count_run_reads(monkeypatch)
    out = raise_first(run_ranks(len(rows_of_rank), _named(_restore_rows(prefix, full, rows_of_rank))))
    for (lo, hi), got in zip(rows_of_rank, out, strict=True):
        np.testing.assert_array_equal(got, full[lo:hi])
    # every byte of the tensor read once, by the rank that needs it (not each stored slice by each rank)
    assert read == {f"rank{r}": (hi - lo) * 64 * 4 for r, (lo, hi) in enumerate(rows_of_rank)}


def test_bytes_no_rank_needs_are_read_once_for_the_checksum(tmp_path, monkeypatch):
    full = np.arange(1024 * 64, dtype=np.float32).reshape(1024, 64)
    prefix = _partitioned(tmp_path, full, [0, 512, 1024])
    read = _count_run_reads(monkeypatch)
    rows = [(100, 200), (400, 700)]  # rows [0, 100), [200, 400) and [700, 1024) are nobody's
    out = raise_first(run_ranks(2, _named(_restore_rows(prefix, full, rows))))
    for (lo, hi), got in zip(rows, out, strict=True):
        np.testing.assert_array_equal(got, full[lo:hi])
    assert sum(read.values()) == full.nbytes


def test_ranks_reading_the_same_rows_check_them_once(tmp_path):
    full = np.arange(1024 * 64, dtype=np.float32).reshape(1024, 64)
    prefix = _partitioned(tmp_path, full, [0, 512, 1024])
    rows = [(0, 700), (300, 700), (300, 512), (512, 1024)]  # overlaps, a whole stored slice, a replica
    out = raise_first(run_ranks(4, _restore_rows(prefix, full, rows)))
    for (lo, hi), got in zip(rows, out, strict=True):
        np.testing.assert_array_equal(got, full[lo:hi])


@pytest.mark.parametrize("corrupt_row", [150, 50, 900])  # a rank's rows; nobody's rows; a whole-read slice
def test_a_corrupt_stored_slice_read_in_parts_fails_every_rank(tmp_path, corrupt_row):
    full = np.arange(1024 * 64, dtype=np.float32).reshape(1024, 64)
    prefix = _partitioned(tmp_path, full, [0, 512, 1024])
    shard = corrupt_row // 512
    data = tmp_path / f"m.data-{shard:05d}-of-00002"
    raw = bytearray(data.read_bytes())
    raw[(corrupt_row - 512 * shard) * 256 + 7] ^= 0x10
    data.write_bytes(bytes(raw))
    rows = [(100, 200), (200, 400), (400, 1024)]
    out = run_ranks(3, _restore_rows(prefix, full, rows))
    assert all(isinstance(e, errors.DataLossError) for e in out), out
    assert all("'t'" in str(e) and f"m.data-{shard:05d}-of-00002" in str(e) for e in out), out


def test_verification_plan_covers_every_byte_once():
    ident = (0, 0, 100)
    touches = [[(ident, (10, 40), 0, b"t")], [(ident, (30, 60), 0, b"t")], [], [(ident, (80, 100), 0, b"t")]]
    plan = distributed_save._VerificationPlan(touches)
    segs = plan.segments[ident]
    assert [(a, b) for a, b, _ in segs] == [(0, 10), (10, 30), (30, 40), (40, 60), (60, 80), (80, 100)]
    owners = {(a, b): r for a, b, r in segs}
    assert owners[(10, 30)] == 0 and owners[(30, 40)] == 0 and owners[(40, 60)] == 1
    assert owners[(80, 100)] == 3 and owners[(0, 10)] in (0, 1, 3) and owners[(60, 80)] in (0, 1, 3)
    # a stored slice some rank reads whole (checked by its reader) needs no segments
    plan = distributed_save._VerificationPlan([[(ident, (10, 40), 0, b"t")], [(ident, None, None, None)]])
    assert plan.segments == {}


def test_ranks_restore_an_object_based_checkpoint_by_name_as_tf_falls_back(caplog):
    """TensorFlow's fallback for a name-based Saver (keys from the checkpoint's object graph), each rank
    its own variables: rank 0 the counter, rank 1 a kernel of a TF 2.21 object-based checkpoint."""
    import json
    import pathlib

    fixtures = pathlib.Path(__file__).parent / "fixtures" / "tf-2.21"
    records = json.loads((fixtures / "manifest.json").read_text())["cases"]["tf2_object"]["checkpoints"][
        "tf2_object/ckpt-4"]

    def fn(c):
        g = sk.Graph()
        with g.as_default():
            v = sk.Variable(np.int64(0), name="save_counter") if c.rank == 0 else \
                sk.Variable(np.zeros((3, 2), np.float32), name="kernel")
            with sk.Session(graph=g) as sess:
                sk.train.Saver([v], coordinator=c).restore(sess, str(fixtures / "tf2_object" / "ckpt-4"))
                return sess.run(v)

    counter, kernel = raise_first(run_ranks(2, fn))
    assert counter == 4
    assert kernel.tobytes().hex() == records["model/layers/1/kernel/.ATTRIBUTES/VARIABLE_VALUE"]["hex"]
    assert "object-based checkpoint using a name-based saver" in caplog.text


def test_a_saver_def_only_saver_with_a_coordinator_is_a_clear_error(tmp_path):
    def fn(c):
        g = sk.Graph()
        with g.as_default():
            sk.Variable(np.zeros(3, np.float32), name=f"v{c.rank}")
            saver_def = sk.train.Saver().saver_def
            saver = sk.train.Saver(saver_def=saver_def, coordinator=c)
            with sk.Session(graph=g) as sess:
                sess.run(sk.global_variables_initializer())
                saver.save(sess, str(tmp_path / "model"))

    out = run_ranks(2, fn)
    assert all(isinstance(e, dist.RankFailedError) and "UnimplementedError" in str(e)
               and "saver_def" in str(e) for e in out), out
    assert not [n for n in os.listdir(tmp_path) if not n.startswith(".")]


# --- URLs (saverkit.storage): each rank writes its data object in place, rank 0 the index last
@pytest.fixture
def countmem():
    pytest.importorskip("fsspec")
    from remote_helpers import CountingMemoryFS

    CountingMemoryFS.reset()
    yield CountingMemoryFS
    CountingMemoryFS.reset()


def _stored(fs, prefix_path):
    return {k: bytes(v.getbuffer()) for k, v in fs.store.items() if k.startswith(prefix_path)}


def test_four_ranks_save_one_checkpoint_to_a_url_byte_for_byte_a_local_one(tmp_path, countmem):
    base = "countmem://bucket/job"
    out = raise_first(run_ranks(4, lambda c: _save_rank(c, base, 7)))
    assert out == [base + "/model-7"] * 4
    writes = countmem.writes
    data = [f"/bucket/job/model-7.data-{k:05d}-of-00004" for k in range(4)]
    assert sorted(writes[:4]) == data  # the data objects in place (no temporary names, no copies) ...
    assert writes[4:] == ["/bucket/job/model-7.index", "/bucket/job/model-7.meta", "/bucket/job/checkpoint"]
    raise_first(run_ranks(4, lambda c: _save_rank(c, str(tmp_path), 7)))
    for name in ["model-7.index", *(d.rsplit("/", 1)[1] for d in data)]:
        assert countmem.store["/bucket/job/" + name].getvalue() == (tmp_path / name).read_bytes(), name
    assert sk.train.latest_checkpoint(base) == base + "/model-7"
    # restored by another world size, each rank reading through the index rank 0 fetched once
    countmem.reads = []
    got = raise_first(run_ranks(3, lambda c: _restore_rank(c, base + "/model-7", 3, 4, with_own=False)))
    for rank, values in enumerate(got):
        _check_restored(values, rank, 3, 4, 7, with_own=False)
    assert [r[0] for r in countmem.reads].count("/bucket/job/model-7.index") == 1


def test_a_url_resave_never_overwrites_the_data_of_the_checkpoint_it_replaces(countmem):
    def save(c):
        g = sk.Graph()
        with g.as_default():
            build_rank_model(c.rank, c.world_size, 1)
            saver = sk.train.Saver(coordinator=c)
            with sk.Session(graph=g) as sess:
                sess.run(sk.global_variables_initializer())
                return saver.save(sess, "countmem://bucket/re/model", write_meta_graph=False)

    raise_first(run_ranks(2, save))
    first = _stored(countmem, "/bucket/re/model.")
    countmem.writes = []
    raise_first(run_ranks(2, save))
    # the new data objects take a shard count the old index does not name; the old ones go after
    assert sorted(countmem.writes[:3]) == ["/bucket/re/model.data-00000-of-00003",
                                           "/bucket/re/model.data-00001-of-00003",
                                           "/bucket/re/model.data-00002-of-00003"]
    assert countmem.writes[3] == "/bucket/re/model.index"
    assert not any(k in _stored(countmem, "/bucket/re/model.") for k in first if ".data-" in k)
    _check_values = bundle.read_tensors("countmem://bucket/re/model", ["shared"])[0]
    np.testing.assert_array_equal(_check_values, shared(1))


def test_a_failed_rank_write_to_a_url_leaves_the_previous_checkpoint_and_nothing_else(countmem):
    base = "countmem://bucket/f"
    raise_first(run_ranks(3, lambda c: _save_rank(c, base, 1)))
    before = _stored(countmem, "/bucket/f/")
    countmem.fail_write = lambda p: p.endswith("model-2.data-00001-of-00003")
    out = run_ranks(3, lambda c: _save_rank(c, base, 2))
    assert all(isinstance(e, dist.RankFailedError) and e.rank == 1 and "injected failure" in str(e)
               for e in out), out
    countmem.fail_write = None
    assert _stored(countmem, "/bucket/f/") == before
    assert sk.train.latest_checkpoint(base) == base + "/model-1"


@pytest.mark.parametrize("failing", ["model-2.meta", "checkpoint"])
def test_a_failed_meta_or_state_write_after_a_new_url_index_removes_that_checkpoint(countmem, failing):
    base = "countmem://bucket/late"
    raise_first(run_ranks(3, lambda c: _save_rank(c, base, 1)))
    before = _stored(countmem, "/bucket/late/")
    countmem.fail_write = lambda p: p == "/bucket/late/" + failing
    out = run_ranks(3, lambda c: _save_rank(c, base, 2))
    assert all(isinstance(e, dist.RankFailedError) and e.rank == 0 and "injected failure" in str(e)
               for e in out), out
    countmem.fail_write = None
    assert _stored(countmem, "/bucket/late/") == before  # model-2's index went first, then its data
    assert sk.train.latest_checkpoint(base) == base + "/model-1"
    raise_first(run_ranks(3, lambda c: _save_rank(c, base, 2)))  # and the next save goes through
    _check_checkpoint(base + "/model-2", 3, 2)


def test_a_failed_state_write_of_a_checkpoint_manager_on_a_url_removes_the_new_checkpoint(countmem):
    base = "countmem://bucket/mlate"
    # the state file fails once ckpt-2's index is in: ckpt-1 (saved first) must be all that is left
    countmem.fail_write = lambda p: (p == "/bucket/mlate/checkpoint"
                                     and "/bucket/mlate/ckpt-2.index" in countmem.store)
    out = run_ranks(2, lambda c: _manager_rank(c, base, 1.0, saves=2))
    assert all(isinstance(e, dist.RankFailedError) and "injected failure" in str(e) for e in out), out
    countmem.fail_write = None
    assert sorted(_stored(countmem, "/bucket/mlate/")) == [
        "/bucket/mlate/checkpoint", "/bucket/mlate/ckpt-1.data-00000-of-00002",
        "/bucket/mlate/ckpt-1.data-00001-of-00002", "/bucket/mlate/ckpt-1.index"]
    assert sk.train.latest_checkpoint(base) == base + "/ckpt-1"


def test_checkpoint_manager_ranks_save_to_a_url(countmem):
    base = "countmem://bucket/mgr"
    out = raise_first(run_ranks(4, lambda c: _manager_rank(c, base, 10.0)))
    want = [f"{base}/ckpt-{i}" for i in (1, 2, 3)]
    assert all(o == (want, want[1:]) for o in out), out
    assert sorted(k for k in countmem.store if k.endswith(".index")) == [
        "/bucket/mgr/ckpt-2.index", "/bucket/mgr/ckpt-3.index"]
    with bundle.BundleReader(want[-1]) as r:
        assert r.num_shards == 4
        np.testing.assert_array_equal(r.read("w3/.ATTRIBUTES/VARIABLE_VALUE"), np.full(4, 15, np.float32))


def test_four_ranks_save_to_s3_and_three_restore(tmp_path):
    """The same against moto's S3 on 127.0.0.1 (s3fs): data objects in place, index last."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto")
    from remote_helpers import S3_ENV, EnvPatch, start_moto_s3

    server, endpoint = start_moto_s3()
    try:
        # the endpoint only in storage_options: a wrong one in the environment must not be used
        opts = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
        with EnvPatch({**S3_ENV, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}):
            import s3fs

            s3fs.S3FileSystem.clear_instance_cache()
            fs = s3fs.S3FileSystem(**opts)
            fs.mkdir("dist")
            base = "s3://dist/job"
            raise_first(run_ranks(4, lambda c: _save_rank(c, base, 5, storage_options=opts)))
            fs.invalidate_cache()
            assert sorted(p.rsplit("/", 1)[1] for p in fs.find("dist")) == [
                "checkpoint", "model-5.data-00000-of-00004", "model-5.data-00001-of-00004",
                "model-5.data-00002-of-00004", "model-5.data-00003-of-00004", "model-5.index", "model-5.meta"]
            got = raise_first(run_ranks(
                3, lambda c: _restore_rank(c, base + "/model-5", 3, 4, with_own=False, storage_options=opts)))
            for rank, values in enumerate(got):
                _check_restored(values, rank, 3, 4, 5, with_own=False)
            mgr = raise_first(run_ranks(
                2, lambda c: _manager_rank(c, "s3://dist/mgr", 1.0, storage_options=opts)))
            want = ["s3://dist/mgr/ckpt-1", "s3://dist/mgr/ckpt-2", "s3://dist/mgr/ckpt-3"]
            assert all(o == (want, want[1:]) for o in mgr), mgr
            back = raise_first(run_ranks(2, lambda c: _manager_rank(c, "s3://dist/mgr", 0.0, restore=True,
                                                                    storage_options=opts)))
            assert [b[0] for b in back] == [want[-1]] * 2 and all(b[1] == 3.0 for b in back), back
            s3fs.S3FileSystem.clear_instance_cache()
    finally:
        server.stop()


# --- asynchronous saves coordinated over ranks: the collectives run on a duplicate, in the background
ASYNC = sk.train.CheckpointOptions(enable_async=True)


def test_duplicated_coordinators_talk_on_their_own_channel():
    def fn(c):
        d = c.duplicate()
        got = {}

        def background():
            got["dup"] = [d.all_gather(("dup", c.rank, i)) for i in range(3)]

        t = threading.Thread(target=background)
        t.start()  # both channels at once: no message of one reaches the other
        main = [c.all_gather(("main", c.rank, i)) for i in range(3)]
        t.join(10)
        return main, got["dup"]

    for main, dup in raise_first(run_ranks(3, fn)):
        assert main == [[("main", r, i) for r in range(3)] for i in range(3)]
        assert dup == [[("dup", r, i) for r in range(3)] for i in range(3)]


def test_an_abandoned_rank_is_dead_on_every_duplicated_channel():
    group = dist.ThreadGroup(2, timeout=20)
    c = group.coordinator(0)
    before = c.duplicate()  # its channel exists when rank 1 dies
    group.abandon(1)
    after = c.duplicate()  # and this one is made afterwards
    for d in (before, after):
        t0 = time.monotonic()
        with pytest.raises(dist.CollectiveTimeoutError, match=r"timed out waiting for rank\(s\) 1"):
            d.all_gather(0)
        assert time.monotonic() - t0 < 5  # at once, not after the 20 s timeout


def test_a_coordinator_that_cannot_duplicate_says_so_and_stays_usable():
    class Minimal(dist.Coordinator):
        def _all_gather(self, obj, *, deadline):
            return [obj]

    c = Minimal()
    with pytest.raises(NotImplementedError, match="Minimal cannot duplicate"):
        c.duplicate()
    assert c.broken is None and c.all_gather(1) == [1]


@contextlib.contextmanager
def _rank_saver(c, world: int, step: int, **saver_kw):
    """(model, Saver(coordinator=c), session with the variables initialized) of rank ``c`` at ``step``."""
    g = sk.Graph()
    with g.as_default():
        model = build_rank_model(c.rank, world, step)
        saver = sk.train.Saver(coordinator=c, **saver_kw)
        with sk.Session(graph=g) as sess:
            sess.run(sk.global_variables_initializer())
            yield model, saver, sess


def _held_writes(monkeypatch) -> threading.Event:
    """bundle.write_bundle waits until the returned event is set (at most 20 s)."""
    release = threading.Event()
    real = bundle.write_bundle

    def held(*a, **k):
        release.wait(20)
        return real(*a, **k)

    monkeypatch.setattr(bundle, "write_bundle", held)
    return release


def test_async_coordinated_save_holds_the_values_of_the_call_and_commits_in_the_background(
        tmp_path, monkeypatch):
    raise_first(run_ranks(3, lambda c: _save_rank(c, str(tmp_path), 1)))
    release = _held_writes(monkeypatch)

    def fn(c):
        with _rank_saver(c, 3, 2, max_to_keep=2) as (model, saver, sess):
            path = saver.save(sess, str(tmp_path / "model"), global_step=2, options=ASYNC)
            latest_then = sk.train.latest_checkpoint(str(tmp_path))
            for v in model.values():  # training goes on: not in the checkpoint
                sess.run(v.assign(np.zeros(v.shape, v.dtype.as_numpy_dtype)))
            # ... and so do the job's own collectives, while the save's are pending
            seen = c.all_gather(c.rank)
            c.barrier()
            release.set()
            saver.sync()
            return path, latest_then, seen, saver.last_checkpoints

    out = raise_first(run_ranks(3, fn))
    prefix = str(tmp_path / "model-2")
    for path, latest_then, seen, last in out:
        assert path == prefix and latest_then == str(tmp_path / "model-1") and seen == [0, 1, 2]
        assert last == [prefix]
    _check_checkpoint(prefix, 3, 2)
    assert sk.train.latest_checkpoint(str(tmp_path)) == prefix
    assert os.path.exists(prefix + ".meta")
    assert not [n for n in os.listdir(tmp_path) if "_temp_" in n]


def test_a_failed_background_write_raises_on_every_rank_at_sync_and_the_next_save_works(
        tmp_path, monkeypatch):
    raise_first(run_ranks(3, lambda c: _save_rank(c, str(tmp_path), 1)))
    real = bundle.write_bundle
    failing = {"on": True}

    def write(prefix, *a, **k):
        if failing["on"] and "part-00002-of" in prefix:
            raise errors.ResourceExhaustedError(None, None, f"No space left on device: {prefix}")
        return real(prefix, *a, **k)

    monkeypatch.setattr(bundle, "write_bundle", write)

    def fn(c):
        with _rank_saver(c, 3, 2) as (_, saver, sess):
            saver.save(sess, str(tmp_path / "model"), global_step=2, options=ASYNC)
            try:
                saver.sync()
            except errors.OpError as e:
                first = e
            else:
                first = None
            c.barrier()
            failing["on"] = False
            again = saver.save(sess, str(tmp_path / "model"), global_step=3, options=ASYNC)
            saver.sync()
            return first, again

    out = raise_first(run_ranks(3, fn))
    for first, again in out:
        assert isinstance(first, dist.RankFailedError), out
        assert "save (write) failed on rank 2: ResourceExhaustedError: No space left" in str(first)
        assert again == str(tmp_path / "model-3")
    assert not os.path.exists(tmp_path / "model-2.index")
    _check_checkpoint(str(tmp_path / "model-3"), 3, 2)  # the values of step 2, saved as step 3
    assert sk.train.latest_checkpoint(str(tmp_path)) == str(tmp_path / "model-3")


def test_a_rank_that_hangs_in_the_background_fails_the_others_at_their_next_save(tmp_path, monkeypatch):
    raise_first(run_ranks(3, lambda c: _save_rank(c, str(tmp_path), 1)))
    group = dist.ThreadGroup(3, timeout=1.0)
    real = bundle.write_bundle
    hang = threading.Event()

    def write(prefix, *a, **k):
        if "part-00001-of" in prefix:
            hang.wait(10)  # rank 1 never reports its write in time
        return real(prefix, *a, **k)

    monkeypatch.setattr(bundle, "write_bundle", write)

    def fn(c):
        with _rank_saver(c, 3, 2) as (_, saver, sess):
            saver.save(sess, str(tmp_path / "model"), global_step=2, options=ASYNC)
            if c.rank == 1:
                return saver
            t0 = time.monotonic()
            with pytest.raises(dist.CollectiveTimeoutError) as info:
                saver.save(sess, str(tmp_path / "model"), global_step=3, options=ASYNC)
            assert c.broken is None  # the job's own coordinator is not the save's
            return info.value, time.monotonic() - t0

    out = run_ranks(3, fn, group=group)
    hang.set()
    with pytest.raises(dist.CollectiveTimeoutError, match="rank 1 of 3"):  # the hung rank, once it wakes
        out[1].sync()
    for rank in (0, 2):
        assert not isinstance(out[rank], BaseException), out
        assert out[rank][1] < 5
    assert sk.train.latest_checkpoint(str(tmp_path)) == str(tmp_path / "model-1")
    _check_checkpoint(str(tmp_path / "model-1"), 3, 1)


def test_async_checkpoint_manager_over_ranks(tmp_path, monkeypatch):
    release = _held_writes(monkeypatch)

    def fn(c):
        g = sk.Graph()
        with g.as_default(), sk.Session(graph=g) as sess:
            mine = sk.Variable(np.zeros(c.rank + 1, np.float32), name=f"w{c.rank}")
            ckpt = sk.train.Checkpoint(**{f"w{c.rank}": mine})
            mgr = sk.train.CheckpointManager(ckpt, str(tmp_path), max_to_keep=1, coordinator=c)
            sess.run(sk.global_variables_initializer())
            paths = []
            for i in range(2):
                sess.run(mine.assign(np.full(c.rank + 1, 10 * i + c.rank, np.float32)))
                paths.append(mgr.save(session=sess, options=ASYNC))
                before = mgr.latest_checkpoint
                sess.run(mine.assign(np.full(c.rank + 1, -1, np.float32)))
                c.barrier()
                release.set()
            latest = mgr.restore_or_initialize(session=sess)  # waits for the save in flight
            return paths, before, latest, sess.run(mine), mgr.checkpoints

    out = raise_first(run_ranks(3, fn))
    want = [str(tmp_path / "ckpt-1"), str(tmp_path / "ckpt-2")]
    for rank, (paths, before, latest, value, kept) in enumerate(out):
        assert paths == want and before == want[0] and latest == want[1] and kept == want[1:]
        np.testing.assert_array_equal(value, np.full(rank + 1, 10 + rank, np.float32))
    assert sorted(n for n in os.listdir(tmp_path) if n.endswith(".index")) == ["ckpt-2.index"]


def test_async_coordinated_save_to_a_url(countmem):
    base = "countmem://bucket/async"

    def fn(c):
        with _rank_saver(c, 3, 5) as (model, saver, sess):
            path = saver.save(sess, base + "/model", global_step=5, options=ASYNC)
            for v in model.values():
                sess.run(v.assign(np.zeros(v.shape, v.dtype.as_numpy_dtype)))
            saver.sync()
            return path

    assert raise_first(run_ranks(3, fn)) == [base + "/model-5"] * 3
    assert sk.train.latest_checkpoint(base) == base + "/model-5"
    reader = sk.train.load_checkpoint(base + "/model-5")
    for k, v in expected_values(3, 5).items():
        np.testing.assert_array_equal(reader.get_tensor(k), v)


@pytest.mark.parametrize("limit", [None, 0])
def test_async_coordinated_saves_fetch_into_reused_staging_memory_within_its_limit(tmp_path, limit):
    from saverkit.train import async_save

    options = sk.train.CheckpointOptions(enable_async=True, staging_limit_bytes=limit)

    def fn(c):
        arenas = []
        with _rank_saver(c, 2, 3) as (model, saver, sess):
            for step in (3, 4, 5):
                saver.save(sess, str(tmp_path / "model"), global_step=step, options=options)
                for v in model.values():
                    sess.run(v.assign(np.zeros(v.shape, v.dtype.as_numpy_dtype)))
                saver.sync()
                arenas.append(async_save.writer_for(saver).staging.arena)
            return arenas

    for arenas in raise_first(run_ranks(2, fn)):
        if limit == 0:  # ordinary copies
            assert arenas == [None, None, None]
        else:  # sized by the first save, then kept
            assert arenas[0] is None and arenas[1] is not None and arenas[1].nbytes > 0
            assert arenas[2] is arenas[1]
    _check_checkpoint(str(tmp_path / "model-3"), 2, 3)
    with bundle.BundleReader(str(tmp_path / "model-4")) as r:  # the zeros of the first save's aftermath
        assert not r.read("shared").any()
