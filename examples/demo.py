#!/usr/bin/env python3
"""saverkit's main demo: train a small graph, checkpoint every step, restore, export for TF Serving.

    ./dev.sh demo            (or: .venv/bin/python examples/demo.py [--dir DIR] [--size N] [--steps K])

Everything here is what ``tf.compat.v1.train.Saver`` users write, with ``saverkit`` in place of ``tf``:
the files it produces are TensorFlow's (TensorFlow's own Saver and ``import_meta_graph`` read them, and
TensorFlow Serving or ``tf.saved_model.load`` load the SavedModel in ``DIR/export/N``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import saverkit as sk


def build_model(n: int):
    """A weight matrix, a bias, a vocabulary and a global step; a training op that updates all of them; and
    the serving computation y = x @ w + b."""
    # Initial values come from Fill ops, not constants: a big constant would be copied into the .meta.
    w = sk.Variable(sk.fill([n, n], 0.01), name="dense/kernel")
    b = sk.Variable(sk.zeros([n]), name="dense/bias")
    vocab = sk.Variable(np.array([b"<pad>", b"hello", b"world"], dtype=object), name="vocab", trainable=False)
    step = sk.train.get_or_create_global_step()
    train_op = sk.group(
        w.assign(w.value() * 0.5 + 1.0),
        b.assign_sub(sk.fill([n], 0.25)),
        step.assign_add(1),
        name="train_op",
    )
    sk.add_to_collection("train_op", train_op)
    x = sk.placeholder(sk.float32, [None, n], name="x")
    y = sk.add(sk.matmul(x, w), b, name="y")
    return w, b, vocab, step, train_op, x, y


def next_version_dir(base: str) -> str:
    """base/N for the next free version N, as TF Serving numbers a model's versions."""
    os.makedirs(base, exist_ok=True)
    versions = [int(n) for n in os.listdir(base) if n.isdigit()]
    return os.path.join(base, str(max(versions, default=0) + 1))


def checkpoint_bytes(prefix: str) -> int:
    d, base = os.path.split(prefix)
    return sum(
        os.path.getsize(os.path.join(d, f))
        for f in os.listdir(d)
        if f == base + ".index" or f.startswith(base + ".data-")
    )


def show_dir(d: str) -> None:
    for name in sorted(os.listdir(d)):
        print(f"    {name:<40} {os.path.getsize(os.path.join(d, name)):>12,d} bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", help="checkpoint directory (default: a fresh temporary one)")
    parser.add_argument("--size", type=int, default=4096, help="the weight matrix is size x size float32")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    ckpt_dir = args.dir or tempfile.mkdtemp(prefix="saverkit-demo-")
    os.makedirs(ckpt_dir, exist_ok=True)
    prefix = os.path.join(ckpt_dir, "model")

    graph = sk.Graph()
    with graph.as_default():
        w, b, vocab, step, train_op, x, y = build_model(args.size)
        saver = sk.train.Saver(max_to_keep=3)
        print(
            f"graph: {len(graph.get_operations())} ops; saver: {saver.saver_def.save_tensor_name} saves, "
            f"{saver.saver_def.restore_op_name} restores"
        )
        print(f"training {args.steps} steps, checkpointing every step into {ckpt_dir} (max_to_keep=3)")
        with sk.Session() as sess:
            sess.run(sk.global_variables_initializer())
            for _ in range(args.steps):
                sess.run(train_op)
                t0 = time.perf_counter()
                # One .meta is enough (exported below): per-step meta graphs only cost time and disk.
                path = saver.save(sess, prefix, global_step=step, write_meta_graph=False)
                dt = time.perf_counter() - t0
                n = checkpoint_bytes(path)
                print(
                    f"  saved {os.path.basename(path):<10} {n:>12,d} bytes in {dt * 1e3:7.1f} ms "
                    f"({n / dt / 1e9:5.2f} GB/s)"
                )
            trained = sess.run({"w": w, "b": b, "vocab": vocab, "step": step})
            meta_file = prefix + ".meta"
            saver.export_meta_graph(meta_file)
            # The trained model for serving: a SavedModel with a Predict signature, x -> y.
            export_dir = next_version_dir(os.path.join(ckpt_dir, "export"))
            sk.saved_model.simple_save(sess, export_dir, inputs={"x": x}, outputs={"y": y})
            probe = np.linspace(-1, 1, 2 * args.size, dtype=np.float32).reshape(2, args.size)
            served = sess.run(y, {x: probe})
    print("kept (oldest deleted):", [os.path.basename(p) for p in saver.last_checkpoints])
    print("files:")
    show_dir(ckpt_dir)

    latest = sk.train.latest_checkpoint(ckpt_dir)
    print(f"restoring {os.path.basename(latest)} into a fresh graph built from {os.path.basename(meta_file)}")
    with sk.Graph().as_default():
        restorer = sk.train.import_meta_graph(meta_file)
        with sk.Session() as sess:
            t0 = time.perf_counter()
            restorer.restore(sess, latest)
            dt = time.perf_counter() - t0
            n = checkpoint_bytes(latest)
            print(f"  restored {n:,d} bytes in {dt * 1e3:.1f} ms ({n / dt / 1e9:.2f} GB/s)")
            names = {"w": "dense/kernel:0", "b": "dense/bias:0", "vocab": "vocab:0", "step": "global_step:0"}
            restored = sess.run(names)
            for key, value in trained.items():
                same = np.array_equal(np.asarray(restored[key]), np.asarray(value))
                if not same:
                    raise SystemExit(f"restored {key} differs from the trained value")
            print(f"  values match; global_step={restored['step']}; vocab={list(restored['vocab'])}")
            sess.run(sk.get_collection("train_op")[0])  # and training continues from the imported graph
            print(f"  one more step from the imported graph: global_step={sess.run('global_step:0')}")

    print(f"SavedModel for TensorFlow Serving in {export_dir}:")
    for root, _, files in sorted(os.walk(export_dir)):
        for name in sorted(files):
            path = os.path.join(root, name)
            print(f"    {os.path.relpath(path, export_dir):<40} {os.path.getsize(path):>12,d} bytes")
    with sk.Graph().as_default(), sk.Session() as sess:
        meta_graph_def = sk.saved_model.loader.load(sess, [sk.saved_model.tag_constants.SERVING], export_dir)
        sig = meta_graph_def.signature_def["serving_default"]
        got = sess.run(sig.outputs["y"].name, {sig.inputs["x"].name: probe})
        if not np.array_equal(got, served):
            raise SystemExit("the loaded SavedModel computes a different y")
        print(f"  loaded back: signature serving_default {sig.inputs['x'].name} -> {sig.outputs['y'].name} "
              "gives the trained model's y")


if __name__ == "__main__":
    main()
