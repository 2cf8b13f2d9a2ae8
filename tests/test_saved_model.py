"""SavedModels written and read by saverkit alone: TF1's layout, Builder's rules, the loader, bad input."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import saverkit as sk
from saverkit import errors
from saverkit import saved_model as sm
from saverkit.protobuf import meta_graph_pb2, saved_model_pb2

W = np.arange(6, dtype=np.float32).reshape(3, 2) / 4
B = np.array([0.5, -1.0], np.float32)
X = np.array([[1, 2, 3], [-1, 0, 2]], np.float32)


def _model():
    x = sk.placeholder(sk.float32, [None, 3], name="x")
    w = sk.Variable(W, name="w")
    b = sk.Variable(B, name="b")
    y = sk.add(sk.matmul(x, w), b, name="y")
    return x, y


def _run_signature(sess, meta_graph_def, key="serving_default", feeds=None):
    sig = meta_graph_def.signature_def[key]
    feeds = feeds if feeds is not None else {"x": X}
    return sess.run({k: v.name for k, v in sig.outputs.items()},
                    {sig.inputs[k].name: v for k, v in feeds.items()})


@pytest.fixture
def simple_export(tmp_path):
    export_dir = str(tmp_path / "export" / "1")
    with sk.Graph().as_default(), sk.Session() as sess:
        x, y = _model()
        sess.run(sk.global_variables_initializer())
        path = sm.simple_save(sess, export_dir, inputs={"x": x}, outputs={"y": y})
    assert path == os.path.join(export_dir, "saved_model.pb")
    return export_dir


def test_simple_save_writes_tf1_layout(simple_export):
    assert sorted(os.listdir(simple_export)) == ["saved_model.pb", "variables"]
    assert sorted(os.listdir(os.path.join(simple_export, "variables"))) == [
        "variables.data-00000-of-00001", "variables.index"]
    saved_model = saved_model_pb2.SavedModel.FromString(
        pathlib.Path(simple_export, "saved_model.pb").read_bytes())
    assert saved_model.saved_model_schema_version == 1
    (meta,) = saved_model.meta_graphs
    assert list(meta.meta_info_def.tags) == ["serve"]
    sig = meta.signature_def["serving_default"]
    assert sig.method_name == "tensorflow/serving/predict"
    assert sig.inputs["x"].name == "x:0" and sig.outputs["y"].name == "y:0"
    assert [d.size for d in sig.inputs["x"].tensor_shape.dim] == [-1, 3]
    assert sig.outputs["y"].dtype == sk.float32.as_datatype_enum
    assert meta.HasField("saver_def")
    assert sorted(sk.train.list_variables(simple_export)) == [("b", [2]), ("w", [3, 2])]


def test_loader_restores_variables_and_runs_the_signature(simple_export):
    with sk.Graph().as_default(), sk.Session() as sess:
        meta = sm.loader.load(sess, [sm.tag_constants.SERVING], simple_export)
        out = _run_signature(sess, meta)
    np.testing.assert_allclose(out["y"], X @ W + B)


def test_loader_accepts_the_saved_model_file_and_an_import_scope(simple_export):
    with sk.Graph().as_default() as g, sk.Session() as sess:
        meta = sm.load(sess, ["serve"], os.path.join(simple_export, "saved_model.pb"), import_scope="m")
        sig = meta.signature_def["serving_default"]
        y = sm.get_tensor_from_tensor_info(sig.outputs["y"], g, import_scope="m")
        x = sm.get_tensor_from_tensor_info(sig.inputs["x"], g, import_scope="m")
        assert y.name == "m/y:0"
        np.testing.assert_allclose(sess.run(y, {x: X}), X @ W + B)


def test_builder_with_two_tag_sets_main_op_and_text_format(tmp_path):
    export_dir = str(tmp_path / "b")
    with sk.Graph().as_default(), sk.Session() as sess:
        x, y = _model()
        counter = sk.Variable(np.int64(0), name="counter", trainable=False)
        total = sk.reduce_sum(y, name="total")
        main_op = sk.group(sk.assign(counter, np.int64(41)), name="main_op")
        sess.run(sk.global_variables_initializer())
        builder = sm.Builder(export_dir)
        predict = sm.signature_def_utils.predict_signature_def({"x": x}, {"y": y})
        totals = sm.signature_def_utils.build_signature_def(
            {"x": sm.utils.build_tensor_info(x)}, {"total": sm.build_tensor_info(total)},
            sm.signature_constants.PREDICT_METHOD_NAME)
        assert sm.is_valid_signature(totals)
        builder.add_meta_graph_and_variables(sess, ["serve"], {"serving_default": predict, "total": totals},
                                             main_op=main_op)
        builder.add_meta_graph(["serve", "gpu"], signature_def_map={"serving_default": predict})
        path = builder.save(as_text=True)
    assert path.endswith("saved_model.pbtxt")
    assert sm.contains_saved_model(export_dir) and sm.loader.maybe_saved_model_directory(export_dir)
    for tags, key, want in [(["serve"], "total", (X @ W + B).sum()), (["gpu", "serve"], "serving_default",
                                                                       X @ W + B)]:
        with sk.Graph().as_default(), sk.Session() as sess:
            meta = sm.loader.load(sess, tags, export_dir)
            out = _run_signature(sess, meta, key)
            np.testing.assert_allclose(next(iter(out.values())), want, rtol=1e-6)
            (counter,) = [v for v in sk.global_variables() if v.op.name == "counter"]
            assert sess.run(counter) == 41  # the main op ran after the restore (the checkpoint holds 0)
    assert sk.train.load_variable(export_dir, "counter") == 0


def test_assets_are_copied_and_fed_to_the_main_op(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("a\nb\n")
    export_dir = str(tmp_path / "a")
    with sk.Graph().as_default(), sk.Session() as sess:
        x, y = _model()
        asset = sk.constant(str(vocab), name="asset_path")
        sk.add_to_collection(sk.GraphKeys.ASSET_FILEPATHS, asset)
        seen = sk.Variable(np.array(b""), name="seen", trainable=False)
        main_op = sk.group(sk.assign(seen, asset), name="init_seen")
        sess.run(sk.global_variables_initializer())
        sm.simple_save(sess, export_dir, {"x": x}, {"y": y}, legacy_init_op=main_op)
    assert (tmp_path / "a" / "assets" / "vocab.txt").read_text() == "a\nb\n"
    with sk.Graph().as_default(), sk.Session() as sess:
        sm.loader.load(sess, ["serve"], export_dir)
        (seen,) = [v for v in sk.global_variables() if v.op.name == "seen"]
        assert sess.run(seen) == os.path.join(export_dir, "assets", "vocab.txt").encode()


def test_builder_refuses_a_non_empty_directory_and_misuse(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    with pytest.raises(AssertionError, match="already exists, and isn't empty"):
        sm.Builder(str(tmp_path / "full"))
    (tmp_path / "empty").mkdir()
    builder = sm.Builder(str(tmp_path / "empty"))  # an existing empty directory is fine, as in TF
    with pytest.raises(AssertionError, match="has not been saved yet"):
        builder.add_meta_graph(["serve"])
    with sk.Graph().as_default(), sk.Session() as sess:
        x, y = _model()
        sess.run(sk.global_variables_initializer())
        sig = sm.predict_signature_def({"x": x}, {"y": y})
        with pytest.raises(KeyError, match="reserved"):
            builder.add_meta_graph_and_variables(sess, ["serve"], {"__saved_model_init_op": sig})
        no_dtype = meta_graph_pb2.TensorInfo(name="y:0")
        bad = sm.build_signature_def({"x": sm.build_tensor_info(x)}, {"y": no_dtype})
        with pytest.raises(AssertionError, match="dtype"):
            builder.add_meta_graph_and_variables(sess, ["serve"], {"s": bad})
        with pytest.raises(TypeError, match="list of strings"):
            builder.add_meta_graph_and_variables(sess, "serve")
        builder.add_meta_graph_and_variables(sess, ["serve"], {"serving_default": sig})
        with pytest.raises(AssertionError, match="already been saved"):
            builder.add_meta_graph_and_variables(sess, ["serve"])
    with pytest.raises(ValueError, match="inputs cannot be None or empty"):
        sm.predict_signature_def({}, {"y": y})


def test_missing_tags_name_the_available_tag_sets(simple_export):
    with sk.Graph().as_default(), sk.Session() as sess, pytest.raises(RuntimeError) as e:
        sm.loader.load(sess, ["train"], simple_export)
    assert "['train']" in str(e.value) and "['serve']" in str(e.value) and simple_export in str(e.value)


def test_bad_input_is_a_clear_error_naming_the_file(simple_export, tmp_path):
    with sk.Graph().as_default(), sk.Session() as sess:
        with pytest.raises(OSError, match="SavedModel file does not exist at: .*nowhere"):
            sm.loader.load(sess, ["serve"], str(tmp_path / "nowhere"))
        pb = os.path.join(simple_export, "saved_model.pb")
        data = pathlib.Path(pb).read_bytes()
        for corrupt in (data[: len(data) // 2], b"\xff" * 64, b"", b"not a proto {"):
            with open(pb, "wb") as f:
                f.write(corrupt)
            with pytest.raises(OSError, match="Cannot parse file .*saved_model.pb"):
                sm.loader.load(sess, ["serve"], simple_export)
        with open(pb, "wb") as f:
            f.write(data)
    for name in os.listdir(os.path.join(simple_export, "variables")):
        os.remove(os.path.join(simple_export, "variables", name))
    with sk.Graph().as_default(), sk.Session() as sess:
        with pytest.raises(errors.NotFoundError, match="variables/variables.index does not exist"):
            sm.loader.load(sess, ["serve"], simple_export)
    with pytest.raises(errors.NotFoundError, match="SavedModel without variables"):
        sk.train.load_checkpoint(simple_export)


def test_import_meta_graph_says_it_found_a_saved_model(simple_export, tmp_path):
    pb = os.path.join(simple_export, "saved_model.pb")
    renamed = tmp_path / "model.meta"  # recognised by content too, not only by name
    renamed.write_bytes(pathlib.Path(pb).read_bytes())
    for path in (pb, str(renamed)):
        with sk.Graph().as_default(), pytest.raises(OSError) as e:
            sk.train.import_meta_graph(path)
        message = str(e.value)
        assert "is a SavedModel, not a MetaGraphDef" in message and path in message
        assert "tags ['serve'] (signatures: serving_default)" in message
        assert "saved_model.loader.load" in message
    meta = sm.reader.meta_graph_for_tags(sm.parse_saved_model(simple_export), ["serve"])
    with sk.Graph().as_default(), sk.Session() as sess:  # one of its MetaGraphDefs imports as usual
        saver = sk.train.import_meta_graph(meta)
        saver.restore(sess, sm.variables_prefix(simple_export))
        np.testing.assert_allclose(_run_signature(sess, meta)["y"], X @ W + B)


def test_a_graph_that_calls_functions_is_refused_naming_the_op(simple_export):
    saved_model = sm.parse_saved_model(simple_export)
    meta = saved_model.meta_graphs[0]
    meta.graph_def.node.add(name="StatefulPartitionedCall", op="StatefulPartitionedCall")
    meta.object_graph_def.nodes.add()
    with open(os.path.join(simple_export, "saved_model.pb"), "wb") as f:
        f.write(saved_model.SerializeToString())
    with sk.Graph().as_default(), sk.Session() as sess, pytest.raises(errors.UnimplementedError) as e:
        sm.loader.load(sess, ["serve"], simple_export)
    assert "TF2 SavedModel" in str(e.value) and "op StatefulPartitionedCall" in str(e.value)
    assert "load_checkpoint" in str(e.value)


def test_cli_inspect_lists_signatures_then_variables_without_the_graph_layer(simple_export):
    script = (
        "import contextlib, io, json, sys\nfrom saverkit import cli\n"
        "with contextlib.redirect_stdout(io.StringIO()) as f:\n"
        f"    code = cli.main(['inspect', {simple_export!r}])\n"
        "heavy = [m for m in ('ml_dtypes', 'saverkit.framework', 'saverkit.train.saver')\n"
        "         if m in sys.modules]\n"
        "print(json.dumps({'code': code, 'text': f.getvalue(), 'heavy': heavy}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["code"] == 0 and out["heavy"] == []
    text = out["text"]
    assert "MetaGraphDef with tag-set: 'serve' contains the following SignatureDefs:" in text
    assert "signature_def['serving_default']:" in text
    assert ("    inputs['x'] tensor_info:\n        dtype: DT_FLOAT\n        shape: (-1, 3)\n"
            "        name: x:0") in text
    assert "Method name is: tensorflow/serving/predict" in text
    assert text.index("Variables (") < text.index("total: 2 tensors")


def test_cli_inspect_of_a_saved_model_without_variables_or_corrupt(simple_export, capsys):
    shutil.rmtree(os.path.join(simple_export, "variables"))
    assert sk.cli.main(["inspect", simple_export]) == 0
    assert "Variables: none" in capsys.readouterr().out
    pathlib.Path(simple_export, "saved_model.pb").write_bytes(b"\xff\x00garbage")
    assert sk.cli.main(["inspect", os.path.join(simple_export, "saved_model.pb")]) == 2
    assert "Cannot parse file" in capsys.readouterr().err


def test_text_format_saved_model_is_loaded_and_recognised(tmp_path, capsys):
    export_dir = str(tmp_path / "t")
    with sk.Graph().as_default(), sk.Session() as sess:
        x, y = _model()
        sess.run(sk.global_variables_initializer())
        builder = sm.SavedModelBuilder(export_dir)
        builder.add_meta_graph_and_variables(sess, ["serve"], {"serving_default": sm.predict_signature_def(
            {"x": x}, {"y": y})})
        pbtxt = builder.save(as_text=True)
    assert sorted(os.listdir(export_dir)) == [
        "saved_model.pbtxt", "variables"]
    with sk.Graph().as_default(), sk.Session() as sess:
        out = _run_signature(sess, sm.loader.load(sess, ["serve"], export_dir))
    np.testing.assert_allclose(out["y"], X @ W + B)
    with sk.Graph().as_default(), pytest.raises(OSError, match="saved_model.pbtxt is a SavedModel"):
        sk.train.import_meta_graph(pbtxt)
    assert sk.cli.main(["inspect", pbtxt]) == 0
    assert "signature_def['serving_default']:" in capsys.readouterr().out


def test_classify_and_regress_signatures_check_their_dtypes():
    with sk.Graph().as_default():
        examples = sk.placeholder(sk.string, [None], name="examples")
        scores = sk.placeholder(sk.float32, [None, 2], name="scores")
        classes = sk.placeholder(sk.string, [None, 2], name="classes")
        regress = sm.regression_signature_def(examples, sk.placeholder(sk.float32, [None], name="p"))
        assert regress.method_name == "tensorflow/serving/regress"
        assert sorted(regress.inputs) == ["inputs"] and sorted(regress.outputs) == ["outputs"]
        classify = sm.classification_signature_def(examples, classes, scores)
        assert classify.method_name == "tensorflow/serving/classify"
        assert sorted(classify.outputs) == ["classes", "scores"]
        with pytest.raises(ValueError, match="must be of type string"):
            sm.regression_signature_def(scores, scores)
        with pytest.raises(ValueError, match="cannot both be None"):
            sm.classification_signature_def(examples, None, None)


def test_a_graph_without_variables_exports_an_empty_variables_directory(tmp_path):
    export_dir = str(tmp_path / "nv")
    with sk.Graph().as_default(), sk.Session() as sess:
        x = sk.placeholder(sk.float32, [None], name="x")
        y = sk.multiply(x, 2.0, name="y")
        sm.simple_save(sess, export_dir, {"x": x}, {"y": y})
    assert os.listdir(os.path.join(export_dir, "variables")) == []  # as TensorFlow's Builder leaves it
    with sk.Graph().as_default(), sk.Session() as sess:
        meta = sm.loader.load(sess, ["serve"], export_dir)
        out = _run_signature(sess, meta, feeds={"x": np.ones(2, np.float32)})
    np.testing.assert_array_equal(out["y"], [2.0, 2.0])


def test_mutated_saved_model_files_fail_cleanly_naming_the_file(simple_export):
    """300 random byte edits, deletions and truncations of saved_model.pb: loading either works or raises
    OSError / ValueError naming the file (or an OpError naming the node it cannot run); never a protobuf
    DecodeError, KeyError or a crash."""
    import random

    pb = pathlib.Path(simple_export, "saved_model.pb")
    original = pb.read_bytes()
    rng = random.Random(22)
    outcomes = {"loaded": 0, "named the file": 0, "op error": 0}
    for _ in range(300):
        data = bytearray(original)
        for _ in range(rng.randint(1, 4)):
            pos, what = rng.randrange(len(data)), rng.random()
            if what < 0.6:
                data[pos] = rng.randrange(256)
            elif what < 0.8:
                del data[pos:pos + rng.randint(1, 16)]
            else:
                del data[pos:]
        pb.write_bytes(bytes(data))
        with sk.Graph().as_default(), sk.Session() as sess:
            try:
                sm.loader.load(sess, ["serve"], simple_export)
                outcomes["loaded"] += 1
            except (OSError, ValueError) as e:
                assert str(pb) in str(e), repr(e)
                outcomes["named the file"] += 1
            except RuntimeError as e:  # mangled tags: no MetaGraphDef tagged "serve" in this directory
                assert simple_export in str(e), repr(e)
            except errors.OpError:  # e.g. a mangled op type in the restore path: names the node
                outcomes["op error"] += 1
    assert outcomes["named the file"] > 250, outcomes
