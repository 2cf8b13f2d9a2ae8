#!/usr/bin/env python3
"""How fast is the graph layer? Build N variables, initialize them, fetch them all, export the graph.

Usage: .venv/bin/python benchmarks/graph_build.py [--n 10000] [--repeat 3]
Targets (issue 4): building a graph of 10,000 variables < 1 s; running the initializer and fetching all
variables should take milliseconds, not seconds. Both wall and CPU time are printed: on a shared machine
the CPU time of this process is the steadier number.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import saverkit as sk


def best_of(repeat: int, fn) -> tuple[float, float, object]:
    """(best wall seconds, best CPU seconds, last result) over ``repeat`` calls."""
    wall, cpu, result = float("inf"), float("inf"), None
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        result = fn()
        wall = min(wall, time.perf_counter() - w)
        cpu = min(cpu, time.process_time() - c)
    return wall, cpu, result


def show(label: str, wall: float, cpu: float, note: str = "") -> None:
    print(f"{label:<42} {wall * 1e3:9.1f} ms wall {cpu * 1e3:9.1f} ms cpu  {note}")


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

    # The initial value's kind decides the path: arrays (and Tensors made beforehand) take the Variable
    # fast path; zeros() itself adds a Const (< 1000 elements) or a Fill and two Consts, as TF. Built
    # first, from the same small heap (every cyclic-GC pass walks all live objects), and dropped.
    kinds = {
        "Variable(sk.zeros([4]))": lambda i: sk.Variable(sk.zeros([4]), name=f"v{i}"),
        "Variable(sk.zeros([6710])) (W2, a Fill)": lambda i: sk.Variable(sk.zeros([6710]), name=f"v{i}"),
    }
    kind_rows = []
    for label, make in kinds.items():

        def build_kind(make=make) -> None:
            with sk.Graph().as_default():
                for i in range(args.n):
                    make(i)

        kind_rows.append((f"build {args.n} x {label}", *best_of(args.repeat, build_kind)[:2]))

    wall, cpu, g = best_of(args.repeat, build)
    print(f"variables: {args.n}  ops: {len(g.get_operations())}")
    show(f"build graph of {args.n} variables", wall, cpu, "(target < 1000 ms)")
    for label, wall, cpu in kind_rows:
        show(label, wall, cpu)
    init = g.get_operation_by_name("init")
    var_list = g.get_collection(sk.GraphKeys.GLOBAL_VARIABLES)
    with sk.Session(graph=g) as sess:
        show("run initializer (first)", *best_of(1, lambda: sess.run(init))[:2], "plan built")
        show("run initializer", *best_of(args.repeat, lambda: sess.run(init))[:2], "plan cached")
        show("fetch all variables (first)", *best_of(1, lambda: sess.run(var_list))[:2], "plan built")
        wall, cpu, fetched = best_of(args.repeat, lambda: sess.run(var_list))
        show("fetch all variables", wall, cpu, "plan cached")
        assert all(float(f[0]) == i for i, f in enumerate(fetched))
    show("as_graph_def (first)", *best_of(1, g.as_graph_def)[:2], "NodeDefs serialized")
    wall, cpu, graph_def = best_of(args.repeat, g.as_graph_def)
    show("as_graph_def", wall, cpu, f"cached NodeDefs, {graph_def.ByteSize() / 1e6:.1f} MB")

    def reimport() -> None:
        with sk.Graph().as_default():
            sk.import_graph_def(graph_def)

    show("import_graph_def", *best_of(1, reimport)[:2])


if __name__ == "__main__":
    main()
