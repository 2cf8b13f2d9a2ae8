"""saverkit.train.init_from_checkpoint: every assignment_map form TF documents, in graph mode."""

import json
import pathlib

import numpy as np
import pytest
import saverkit as sk
from saverkit import bundle, errors
from saverkit.train import init_from_checkpoint

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "tf-2.21"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
DTYPES_PREFIX = str(FIXTURES / "v1_dtypes" / "model.ckpt-7")
PARTITIONED_PREFIX = str(FIXTURES / "v1_partitioned" / "model.ckpt")


def tf_value(case, prefix, key):
    rec = MANIFEST["cases"][case]["checkpoints"][prefix][key]
    return np.frombuffer(bytes.fromhex(rec["hex"]), dtype=np.dtype(rec["dtype"]).newbyteorder("<")).reshape(
        rec["shape"]
    )


KERNEL = tf_value("v1_dtypes", "v1_dtypes/model.ckpt-7", "scope/nested/deep/kernel")
STEP = tf_value("v1_dtypes", "v1_dtypes/model.ckpt-7", "global_step")
EMB = tf_value("v1_partitioned", "v1_partitioned/model.ckpt", "emb")
WIDE = tf_value("v1_partitioned", "v1_partitioned/model.ckpt", "wide")


@pytest.fixture
def graph():
    g = sk.Graph()
    with g.as_default():
        yield g


@pytest.fixture
def own_ckpt(tmp_path):
    """A small name-based checkpoint: old/w, old/sub/b, top."""
    prefix = str(tmp_path / "own")
    bundle.write_bundle(
        prefix,
        ["old/w", "old/sub/b", "top"],
        [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2], np.int64), np.float32(9)],
    )
    return prefix


def var(name, shape, dtype=np.float32):
    return sk.Variable(np.zeros(shape, dtype), name=name)


def initialized_values(*variables):
    with sk.Session() as s:
        s.run(sk.global_variables_initializer())
        return [s.run(v.value()) for v in variables]


def test_scope_to_scope_loads_a_tf_checkpoint_under_a_new_scope(graph):
    kernel = var("new_scope/kernel", (16, 8))
    other = var("other/kernel", (16, 8))
    init_from_checkpoint(DTYPES_PREFIX, {"scope/nested/deep/": "new_scope/"})
    got_kernel, got_other = initialized_values(kernel, other)
    np.testing.assert_array_equal(got_kernel, KERNEL)
    np.testing.assert_array_equal(got_other, np.zeros((16, 8)))  # outside the scope: untouched


def test_root_to_scope(graph, own_ckpt):
    top = var("model/top", ())
    init_from_checkpoint(own_ckpt, {"/": "model/"})
    assert initialized_values(top) == [9]


def test_scope_to_root(graph, own_ckpt):
    w, b = var("w", (2, 3)), var("sub/b", (2,), np.int64)
    init_from_checkpoint(own_ckpt, {"old/": "/"})
    got_w, got_b = initialized_values(w, b)
    np.testing.assert_array_equal(got_w, np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(got_b, [1, 2])


def test_name_to_name_and_name_to_variable(graph, own_ckpt):
    a = var("a/weights", (2, 3))
    b = var("b", (2,), np.int64)
    c = var("c", ())
    init_from_checkpoint(own_ckpt, {"old/w": "a/weights", "old/sub/b": b})
    init_from_checkpoint(own_ckpt, [("top", c)])
    got_a, got_b, got_c = initialized_values(a, b, c)
    np.testing.assert_array_equal(got_a, np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(got_b, [1, 2])
    assert got_c == 9


def test_a_list_of_pairs_can_initialize_two_variables_from_one_tensor(graph):
    first, second = var("first", (16, 8)), var("second", (16, 8))
    init_from_checkpoint(
        DTYPES_PREFIX, [("scope/nested/deep/kernel", first), ("scope/nested/deep/kernel", "second")]
    )
    got = initialized_values(first, second)
    for g in got:
        np.testing.assert_array_equal(g, KERNEL)


def test_partitioned_parts_load_their_slices(graph):
    emb_parts = [var(f"emb/part_{i}", (n, 6)) for i, n in enumerate((4, 3, 3))]
    wide_parts = [var(f"my_wide/part_{i}", (5, n)) for i, n in enumerate((5, 4))]
    init_from_checkpoint(PARTITIONED_PREFIX, {"emb": "emb", "wide": wide_parts})
    got = initialized_values(*emb_parts, *wide_parts)
    np.testing.assert_array_equal(np.concatenate(got[:3], axis=0), EMB)
    np.testing.assert_array_equal(np.concatenate(got[3:], axis=1), WIDE)


def test_partitioned_parts_inside_a_scope_mapping(graph):
    parts = [var(f"net/emb/part_{i}", (n, 6)) for i, n in enumerate((5, 5))]
    plain = var("net/plain", (4,), np.float64)
    init_from_checkpoint(PARTITIONED_PREFIX, {"/": "net/"})
    got = initialized_values(*parts, plain)
    np.testing.assert_array_equal(np.concatenate(got[:2]), EMB)
    np.testing.assert_array_equal(got[2], tf_value("v1_partitioned", "v1_partitioned/model.ckpt", "plain"))


def test_a_directory_means_its_latest_checkpoint(graph):
    step = var("global_step", (), np.int64)
    init_from_checkpoint(str(FIXTURES / "v1_dtypes"), {"global_step": step})
    assert initialized_values(step) == [STEP]


def test_the_initializer_is_a_restore_and_the_initial_value_changes(graph, own_ckpt):
    w = var("w", (2, 3))
    init_from_checkpoint(own_ckpt, {"old/w": w})
    assert w.initializer.type == "Assign"
    assert w.initial_value.op.type == "RestoreV2"
    with sk.Session() as s:
        s.run(w.initializer)
        np.testing.assert_array_equal(s.run(w.value()), np.arange(6).reshape(2, 3))


# --- errors ------------------------------------------------------------------------------------------


def test_unknown_tensor_shows_the_entry_and_close_checkpoint_names(graph):
    var("new_scope/kernel", (16, 8))
    with pytest.raises(ValueError) as e:
        init_from_checkpoint(DTYPES_PREFIX, {"scope/nested/deep/kernal": "new_scope/kernel"})
    msg = str(e.value)
    assert "'scope/nested/deep/kernal'" in msg and "'new_scope/kernel'" in msg
    assert "Closest names there: ['scope/nested/deep/kernel']" in msg


def test_unknown_tensor_under_a_scope_mapping_names_the_variable(graph):
    var("new_scope/kernel", (16, 8))
    var("new_scope/bias", (8,))
    with pytest.raises(
        ValueError, match=r"variable 'new_scope/bias'.*tensor 'scope/nested/deep/bias' is not in"
    ):
        init_from_checkpoint(DTYPES_PREFIX, {"scope/nested/deep/": "new_scope/"})


def test_unknown_variable_shows_close_graph_names(graph, own_ckpt):
    var("model/weights", (2, 3))
    with pytest.raises(
        ValueError, match=r"no variable named 'model/weight' .*Closest names there: \['model/weights'\]"
    ):
        init_from_checkpoint(own_ckpt, {"old/w": "model/weight"})


def test_scope_must_map_to_scope(graph, own_ckpt):
    var("model/w", (2, 3))
    with pytest.raises(ValueError, match="a scope maps only to a scope"):
        init_from_checkpoint(own_ckpt, {"old/w": "model/"})


def test_shape_mismatch_names_both_shapes(graph):
    v = var("k", (8, 16))
    with pytest.raises(
        ValueError, match=r"shape of variable 'k' \(\[8, 16\]\).*'scope/nested/deep/kernel' \(\[16, 8\]\)"
    ):
        init_from_checkpoint(DTYPES_PREFIX, {"scope/nested/deep/kernel": v})


def test_dtype_mismatch_names_both_dtypes(graph):
    v = var("k", (16, 8), np.float64)
    with pytest.raises(
        ValueError, match="'k' is float64 but tensor 'scope/nested/deep/kernel' .* is float32"
    ):
        init_from_checkpoint(DTYPES_PREFIX, {"scope/nested/deep/kernel": v})


def test_parts_that_do_not_tile_the_tensor_are_rejected(graph):
    parts = [var(f"emb/part_{i}", (n, 6)) for i, n in enumerate((4, 4))]
    with pytest.raises(ValueError, match="do not add up"):
        init_from_checkpoint(PARTITIONED_PREFIX, {"emb": parts})


def test_missing_checkpoint_is_not_found(graph, tmp_path):
    var("w", ())
    with pytest.raises(errors.NotFoundError):
        init_from_checkpoint(str(tmp_path / "absent"), {"w": "w"})
    with pytest.raises(errors.NotFoundError, match="Couldn.t find a checkpoint in directory"):
        init_from_checkpoint(str(tmp_path), {"w": "w"})


def test_empty_scope_mapping_warns(graph, own_ckpt):
    with pytest.warns(UserWarning, match="no variables under 'nothing/'"):
        init_from_checkpoint(own_ckpt, {"old/": "nothing/"})


def test_bad_value_type_is_a_type_error(graph, own_ckpt):
    with pytest.raises(TypeError, match="values must be variables"):
        init_from_checkpoint(own_ckpt, {"old/w": 3})


def test_parts_with_save_slice_info_load_the_slices_it_names(graph):
    # Parts listed out of order: their SaveSliceInfo, not their position, says which rows they hold.
    second = var("e/part_1", (6, 6))
    first = var("e/part_0", (4, 6))
    second._set_save_slice_info(sk.Variable.SaveSliceInfo("emb", [10, 6], [4, 0], [6, 6]))
    first._set_save_slice_info(sk.Variable.SaveSliceInfo("emb", [10, 6], [0, 0], [4, 6]))
    init_from_checkpoint(PARTITIONED_PREFIX, {"emb": [second, first]})
    got_second, got_first = initialized_values(second, first)
    np.testing.assert_array_equal(got_first, EMB[:4])
    np.testing.assert_array_equal(got_second, EMB[4:])


def test_resource_variables_of_an_imported_tf_graph_initialize_from_a_checkpoint(graph):
    sk.train.import_meta_graph(DTYPES_PREFIX + ".meta", import_scope="copy")
    kernel = next(v for v in sk.global_variables() if v.op.name == "copy/scope/nested/deep/kernel")
    assert type(kernel).__name__ == "ResourceVariable"
    init_from_checkpoint(DTYPES_PREFIX, {"scope/": "copy/scope/"})
    assert kernel.initializer.type == "AssignVariableOp"
    np.testing.assert_array_equal(initialized_values(kernel)[0], KERNEL)
