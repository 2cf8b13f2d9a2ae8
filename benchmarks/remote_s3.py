"""Remote checkpoints: save and restore of W1/W2 against a local S3 server (moto on 127.0.0.1, started
here), next to the transport bound and the staging alternatives ('save locally then upload', 'download
then read').

    python benchmarks/remote_s3.py [--scale 0.25] [--repeat 3] [--workloads W1,W2] [--lazy-mib 1024]

The transport bound is the same bytes as one object, sent and fetched by the same client (s3fs) in the
same run: uploads by saverkit's own upload routine (parts from the array's memory, in parallel) with
saverkit's part size and concurrency and with a few others, and by s3fs's pipe_file; downloads as parallel
ranged GETs of saverkit's request size and larger ones, and as one whole-object GET. The ratios line
compares saverkit with its own setting ("own") and with the best of all of them ("best"). "restore,
ranges prefetched" is a restore whose ranges were fetched beforehand: the engine's share (plan, copy
into the arrays, CRC32C). Last, the lazy read: the bytes ``load_checkpoint(url).get_tensor(name)`` fetches
for one 4 MiB tensor of a 1 GiB checkpoint (the issue's target: at most the index + 1.1x the tensor).

moto is a Python server: its throughput, not the network's, bounds every figure here, and it serves a
ranged GET by reading the whole object, so on moto fewer, larger GETs always win (not so on S3). Needs
saverkit[s3] and moto[server] (the [test] extra).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from workloads import Workload  # noqa: E402


def _best(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def _prefetched(url, names):
    """read_tensors(url, names) with the data ranges fetched once beforehand (no transport)."""
    from saverkit import bundle, storage

    cache: dict = {}
    real = storage.Location.read_ranges

    def replay(self, urls, starts, ends):
        key = (tuple(urls), tuple(starts), tuple(ends))
        if key not in cache:
            cache[key] = real(self, urls, starts, ends)
        return cache[key]

    # The restore with every range already fetched: the engine's share (plan, copy from the fetched
    # bytes into the arrays, CRC32C), which a read straight into the arrays would shrink only by the copy.
    def run(outs):
        storage.Location.read_ranges = replay
        try:
            bundle.read_tensors(url, names, out=outs)
        finally:
            storage.Location.read_ranges = real

    return run


def _ratios(results):
    """The issue's targets: saverkit vs the transport bound (saverkit's own request sizes, and the best
    of the sweep) and vs the staging paths."""
    def best(prefix):
        return min(t for k, t in results.items() if k.startswith(prefix))

    save, restore = results["saverkit save"], results["saverkit restore"]
    own_put = next(t for k, t in results.items() if k.endswith("(saverkit's)") and "PUT" in k)
    own_get = next(t for k, t in results.items() if k.endswith("(saverkit's)") and "GET" in k)
    return {"save/own-PUT": own_put / save, "save/best-PUT": best("raw PUT") / save,
            "save vs staged": results["save locally, then upload"] / save,
            "restore/own-GET": own_get / restore, "restore/best-GET": best("raw GET") / restore,
            "restore vs staged": results["download, then read"] / restore,
            "engine share of restore": results["restore, ranges prefetched"] / restore}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=0.25)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workloads", default="W1,W2")
    ap.add_argument("--lazy-mib", type=int, default=1024,
                    help="size of the checkpoint for the lazy-read count (4 MiB tensors; 0: skip it)")
    args = ap.parse_args()

    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update({"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "x",
                       "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"})
    import s3fs
    from saverkit import bundle, storage

    fs = s3fs.S3FileSystem()
    fs.mkdir("bench")
    rows = []
    ratios: dict = {}
    load = os.getloadavg()
    try:
        for name in [w for w in args.workloads.split(",") if w]:
            w = Workload.make(name, args.scale)
            arrays, names = w.arrays(), w.names
            nbytes = w.nbytes
            url = f"s3://bench/{name}/model"
            outs = [np.empty_like(a) for a in arrays]
            loc = storage.Location(url)

            def save(url=url, names=names, arrays=arrays):
                bundle.write_bundle(url, names, arrays)

            def restore(url=url, names=names, outs=outs):
                bundle.read_tensors(url, names, out=outs)

            flat = np.concatenate([a.reshape(-1) for a in arrays]).view(np.uint8)
            raw_path = f"bench/{name}/raw"
            n = flat.nbytes

            def raw_put(part=storage.PART_SIZE, in_flight=storage.MAX_PARTS_IN_FLIGHT, flat=flat,
                        raw_path=raw_path):
                # saverkit's own upload routine (views of the array, parts in parallel) on one buffer
                old = storage.PART_SIZE, storage.MAX_PARTS_IN_FLIGHT
                storage.PART_SIZE, storage.MAX_PARTS_IN_FLIGHT = part, in_flight
                try:
                    storage.Location("s3://" + raw_path).write_segments("s3://" + raw_path, [(0, flat)],
                                                                        flat.nbytes)
                finally:
                    storage.PART_SIZE, storage.MAX_PARTS_IN_FLIGHT = old

            def s3fs_pipe(flat=flat, raw_path=raw_path):
                # s3fs's own choice: one PUT below 100 MiB, else 50 MiB parts, its default concurrency
                fs.pipe_file(raw_path, flat.tobytes())

            def raw_get(step=storage.PART_SIZE, n=n, raw_path=raw_path):
                starts = list(range(0, n, step))
                fs.cat_ranges([raw_path] * len(starts), starts, [min(s + step, n) for s in starts])

            def whole_get(raw_path=raw_path):
                fs.cat_file(raw_path)

            tmp = tempfile.mkdtemp(prefix="sk-bench-")

            def save_then_upload(tmp=tmp, name=name, names=names, arrays=arrays):
                bundle.write_bundle(os.path.join(tmp, "model"), names, arrays)
                fs.put(os.path.join(tmp, "model.data-00000-of-00001"), f"bench/{name}/staged/")
                fs.put(os.path.join(tmp, "model.index"), f"bench/{name}/staged/")

            def download_then_read(tmp=tmp, name=name, names=names, outs=outs):
                d = os.path.join(tmp, "down")
                shutil.rmtree(d, ignore_errors=True)
                os.makedirs(d)
                fs.get(f"bench/{name}/staged/", d + "/", recursive=True)
                bundle.read_tensors(os.path.join(d, "model"), names, out=outs)

            MiB = 1 << 20
            put_sweep = [(f"raw PUT {p // MiB} MiB x{f}", lambda p=p, f=f: raw_put(p, f))
                         for p, f in ((16 << 20, 4), (16 << 20, 16), (32 << 20, 8), (64 << 20, 8))
                         if p < n]
            put_sweep.append(("raw PUT s3fs.pipe_file", s3fs_pipe))
            get_sweep = [(f"raw GET {p // MiB} MiB ranges", lambda p=p: raw_get(p))
                         for p in (32 << 20, 64 << 20) if p < n]
            get_sweep.append(("raw GET whole object", whole_get))
            ps, pf = storage.PART_SIZE // MiB, storage.MAX_PARTS_IN_FLIGHT
            results = {}
            for label, fn in [("saverkit save", save), (f"raw PUT {ps} MiB x{pf} (saverkit's)", raw_put),
                              *put_sweep, ("save locally, then upload", save_then_upload),
                              ("saverkit restore", restore),
                              (f"raw GET {ps} MiB ranges (saverkit's)", raw_get), *get_sweep,
                              ("download, then read", download_then_read)]:
                results[label] = _best(fn, args.repeat)
                loc.invalidate()
            fetched = _prefetched(url, names)
            fetched(outs)  # fills the cache: the timed runs do no transport
            results["restore, ranges prefetched"] = _best(lambda fetched=fetched, outs=outs: fetched(outs),
                                                          args.repeat)
            ratios[name] = _ratios(results)
            for a, b in zip(arrays, outs, strict=True):
                assert np.array_equal(a, b)
            shutil.rmtree(tmp, ignore_errors=True)
            for label, t in results.items():
                rows.append((name, w.count, nbytes, label, t, nbytes / t / 1e6))
        lazy = _lazy_read(fs, args.lazy_mib) if args.lazy_mib else None
    finally:
        server.stop()
    print(f"scale {args.scale}, best of {args.repeat}, moto S3 on 127.0.0.1, {os.cpu_count()} cores, "
          f"load average {load[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end")
    print(f"{'workload':8} {'tensors':>7} {'MiB':>7}  {'what':36} {'seconds':>8} {'MB/s':>8}")
    for name, count, nbytes, label, t, rate in rows:
        print(f"{name:8} {count:7d} {nbytes / 2**20:7.0f}  {label:36} {t:8.3f} {rate:8.1f}")
    print()
    for name, r in ratios.items():
        print(f"{name}: " + ", ".join(f"{k} {v:.2f}x" for k, v in r.items()))
    if lazy is not None:
        total, index, tensor, counted = lazy
        fetched = counted["bytes"]
        print(f"\nlazy read: load_checkpoint(url).get_tensor() of one {tensor / 2**20:.0f} MiB tensor of a "
              f"{total / 2**20:.0f} MiB checkpoint fetched {fetched} bytes ({counted['objects']} whole "
              f"objects, {counted['ranges']} ranges) = the index ({index} bytes) + "
              f"{(fetched - index) / tensor:.4f}x the tensor's {tensor} bytes (target: <= index + 1.1x)")


def _lazy_read(fs, mib):
    """Bytes a lazy reader fetches for one 4 MiB tensor of a ``mib`` MiB checkpoint on the store, counted
    at saverkit's two ways of reading a store (``Location.read_bytes``: whole objects, the index;
    ``read_ranges``: byte ranges), as the bodies the store returned."""
    from saverkit import bundle, storage, train

    n, size = max(mib // 4, 2), 1 << 20  # float32 elements: 4 MiB a tensor
    names = [f"layer_{i:04d}/kernel" for i in range(n)]
    bundle.write_bundle("s3://bench/lazy/model", names, [np.full(size, i, np.float32) for i in range(n)])
    total = sum(fs.size(p) for p in fs.ls("bench/lazy"))
    index = fs.size("bench/lazy/model.index")
    counted = {"bytes": 0, "objects": 0, "ranges": 0}
    real_bytes, real_ranges = storage.Location.read_bytes, storage.Location.read_ranges

    def read_bytes(self, url, limit=None):
        data = real_bytes(self, url, limit)
        counted["bytes"] += len(data)
        counted["objects"] += 1
        return data

    def read_ranges(self, urls, starts, ends):
        out = real_ranges(self, urls, starts, ends)
        counted["bytes"] += sum(len(d) for d in out)
        counted["ranges"] += len(out)
        return out

    storage.Location.read_bytes, storage.Location.read_ranges = read_bytes, read_ranges
    try:
        value = train.load_checkpoint("s3://bench/lazy/model").get_tensor(names[n // 2])
    finally:
        storage.Location.read_bytes, storage.Location.read_ranges = real_bytes, real_ranges
    assert np.array_equal(value, np.full(size, n // 2, np.float32))
    return total, index, value.nbytes, counted


if __name__ == "__main__":
    main()
