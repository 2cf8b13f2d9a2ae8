#!/usr/bin/env python3
"""How fast is the graph layer? Build N variables, initialize them, fetch them all.

Usage: .venv/bin/python benchmarks/graph_build.py [--n 10000] [--repeat 3]
Targets (issue 4): building a graph of 10,000 variables < 1 s; running the initializer and fetching all
variables should take milliseconds, not seconds.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import saverkit as sk


def best_of(repeat: int, fn) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="number of variables")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (best is reported)")
    args = parser.parse_args()
    values = [np.full((4,), i, np.float32) for i in range(args.n)]

    def build() -> sk.Graph:
        g = sk.Graph()
        with g.as_default():
            for i, v in enumerate(values):
                sk.Variable(v, name=f"v{i}")
            sk.global_variables_initializer()
        return g

    t_build, g = best_of(args.repeat, build)
    n_ops = len(g.get_operations())
    with g.as_default():
        init = g.get_operation_by_name("init")
        var_list = sk.global_variables()
    with sk.Session(graph=g) as sess:
        t = time.perf_counter()
        sess.run(init)
        t_init_first = time.perf_counter() - t
        t_init, _ = best_of(args.repeat, lambda: sess.run(init))
        t = time.perf_counter()
        sess.run(var_list)
        t_fetch_first = time.perf_counter() - t
        t_fetch, fetched = best_of(args.repeat, lambda: sess.run(var_list))
        assert all(float(f[0]) == i for i, f in enumerate(fetched))
    t_def, graph_def = best_of(1, g.as_graph_def)

    print(f"variables: {args.n}  ops: {n_ops}")
    print(f"build graph:                       {t_build * 1e3:8.1f} ms   (target < 1000 ms)")
    print(
        f"run global_variables_initializer:  {t_init_first * 1e3:8.1f} ms first (plan built), "
        f"{t_init * 1e3:6.1f} ms cached"
    )
    print(
        f"fetch all variables:               {t_fetch_first * 1e3:8.1f} ms first (plan built), "
        f"{t_fetch * 1e3:6.1f} ms cached"
    )
    print(f"as_graph_def:                      {t_def * 1e3:8.1f} ms   ({graph_def.ByteSize() / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
