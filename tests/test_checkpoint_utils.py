"""saverkit.train: load_checkpoint / list_variables / load_variable, TF's inspection API without TF."""

import numpy as np
import pytest
from bundle_helpers import FIXTURES, manifest, manifest_checkpoints, tensor_sha256
from saverkit import bundle, dtypes, errors, train


def test_reader_matches_manifest_for_every_fixture():
    for rel, expected in manifest_checkpoints():
        reader = train.load_checkpoint(str(FIXTURES / rel))
        assert reader.get_variable_to_shape_map() == {k: v["shape"] for k, v in expected.items()}
        assert {k: d.name for k, d in reader.get_variable_to_dtype_map().items()} == {
            k: v["dtype"] for k, v in expected.items()}
        for name, rec in expected.items():
            assert reader.has_tensor(name)
            value = reader.get_tensor(name)
            if rec["shape"] == []:  # 0-d: a scalar, as TF's reader returns (bytes for strings)
                assert isinstance(value, bytes if rec["dtype"] == "string" else np.generic), (rel, name)
            else:
                assert isinstance(value, np.ndarray) and list(value.shape) == rec["shape"], (rel, name)
            assert tensor_sha256(value, rec["dtype"]) == rec["sha256"]


def test_directory_argument_uses_the_checkpoint_state_file():
    reader = train.load_checkpoint(str(FIXTURES / "v1_max_to_keep"))
    assert reader.prefix.endswith("model.ckpt-4")
    step = manifest()["cases"]["v1_max_to_keep"]["checkpoints"]["v1_max_to_keep/model.ckpt-4"]["step"]
    assert reader.get_tensor("step").tobytes().hex() == step["hex"]


def test_list_variables_is_sorted_name_shape_pairs():
    got = train.list_variables(str(FIXTURES / "v1_partitioned"))
    assert got == [("emb", [10, 6]), ("plain", [4]), ("wide", [5, 9])]


def test_load_variable_accepts_tensor_names():
    d = str(FIXTURES / "v1_max_to_keep")
    np.testing.assert_array_equal(train.load_variable(d, "w:0"), train.load_variable(d, "w"))


def test_partitioned_variables_read_as_full_tensors():
    value = train.load_variable(str(FIXTURES / "v1_partitioned" / "model.ckpt"), "wide")
    assert value.shape == (5, 9) and value.dtype == np.float32


def test_string_tensors_are_object_arrays_of_bytes():
    vec = train.load_checkpoint(str(FIXTURES / "v1_dtypes")).get_tensor("string/vec")
    assert vec.dtype == object and vec.shape == (9,) and all(isinstance(x, bytes) for x in vec)


def test_object_graph_scalar_is_bytes_that_parse_as_tf_code_expects():
    """TF code does ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH")): that works here."""
    from saverkit.protobuf import trackable_object_graph_pb2

    raw = train.load_checkpoint(str(FIXTURES / "tf2_object")).get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH")
    assert type(raw) is bytes
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(raw)
    assert [c.local_name for c in graph.nodes[0].children] == ["model", "step", "save_counter"]


def test_numeric_scalars_are_numpy_scalars_of_their_dtype():
    reader = train.load_checkpoint(str(FIXTURES / "v1_dtypes"))
    for name, want in [("float32/v0", np.float32), ("int64/v0", np.int64), ("bool/v0", np.bool_),
                       ("uint16/v0", np.uint16), ("complex64/v0", np.complex64), ("global_step", np.int64)]:
        assert type(reader.get_tensor(name)) is want, name
    assert type(train.load_variable(str(FIXTURES / "v1_dtypes"), "float64/v0")) is np.float64
    # Non-scalars stay arrays; saverkit's own bundle reads keep returning arrays for 0-d tensors too.
    assert type(reader.get_tensor("float32/v2")) is np.ndarray
    assert bundle.BundleReader(str(FIXTURES / "v1_dtypes")).read("float32/v0").shape == ()


def test_debug_string_lists_entries_like_tf(tmp_path):
    prefix = str(tmp_path / "m")
    bundle.write_bundle(prefix, ["w", "s", "h", "b"], [np.ones((2, 3), "f4"), np.float64(1), np.ones(1, "f2"),
                                                       np.array([b"x"], dtype=object)])
    text = train.NewCheckpointReader(prefix).debug_string()
    assert text == b"b (DT_STRING) [1]\nh (DT_HALF) [1]\ns (DT_DOUBLE) []\nw (DT_FLOAT) [2,3]\n"


def test_dtype_map_uses_saverkit_dtypes():
    m = train.load_checkpoint(str(FIXTURES / "v1_dtypes")).get_variable_to_dtype_map()
    assert m["bfloat16/v0"] == dtypes.bfloat16 and m["bool/v1"].name == "bool"


def test_missing_checkpoint_errors_say_what_was_looked_for(tmp_path):
    with pytest.raises(errors.NotFoundError, match=f"'checkpoint' state file.*{tmp_path}"):
        train.load_checkpoint(str(tmp_path))
    with pytest.raises(errors.NotFoundError, match="looked for"):
        train.list_variables(str(tmp_path / "nothing"))
    with pytest.raises(errors.NotFoundError, match="'missing' not found"):
        train.load_variable(str(FIXTURES / "v1_max_to_keep"), "missing")


@pytest.mark.tf
def test_get_tensor_types_match_tensorflows_reader():
    """Every tensor of every fixture: the same Python type, numpy dtype and value as TF's reader gives."""
    import tensorflow as tf

    for rel, expected in manifest_checkpoints():
        ours = train.load_checkpoint(str(FIXTURES / rel))
        theirs = tf.train.load_checkpoint(str(FIXTURES / rel))
        for name in expected:
            got, want = ours.get_tensor(name), theirs.get_tensor(name)
            assert type(got) is type(want), (rel, name)
            if isinstance(want, bytes):
                assert got == want, (rel, name)
            elif want.dtype == object:
                assert list(got.reshape(-1)) == list(want.reshape(-1)), (rel, name)
            else:
                assert got.dtype == want.dtype and np.asarray(got).tobytes() == np.asarray(want).tobytes()
