"""Runs TensorFlow's side of the SavedModel interop tests in a subprocess (TF's global graph state and
start-up cost stay out of the test process). Reads a JSON job list from argv[1], prints a JSON result.

Jobs:
  {"do": "tf1_load", "dir": D, "feeds": {key: nested list}}   tf.compat.v1 loader.load + run serving_default
  {"do": "tf2_load", "dir": D, "feeds": {...}}                 tf.saved_model.load + signatures[...] call
  {"do": "write_builder", "dir": D}                            TF1 Builder export with two tag sets + main_op
  {"do": "write_simple", "dir": D}                             TF1 simple_save export
  {"do": "write_tf2", "dir": D}                                TF2 tf.saved_model.save of a tf.Module
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf1 = tf.compat.v1
W = np.arange(6, dtype=np.float32).reshape(3, 2) / 4
B = np.array([0.5, -1.0], np.float32)


def tf1_load(job):
    with tf.Graph().as_default(), tf1.Session() as sess:
        meta = tf1.saved_model.loader.load(sess, job.get("tags", ["serve"]), job["dir"])
        sig = meta.signature_def[job.get("signature", "serving_default")]
        feeds = {sig.inputs[k].name: np.asarray(v, np.float32) for k, v in job["feeds"].items()}
        fetches = {k: t.name for k, t in sig.outputs.items()}
        return {k: _jsonable(v) for k, v in sess.run(fetches, feeds).items()}


def _jsonable(value):
    value = np.asarray(value)
    return value.item().decode() if value.dtype.kind in "OS" else value.tolist()


def tf2_load(job):
    loaded = tf.saved_model.load(job["dir"], tags=job.get("tags", ["serve"]))
    fn = loaded.signatures[job.get("signature", "serving_default")]
    out = fn(**{k: tf.constant(np.asarray(v, np.float32)) for k, v in job["feeds"].items()})
    return {k: _jsonable(v.numpy()) for k, v in out.items()}


def _tf1_model():
    x = tf1.placeholder(tf.float32, [None, 3], name="x")
    w = tf1.get_variable("w", initializer=W)
    b = tf1.get_variable("b", initializer=B)
    counter = tf1.get_variable("counter", initializer=np.int64(0), trainable=False)
    y = tf.add(tf.matmul(x, w), b, name="y")
    return x, y, counter


def write_builder(job):
    with tf.Graph().as_default(), tf1.Session() as sess:
        x, y, counter = _tf1_model()
        total = tf.reduce_sum(y, name="total")
        main_op = tf.group(tf1.assign(counter, 41), name="main_op")
        sess.run(tf1.global_variables_initializer())
        builder = tf1.saved_model.Builder(job["dir"])
        sig = tf1.saved_model.predict_signature_def({"x": x}, {"y": y})
        total_sig = tf1.saved_model.predict_signature_def({"x": x}, {"total": total})
        builder.add_meta_graph_and_variables(
            sess, ["serve"], signature_def_map={"serving_default": sig, "total": total_sig}, main_op=main_op)
        builder.add_meta_graph(["serve", "gpu"], signature_def_map={"serving_default": sig})
        builder.save()
    return {}


def write_simple(job):
    with tf.Graph().as_default(), tf1.Session() as sess:
        x, y, _ = _tf1_model()
        sess.run(tf1.global_variables_initializer())
        tf1.saved_model.simple_save(sess, job["dir"], {"x": x}, {"y": y})
    return {}


def write_tf2(job):
    class Dense(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(W, name="w")
            self.b = tf.Variable(B, name="b")

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32)])
        def __call__(self, x):
            return {"y": tf.matmul(x, self.w) + self.b}

    model = tf.Module()
    model.dense = Dense()
    model.step = tf.Variable(7, dtype=tf.int64)
    model.extra = {"scale": tf.Variable(2.5, name="scale")}
    model.stack = [tf.Variable([1, 2], name="s0"), Dense()]
    tf.saved_model.save(model, job["dir"], signatures={"serving_default": model.dense.__call__})
    return {}


if __name__ == "__main__":
    results = [globals()[job["do"]](job) for job in json.loads(sys.argv[1])]
    print("RESULT " + json.dumps(results))
