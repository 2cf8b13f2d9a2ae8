"""Systems under test: saverkit (Saver and raw engine), installed peers, and physical bounds.

Each system runs inside a fresh subprocess (see io_throughput.py). The protocol:
  load()                      heavy imports, before the RSS baseline is taken
  setup(wl, op, path) -> ctx  build state (variables hold the payload for 'save'/'restore_inplace')
  before_rep(ctx)             untimed per-repetition preparation (e.g. a fresh session)
  save(ctx, path) / restore(ctx, path) -> out      the timed call
  after_rep(ctx, out)         untimed release of what a fresh restore produced
  value(ctx, out, i)          variable i after a restore, for verification
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import threading

import numpy as np
from workloads import Workload

CHUNK = 16 << 20  # bytes per pwrite/preadv in the physical bounds (the "16 MiB chunks")


class System:
    name = ""
    group = "peer"  # saverkit | peer | bound
    ops: tuple[str, ...] = ("save", "restore")
    kinds = ("float32", "string")
    module = ""  # importable module that must exist
    slow_construct = False  # construction takes minutes: one cold run instead of warm-up + repetitions
    about = ""

    def unavailable(self) -> str | None:
        if self.module and importlib.util.find_spec(self.module) is None:
            return f"{self.module} not installed"
        return None

    def load(self) -> None:
        pass

    def before_rep(self, ctx) -> None:
        pass

    def after_rep(self, ctx, out) -> None:
        pass

    def value(self, ctx, out, i: int) -> np.ndarray | None:
        return out[i]


# --------------------------------------------------------------------------- saverkit


class SaverkitEngine(System):
    name, group, module = "saverkit-engine", "saverkit", "saverkit.bundle"
    ops = ("save", "restore", "restore_inplace")
    about = "saverkit.bundle.write_bundle / read_tensors (out= for in place)"
    durable = False

    def load(self):
        import saverkit.bundle

        self.bundle = saverkit.bundle

    def setup(self, wl: Workload, op: str, path: str):
        ctx = {"names": wl.names}
        if op == "save":
            ctx["arrays"] = wl.arrays()
        elif op == "restore_inplace":
            ctx["out"] = wl.empty_like_all()
        return ctx

    def save(self, ctx, path):
        self.bundle.write_bundle(path, ctx["names"], ctx["arrays"], durable=self.durable)

    def restore(self, ctx, path):
        return self.bundle.read_tensors(path, ctx["names"], out=ctx.get("out"))


class SaverkitEngineDurable(SaverkitEngine):
    name = "saverkit-engine-durable"
    ops = ("save",)
    about = "write_bundle(durable=True): fsync data, index and directory"
    durable = True


class _GraphSaver(System):
    """Shared shape of TF1-style Saver benchmarks (saverkit.train.Saver and tf.compat.v1.train.Saver)."""

    sharded = False
    durable = False
    ops = ("save", "restore", "restore_inplace")

    def setup(self, wl: Workload, op: str, path: str):
        ctx = {"wl": wl, "fresh": op == "restore"}
        ctx["graph"], ctx["vars"], ctx["saver"] = self.build(wl)
        if op in ("save", "restore_inplace"):
            ctx["sess"] = self.session(ctx)
            self.fill(ctx, wl.arrays() if op == "save" else wl.empty_like_all())
        return ctx

    def before_rep(self, ctx):
        if ctx["fresh"]:  # fresh restore: a new session whose variables are uninitialised
            ctx["sess"] = self.session(ctx)

    def after_rep(self, ctx, out):
        if ctx["fresh"]:
            ctx.pop("sess").close()

    def value(self, ctx, out, i):
        return ctx["sess"].run(ctx["vars"][i])

    def construct(self, wl: Workload) -> tuple[float, float]:
        import time

        t0 = time.perf_counter()
        graph, variables, _ = self.build(wl, with_saver=False)
        t1 = time.perf_counter()
        with graph.as_default():
            self.make_saver(variables)
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1


class SaverkitSaver(_GraphSaver):
    name, group, module = "saverkit-saver", "saverkit", "saverkit.train"
    ops = ("construct", "save", "restore", "restore_inplace")
    about = "saverkit.train.Saver on a saverkit.Session"

    def load(self):
        import saverkit

        self.sk = saverkit

    def _initial(self, wl, i):
        sk = self.sk
        if wl.kind == "string":
            return sk.constant(np.full(wl.shape(i), b"", dtype=object))
        return sk.zeros(wl.shape(i), dtype=sk.float32)

    def build(self, wl, with_saver=True):
        sk = self.sk
        g = sk.Graph()
        with g.as_default():
            variables = []
            for i, name in enumerate(wl.names):
                dev = sk.device(f"/cpu:{i % 2}") if self.sharded else contextlib.nullcontext()
                with dev:
                    variables.append(sk.Variable(self._initial(wl, i), name=name))
            saver = self.make_saver(variables) if with_saver else None
        return g, variables, saver

    def make_saver(self, variables):
        kw = {"durable": True} if self.durable else {}
        return self.sk.train.Saver(variables, sharded=self.sharded, **kw)

    def session(self, ctx):
        return self.sk.Session(graph=ctx["graph"])

    def fill(self, ctx, arrays):
        sess = ctx["sess"]
        with ctx["graph"].as_default():
            sess.run([v.initializer for v in ctx["vars"]])
            for v, a in zip(ctx["vars"], arrays, strict=True):
                v.load(a, sess)

    def save(self, ctx, path):
        ctx["saver"].save(ctx["sess"], path, write_meta_graph=False, write_state=False)

    def restore(self, ctx, path):
        ctx["saver"].restore(ctx["sess"], path)


class SaverkitSaverSharded(SaverkitSaver):
    name = "saverkit-saver-sharded"
    ops = ("save", "restore", "restore_inplace")
    about = "Saver(sharded=True), variables alternating over /cpu:0 and /cpu:1"
    sharded = True


class SaverkitSaverDurable(SaverkitSaver):
    name = "saverkit-saver-durable"
    ops = ("save",)
    about = "Saver(durable=True): fsync data, index and directory"
    durable = True


# --------------------------------------------------------------------------- TensorFlow


def _import_tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    return tf


class TF1Saver(_GraphSaver):
    name, module = "tf1-saver", "tensorflow"
    ops = ("construct", "save", "restore", "restore_inplace")
    slow_construct = True
    about = "tf.compat.v1.train.Saver, TF1 behaviour (ref variables, graph mode)"

    def load(self):
        self.tf = _import_tf()
        self.tf.compat.v1.disable_v2_behavior()  # this process only: the classic TF1 Saver path

    def build(self, wl, with_saver=True):
        tf = self.tf
        g = tf.Graph()
        with g.as_default():
            variables = []
            for i, name in enumerate(wl.names):
                dev = tf.device(f"/cpu:{i % 2}") if self.sharded else contextlib.nullcontext()
                with dev:
                    if wl.kind == "string":
                        init = tf.constant("", shape=wl.shape(i), dtype=tf.string)
                    else:
                        init = tf.zeros(wl.shape(i), dtype=tf.float32)
                    variables.append(tf.compat.v1.Variable(init, name=name))
            saver = self.make_saver(variables) if with_saver else None
        return g, variables, saver

    def make_saver(self, variables):
        return self.tf.compat.v1.train.Saver(variables, sharded=self.sharded)

    def session(self, ctx):
        config = self.tf.compat.v1.ConfigProto(device_count={"CPU": 2}) if self.sharded else None
        return self.tf.compat.v1.Session(graph=ctx["graph"], config=config)

    def fill(self, ctx, arrays):
        # One run feeding every initializer's initial value, instead of a placeholder per variable.
        feed = {v.initializer.inputs[1]: a for v, a in zip(ctx["vars"], arrays, strict=True)}
        ctx["sess"].run([v.initializer for v in ctx["vars"]], feed_dict=feed)

    def save(self, ctx, path):
        ctx["saver"].save(ctx["sess"], path, write_meta_graph=False, write_state=False)

    def restore(self, ctx, path):
        ctx["saver"].restore(ctx["sess"], path)


class TF1SaverSharded(TF1Saver):
    name = "tf1-saver-sharded"
    ops = ("save", "restore")
    about = "tf.compat.v1.train.Saver(sharded=True) over 2 CPU devices"
    sharded = True


class TF2Checkpoint(System):
    name, module = "tf2-checkpoint", "tensorflow"
    ops = ("save", "restore_inplace")
    about = "tf.train.Checkpoint.write / read (restores into existing variables)"

    def load(self):
        self.tf = _import_tf()

    def setup(self, wl, op, path):
        tf = self.tf
        arrays = wl.arrays() if op == "save" else wl.empty_like_all()
        variables = [tf.Variable(a, name=n) for a, n in zip(arrays, wl.names, strict=True)]
        del arrays
        return {"vars": variables, "ckpt": tf.train.Checkpoint(vars=variables)}

    def save(self, ctx, path):
        ctx["ckpt"].write(path)

    def restore(self, ctx, path):
        ctx["ckpt"].read(path)

    def value(self, ctx, out, i):
        return ctx["vars"][i].numpy()


# --------------------------------------------------------------------------- other peers


class Safetensors(System):
    name, module = "safetensors", "safetensors"
    kinds = ("float32",)
    about = "safetensors.numpy save_file / load_file"

    def load(self):
        import safetensors.numpy as stn

        self.stn = stn

    def setup(self, wl, op, path):
        ctx = {"names": wl.names}
        if op == "save":
            ctx["arrays"] = wl.arrays()
        return ctx

    def save(self, ctx, path):
        self.stn.save_file(dict(zip(ctx["names"], ctx["arrays"], strict=True)), path + ".safetensors")

    def restore(self, ctx, path):
        d = self.stn.load_file(path + ".safetensors")
        return [d[n] for n in ctx["names"]]


class NumpySavez(System):
    name = "numpy-savez"
    about = "np.savez / np.load (uncompressed .npz)"

    def setup(self, wl, op, path):
        ctx = {"names": wl.names}
        if op == "save":
            ctx["arrays"] = wl.arrays()
        return ctx

    def save(self, ctx, path):
        np.savez(path + ".npz", **dict(zip(ctx["names"], ctx["arrays"], strict=True)))

    def restore(self, ctx, path):
        with np.load(path + ".npz", allow_pickle=True) as z:
            return [z[n] for n in ctx["names"]]


class Torch(System):
    name, module = "torch", "torch"
    kinds = ("float32",)
    about = "torch.save / torch.load(weights_only=True)"

    def load(self):
        import torch

        self.torch = torch

    def setup(self, wl, op, path):
        ctx = {"names": wl.names}
        if op == "save":
            ctx["tensors"] = {n: self.torch.from_numpy(a) for n, a in zip(wl.names, wl.arrays(), strict=True)}
        return ctx

    def save(self, ctx, path):
        self.torch.save(ctx["tensors"], path + ".pt")

    def restore(self, ctx, path):
        d = self.torch.load(path + ".pt", weights_only=True)
        return [d[n] for n in ctx["names"]]

    def value(self, ctx, out, i):
        return out[i].numpy()


# --------------------------------------------------------------------------- physical bounds


def _pwrite_all(fd: int, mv: memoryview, offset: int) -> None:
    for lo in range(0, len(mv), CHUNK):
        piece = mv[lo : lo + CHUNK]
        done = 0
        while done < len(piece):
            done += os.pwrite(fd, piece[done:], offset + lo + done)


def _preadv_all(fd: int, mv: memoryview, offset: int) -> None:
    for lo in range(0, len(mv), CHUNK):
        piece = mv[lo : lo + CHUNK]
        done = 0
        while done < len(piece):
            n = os.preadv(fd, [piece[done:]], offset + lo + done)
            if n == 0:
                raise EOFError("bound file shorter than the payload")
            done += n


def _in_threads(fns) -> None:
    errors: list[BaseException] = []

    def run(fn):
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            errors.append(e)

    threads = [threading.Thread(target=run, args=(fn,)) for fn in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def _payload_bytes(wl: Workload) -> np.ndarray:
    return wl.buffer().view(np.uint8)


class BoundWrite(System):
    group = "bound"
    kinds = ("float32",)
    ops = ("save",)
    files = 1
    fdatasync = False
    name = "bound-write-1file"
    about = "one thread, pwrite 16 MiB chunks into one file (page cache)"

    def setup(self, wl, op, path):
        return {"buf": memoryview(_payload_bytes(wl)).cast("B")}

    def save(self, ctx, path):
        buf = ctx["buf"]
        part = -(-len(buf) // self.files)

        def write(k):
            fd = os.open(f"{path}.{k}.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                _pwrite_all(fd, buf[k * part : (k + 1) * part], 0)
                if self.fdatasync:
                    os.fdatasync(fd)
            finally:
                os.close(fd)

        _in_threads([lambda k=k: write(k) for k in range(self.files)])


class BoundWrite2(BoundWrite):
    name, files = "bound-write-2files", 2
    about = "two threads, each pwrite 16 MiB chunks into its own file (page cache)"


class BoundWriteDurable(BoundWrite):
    name, fdatasync = "bound-write-fdatasync", True
    about = "one file, pwrite 16 MiB chunks then fdatasync (dd conv=fdatasync)"


class BoundRead(System):
    group = "bound"
    kinds = ("float32",)
    ops = ("restore_inplace",)
    threads = 1
    name = "bound-preadv-1thread"
    about = "preadv 16 MiB chunks into an already-touched array, one thread"
    shared_dir = "bound-read"  # both read bounds use one file, written by whichever runs first

    def setup(self, wl, op, path):
        data = path + ".bin"
        if not os.path.exists(data) or os.path.getsize(data) != wl.nbytes:
            src = memoryview(_payload_bytes(wl)).cast("B")
            fd = os.open(data, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                _pwrite_all(fd, src, 0)
            finally:
                os.close(fd)
            del src
        return {"dst": np.ones(wl.nbytes, dtype=np.uint8), "wl": wl}

    def restore(self, ctx, path):
        dst = memoryview(ctx["dst"]).cast("B")
        chunks = -(-len(dst) // CHUNK)
        per = -(-chunks // self.threads) * CHUNK  # each thread reads one contiguous half
        fd = os.open(path + ".bin", os.O_RDONLY)
        try:
            _in_threads([lambda k=k: _preadv_all(fd, dst[k * per : (k + 1) * per], k * per)
                         for k in range(self.threads)])
        finally:
            os.close(fd)

    def value(self, ctx, out, i):
        wl = ctx["wl"]
        n = wl.elems_per_var
        return ctx["dst"].view(np.float32)[i * n : (i + 1) * n].reshape(wl.shape(i))


class BoundRead2(BoundRead):
    name, threads = "bound-preadv-2threads", 2
    about = "preadv 16 MiB chunks into an already-touched array, two threads"


ALL = [
    SaverkitSaver, SaverkitSaverSharded, SaverkitSaverDurable, SaverkitEngine, SaverkitEngineDurable,
    TF1Saver, TF1SaverSharded, TF2Checkpoint, Safetensors, NumpySavez, Torch,
    BoundWrite, BoundWrite2, BoundWriteDurable, BoundRead, BoundRead2,
]
BY_NAME = {cls.name: cls for cls in ALL}
