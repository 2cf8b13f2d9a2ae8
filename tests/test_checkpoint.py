"""saverkit.train.Checkpoint: TF's object-based format, save numbering, restore matching and statuses."""

import base64
import json
import os
import pathlib

import numpy as np
import pytest
import saverkit as sk
from saverkit import _core, bundle, errors
from saverkit.protobuf import tensor_bundle_pb2, trackable_object_graph_pb2
from saverkit.train import Checkpoint

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "tf-2.21"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
STRINGS = np.array([b"", b"a", "h\u00e9llo \u2603".encode()], dtype=object)


def manifest_value(case, prefix, key):
    rec = MANIFEST["cases"][case]["checkpoints"][prefix][key]
    if rec["dtype"] == "string":
        return np.array([base64.b64decode(x) for x in rec["b64"]], dtype=object).reshape(rec["shape"])
    return np.frombuffer(bytes.fromhex(rec["hex"]), dtype=np.dtype(rec["dtype"]).newbyteorder("<")).reshape(
        rec["shape"]
    )


@pytest.fixture
def graph():
    g = sk.Graph()
    with g.as_default():
        yield g


@pytest.fixture
def sess(graph):
    with sk.Session(graph=graph) as s:
        yield s


class Dense(sk.Module):
    def __init__(self, n_in, n_out, seed=0, name=None):
        super().__init__(name=name)
        rng = np.random.default_rng(seed)
        self.kernel = sk.Variable(rng.standard_normal((n_in, n_out)).astype(np.float32), name="kernel")
        self.bias = sk.Variable(rng.standard_normal(n_out).astype(np.float32), name="bias")


class Net(sk.Module):
    """The structure of the tf2_object fixture's model."""

    def __init__(self, seed=0):
        super().__init__()
        self.layers = [Dense(4, 3, seed), Dense(3, 2, seed + 1)]
        self.head = Dense(2, 1, seed + 2)
        self.vocab = sk.Variable(STRINGS if seed == 0 else np.array([b"x", b"y", b"z"], dtype=object))


def fresh_net_values(net, sess):
    sess.run(sk.global_variables_initializer())
    return {v.name: sess.run(v.value()) for v in net.variables}


def read_object_graph(prefix):
    (raw,) = bundle.read_tensors(prefix, ["_CHECKPOINTABLE_OBJECT_GRAPH"])
    return trackable_object_graph_pb2.TrackableObjectGraph.FromString(raw.item())


def data_order(prefix):
    """Checkpoint keys sorted by their offset in the (single) data file."""
    entries = []
    for key, value in _core.read_table(prefix + ".index"):
        if key == b"":
            continue
        e = tensor_bundle_pb2.BundleEntryProto.FromString(value)
        entries.append((e.shard_id, e.offset, key.decode()))
    return [k for _, _, k in sorted(entries)]


# --- saving -----------------------------------------------------------------------------------------


def test_save_numbers_checkpoints_and_writes_a_relative_state_file(tmp_path, sess):
    ckpt = Checkpoint(step=sk.Variable(np.int64(5), name="step"))
    sess.run(sk.global_variables_initializer())
    p1 = ckpt.save(str(tmp_path / "ckpt"), session=sess)
    p2 = ckpt.save(str(tmp_path / "ckpt"), session=sess)
    assert (p1, p2) == (str(tmp_path / "ckpt-1"), str(tmp_path / "ckpt-2"))
    assert sess.run(ckpt.save_counter.value()) == 2
    assert (tmp_path / "checkpoint").read_text() == (
        'model_checkpoint_path: "ckpt-2"\nall_model_checkpoint_paths: "ckpt-2"\n'
    )
    assert sorted(os.listdir(tmp_path)) == [
        "checkpoint",
        "ckpt-1.data-00000-of-00001",
        "ckpt-1.index",
        "ckpt-2.data-00000-of-00001",
        "ckpt-2.index",
    ]
    assert bundle.read_tensors(p2, ["save_counter/.ATTRIBUTES/VARIABLE_VALUE"])[0] == 2


def test_save_uses_the_default_session(tmp_path, sess):
    ckpt = Checkpoint(v=sk.Variable(np.float32(1.0)))
    sess.run(sk.global_variables_initializer())
    with sess.as_default():
        assert ckpt.save(str(tmp_path / "c")) == str(tmp_path / "c-1")


def test_save_without_any_session_says_how_to_provide_one(tmp_path, graph):
    ckpt = Checkpoint(v=sk.Variable(np.float32(1.0)))
    with pytest.raises(RuntimeError, match="needs a Session"):
        ckpt.save(str(tmp_path / "c"))


def test_write_neither_counts_nor_touches_the_state_file(tmp_path, sess):
    ckpt = Checkpoint(v=sk.Variable(np.float32(3.0), name="v"))
    sess.run(sk.global_variables_initializer())
    assert ckpt.write(str(tmp_path / "w"), session=sess) == str(tmp_path / "w")
    assert sorted(os.listdir(tmp_path)) == ["w.data-00000-of-00001", "w.index"]
    assert bundle.BundleReader(str(tmp_path / "w")).entries().keys() == {
        "v/.ATTRIBUTES/VARIABLE_VALUE",
        "_CHECKPOINTABLE_OBJECT_GRAPH",
    }


def test_object_graph_matches_tf_for_the_same_structure(tmp_path, sess):
    """Same node ids, edges, keys and flags as TF's tf2_object fixture (only full names differ)."""
    net = Net()
    step = sk.Variable(np.int64(4), name="Variable")
    ckpt = Checkpoint(model=net, step=step)
    sess.run(sk.global_variables_initializer())
    path = ckpt.save(str(tmp_path / "ckpt"), session=sess)
    ours = read_object_graph(path)
    theirs = read_object_graph(str(FIXTURES / "tf2_object" / "ckpt-4"))
    full_names = [[a.full_name for a in n.attributes] for n in ours.nodes]
    assert full_names[11] == ["kernel"] and full_names[13] == ["kernel_1"] and full_names[9] == ["kernel_2"]
    for g in (ours, theirs):
        for node in g.nodes:
            for a in node.attributes:
                a.full_name = ""
    assert ours == theirs
    assert data_order(path) == data_order(str(FIXTURES / "tf2_object" / "ckpt-4"))
    assert data_order(path)[-1] == "_CHECKPOINTABLE_OBJECT_GRAPH"


def test_full_name_is_the_variables_graph_name(tmp_path, sess):
    m = sk.Module(name="outer")
    with m.name_scope:
        m.w = sk.Variable(np.float32(1), name="w")
    sess.run(sk.global_variables_initializer())
    Checkpoint(model=m).write(str(tmp_path / "c"), session=sess)
    node = read_object_graph(str(tmp_path / "c")).nodes[2]
    assert [(a.name, a.full_name, a.checkpoint_key) for a in node.attributes] == [
        ("VARIABLE_VALUE", "outer/w", "model/w/.ATTRIBUTES/VARIABLE_VALUE")
    ]


def test_local_names_are_escaped_in_keys_but_not_in_the_graph(tmp_path, sess):
    m = sk.Module()
    m.d = {"p.q": sk.Variable(np.float32(1)), "x/y": sk.Variable(np.float32(2))}
    sess.run(sk.global_variables_initializer())
    Checkpoint(m=m).write(str(tmp_path / "c"), session=sess)
    keys = set(bundle.BundleReader(str(tmp_path / "c")).entries())
    assert {"m/d/p..q/.ATTRIBUTES/VARIABLE_VALUE", "m/d/x.Sy/.ATTRIBUTES/VARIABLE_VALUE"} <= keys
    graph = read_object_graph(str(tmp_path / "c"))
    assert [c.local_name for c in graph.nodes[2].children] == ["p.q", "x/y"]


def test_empty_containers_have_no_checkpoint_values(tmp_path, sess):
    m = sk.Module()
    m.empty = []
    m.w = sk.Variable(np.float32(1))
    sess.run(sk.global_variables_initializer())
    Checkpoint(m=m).write(str(tmp_path / "c"), session=sess)
    g = read_object_graph(str(tmp_path / "c"))
    assert [n.has_checkpoint_values.value for n in g.nodes] == [True, True, False, True]


def test_shared_variable_is_one_node_with_two_edges(tmp_path, sess):
    m = sk.Module()
    v = sk.Variable(np.float32(1), name="shared")
    m.a, m.b = v, [v]
    sess.run(sk.global_variables_initializer())
    Checkpoint(m=m).write(str(tmp_path / "c"), session=sess)
    g = read_object_graph(str(tmp_path / "c"))
    assert len(g.nodes) == 4
    assert [(c.local_name, c.node_id) for c in g.nodes[3].children] == [("0", 2)]


def test_uninitialized_variables_fail_the_save(tmp_path, sess):
    ckpt = Checkpoint(v=sk.Variable(np.float32(1)))
    with pytest.raises(errors.FailedPreconditionError):
        ckpt.write(str(tmp_path / "c"), session=sess)


def test_save_and_restore_work_on_a_finalized_graph(tmp_path, graph, sess):
    net = Net()
    ckpt = Checkpoint(model=net)
    assert ckpt.save_counter is not None  # created before finalizing, like any variable
    sess.run(sk.global_variables_initializer())
    graph.finalize()
    path = ckpt.save(str(tmp_path / "c"), session=sess)
    ckpt.restore(path, session=sess).assert_consumed()


# --- restoring ---------------------------------------------------------------------------------------


def test_round_trip_of_a_module_tree(tmp_path):
    with sk.Graph().as_default() as g1, sk.Session(graph=g1) as s1:
        net = Net(seed=0)
        net.extra = {"scale": sk.Variable(np.float64(2.5)), "ids": sk.Variable(np.arange(4, dtype=np.int32))}
        ckpt = Checkpoint(model=net)
        expected = fresh_net_values(net, s1)
        path = ckpt.save(str(tmp_path / "ckpt"), session=s1)
    with sk.Graph().as_default() as g2, sk.Session(graph=g2) as s2:
        net2 = Net(seed=7)
        net2.extra = {"scale": sk.Variable(np.float64(0)), "ids": sk.Variable(np.zeros(4, dtype=np.int32))}
        s2.run(sk.global_variables_initializer())
        Checkpoint(model=net2).restore(path, session=s2).assert_consumed()
        got = {v.name: s2.run(v.value()) for v in net2.variables}
    assert got.keys() == expected.keys()
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name])


def test_restore_continues_the_save_counter(tmp_path, sess):
    ckpt = Checkpoint(v=sk.Variable(np.float32(1)))
    sess.run(sk.global_variables_initializer())
    ckpt.save(str(tmp_path / "c"), session=sess)
    path = ckpt.save(str(tmp_path / "c"), session=sess)
    with sk.Graph().as_default() as g, sk.Session(graph=g) as s:
        again = Checkpoint(v=sk.Variable(np.float32(0)))
        s.run(sk.global_variables_initializer())
        again.restore(path, session=s).assert_consumed()
        assert again.save(str(tmp_path / "c"), session=s) == str(tmp_path / "c-3")


def test_tf_written_object_checkpoint_restores_with_values_from_the_manifest(tmp_path, sess):
    net = Net(seed=3)
    step = sk.Variable(np.int64(0))
    ckpt = Checkpoint(model=net, step=step)
    sess.run(sk.global_variables_initializer())
    ckpt.restore(str(FIXTURES / "tf2_object" / "ckpt-4"), session=sess).assert_consumed()
    np.testing.assert_array_equal(sess.run(net.layers[0].kernel.value()), manifest_value(
        "tf2_object", "tf2_object/ckpt-4", "model/layers/0/kernel/.ATTRIBUTES/VARIABLE_VALUE"))
    # Every value TF wrote is now in the right variable: writing them back gives the manifest's values.
    ours = ckpt.write(str(tmp_path / "again"), session=sess)
    manifest = MANIFEST["cases"]["tf2_object"]["checkpoints"]["tf2_object/ckpt-4"]
    keys = sorted(k for k in manifest if k != "_CHECKPOINTABLE_OBJECT_GRAPH")
    assert len(keys) == 9 and set(bundle.BundleReader(ours).entries()) == set(manifest)
    for key, value in zip(keys, bundle.read_tensors(ours, keys), strict=True):
        want = manifest_value("tf2_object", "tf2_object/ckpt-4", key)
        np.testing.assert_array_equal(value, want, err_msg=key)


def test_restore_accepts_the_directory_and_reports_missing_paths(tmp_path, sess):
    net, step = Net(), sk.Variable(np.int64(0))
    sess.run(sk.global_variables_initializer())
    Checkpoint(model=net, step=step).restore(str(FIXTURES / "tf2_object"), session=sess).assert_consumed()
    assert sess.run(step.value()) == 4
    with pytest.raises(errors.NotFoundError, match="missing the checkpoint suffix"):
        Checkpoint(model=net).restore(str(tmp_path / "nope"), session=sess)


def test_restore_without_a_session_waits_for_run_restore_ops(tmp_path, graph):
    v = sk.Variable(np.float32(7), name="v")
    sess = sk.Session(graph=graph)  # not entered: there is no default session
    try:
        sess.run(v.initializer)
        path = Checkpoint(v=v).write(str(tmp_path / "c"), session=sess)
        sess.run(v.assign(np.float32(0)))
        status = Checkpoint(v=v).read(path)
        assert sess.run(v.value()) == 0
        status.assert_consumed().run_restore_ops(sess)
        assert sess.run(v.value()) == 7
    finally:
        sess.close()


def test_initialize_or_restore_initializes_only_what_the_checkpoint_lacks(tmp_path, sess):
    a = sk.Variable(np.float32(1), name="a")
    sess.run(sk.global_variables_initializer())
    path = Checkpoint(a=a).write(str(tmp_path / "c"), session=sess)
    with sk.Graph().as_default() as g, sk.Session(graph=g) as s:
        a2, b2 = sk.Variable(np.float32(5), name="a"), sk.Variable(np.float32(9), name="b")
        outside = sk.Variable(np.float32(5), name="outside")  # not in the checkpointed tree
        status = Checkpoint(a=a2, b=b2).read(path)
        status.initialize_or_restore(s)
        assert (s.run(a2.value()), s.run(b2.value())) == (1, 9)
        assert not s.run(sk.is_variable_initialized(outside))


def test_restore_none_only_initializes(sess):
    v = sk.Variable(np.float32(3))
    status = Checkpoint(v=v).restore(None)
    with pytest.raises(AssertionError, match="No checkpoint specified"):
        status.assert_consumed()
    status.initialize_or_restore(sess)
    assert sess.run(v.value()) == 3


# --- deferred restoration ----------------------------------------------------------------------------


def test_a_variable_attached_after_restore_gets_its_value(tmp_path, sess):
    net = Net(seed=0)
    ckpt = Checkpoint(model=net)
    net.late = sk.Variable(np.full((2,), 42, np.float32), name="late")
    sess.run(sk.global_variables_initializer())
    path = ckpt.save(str(tmp_path / "c"), session=sess)

    with sk.Graph().as_default() as g, sk.Session(graph=g) as s:
        net2 = Net(seed=1)
        s.run(sk.global_variables_initializer())
        ckpt2 = Checkpoint(model=net2)
        status = ckpt2.restore(path, session=s)
        with pytest.raises(AssertionError, match="late"):
            status.assert_consumed()
        status.assert_existing_objects_matched()
        net2.late = sk.Variable(np.zeros(2, np.float32), name="late")  # created and attached afterwards
        np.testing.assert_array_equal(s.run(net2.late.value()), [42, 42])
        status.assert_consumed()


def test_deferred_restoration_reaches_into_new_submodules_and_containers(tmp_path, sess):
    root = sk.Module(name="root")
    root.blocks = [Dense(2, 2, seed=5)]
    root.table = {"emb": sk.Variable(np.arange(6, dtype=np.float32).reshape(3, 2))}
    sess.run(sk.global_variables_initializer())
    path = Checkpoint(model=root).write(str(tmp_path / "c"), session=sess)
    want_kernel = sess.run(root.blocks[0].kernel.value())

    with sk.Graph().as_default() as g, sk.Session(graph=g) as s:
        root2 = sk.Module(name="root")
        root2.blocks = []
        root2.table = {}
        status = Checkpoint(model=root2).read(path, session=s)
        root2.blocks.append(Dense(2, 2, seed=9))  # appended to a list that existed at restore time
        root2.table["emb"] = sk.Variable(np.zeros((3, 2), np.float32))
        np.testing.assert_array_equal(s.run(root2.blocks[0].kernel.value()), want_kernel)
        np.testing.assert_array_equal(s.run(root2.table["emb"].value()), np.arange(6).reshape(3, 2))
        status.assert_consumed()


def test_deferred_values_without_a_session_are_assigned_by_run_restore_ops(tmp_path, sess):
    m = sk.Module()
    m.w = sk.Variable(np.float32(8))
    sess.run(sk.global_variables_initializer())
    path = Checkpoint(m=m).write(str(tmp_path / "c"), session=sess)
    with sk.Graph().as_default() as g:
        m2 = sk.Module()
        status = Checkpoint(m=m2).read(path)
        m2.w = sk.Variable(np.float32(0))
        with sk.Session(graph=g) as s:
            status.initialize_or_restore(s)
            assert s.run(m2.w.value()) == 8


def test_save_counter_created_after_restore_is_restored(tmp_path, sess):
    ckpt = Checkpoint(v=sk.Variable(np.float32(1)))
    sess.run(sk.global_variables_initializer())
    for _ in range(3):
        path = ckpt.save(str(tmp_path / "c"), session=sess)
    with sk.Graph().as_default() as g, sk.Session(graph=g) as s:
        again = Checkpoint(v=sk.Variable(np.float32(0)))
        s.run(sk.global_variables_initializer())
        again.restore(path, session=s)
        assert s.run(again.save_counter.value()) == 3


# --- status assertions -------------------------------------------------------------------------------


def test_assertions_report_both_directions_of_mismatch(tmp_path, sess):
    m = sk.Module()
    m.a = sk.Variable(np.float32(1), name="a")
    m.b = sk.Variable(np.float32(2), name="b")
    sess.run(sk.global_variables_initializer())
    path = Checkpoint(m=m).write(str(tmp_path / "c"), session=sess)

    with sk.Graph().as_default() as g, sk.Session(graph=g) as s:
        m2 = sk.Module()
        m2.a = sk.Variable(np.float32(0), name="a")
        m2.c = sk.Variable(np.float32(0), name="c")
        s.run(sk.global_variables_initializer())
        status = Checkpoint(m=m2).read(path, session=s)
        with pytest.raises(AssertionError, match=r"\(root\)\.m\.c \(variable 'c:0'\)"):
            status.assert_existing_objects_matched()
        with pytest.raises(AssertionError):
            status.assert_consumed()
        status.assert_nontrivial_match()
        assert status.expect_partial() is status
        assert s.run(m2.a.value()) == 1

        m3 = sk.Module()
        m3.a = sk.Variable(np.float32(0), name="a")
        s.run(m3.a.initializer)
        status = Checkpoint(m=m3).read(path, session=s)
        status.assert_existing_objects_matched()
        with pytest.raises(AssertionError, match=r"\(root\)\.m\.b \(m/b/\.ATTRIBUTES/VARIABLE_VALUE\)"):
            status.assert_consumed()


def test_nontrivial_match_fails_when_nothing_matches(tmp_path, sess):
    sess.run(sk.global_variables_initializer())
    v = sk.Variable(np.float32(1))
    sess.run(v.initializer)
    path = Checkpoint(v=v).write(str(tmp_path / "c"), session=sess)
    other = Checkpoint(w=sk.Variable(np.float32(1))).read(path, session=sess)
    with pytest.raises(AssertionError, match="Nothing except the root object matched"):
        other.assert_nontrivial_match()


def test_shape_and_dtype_mismatches_name_the_key_and_both_sides(tmp_path, sess):
    v = sk.Variable(np.zeros((2, 3), np.float32), name="v")
    sess.run(v.initializer)
    path = Checkpoint(v=v).write(str(tmp_path / "c"), session=sess)
    with sk.Graph().as_default() as g, sk.Session(graph=g) as s:
        with pytest.raises(
            errors.InvalidArgumentError, match=r"'v/\.ATTRIBUTES/VARIABLE_VALUE'.*shape \[2, 3\].*\[3, 2\]"
        ):
            Checkpoint(v=sk.Variable(np.zeros((3, 2), np.float32))).read(path, session=s)
        with pytest.raises(errors.InvalidArgumentError, match="holds float32, the variable is int32"):
            Checkpoint(v=sk.Variable(np.zeros((2, 3), np.int32))).read(path, session=s)


def test_corrupt_object_graph_is_a_data_loss_error(tmp_path):
    bundle.write_bundle(
        str(tmp_path / "c"),
        ["_CHECKPOINTABLE_OBJECT_GRAPH"],
        [np.array(b"\xff\xff not a proto", dtype=object)],
    )
    with sk.Graph().as_default():
        with pytest.raises(errors.DataLossError, match="TrackableObjectGraph"):
            Checkpoint(v=sk.Variable(np.float32(1))).read(str(tmp_path / "c"))


# --- Checkpoint(root=...) ----------------------------------------------------------------------------


def test_root_checkpoint_saves_the_root_with_attached_kwargs(tmp_path, sess):
    net = Net()
    step = sk.Variable(np.int64(3), name="step")
    ckpt = Checkpoint(root=net, step=step)
    sess.run(sk.global_variables_initializer())
    path = ckpt.save(str(tmp_path / "c"), session=sess)
    keys = set(bundle.BundleReader(path).entries())
    assert "layers/0/kernel/.ATTRIBUTES/VARIABLE_VALUE" in keys
    assert {"step/.ATTRIBUTES/VARIABLE_VALUE", "save_counter/.ATTRIBUTES/VARIABLE_VALUE"} <= keys
    root_children = [c.local_name for c in read_object_graph(path).nodes[0].children]
    assert root_children == ["layers", "head", "vocab", "root", "step", "save_counter"]

    with sk.Graph().as_default() as g, sk.Session(graph=g) as s:
        net2, step2 = Net(seed=4), sk.Variable(np.int64(0))
        s.run(sk.global_variables_initializer())
        ckpt2 = Checkpoint(root=net2, step=step2)
        ckpt2.restore(path, session=s).assert_consumed()
        assert s.run(step2.value()) == 3 and s.run(ckpt2.save_counter.value()) == 1


def test_root_kwarg_conflicting_with_an_existing_child_is_rejected(graph):
    net = Net()
    with pytest.raises(ValueError, match="root.head already exists"):
        Checkpoint(root=net, head=Dense(1, 1))


def test_non_trackable_kwargs_are_rejected(graph):
    with pytest.raises(ValueError, match="expecting x to be a trackable object"):
        Checkpoint(x=3)


# --- name-based checkpoints --------------------------------------------------------------------------


def test_name_based_tf_checkpoint_restores_by_variable_name_with_a_warning(sess):
    prefix = str(FIXTURES / "v1_dtypes" / "model.ckpt-7")
    m = sk.Module()
    with sk.name_scope("scope/nested/deep/"):
        m.kernel = sk.Variable(np.zeros((16, 8), np.float32), name="kernel")
    m.step = sk.Variable(np.int64(0), name="global_step")
    m.strings = sk.Variable(np.array([b""] * 9, dtype=object), name="string/vec")
    m.missing = sk.Variable(np.float32(0), name="not_in_checkpoint")
    sess.run(sk.global_variables_initializer())
    with pytest.warns(UserWarning, match="name-based checkpoint .* 3 variables matched, 1 not found"):
        status = Checkpoint(model=m).restore(prefix, session=sess)
    assert status.matched == {
        "scope/nested/deep/kernel": "scope/nested/deep/kernel",
        "global_step": "global_step",
        "string/vec": "string/vec",
    }
    assert status.unmatched == ["not_in_checkpoint"]
    assert "float32/v2" in status.unused_keys and "global_step" not in status.unused_keys
    with pytest.raises(AssertionError, match="not_in_checkpoint"):
        status.assert_consumed()
    case = "v1_dtypes/model.ckpt-7"
    np.testing.assert_array_equal(
        sess.run(m.kernel.value()), manifest_value("v1_dtypes", case, "scope/nested/deep/kernel")
    )
    assert sess.run(m.step.value()) == manifest_value("v1_dtypes", case, "global_step")
    np.testing.assert_array_equal(
        sess.run(m.strings.value()), manifest_value("v1_dtypes", case, "string/vec")
    )


def test_name_based_restore_matches_variables_attached_later(tmp_path, sess):
    bundle.write_bundle(str(tmp_path / "v1"), ["a", "b"], [np.float32(1.5), np.arange(3, dtype=np.int64)])
    m = sk.Module()
    m.a = sk.Variable(np.float32(0), name="a")
    sess.run(sk.global_variables_initializer())
    with pytest.warns(UserWarning, match="1 variables matched, 0 not found"):
        status = Checkpoint(m=m).restore(str(tmp_path / "v1"), session=sess)
    status.assert_consumed()  # save_counter is optional for name-based checkpoints
    m.b = sk.Variable(np.zeros(3, np.int64), name="b")
    np.testing.assert_array_equal(sess.run(m.b.value()), [0, 1, 2])
    assert sess.run(m.a.value()) == 1.5
    assert status.matched == {"a": "a", "b": "b"} and status.unused_keys == []


def test_name_based_restore_reads_partitioned_tensors_whole_or_by_slice(sess):
    prefix = str(FIXTURES / "v1_partitioned" / "model.ckpt")
    emb = manifest_value("v1_partitioned", "v1_partitioned/model.ckpt", "emb")
    m = sk.Module()
    m.emb = sk.Variable(np.zeros((10, 6), np.float32), name="emb")  # the whole tensor, assembled from slices
    m.parts = []
    for i, (offset, rows) in enumerate(((0, 4), (4, 3), (7, 3))):
        part = sk.Variable(np.zeros((rows, 6), np.float32), name=f"wide_emb/part_{i}")
        part._set_save_slice_info(sk.Variable.SaveSliceInfo("emb", [10, 6], [offset, 0], [rows, 6]))
        m.parts.append(part)
    sess.run(sk.global_variables_initializer())
    with pytest.warns(UserWarning, match="4 variables matched, 0 not found"):
        status = Checkpoint(m=m).restore(prefix, session=sess)
    status.assert_consumed()
    np.testing.assert_array_equal(sess.run(m.emb.value()), emb)
    np.testing.assert_array_equal(np.concatenate([sess.run(p.value()) for p in m.parts]), emb)
    assert status.matched["wide_emb/part_1"] == "emb"


def test_object_graph_pointing_to_missing_nodes_or_keys_is_reported(tmp_path, graph):
    g = trackable_object_graph_pb2.TrackableObjectGraph()
    g.nodes.add().children.add(node_id=5, local_name="v")
    bundle.write_bundle(str(tmp_path / "bad"), ["_CHECKPOINTABLE_OBJECT_GRAPH"],
                        [np.array(g.SerializeToString(), dtype=object)])
    with pytest.raises(errors.DataLossError, match="node 0 refers to node 5, but there are 1 nodes"):
        Checkpoint(v=sk.Variable(np.float32(1))).read(str(tmp_path / "bad"))

    g = trackable_object_graph_pb2.TrackableObjectGraph()
    g.nodes.add().children.add(node_id=1, local_name="v")
    g.nodes.add().attributes.add(
        name="VARIABLE_VALUE", full_name="v", checkpoint_key="v/.ATTRIBUTES/VARIABLE_VALUE")
    bundle.write_bundle(str(tmp_path / "nokey"), ["_CHECKPOINTABLE_OBJECT_GRAPH"],
                        [np.array(g.SerializeToString(), dtype=object)])
    with pytest.raises(errors.NotFoundError, match=r"has no tensor 'v/\.ATTRIBUTES/VARIABLE_VALUE'"):
        Checkpoint(v=sk.Variable(np.float32(1))).read(str(tmp_path / "nokey"))


def test_variables_with_computed_initial_values_restore(tmp_path, sess):
    m = sk.Module()
    m.a = sk.Variable(sk.zeros([2, 2]) + 1.0, name="a")
    m.b = sk.Variable(lambda: sk.ones([3], dtype=sk.int64), name="b")
    sess.run(sk.global_variables_initializer())
    sess.run([m.a.assign(np.full((2, 2), 5, np.float32)), m.b.assign(np.array([7, 8, 9], np.int64))])
    path = Checkpoint(m=m).write(str(tmp_path / "c"), session=sess)
    sess.run(sk.global_variables_initializer())
    Checkpoint(m=m).read(path, session=sess).assert_consumed()
    np.testing.assert_array_equal(sess.run(m.a.value()), np.full((2, 2), 5))
    np.testing.assert_array_equal(sess.run(m.b.value()), [7, 8, 9])


def test_a_session_on_another_graph_is_an_error_not_a_silent_skip(tmp_path, sess):
    v = sk.Variable(np.float32(1), name="v")
    sess.run(v.initializer)
    path = Checkpoint(v=v).write(str(tmp_path / "c"), session=sess)
    with sk.Graph().as_default() as other, sk.Session(graph=other) as s:
        with pytest.raises(ValueError, match="different graph than the session"):
            Checkpoint(v=v).read(path, session=s)
        with pytest.raises(ValueError, match="different graph than the session"):
            Checkpoint(v=v).write(str(tmp_path / "d"), session=s)


def test_save_counter_is_created_next_to_the_checkpointed_variables(tmp_path):
    g = sk.Graph()
    with g.as_default():
        v = sk.Variable(np.float32(1), name="v")
    ckpt = Checkpoint(v=v)  # the default graph here is not g
    assert ckpt.save_counter.graph is g


def test_variables_sharing_an_initial_value_tensor_restore_their_own_values(tmp_path, graph, sess):
    init = sk.zeros([2])
    m = sk.Module()
    m.a, m.b = sk.Variable(init, name="a"), sk.Variable(init, name="b")
    sess.run(sk.global_variables_initializer())
    sess.run([m.a.assign(np.array([1, 2], np.float32)), m.b.assign(np.array([3, 4], np.float32))])
    path = Checkpoint(m=m).write(str(tmp_path / "c"), session=sess)
    sess.run(sk.global_variables_initializer())
    graph.finalize()  # restore by feeding the initializers' shared input, in two runs
    Checkpoint(m=m).read(path, session=sess).assert_consumed()
    np.testing.assert_array_equal(sess.run(m.a.value()), [1, 2])
    np.testing.assert_array_equal(sess.run(m.b.value()), [3, 4])


def test_variables_whose_initializer_is_not_an_assign_restore_in_a_finalized_graph(tmp_path, graph, sess):
    v = sk.Variable(np.float32(4), name="v")
    sess.run(v.initializer)
    path = Checkpoint(v=v).write(str(tmp_path / "c"), session=sess)
    sess.run(v.assign(np.float32(0)))
    v._initializer_op = sk.group(v.initializer)  # e.g. a meta graph naming a grouping op as initializer
    status = Checkpoint(v=v).read(path)  # builds the placeholder-fed assign it needs now...
    graph.finalize()
    status.run_restore_ops(sess)  # ...and uses it once the graph is finalized
    assert sess.run(v.value()) == 4


@pytest.mark.parametrize("finalized", [False, True], ids=["in_graph_ops", "engine_direct"])
def test_both_io_paths_write_identical_files_and_restore_everything(tmp_path, finalized):
    with sk.Graph().as_default() as g, sk.Session(graph=g) as s:
        net = Net(seed=0)
        net.extra = {"i8": sk.Variable(np.arange(-3, 3, dtype=np.int8)),
                     "empty": sk.Variable(np.zeros((0, 2)))}
        ckpt = Checkpoint(model=net)
        assert ckpt.save_counter is not None
        init = sk.global_variables_initializer()
        s.run(init)
        want = {v.name: s.run(v.value()) for v in net.variables}
        if finalized:
            g.finalize()
        path = ckpt.write(str(tmp_path / "c"), session=s)
        s.run(init)  # forget, then restore
        ckpt.read(path, session=s).assert_existing_objects_matched()
        got = {v.name: s.run(v.value()) for v in net.variables}
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value)
    reference = tmp_path / "reference"
    reference.mkdir()
    with sk.Graph().as_default() as g, sk.Session(graph=g) as s:  # the other path, same values
        net = Net(seed=0)
        net.extra = {"i8": sk.Variable(np.arange(-3, 3, dtype=np.int8)),
                     "empty": sk.Variable(np.zeros((0, 2)))}
        ckpt = Checkpoint(model=net)
        assert ckpt.save_counter is not None
        s.run(sk.global_variables_initializer())
        if not finalized:
            g.finalize()
        ckpt.write(str(reference / "c"), session=s)
    for suffix in (".index", ".data-00000-of-00001"):
        assert (tmp_path / ("c" + suffix)).read_bytes() == (reference / ("c" + suffix)).read_bytes()


def test_repeated_saves_and_restores_reuse_their_ops(tmp_path, graph, sess):
    net = Net()
    ckpt = Checkpoint(model=net)
    sess.run(sk.global_variables_initializer())
    ckpt.save(str(tmp_path / "c"), session=sess)
    path = ckpt.save(str(tmp_path / "c"), session=sess)
    ckpt.restore(path, session=sess)
    n_ops = len(graph.get_operations())
    for _ in range(3):
        path = ckpt.save(str(tmp_path / "c"), session=sess)
        ckpt.restore(path, session=sess).assert_consumed()
    assert len(graph.get_operations()) == n_ops
    with sk.name_scope("user_scope"), sk.control_dependencies([net.head.bias.initializer]):
        net.extra = sk.Variable(np.float32(1), name="extra")
        sess.run(net.extra.initializer)
        ckpt.save(str(tmp_path / "c"), session=sess)  # a new structure: new ops, outside the user's scope
    new = [op.name for op in graph.get_operations()[n_ops:]]
    assert all(name.startswith(("user_scope/", "checkpoint")) for name in new), new
    user_dep = net.head.bias.initializer
    assert not any(user_dep in op.control_inputs for op in graph.get_operations()[n_ops:]
                   if op.name.startswith("checkpoint"))


def test_a_failed_save_leaves_no_temporary_files_and_spares_foreign_ones(tmp_path, sess):
    ok = sk.Variable(np.float32(1), name="ok")
    sess.run(ok.initializer)
    bad = sk.Variable(np.float32(1), name="bad")  # never initialized: the save fails after fetching starts
    (tmp_path / "c_temp").mkdir()
    (tmp_path / "c_temp" / "mine.txt").write_text("user data")
    with pytest.raises(errors.FailedPreconditionError):
        Checkpoint(ok=ok, bad=bad).write(str(tmp_path / "c"), session=sess)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c_temp"]
    assert [p.name for p in (tmp_path / "c_temp").iterdir()] == ["mine.txt"]
    path = Checkpoint(ok=ok).write(str(tmp_path / "c"), session=sess)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.data-00000-of-00001", "c.index", "c_temp"]
    assert bundle.read_tensors(path, ["ok/.ATTRIBUTES/VARIABLE_VALUE"])[0] == 1


@pytest.mark.parametrize("finalized", [False, True], ids=["in_graph_ops", "engine_direct"])
def test_resource_variables_of_an_imported_tf_graph(tmp_path, finalized):
    """TF 2.x graphs use resource variables: restore their name-based checkpoint, then round-trip them."""
    prefix = str(FIXTURES / "v1_dtypes" / "model.ckpt-7")
    with sk.Graph().as_default() as g, sk.Session(graph=g) as s:
        sk.train.import_meta_graph(prefix + ".meta")
        by_name = {v.op.name: v for v in sk.global_variables()}
        assert type(by_name["global_step"]).__name__ == "ResourceVariable"
        m = sk.Module()
        m.vars = dict(by_name)
        ckpt = Checkpoint(m=m)
        assert ckpt.save_counter is not None
        init = sk.global_variables_initializer()
        if finalized:
            g.finalize()
        s.run(init)
        with pytest.warns(UserWarning, match="38 variables matched, 0 not found"):
            ckpt.restore(prefix, session=s).assert_consumed()
        for name in ("scope/nested/deep/kernel", "string/mat", "bfloat16/v1", "uint64/v0"):
            np.testing.assert_array_equal(
                s.run(by_name[name].value()), manifest_value("v1_dtypes", "v1_dtypes/model.ckpt-7", name))
        path = ckpt.write(str(tmp_path / "obj"), session=s)
        s.run(init)
        ckpt.read(path, session=s).assert_consumed()
        assert s.run(by_name["global_step"].value()) == manifest_value(
            "v1_dtypes", "v1_dtypes/model.ckpt-7", "global_step")


def test_checkpoint_written_by_our_v1_saver_restores_by_name(tmp_path):
    with sk.Graph().as_default() as g, sk.Session(graph=g) as s:
        with sk.name_scope("dense"):
            w = sk.Variable(np.arange(6, dtype=np.float32).reshape(2, 3), name="w")
        step = sk.Variable(np.int64(12), name="global_step")
        s.run(sk.global_variables_initializer())
        prefix = sk.train.Saver().save(s, str(tmp_path / "model.ckpt"), global_step=12)
    with sk.Graph().as_default() as g, sk.Session(graph=g) as s:
        m = sk.Module()
        with sk.name_scope("dense"):
            m.w = sk.Variable(np.zeros((2, 3), np.float32), name="w")
        m.step = sk.Variable(np.int64(0), name="global_step")
        m.new = sk.Variable(np.float32(0), name="new")
        s.run(sk.global_variables_initializer())
        with pytest.warns(UserWarning, match=r"2 variables matched, 1 not found \(\['new'\]\)"):
            status = Checkpoint(model=m).restore(prefix, session=s)
        assert status.matched == {"dense/w": "dense/w", "global_step": "global_step"}
        assert status.unmatched == ["new"] and status.unused_keys == []
        np.testing.assert_array_equal(s.run(m.w.value()), np.arange(6).reshape(2, 3))
        assert s.run(m.step.value()) == 12
    del w, step


def test_pending_restorations_keep_no_files_open(tmp_path, sess):
    m = sk.Module()
    m.a, m.b = sk.Variable(np.float32(1)), sk.Variable(np.float32(2))
    sess.run(sk.global_variables_initializer())
    path = Checkpoint(m=m).write(str(tmp_path / "c"), session=sess)
    before = len(os.listdir("/proc/self/fd"))
    keep = []
    for _ in range(50):  # each leaves "b" waiting to be attached (a deferred restoration)
        partial = sk.Module()
        partial.a = sk.Variable(np.float32(0))
        sess.run(partial.a.initializer)
        keep.append((partial, Checkpoint(m=partial).read(path, session=sess)))
    assert len(os.listdir("/proc/self/fd")) <= before + 2
    partial.b = sk.Variable(np.float32(0))  # the last one is still served, reopening the file
    assert sess.run(partial.b.value()) == 2


def test_a_name_based_saver_can_restore_our_object_checkpoint_through_full_names(tmp_path):
    with sk.Graph().as_default() as g, sk.Session(graph=g) as s:
        net = Net(seed=0)
        s.run(sk.global_variables_initializer())
        want = {v.op.name: s.run(v.value()) for v in net.variables}
        path = Checkpoint(model=net).save(str(tmp_path / "c"), session=s)
    with sk.Graph().as_default() as g, sk.Session(graph=g) as s:
        net = Net(seed=5)  # same graph names, other values
        sk.train.Saver(var_list=list(net.variables)).restore(s, path)
        for v in net.variables:
            np.testing.assert_array_equal(s.run(v.value()), want[v.op.name])


def test_save_counter_ignores_the_callers_name_scope(tmp_path, sess):
    v = sk.Variable(np.float32(1), name="v")
    sess.run(v.initializer)
    ckpt = Checkpoint(v=v)
    with sk.name_scope("training_loop"):
        path = ckpt.save(str(tmp_path / "c"), session=sess)
    assert ckpt.save_counter.name == "save_counter:0"
    assert read_object_graph(path).nodes[2].attributes[0].full_name == "save_counter"


def test_cached_checkpoint_ops_do_not_keep_graphs_alive(tmp_path):
    import gc
    import weakref

    refs = []
    for i in range(3):
        g = sk.Graph()
        with g.as_default(), sk.Session(graph=g) as s:
            v = sk.Variable(np.float32(i), name="v")
            s.run(v.initializer)
            ckpt = Checkpoint(v=v)
            path = ckpt.write(str(tmp_path / f"c{i}"), session=s)
            ckpt.read(path, session=s)
        refs.append(weakref.ref(g))
        del g, v, ckpt, s
    gc.collect()
    assert [r() for r in refs] == [None, None, None]


def test_assign_target_of_an_unusual_initializer_is_built_once_per_variable():
    from saverkit.train import _variable_io

    g = sk.Graph()
    with g.as_default():
        v = sk.Variable(np.zeros(2, np.float32), name="v")
        v._initializer_op = sk.no_op(name="odd_init")  # not Assign(v, value): nothing to feed
        op, value = _variable_io.assign_target(v)
        assert _variable_io.assign_target(v) == (op, value)
        assert value.op.name == "v/restore_value" and op.type == "Assign"
        with sk.Session() as sess:
            sess.run(op, feed_dict={value: np.array([1.0, 2.0], np.float32)})
            np.testing.assert_array_equal(sess.run(v), [1.0, 2.0])
