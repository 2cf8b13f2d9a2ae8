"""SavedModels shared with a real TensorFlow: TF1's loader, TF2's tf.saved_model.load and saved_model_cli
read saverkit's exports and run their signatures; saverkit loads and runs TF-written TF1 SavedModels, and
reads the variables of a TF2 one. TensorFlow runs in one subprocess for the whole module
(tests/tf_saved_model_driver.py)."""

import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
import saverkit as sk
from saverkit import errors
from saverkit import saved_model as sm

pytestmark = pytest.mark.tf

DRIVER = pathlib.Path(__file__).with_name("tf_saved_model_driver.py")
W = np.arange(6, dtype=np.float32).reshape(3, 2) / 4  # as the driver's TF models
B = np.array([0.5, -1.0], np.float32)
X = [[1.0, 2.0, 3.0], [-1.0, 0.5, 2.0]]


def _tensorflow(jobs):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, str(DRIVER), json.dumps(jobs)], capture_output=True, text=True,
                          timeout=300, env=env)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    return json.loads(lines[-1][len("RESULT "):])


def _saverkit_exports(root):
    """simple_save and a Builder export (two tag sets, a main op fed an asset); returns saverkit's outputs."""
    vocab = root / "vocab.txt"
    vocab.write_text("a\nb\n")
    with sk.Graph().as_default(), sk.Session() as sess:
        x = sk.placeholder(sk.float32, [None, 3], name="x")
        w = sk.Variable(np.random.default_rng(1).standard_normal((3, 2)).astype(np.float32), name="w")
        b = sk.Variable(np.array([0.25, 2.0], np.float32), name="b")
        y = sk.add(sk.matmul(x, w), b, name="y")
        total = sk.reduce_sum(y, name="total")
        asset = sk.constant(str(vocab), name="asset_path")
        seen = sk.Variable(np.array(b""), name="seen", trainable=False)
        main_op = sk.group(sk.assign(seen, asset), name="main_op")
        sess.run(sk.global_variables_initializer())
        sm.simple_save(sess, str(root / "sk_simple"), {"x": x}, {"y": y})
        predict = sm.predict_signature_def({"x": x}, {"y": y})
        seen_sig = sm.build_signature_def(
            {"x": sm.build_tensor_info(x)},
            {"seen": sm.build_tensor_info(sk.identity(seen, name="seen_out")),
             "total": sm.build_tensor_info(total)},
            sm.signature_constants.PREDICT_METHOD_NAME)
        builder = sm.Builder(str(root / "sk_builder"))
        builder.add_meta_graph_and_variables(
            sess, [sm.tag_constants.SERVING],
            signature_def_map={"serving_default": predict, "seen": seen_sig},
            assets_collection=[asset], main_op=main_op)
        builder.add_meta_graph([sm.tag_constants.SERVING, sm.tag_constants.GPU],
                               signature_def_map={"serving_default": predict})
        builder.save()
        return sess.run({"y": y, "total": total}, {x: np.array(X, np.float32)})


@pytest.fixture(scope="module")
def exchange(tmp_path_factory):
    root = tmp_path_factory.mktemp("saved_models")
    expected = _saverkit_exports(root)
    d = {name: str(root / name) for name in ("sk_simple", "sk_builder", "tf_builder", "tf_simple", "tf2")}
    feeds = {"x": X}
    results = _tensorflow([
        {"do": "tf1_load", "dir": d["sk_simple"], "feeds": feeds},
        {"do": "tf2_load", "dir": d["sk_simple"], "feeds": feeds},
        {"do": "tf1_load", "dir": d["sk_builder"], "feeds": feeds, "signature": "seen"},
        {"do": "tf1_load", "dir": d["sk_builder"], "feeds": feeds, "tags": ["gpu", "serve"]},
        {"do": "tf2_load", "dir": d["sk_builder"], "feeds": feeds},
        {"do": "write_builder", "dir": d["tf_builder"]},
        {"do": "write_simple", "dir": d["tf_simple"]},
        {"do": "write_tf2", "dir": d["tf2"]},
    ])
    return {"dirs": d, "expected": expected, "tf": results}


def test_tf1_loader_runs_saverkits_serving_signature(exchange):
    np.testing.assert_allclose(exchange["tf"][0]["y"], exchange["expected"]["y"], rtol=1e-6)


def test_tf2_saved_model_load_calls_saverkits_serving_signature(exchange):
    np.testing.assert_allclose(exchange["tf"][1]["y"], exchange["expected"]["y"], rtol=1e-6)
    np.testing.assert_allclose(exchange["tf"][4]["y"], exchange["expected"]["y"], rtol=1e-6)


def test_tf1_loader_runs_saverkits_main_op_with_assets_and_second_tag_set(exchange):
    seen = exchange["tf"][2]
    assert seen["seen"] == os.path.join(exchange["dirs"]["sk_builder"], "assets", "vocab.txt")
    np.testing.assert_allclose(seen["total"], exchange["expected"]["total"], rtol=1e-6)
    np.testing.assert_allclose(exchange["tf"][3]["y"], exchange["expected"]["y"], rtol=1e-6)


def _saved_model_cli(export_dir):
    cli = pathlib.Path(sys.executable).with_name("saved_model_cli")
    cmd = [str(cli)] if cli.exists() else [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([*cmd, "show", "--all", "--dir", export_dir], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def test_saved_model_cli_shows_saverkits_export_as_saverkit_inspect_does(exchange, capsys):
    export_dir = exchange["dirs"]["sk_builder"]
    tf_text = _saved_model_cli(export_dir)
    assert "MetaGraphDef with tag-set: 'serve' contains the following SignatureDefs:" in tf_text
    assert "MetaGraphDef with tag-set: 'serve, gpu' contains the following SignatureDefs:" in tf_text
    assert sk.cli.main(["inspect", export_dir]) == 0
    ours = capsys.readouterr().out
    signatures = ours[: ours.index("Variables (")].strip()
    assert "shape: (-1, 3)" in signatures and "name: seen_out:0" in signatures
    for block in signatures.split("\n\n"):  # every signature block saverkit prints, TF prints the same
        assert block.strip() in tf_text, block
    assert re.search(r"^w +float32 +\[3, 2\] +24$", ours, re.M)


def test_saverkit_runs_tensorflows_builder_export(exchange):
    export_dir = exchange["dirs"]["tf_builder"]
    want = np.array(X, np.float32) @ W + B
    for tags, key, name, value in [(["serve"], "serving_default", "y", want), (["serve"], "total", "total",
                                   want.sum()), (["gpu", "serve"], "serving_default", "y", want)]:
        with sk.Graph().as_default(), sk.Session() as sess:
            meta = sm.loader.load(sess, tags, export_dir)
            sig = meta.signature_def[key]
            out = sess.run(sig.outputs[name].name, {sig.inputs["x"].name: np.array(X, np.float32)})
            np.testing.assert_allclose(out, value, rtol=1e-6)
            (counter,) = [v for v in sk.global_variables() if v.op.name == "counter"]
            assert sess.run(counter) == 41  # TF's main_op ran


def test_saverkit_runs_tensorflows_simple_save_export(exchange):
    with sk.Graph().as_default(), sk.Session() as sess:
        meta = sm.loader.load(sess, [sm.tag_constants.SERVING], exchange["dirs"]["tf_simple"])
        sig = meta.signature_def[sm.signature_constants.DEFAULT_SERVING_SIGNATURE_DEF_KEY]
        out = sess.run(sig.outputs["y"].name, {sig.inputs["x"].name: np.array(X, np.float32)})
    np.testing.assert_allclose(out, np.array(X, np.float32) @ W + B, rtol=1e-6)


def test_tf2_saved_model_variables_are_read_and_its_functions_refused_by_name(exchange):
    export_dir = exchange["dirs"]["tf2"]
    reader = sk.train.load_checkpoint(export_dir)
    np.testing.assert_array_equal(reader.get_tensor("dense/w/.ATTRIBUTES/VARIABLE_VALUE"), W)

    root = sk.Module()
    root.dense = sk.Module()
    root.dense.w = sk.Variable(np.zeros((3, 2), np.float32), name="w")
    root.dense.b = sk.Variable(np.zeros(2, np.float32), name="b")
    root.step = sk.Variable(np.int64(0), name="step")
    ckpt = sk.train.Checkpoint(dense=root.dense, step=root.step)
    with sk.Session() as sess:
        sess.run(sk.global_variables_initializer())
        ckpt.restore(export_dir, session=sess).expect_partial()
        w, b, step = sess.run([root.dense.w, root.dense.b, root.step])
    np.testing.assert_array_equal(w, W)
    np.testing.assert_array_equal(b, B)
    assert step == 7

    with sk.Graph().as_default(), sk.Session() as sess, pytest.raises(errors.UnimplementedError) as e:
        sm.loader.load(sess, ["serve"], export_dir)
    assert "TF2 SavedModel" in str(e.value) and "StatefulPartitionedCall" in str(e.value)
    with sk.Graph().as_default(), pytest.raises(OSError, match="tf.saved_model.save.*load_checkpoint"):
        sk.train.import_meta_graph(os.path.join(export_dir, "saved_model.pb"))


def test_tensorflows_saved_model_files_parse_and_reserialize_byte_for_byte(exchange):
    from saverkit.protobuf import saved_model_pb2

    for name in ("tf_builder", "tf_simple", "tf2"):
        data = pathlib.Path(exchange["dirs"][name], "saved_model.pb").read_bytes()
        saved_model = saved_model_pb2.SavedModel.FromString(data)
        assert saved_model.SerializeToString(deterministic=True) == data, name
    nodes = saved_model.meta_graphs[0].object_graph_def.nodes  # the TF2 export's object graph
    kinds = [n.WhichOneof("kind") for n in nodes]
    assert kinds.count("variable") == 7 and "function" in kinds
    names = {nodes[c.node_id].variable.name for n in nodes for c in n.children if c.local_name in ("w", "b")}
    assert names == {"w", "b"}


def test_tf2_saved_model_objects_rebuild_as_a_module_tree_whose_functions_refuse_to_run(exchange):
    export_dir = exchange["dirs"]["tf2"]
    with sk.Graph().as_default(), sk.Session() as sess:
        root = sm.load_module_tree(export_dir)
        sess.run(sk.global_variables_initializer())
        np.testing.assert_array_equal(sess.run(root.dense.w), W)
        np.testing.assert_array_equal(sess.run(root.stack[1].b), B)
        assert sess.run(root.step) == 7 and sess.run(root.extra["scale"]) == 2.5
        np.testing.assert_array_equal(sess.run(root.stack[0]), [1, 2])
        assert len(root.trainable_variables) == 7  # w and b twice, scale, s0, step: all trainable in TF
        with pytest.raises(errors.UnimplementedError, match=r"dense\.__call__ is a TensorFlow function"):
            root.dense.__call__(np.ones((1, 3), np.float32))
        with pytest.raises(errors.UnimplementedError, match="signatures.serving_default"):
            root.signatures["serving_default"](x=np.ones((1, 3), np.float32))
