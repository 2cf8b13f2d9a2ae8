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
            assert tensor_sha256(reader.get_tensor(name), rec["dtype"]) == rec["sha256"]


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


def test_strings_are_object_arrays_of_bytes():
    graph = train.load_checkpoint(str(FIXTURES / "tf2_object")).get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH")
    assert graph.dtype == object and graph.shape == () and isinstance(graph.item(), bytes)


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
