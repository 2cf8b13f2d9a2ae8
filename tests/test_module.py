"""saverkit.Module: attribute tracking, reflection order and name scopes, as tf.Module does them."""

import collections

import numpy as np
import pytest
import saverkit as sk
from saverkit.trackable import NoDependency, breadth_first_traversal


@pytest.fixture(autouse=True)
def fresh_graph():
    g = sk.Graph()
    with g.as_default():
        yield g


def var(value=0.0, name=None, **kw):
    return sk.Variable(np.asarray(value, dtype=np.float32), name=name, **kw)


class Dense(sk.Module):
    def __init__(self, n_in, n_out, name=None):
        super().__init__(name=name)
        with self.name_scope:
            self.kernel = var(np.zeros((n_in, n_out)), name="kernel")
            self.bias = var(np.zeros((n_out,)), name="bias")


class MLP(sk.Module):
    def __init__(self, name=None):
        super().__init__(name=name)
        with self.name_scope:
            self.layers = [Dense(4, 3), Dense(3, 2)]
            self.head = Dense(2, 1, name="head")


def child_names(obj):
    return list(obj._trackable_children())


def test_name_defaults_to_snake_case_of_the_class():
    class MyFancyModule(sk.Module):
        pass

    assert MyFancyModule().name == "my_fancy_module"
    assert sk.Module(name="custom").name == "custom"
    assert sk.Module().name == "module"


@pytest.mark.parametrize("bad", ["1abc", "has space", "a/b", "a.b", ""])
def test_invalid_module_names_are_rejected(bad):
    with pytest.raises(ValueError, match="not a valid module name"):
        sk.Module(name=bad)


def test_name_scopes_are_unique_and_variables_are_created_inside_them():
    a, b = Dense(2, 2), Dense(2, 2)
    assert a.name == b.name == "dense"
    assert a.kernel.name == "dense/kernel:0"
    assert b.kernel.name == "dense_1/kernel:0"
    mlp = MLP()
    assert [v.name for v in mlp.layers[0].variables] == ["mlp/dense/bias:0", "mlp/dense/kernel:0"]
    assert mlp.head.kernel.name == "mlp/head/kernel:0"


def test_with_name_scope_decorator_enters_the_module_scope():
    class Lazy(sk.Module):
        @sk.Module.with_name_scope
        def build(self):
            self.w = var(1.0, name="w")
            return self.w

    m = Lazy()
    assert m.build().name == "lazy/w:0"
    assert Lazy.build.__name__ == "build"


def test_variables_are_sorted_by_attribute_then_submodules_in_discovery_order():
    m = MLP()
    names = [v.name for v in m.variables]
    assert names == [
        "mlp/head/bias:0",
        "mlp/head/kernel:0",
        "mlp/dense/bias:0",
        "mlp/dense/kernel:0",
        "mlp/dense_1/bias:0",
        "mlp/dense_1/kernel:0",
    ]
    assert [s.name for s in m.submodules] == ["head", "dense", "dense"]
    assert m.submodules[1] is m.layers[0]


def test_trainable_and_non_trainable_variables():
    m = sk.Module()
    m.w = var(1.0, name="w")
    m.step = sk.Variable(np.int64(0), name="step", trainable=False)
    assert m.trainable_variables == (m.w,)
    assert m.non_trainable_variables == (m.step,)
    assert set(map(id, m.variables)) == {id(m.w), id(m.step)}


def test_a_variable_reachable_twice_is_listed_once():
    m = sk.Module()
    v = var(1.0, name="v")
    m.a = v
    m.b = [v, {"x": v}]
    assert m.variables == (v,)
    paths = [p for p, _ in m._flatten(predicate=lambda x: x is v, with_path=True)]
    assert paths == [("a",), ("b", 0), ("b", 1, "x")]


def test_dict_values_are_flattened_by_sorted_key():
    m = sk.Module()
    m.d = {"z": var(name="z"), "a": var(name="a"), "m": [var(name="m0"), var(name="m1")]}
    assert [v.name for v in m.variables] == ["a:0", "m0:0", "m1:0", "z:0"]
    # ...while checkpoint children keep insertion order, as TF's _DictWrapper does
    assert child_names(m.d) == ["z", "a", "m"]


def test_unsortable_dict_keys_name_the_property():
    m = sk.Module()
    m.d = {1: "x", "a": "y"}
    with pytest.raises(ValueError, match="Error processing property 'd'"):
        _ = m.variables


def test_attribute_assignment_tracks_in_assignment_order():
    m = MLP()
    assert child_names(m) == ["layers", "head"]
    assert child_names(m.layers) == ["0", "1"]
    assert child_names(m.layers[0]) == ["kernel", "bias"]
    assert isinstance(m.layers, list)  # wrapped, but still a list


def test_plain_values_are_not_tracked():
    m = sk.Module()
    m.rate = 0.1
    m.label = "x"
    m.shape = (3, 4)
    m.arr = np.zeros(3)
    assert child_names(m) == []


def test_tuples_are_tracked_only_when_they_hold_trackables():
    m = sk.Module()
    m.plain = (1, 2)
    m.pair = (var(name="a"), 5, var(name="b"))
    assert type(m.plain) is tuple
    assert child_names(m) == ["pair"]
    assert child_names(m.pair) == ["0", "2"]
    assert m.pair[1] == 5 and m.pair == (m.pair[0], 5, m.pair[2])


def test_namedtuples_keep_their_fields_and_are_named_by_field_and_index():
    Pair = collections.namedtuple("Pair", ["first", "second"])
    m = sk.Module()
    m.p = Pair(var(name="f"), var(name="s"))
    assert isinstance(m.p, Pair)
    assert m.p.first.name == "f:0"
    assert child_names(m.p) == ["first", "second", "0", "1"]
    objects, _, _ = breadth_first_traversal(m)
    assert len(objects) == 4  # root, the tuple, two variables: field and index names share nodes


def test_containers_are_wrapped_recursively():
    m = sk.Module()
    m.nested = {"layers": [Dense(1, 1), (Dense(1, 1), 3)], "empty": []}
    assert child_names(m.nested) == ["layers", "empty"]
    assert child_names(m.nested["layers"]) == ["0", "1"]
    assert child_names(m.nested["layers"][1]) == ["0"]
    assert child_names(m.nested["empty"]) == []


def test_list_mutations_through_the_wrapper_are_tracked():
    m = sk.Module()
    m.layers = []
    a, b, c = var(name="a"), var(name="b"), var(name="c")
    m.layers.append(a)
    m.layers.extend([b])
    m.layers += [c]
    assert child_names(m.layers) == ["0", "1", "2"]
    m.layers.pop(0)
    assert m.layers._trackable_children() == {"0": b, "1": c}


def test_modifying_the_original_list_after_assignment_refuses_to_save():
    m = sk.Module()
    original = []
    m.layers = original
    original.append(var(name="lost"))
    with pytest.raises(ValueError, match="modified outside the wrapper"):
        m.layers._trackable_children()


def test_non_string_dict_keys_with_trackable_values_refuse_to_save():
    m = sk.Module()
    m.d = {1: var(name="v")}
    with pytest.raises(ValueError, match="non-string key"):
        m.d._trackable_children()
    m.ok = {1: "fine"}
    assert child_names(m.ok) == []


def test_no_dependency_keeps_a_value_out_of_checkpoints():
    m = sk.Module()
    v = var(name="v")
    m.untracked = NoDependency(v)
    assert m.untracked is v
    assert child_names(m) == []
    m.lst = NoDependency([v])
    assert type(m.lst) is list


def test_tracking_is_sticky_until_the_attribute_is_deleted():
    m = sk.Module()
    v = var(name="v")
    m.v = v
    m.v = None  # as in TF, replacing a tracked value with a plain one keeps the dependency
    assert m._trackable_children() == {"v": v}
    del m.v
    assert child_names(m) == []
    w = var(name="w")
    m.v = v
    m.v = w  # a trackable replacement takes over the name in place
    assert m._trackable_children() == {"v": w}


def test_module_reflection_ignores_tracking_bookkeeping():
    m = MLP()
    assert all(not k.startswith("_self_") for p, _ in m._flatten(with_path=True) for k in p[:1])


def test_recursive_false_only_lists_own_attributes():
    m = MLP()
    assert [s.name for s in m._flatten(recursive=False, predicate=lambda x: isinstance(x, sk.Module))] == [
        "head",
        "dense",
        "dense",
    ]
    assert list(m._flatten(recursive=False, predicate=sk.trackable.is_variable)) == []


def test_cyclic_module_references_terminate():
    a, b = sk.Module(name="a"), sk.Module(name="b")
    a.b = b
    b.a = a
    a.w = var(name="w")
    assert a.variables == (a.w,)
    assert a.submodules == (b,)


def test_building_a_long_list_stays_fast():
    import time

    m = sk.Module()
    m.items = []
    t0 = time.perf_counter()
    for i in range(20000):
        m.items.append(i)
    assert time.perf_counter() - t0 < 2.0  # quadratic work (the old bug) took ~30 s
