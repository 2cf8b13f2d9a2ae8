"""Session: fetch structures, feeds, pruning, caching, concurrency, errors, lifetime, default session."""

import collections
import threading
import time

import numpy as np
import pytest
import saverkit as sk
from saverkit import errors
from saverkit.framework import op_registry
from saverkit.framework.op_def_library import apply_op

# Test-only ops: one that sleeps (releasing the GIL, like file I/O) on the thread pool, one that counts
# its runs, one that always fails.
op_registry.register_op_def("""
  name: "SleepForTest"
  output_arg { name: "out" type: DT_INT32 }
  attr { name: "seconds" type: "float" }
  is_stateful: true
""")
op_registry.register_op_def("""
  name: "CountForTest"
  output_arg { name: "out" type: DT_INT32 }
  is_stateful: true
""")
op_registry.register_op_def("""
  name: "FailForTest"
  output_arg { name: "out" type: DT_INT32 }
  is_stateful: true
""")
RUNS = collections.Counter()


SPANS = {}


@op_registry.register_kernel("SleepForTest", expensive=True)
def _sleep(ctx):
    RUNS[ctx.op.name] += 1
    start = time.perf_counter()
    time.sleep(ctx.attr("seconds"))
    SPANS[ctx.op.name] = (start, time.perf_counter())
    return [np.array(threading.get_ident() % 1000, np.int32)]


@op_registry.register_kernel("CountForTest")
def _count(ctx):
    RUNS[ctx.op.name] += 1
    return [np.array(RUNS[ctx.op.name], np.int32)]


@op_registry.register_kernel("FailForTest")
def _fail(ctx):
    raise ValueError("this op must not run")


def sleep_op(seconds, name="sleep"):
    return apply_op("SleepForTest", seconds=seconds, name=name).outputs[0]


def count_op(name="count"):
    return apply_op("CountForTest", name=name).outputs[0]


@pytest.fixture(autouse=True)
def graph():
    RUNS.clear()
    SPANS.clear()
    with sk.Graph().as_default() as g:
        yield g


# --- fetches --------------------------------------------------------------------------------------


def test_fetch_single_tensor_op_and_name(graph):
    a = sk.constant([1.0, 2.0], name="a")
    b = sk.multiply(a, 3.0, name="b")
    with sk.Session() as sess:
        np.testing.assert_array_equal(sess.run(b), [3.0, 6.0])
        np.testing.assert_array_equal(sess.run("b:0"), [3.0, 6.0])
        assert sess.run(b.op) is None
        assert sess.run("b") is None
        assert sess.run(b).dtype == np.float32


def test_scalars_come_back_as_numpy_scalars_and_bytes(graph):
    with sk.Session() as sess:
        x = sess.run(sk.constant(2.5))
        assert isinstance(x, np.float32) and x == 2.5
        assert sess.run(sk.constant("hi")) == b"hi"
        strings = sess.run(sk.constant(["a", "bc"]))
        assert strings.dtype == object and list(strings) == [b"a", b"bc"]


def test_nested_fetch_structures(graph):
    Pair = collections.namedtuple("Pair", "x y")
    a = sk.constant(1, name="a")
    b = sk.constant(2, name="b")
    n = sk.no_op()
    dd = collections.defaultdict(int, {"k": b})
    with sk.Session() as sess:
        out = sess.run(
            {"list": [a, (b, n)], "pair": Pair(a, b), "od": collections.OrderedDict(z=a), "dd": dd}
        )
    assert out["list"] == [1, (2, None)]
    assert isinstance(out["list"][1], tuple)
    assert out["pair"] == Pair(1, 2) and isinstance(out["pair"], Pair)
    assert isinstance(out["od"], collections.OrderedDict) and out["od"]["z"] == 1
    assert isinstance(out["dd"], collections.defaultdict) and out["dd"]["k"] == 2 and out["dd"]["new"] == 0
    with sk.Session() as sess:
        assert sess.run([]) == []
        assert sess.run([a, a]) == [1, 1]


def test_fetch_errors(graph):
    sk.constant(1, name="c")
    with sk.Session() as sess:
        with pytest.raises(ValueError, match="cannot be interpreted as a Tensor.*does not exist"):
            sess.run("nope:0")
        with pytest.raises(ValueError, match="not in the graph"):
            sess.run("nope")
        with pytest.raises(TypeError, match="None has invalid type"):
            sess.run(None)
        with pytest.raises(TypeError, match="invalid type"):
            sess.run(3.5)
        with pytest.raises(ValueError, match="not an element of this graph"):
            with sk.Graph().as_default():
                other = sk.constant(1)
            sess.run(other)


def test_fetched_arrays_never_alias_session_state(graph):
    v = sk.Variable(np.zeros(3, np.float32), name="v")
    c = sk.constant(np.ones(3, np.float32))
    with sk.Session() as sess:
        sess.run(v.initializer)
        got = sess.run(v)
        got[0] = 99
        assert sess.run(v)[0] == 0
        const = sess.run(c)
        const[:] = 5
        np.testing.assert_array_equal(sess.run(c), [1, 1, 1])
        snapshot = sess.run(v.value())
        sess.run(v.assign([7.0, 7.0, 7.0]))
        np.testing.assert_array_equal(snapshot, [0, 0, 0])


# --- feeds ----------------------------------------------------------------------------------------


def test_feed_placeholders_by_tensor_and_by_name(graph):
    p = sk.placeholder(sk.float32, [None], name="p")
    q = p * 2.0
    with sk.Session() as sess:
        np.testing.assert_array_equal(sess.run(q, {p: [1, 2]}), [2, 4])
        np.testing.assert_array_equal(sess.run(q, {"p:0": np.array([3.0])}), [6])


def test_unfed_placeholder_error(graph):
    p = sk.placeholder(sk.float32, [None, 3], name="p")
    with sk.Session() as sess:
        with pytest.raises(
            errors.InvalidArgumentError, match=r"must feed a value for placeholder tensor 'p'.*\[\?,3\]"
        ):
            sess.run(p)


def test_feed_overrides_any_tensor_and_prunes_its_producer(graph):
    bad = apply_op("FailForTest", name="bad").outputs[0]
    out = bad + 1
    with sk.Session() as sess:
        assert sess.run(out, {bad: 41}) == 42
        assert sess.run(bad, {bad: 5}) == 5
        with pytest.raises(errors.InvalidArgumentError, match="must not run"):
            sess.run(out)


def test_placeholder_with_default(graph):
    p = sk.placeholder_with_default(sk.constant([1, 2]), [None], name="p")
    with sk.Session() as sess:
        np.testing.assert_array_equal(sess.run(p), [1, 2])
        np.testing.assert_array_equal(sess.run(p, {p: [5, 6, 7]}), [5, 6, 7])


def test_feed_values_are_converted_to_the_tensor_dtype(graph):
    p = sk.placeholder(sk.float32, [2])
    i = sk.placeholder(sk.int8, [])
    s = sk.placeholder(sk.string, [2])
    b = sk.placeholder(sk.bfloat16, [])
    with sk.Session() as sess:
        assert sess.run(p, {p: [1, 2]}).dtype == np.float32
        assert sess.run(p, {p: np.array([1.5, 2.5], np.float64)}).dtype == np.float32
        assert sess.run(i, {i: 7}) == 7
        assert list(sess.run(s, {s: ["x", b"y"]})) == [b"x", b"y"]
        assert float(sess.run(b, {b: 1.5})) == 1.5


@pytest.mark.parametrize(
    "dtype,shape,value,match",
    [
        (sk.float32, [2], [1.0, 2.0, 3.0], "shape"),
        (sk.float32, [None, 2], [1.0, 2.0], "shape"),
        (sk.int32, [], 1.5, "not convertible"),
        (sk.int32, [], "abc", "not convertible"),
        (sk.int8, [], 300, "out of range"),
        (sk.float32, [], 1 + 2j, "not convertible"),
        (sk.bool, [], 1, "not convertible"),
        (sk.string, [], 3, "string"),
    ],
)
def test_bad_feeds_raise_invalid_argument(graph, dtype, shape, value, match):
    p = sk.placeholder(dtype, shape, name="p")
    with sk.Session() as sess:
        with pytest.raises(errors.InvalidArgumentError, match=match):
            sess.run(p, {p: value})


def test_feed_keys_and_values_must_be_sensible(graph):
    p = sk.placeholder(sk.float32, [])
    with sk.Session() as sess:
        with pytest.raises(TypeError, match="feed_dict key"):
            sess.run(p, {"nope:0": 1.0})
        with pytest.raises(TypeError, match="cannot be a Tensor"):
            sess.run(p, {p: sk.constant(1.0)})


def test_fed_arrays_are_not_modified_or_aliased(graph):
    v = sk.Variable(np.zeros(2, np.float32), name="v")
    p = sk.placeholder(sk.float32, [2])
    assign = v.assign(p)
    value = np.array([1.0, 2.0], np.float32)
    with sk.Session() as sess:
        sess.run(v.initializer)
        sess.run(assign, {p: value})
        value[:] = 9
        np.testing.assert_array_equal(sess.run(v), [1, 2])
        echoed = sess.run(p, {p: value})
        echoed[:] = 0
        np.testing.assert_array_equal(value, [9, 9])


# --- pruning and dependencies ---------------------------------------------------------------------


def test_only_the_needed_subgraph_runs(graph):
    used = count_op("used")
    count_op("unrelated")
    apply_op("FailForTest", name="unrelated_failure")
    out = used + 1
    with sk.Session() as sess:
        assert sess.run(out) == 2
    assert RUNS == {"used": 1}


def test_control_dependencies_run_first_and_only_once(graph):
    first = count_op("first")
    with sk.control_dependencies([first]):
        second = count_op("second")
    with sk.control_dependencies([first, second]):
        done = sk.no_op(name="done")
    with sk.Session() as sess:
        sess.run(done)
    assert RUNS == {"first": 1, "second": 1}


def test_control_dependencies_order_side_effects(graph):
    v = sk.Variable(0, name="v")
    inc = sk.assign_add(v, 1)
    with sk.control_dependencies([inc]):
        read = sk.identity(v.value())  # reads after the increment
    with sk.Session() as sess:
        sess.run(v.initializer)
        assert sess.run(read) == 1
        assert sess.run(read) == 2


def test_group_and_tuple(graph):
    a, b = count_op("a"), count_op("b")
    g = sk.group(a, b.op, name="both")
    assert g.type == "NoOp" and g.name == "both"
    ta, tb = sk.tuple([a, b])
    with sk.Session() as sess:
        sess.run(g)
        assert RUNS == {"a": 1, "b": 1}
        assert sess.run(ta) == 2 and RUNS["b"] == 2  # tuple's outputs wait for every input


def test_group_per_device(graph):
    with sk.device("/cpu:0"):
        a = count_op("a")
    with sk.device("/cpu:1"):
        b = count_op("b")
    g = sk.group(a, b)
    assert sorted(c.device for c in g.control_inputs) == ["/device:CPU:0", "/device:CPU:1"]
    with sk.Session() as sess:
        sess.run(g)
    assert RUNS == {"a": 1, "b": 1}


def test_added_control_input_invalidates_cached_plans(graph):
    a = count_op("a")
    n = sk.no_op(name="n")
    with sk.Session() as sess:
        sess.run(n)
        assert RUNS == {}
        n._add_control_input(a.op)
        sess.run(n)
        assert RUNS == {"a": 1}


# --- caching and speed ----------------------------------------------------------------------------


def test_plans_are_cached_per_fetches_and_feeds(graph):
    p = sk.placeholder(sk.float32, [])
    q = p + 1.0
    with sk.Session() as sess:
        sess.run(q, {p: 1.0})
        sess.run(q, {p: 2.0})
        assert len(sess._plans) == 1
        sess.run([q, p], {p: 2.0})
        assert len(sess._plans) == 2


def test_run_of_an_op_depending_on_10000_nodes_is_fast(graph):
    consts = [sk.constant(i, name=f"c{i}") for i in range(10000)]
    done = sk.group(*consts)
    with sk.Session() as sess:
        sess.run(done)  # builds the plan
        start = time.process_time()
        for _ in range(5):
            sess.run(done)
        per_run = (time.process_time() - start) / 5
    # Cached plan: a few microseconds per node even on a slow CI machine, never seconds.
    assert per_run < 0.5, per_run


def test_make_callable(graph):
    p = sk.placeholder(sk.int32, [])
    fn = sk.Session().make_callable([p * 2], feed_list=[p])
    assert fn(4) == [8]
    with pytest.raises(TypeError, match="Expected 1 feed"):
        fn()


# --- concurrency ----------------------------------------------------------------------------------


def test_independent_expensive_ops_run_concurrently(graph):
    a = sleep_op(0.4, "a")
    b = sleep_op(0.4, "b")
    with sk.Session() as sess:
        ta, tb = sess.run([a, b])
    assert RUNS == {"a": 1, "b": 1}
    assert ta != tb  # ran on two different pool threads
    (sa, ea), (sb, eb) = SPANS["a"], SPANS["b"]
    assert max(sa, sb) < min(ea, eb)  # both were sleeping at the same time


def test_an_expensive_op_with_nothing_beside_it_runs_on_the_callers_thread(graph):
    # A lone save or restore gains nothing from a hand-off, and in a new session it would start a thread.
    a = sleep_op(0.01, "a")
    with sk.control_dependencies([a]):
        b = sleep_op(0.01, "b")
    with sk.Session() as sess:
        ta, tb = sess.run([a, b])
        assert sess._pool is None
    here = threading.get_ident() % 1000
    assert ta == tb == here
    assert RUNS == {"a": 1, "b": 1}


def test_a_failing_expensive_op_run_on_the_callers_thread_names_the_op(graph):
    bad = sleep_op(-1.0, "bad")  # time.sleep raises ValueError
    with sk.Session() as sess:
        with pytest.raises(errors.InvalidArgumentError) as info:
            sess.run(bad)
        assert sess._pool is None
    assert info.value.op.name == "bad"
    assert "non-negative" in str(info.value)


def test_dependent_expensive_ops_run_in_order(graph):
    a = sleep_op(0.05, "a")
    with sk.control_dependencies([a]):
        b = sleep_op(0.05, "b")
    c = b + 1  # a cheap op after the pool op
    with sk.Session() as sess:
        sess.run(c)
    assert RUNS == {"a": 1, "b": 1}


def test_failure_in_a_pool_op_propagates_with_the_op(graph):
    a = sleep_op(0.01, "a")
    bad = apply_op("FailForTest", name="bad").outputs[0]
    with sk.Session() as sess:
        with pytest.raises(errors.InvalidArgumentError) as info:
            sess.run([a, bad])
    assert info.value.op.name == "bad"
    assert "must not run" in str(info.value)


def test_concurrent_run_calls_from_threads(graph):
    v = sk.Variable(0, name="v")
    inc = sk.assign_add(v, 1)
    with sk.Session() as sess:
        sess.run(v.initializer)

        def work():
            for _ in range(50):
                sess.run(inc)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sess.run(v) == 200


# --- errors ---------------------------------------------------------------------------------------


def test_kernel_errors_become_op_errors_naming_the_op(graph):
    a = sk.constant(np.zeros((2, 3), np.float32))
    p = sk.placeholder(sk.float32, [None, None])
    m = sk.matmul(a, p, name="mm")
    with sk.Session() as sess:
        with pytest.raises(errors.InvalidArgumentError, match="Matrix size-incompatible") as info:
            sess.run(m, {p: np.zeros((2, 2), np.float32)})
    assert info.value.op is m.op
    assert info.value.node_def.name == "mm"
    assert "[[node mm]]" in str(info.value)


def test_opaque_op_fails_only_when_run(graph):
    a = sk.constant(1.0)
    opaque = graph.create_op("SomethingUnknown", [a], dtypes=[sk.float32], name="opaque")
    ok = a + 1.0
    with sk.Session() as sess:
        assert sess.run(ok) == 2.0
        with pytest.raises(errors.NotFoundError, match="SomethingUnknown.*opaque"):
            sess.run(opaque.outputs[0])


# --- lifetime and defaults ------------------------------------------------------------------------


def test_closed_session_raises(graph):
    c = sk.constant(1)
    sess = sk.Session()
    assert sess.run(c) == 1
    sess.close()
    with pytest.raises(RuntimeError, match="closed Session"):
        sess.run(c)
    sess.close()  # closing twice is fine


def test_empty_graph_raises(graph):
    with sk.Session() as sess:
        with pytest.raises(RuntimeError, match="graph is empty"):
            sess.run([])


def test_context_manager_sets_defaults_and_closes(graph):
    c = sk.constant(3)
    assert sk.get_default_session() is None
    with sk.Session() as sess:
        assert sk.get_default_session() is sess
        assert c.eval() == 3
        assert sess.graph is graph
        assert sess.sess_str == ""
    assert sk.get_default_session() is None
    with pytest.raises(RuntimeError, match="closed"):
        sess.run(c)


def test_as_default_does_not_close(graph):
    c = sk.constant(3)
    sess = sk.Session()
    with sess.as_default():
        assert c.eval() == 3
        assert c.op.run() is None
    assert sess.run(c) == 3
    sess.close()


def test_eval_without_default_session(graph):
    with pytest.raises(ValueError, match="no default session"):
        sk.constant(1).eval()


def test_session_on_another_graph(graph):
    g2 = sk.Graph()
    with g2.as_default():
        c = sk.constant(5)
    with sk.Session(graph=g2) as sess:
        assert sess.run(c) == 5
        assert sk.get_default_graph() is g2
    with pytest.raises(ValueError, match="different graphs"):
        with sk.Session() as other:
            c.eval(session=other)


def test_interactive_session(graph):
    c = sk.constant(4)
    sess = sk.InteractiveSession()
    try:
        assert sk.get_default_session() is sess
        assert c.eval() == 4
    finally:
        sess.close()
    assert sk.get_default_session() is None


def test_remote_targets_are_refused(graph):
    with pytest.raises(ValueError, match="in-process"):
        sk.Session("grpc://localhost:2222")


def test_variable_state_is_per_session(graph):
    v = sk.Variable(1, name="v")
    with sk.Session() as s1, sk.Session() as s2:
        s1.run(v.initializer)
        s1.run(v.assign(5))
        with pytest.raises(errors.FailedPreconditionError, match="uninitialized value v"):
            s2.run(v)
        assert s1.run(v) == 5


def test_plan_dedupes_repeated_dependencies():
    # Regression for the pruning fast path: an op reading one tensor twice, or reading it and also
    # control-depending on it, waits for that op once and runs once.
    from saverkit.framework import executor

    with sk.Graph().as_default() as g:
        x = sk.constant(3.0, name="x")
        twice = sk.add(x, x, name="twice")
        with sk.control_dependencies([x.op]):
            also = sk.identity(x, name="also")
        group = sk.group(twice, also, name="both")
        with sk.Session() as sess:
            assert sess.run([twice, also]) == [6.0, 3.0]
            plan = executor.PlanTemplate([twice, also], [group], [])
    needed = executor.prune([twice, also], [group], {})
    deps = {op.name: [d.name for d in ds] for op, ds in needed.items()}
    assert deps["twice"] == ["x"] and deps["also"] == ["x"] and deps["x"] == []
    ran = [it.op.name for it in plan.items + plan.hoisted]
    assert ran.count("x") == 1
    assert g.get_operation_by_name("both").control_inputs
