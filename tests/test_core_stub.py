"""python/saverkit/_core.pyi describes the built engine: the same names, the same Reader members."""

import ast
import pathlib

from saverkit import _core

STUB = pathlib.Path(__file__).resolve().parents[1] / "python" / "saverkit" / "_core.pyi"


def _stub_names() -> tuple[set[str], set[str]]:
    tree = ast.parse(STUB.read_text())
    top, reader = set(), set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            top.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            top.add(node.target.id)
        elif isinstance(node, ast.ClassDef):
            top.add(node.name)
            if node.name == "Reader":
                reader = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
    return top, reader


def test_the_stub_names_exactly_what_the_engine_exports():
    top, _ = _stub_names()
    built = {n for n in dir(_core) if not n.startswith("__")}
    assert top == built, f"missing from the stub: {sorted(built - top)}; not built: {sorted(top - built)}"


def test_the_stub_names_exactly_the_readers_members():
    _, reader = _stub_names()
    built = {n for n in vars(_core.Reader) if not n.startswith("__") and n != "_pybind11_conduit_v1_"}
    assert reader - {"__init__"} == built, (sorted(built - reader), sorted(reader - built))
