"""Executor: plan templates shared across sessions, hoisted sources, grouped scheduling steps."""

import threading
import time

import numpy as np
import pytest
import saverkit as sk
from saverkit import errors
from saverkit.framework import executor, op_registry
from saverkit.framework.op_def_library import apply_op

op_registry.register_op_def("""
  name: "SlowIdentityForTest"
  input_arg { name: "x" type_attr: "T" }
  output_arg { name: "y" type_attr: "T" }
  attr { name: "T" type: "type" }
  is_stateful: true
""")
CALLS: list[str] = []


@op_registry.register_kernel("SlowIdentityForTest", expensive=True)
def _slow_identity(ctx, x):
    CALLS.append(ctx.op.name)
    time.sleep(0.01)
    return [np.array(x)]


def slow_identity(x, name="slow"):
    return apply_op("SlowIdentityForTest", x=x, name=name).outputs[0]


@pytest.fixture(autouse=True)
def graph():
    CALLS.clear()
    with sk.Graph().as_default() as g:
        yield g


def template_of(sess, fetches):
    return executor.template_for(sess.graph, fetches, [], [])


def test_sessions_on_one_graph_share_the_plan_template(graph):
    v = sk.Variable(np.arange(3.0), name="v")
    fetch = [v.value()]
    with sk.Session() as s1, sk.Session() as s2:
        s1.run(v.initializer)
        s2.run(v.initializer)
        s1.run(v.assign([7.0, 8.0, 9.0]))
        assert template_of(s1, fetch) is template_of(s2, fetch)
        # Shared structure, separate state: each session reads its own variable.
        assert s1.run(fetch)[0].tolist() == [7.0, 8.0, 9.0]
        assert s2.run(fetch)[0].tolist() == [0.0, 1.0, 2.0]


def test_changed_edges_rebuild_the_template(graph):
    a = sk.Variable(1.0, name="a")
    b = sk.Variable(2.0, name="b")
    n = sk.no_op(name="n")
    with sk.Session() as sess:
        sess.run(a.initializer)
        before = executor.template_for(graph, [], [n], [])
        sess.run(n)
        n._add_control_input(b.initializer)  # an existing op gains an edge: cached plans are stale
        after = executor.template_for(graph, [], [n], [])
        assert after is not before
        sess.run(n)
        assert sess.run(b) == 2.0
    with sk.Session() as fresh:  # a new session gets the new template too
        fresh.run(n)
        assert fresh.run(b) == 2.0


def test_variables_and_constants_are_hoisted_out_of_the_run_loop(graph):
    v = sk.Variable(np.ones(2, np.float32), name="v")
    c = sk.constant(3.0, name="c")
    out = v.value() * c
    with sk.Session() as sess:
        sess.run(v.initializer)
        assert sess.run(out).tolist() == [3.0, 3.0]
        t = template_of(sess, [out])
    assert {it.op.name for it in t.hoisted} == {"v", "c"}
    assert {it.op.name for it in t.items} == {"v/read", "mul"}


def test_a_const_with_control_inputs_still_waits_for_them(graph):
    v = sk.Variable(0, name="v")
    bump = sk.assign_add(v, 5)
    with sk.control_dependencies([bump]):
        c = sk.constant(1, name="c")
    with sk.Session() as sess:
        sess.run(v.initializer)
        sess.run(c)
        sess.run(c)
        assert sess.run(v) == 10  # the Const ran (and waited for bump) on every run
        t = template_of(sess, [c])
    assert "c" not in {it.op.name for it in t.hoisted}


def test_hoisted_op_errors_name_the_op(graph):
    sk.Variable(1.0, name="x")
    from saverkit.framework import state_ops

    other = state_ops.variable_op_v2([], sk.int32, name="other", shared_name="x")
    with sk.Session() as sess:
        sess.run("x/Assign")
        with pytest.raises(errors.InvalidArgumentError, match="share variable") as info:
            sess.run(other)
    assert info.value.op.name == "other"


def test_cheap_ops_waiting_for_the_same_steps_form_one_step(graph):
    x = slow_identity(sk.constant(np.arange(4.0)), name="read")
    variables = [sk.Variable(np.zeros(4), name=f"v{i}") for i in range(50)]
    assigns = [sk.assign(v, x).op for v in variables]
    done = sk.group(*assigns, name="done")
    with sk.Session() as sess:
        sess.run([v.initializer for v in variables])
        sess.run(done)
        t = executor.template_for(graph, [], [done], [])
        for v in variables:
            assert sess.run(v).tolist() == [0.0, 1.0, 2.0, 3.0]
    # slow_identity, then every assign in one step, then the NoOp.
    sizes = sorted(len(s) for s in t.steps)
    assert sizes == [1, 1, 50]
    assert CALLS == ["read"]


def test_a_failing_member_of_a_grouped_step_is_named(graph):
    x = slow_identity(sk.constant(np.arange(4.0)), name="read")  # shape unknown until run
    good = sk.Variable(np.zeros(4), name="good")
    bad = sk.Variable(np.zeros(3), name="bad")
    both = sk.group(sk.assign(good, x, name="fine"), sk.assign(bad, x, name="strict"))
    with sk.Session() as sess:
        sess.run([good.initializer, bad.initializer])
        t = executor.template_for(graph, [], [both], [])
        assert sorted(len(s) for s in t.steps) == [1, 1, 2]  # both assigns share a step
        with pytest.raises(errors.InvalidArgumentError, match="shapes of both tensors") as info:
            sess.run(both)
        assert info.value.op.name == "strict"
        assert sess.run(bad).tolist() == [0.0, 0.0, 0.0]


def test_consumer_of_a_grouped_step_waits_for_it(graph):
    # A pool op consuming one member of a grouped step runs after the whole step, with that value.
    x = slow_identity(sk.constant(2.0), name="first")
    doubled = [x * float(i) for i in range(10)]
    after = slow_identity(doubled[3], name="second")
    with sk.Session() as sess:
        assert sess.run([after] + doubled[:2]) == [6.0, 0.0, 2.0]
    assert CALLS == ["first", "second"]


def test_templates_are_safe_to_share_between_threads(graph):
    variables = [sk.Variable(float(i), name=f"v{i}") for i in range(200)]
    inits = [v.initializer for v in variables]
    errors_seen = []

    def work():
        try:
            with sk.Session(graph=graph) as sess:
                for _ in range(5):
                    sess.run(inits)
                    assert sess.run(variables) == [float(i) for i in range(200)]
        except Exception as e:  # noqa: BLE001 - reported below
            errors_seen.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors_seen == []


def test_assign_skips_the_kernel_only_when_the_value_already_is_the_buffer(graph):
    v = sk.Variable(np.zeros(3), name="v")
    set_ = sk.assign(v, sk.constant(np.array([1.0, 2.0, 3.0])), name="set")
    bad = sk.assign(v, sk.placeholder(sk.float64, [None], name="p"), name="bad")
    with sk.Session() as sess:
        sess.run(v.initializer)
        t = executor.template_for(graph, [], [set_.op], [])
        assert [it.same is not None for it in t.items] == [True]
        sess.run(set_.op)
        assert sess.run(v).tolist() == [1.0, 2.0, 3.0]
        with pytest.raises(errors.InvalidArgumentError, match="shapes of both tensors") as info:
            sess.run(bad.op, {"p:0": np.zeros(4)})
        assert info.value.op.name == "bad"


def test_big_runs_pause_the_garbage_collector_and_restore_it(graph):
    import gc

    variables = [sk.Variable(float(i), name=f"v{i}") for i in range(600)]
    fail = sk.assign(variables[0], sk.placeholder(sk.float32, None, name="p"), name="fail")
    seen = []

    @op_registry.register_kernel("SlowIdentityForTest", expensive=True)
    def _record(ctx, x):
        seen.append(gc.isenabled())
        return [np.array(x)]

    try:
        probe = slow_identity(sk.constant(1.0), name="probe")
        with sk.Session() as sess:
            sess.run([v.initializer for v in variables] + [probe])  # 1,200 ops: a big plan
            assert seen == [False] and gc.isenabled()
            with pytest.raises(errors.InvalidArgumentError):
                sess.run([v.initializer for v in variables] + [fail], {"p:0": np.zeros(3, np.float32)})
            assert gc.isenabled()
            sess.run(probe)  # a small plan leaves the collector alone
            assert seen == [False, True]
    finally:
        op_registry.register_kernel("SlowIdentityForTest", expensive=True)(_slow_identity)


def test_bulk_variable_binding_makes_the_refs_ref_would(graph):
    # Plan binding fills new Refs directly (VariableStore.refs); VariableStore.ref is the reference.
    from saverkit.framework.variable_store import VariableStore

    variables = [sk.Variable(np.zeros(i + 1, np.float32), name=f"v{i}") for i in range(3)]
    t = template_of(sk.Session(), [v.value() for v in variables])
    fast, slow = VariableStore(), VariableStore()
    made = fast.refs(t.variable_specs)
    for ref, (_, key, name, dtype, shape, _) in zip(made, t.variable_specs, strict=True):
        ref_slow = slow.ref(key, name, dtype, shape)
        assert [getattr(ref, a) for a in ("key", "name", "dtype", "shape", "_np_dtype")] == [
            getattr(ref_slow, a) for a in ("key", "name", "dtype", "shape", "_np_dtype")
        ]
        assert ref._values is fast._values and fast.ref(key, name, dtype, shape) is ref
    assert fast.refs(t.variable_specs) == made  # existing Refs are reused


def test_kernel_contexts_are_made_on_first_use(graph):
    v = sk.Variable(np.zeros(2), name="v")
    w = sk.Variable(np.zeros(2), name="w")
    step = sk.group(sk.assign_add(v, [1.0, 1.0]), name="step")
    with sk.Session() as sess:
        sess.run([v.initializer, w.initializer])
        sess.run(step)
        plan = sess._plans[((), (step,), frozenset())]
        assert [c is None for c in plan.ctxs] == [False, False]  # both ran
        plan = sess._plan([], [w.initializer], {})
        assert plan.ctxs == [None] * len(plan.template.items)  # bound, not run: no context yet
        ctx = plan.context(0)
        assert ctx.op is plan.template.items[0].op and plan.context(0) is ctx and ctx.session is sess


@pytest.mark.parametrize("expensive", [False, True], ids=["inline", "scheduled"])
@pytest.mark.parametrize("returned", [[np.array(1.0)], [np.array(1.0), np.array(2.0)]])
def test_kernels_returning_the_wrong_number_of_outputs_fail_the_same_way_in_both_run_loops(
    monkeypatch, expensive, returned
):
    # One rule for every run loop: a kernel returns exactly its op's outputs (None for none). The inline
    # loop did not check ops without outputs, the scheduled one did.
    for op_type in ("NoOp", "Identity"):
        info = op_registry.get(op_type)
        monkeypatch.setattr(info, "kernel", lambda ctx, *args: returned)
        monkeypatch.setattr(info, "expensive", expensive)
    noop = sk.no_op(name="n")
    ident = sk.identity(sk.constant(1.0), name="i")
    with sk.Session() as sess:
        with pytest.raises(errors.InternalError, match="Kernel of NoOp returned .* outputs, expected 0"):
            sess.run(noop)
        if len(returned) != 1:
            with pytest.raises(errors.InternalError, match="Identity returned 2 outputs, expected 1"):
                sess.run(ident)
        else:
            assert sess.run(ident) == 1.0


def test_runs_with_options_keep_cheap_kernels_contexts_and_give_expensive_ones_the_runs(monkeypatch, graph):
    # Only the expensive (I/O) kernels read run options: a durable or asynchronous save of 10,000 variables
    # must not make 10,000 contexts per run, and concurrent runs must still see their own options.
    seen: dict[str, list] = {"cheap": [], "expensive": []}
    for op_type, kind in (("Identity", "cheap"), ("SlowIdentityForTest", "expensive")):
        info = op_registry.get(op_type)

        def kernel(ctx, x, real=info.kernel, kind=kind):
            seen[kind].append((ctx, ctx.options))
            return real(ctx, x)

        monkeypatch.setattr(info, "kernel", kernel)
    out = slow_identity(sk.identity(sk.constant([1.0, 2.0]), name="cheap"))
    durable, plain = sk.RunOptions(durable=True), sk.RunOptions()
    runs = (durable, plain, None, durable)
    with sk.Session() as sess:
        for options in runs:
            assert sess.run(out, options=options).tolist() == [1.0, 2.0]
    assert len({id(ctx) for ctx, _ in seen["cheap"]}) == 1  # one kept context, whatever the options
    assert all(options == sk.RunOptions() for _, options in seen["cheap"])
    assert [options for _, options in seen["expensive"]] == [durable, plain, sk.RunOptions(), durable]
    assert seen["expensive"][0][0] is not seen["expensive"][3][0]  # a run with options: a context of its own


@pytest.mark.parametrize("expensive", [False, True], ids=["inline-loop", "scheduled-loop"])
@pytest.mark.parametrize("reads_buffers", [False, True], ids=["views", "buffers"])
def test_a_kernel_registered_to_read_buffers_gets_the_variables_own_buffer(
    monkeypatch, expensive, reads_buffers
):
    # SaveV2 of 10,000 variables spent ~40% of its Python work making read-only views; it only reads, so
    # it gets the buffers. Every other kernel still gets a view it cannot write through.
    info = op_registry.get("SlowIdentityForTest")
    got = []

    def kernel(ctx, x):
        got.append(x)
        return [np.array(x)]

    monkeypatch.setattr(info, "kernel", kernel)
    monkeypatch.setattr(info, "expensive", expensive)
    monkeypatch.setattr(info, "reads_buffers", reads_buffers)
    v = sk.Variable([1.0, 2.0], name="v")
    out = slow_identity(v._variable)
    with sk.Session() as sess:
        sess.run(v.initializer)
        assert sess.run(out).tolist() == [1.0, 2.0]
        buffer = sess._variables.ref(*executor.variable_ref_args(v._variable.op)).buffer
    assert np.shares_memory(got[0], buffer)
    assert (got[0] is buffer) is reads_buffers
    assert got[0].flags.writeable is reads_buffers
    with sk.Session() as sess, pytest.raises(errors.FailedPreconditionError, match="uninitialized value v"):
        sess.run(out)  # either way, an uninitialized variable is the error it always was
