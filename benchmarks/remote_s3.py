"""Remote checkpoints: save and restore of W1/W2 against a local S3 server (moto on 127.0.0.1, started
here), next to the transport bound (the same bytes as one object: parallel multipart PUT, parallel
ranged GETs) and the staging alternatives ('save locally then upload', 'download then read').

    python benchmarks/remote_s3.py [--scale 0.25] [--repeat 3] [--workloads W1,W2]

moto is a Python server: its throughput, not the network's, bounds every figure here, which is why
the transport bound is measured against it too. Needs saverkit[s3] and moto[server] (the [test] extra).
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=0.25)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workloads", default="W1,W2")
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
    try:
        for name in args.workloads.split(","):
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

            def raw_put(flat=flat, raw_path=raw_path):
                if flat.nbytes > storage.PART_SIZE:
                    storage._s3_multipart(fs, raw_path, [(0, flat)], flat.nbytes)  # noqa: SLF001
                else:
                    fs.pipe_file(raw_path, flat.tobytes())

            def raw_get(flat=flat, raw_path=raw_path):
                step = storage.PART_SIZE
                starts = list(range(0, flat.nbytes, step))
                fs.cat_ranges([raw_path] * len(starts), starts, [min(s + step, flat.nbytes) for s in starts])

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

            results = {}
            for label, fn in [("saverkit save (s3://)", save), ("raw parallel PUT", raw_put),
                              ("save locally, then upload", save_then_upload),
                              ("saverkit restore (s3://)", restore), ("raw parallel GET", raw_get),
                              ("download, then read", download_then_read)]:
                results[label] = _best(fn, args.repeat)
                loc.invalidate()
            for a, b in zip(arrays, outs, strict=True):
                assert np.array_equal(a, b)
            shutil.rmtree(tmp, ignore_errors=True)
            for label, t in results.items():
                rows.append((name, w.count, nbytes, label, t, nbytes / t / 1e6))
    finally:
        server.stop()
    print(f"scale {args.scale}, best of {args.repeat}, moto S3 on 127.0.0.1, {os.cpu_count()} cores")
    print(f"{'workload':8} {'tensors':>7} {'MiB':>7}  {'what':28} {'seconds':>8} {'MB/s':>8}")
    for name, count, nbytes, label, t, rate in rows:
        print(f"{name:8} {count:7d} {nbytes / 2**20:7.0f}  {label:28} {t:8.3f} {rate:8.1f}")


if __name__ == "__main__":
    main()
