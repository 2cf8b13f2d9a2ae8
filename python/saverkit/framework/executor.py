"""Running a pruned subgraph: build a plan once per (fetches, feeds), then a short loop per run.

A :class:`Plan` holds the ops the fetches need (pruned at fed tensors), in
topological order, with every input resolved to a slot of a flat value list.
Cheap kernels run inline in that order. When the plan contains expensive
kernels (file I/O, which releases the GIL), a ready-queue scheduler runs those
on the session's thread pool while the main thread keeps executing whatever
else is ready, so e.g. the SaveV2 ops of a sharded save write concurrently.
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import operator
import queue
from collections import deque
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from saverkit import _gc, errors
from saverkit.dtypes import _REF_OFFSET  # DataType numbers above this are ref types
from saverkit.framework.ops import Operation, Tensor, _consumer_list
from saverkit.framework.run_options import DEFAULT_RUN_OPTIONS, RunOptions
from saverkit.framework.variable_store import (
    Ref,
    VariableStore,
    adopt,
    is_shared,
    numpy_dtype,
    resource_key,
    variable_key,
)


class OpKernelContext:
    """What a kernel sees besides its inputs: its op, the session's variables, the options of the run,
    in-place output targets."""

    __slots__ = ("op", "variables", "session", "options", "_targets", "_ref")

    def __init__(
        self, op: Operation, variables: VariableStore, session: Any, options: RunOptions = DEFAULT_RUN_OPTIONS
    ) -> None:
        self.op = op
        self.variables = variables
        self.session = session
        self.options = options  # of the Session.run call this kernel runs in (see RunOptions)
        # The template's per-output targets (see _in_place_targets), resolved by store key on use: they
        # need no per-session binding, and a kernel may use them while the plan's Refs are still being
        # made (see Plan.bind_deferred).
        self._targets: tuple[_Target | None, ...] | None = None
        self._ref: Ref | None = None

    def attr(self, name: str) -> Any:
        """The stored Python value of an attr (DType, bytes, int, TensorShape, numpy array...)."""
        return self.op._attrs[name]

    def variable_ref(self) -> Ref:
        """The Ref of this (VariableV2) op's variable."""
        if self._ref is None:
            self._ref = self.variables.ref(*variable_ref_args(self.op))
        return self._ref

    def output_buffer(self, index: int) -> np.ndarray | None:
        """The buffer output ``index`` will be assigned into, if the kernel may write there directly.

        Set only when the output flows (through Identity ops) into a single ``Assign`` /
        ``AssignVariableOp`` of an initialized variable and nothing else uses it: writing the value into
        this array and returning it as the output makes the assignment a no-op (no second copy, no new
        allocation). The array has the variable's current shape, which may differ from the value's: a
        kernel then allocates instead.
        """
        targets = self._targets
        if targets is None:
            return None
        target = targets[index]
        if target is None:
            return None
        buf = self.variables._values.get(target.key)
        # A resource variable's earlier reads are snapshots that still share its buffer: don't overwrite.
        if buf is None or target.copy_on_write and is_shared(buf):
            return None
        return buf

    def output_buffers(self, n: int) -> list[np.ndarray | None]:
        """``[output_buffer(i) for i in range(n)]`` in one pass (RestoreV2 asks for 10,000 at once)."""
        targets = self._targets
        if targets is None:
            return [None] * n
        values = self.variables._values
        if not values:  # a new session: nothing is initialized
            return [None] * n
        out: list[np.ndarray | None] = [None] * n
        for i, target in enumerate(targets):
            if target is not None:
                buf = values.get(target.key)
                if buf is not None and not (target.copy_on_write and is_shared(buf)):
                    out[i] = buf
        return out

    def output_target(self, index: int) -> Ref | None:
        """The variable output ``index`` is assigned into (same conditions as ``output_buffer``), also
        while it is uninitialized: a kernel that made the value in a fresh array of its own may hand that
        array to the variable (``Ref.adopt``) instead of having the Assign copy it. Ref variables only:
        resource variables keep their own copy-on-write rules."""
        targets = self._targets
        if targets is None:
            return None
        t = targets[index]
        if t is None:
            return None
        return None if t.copy_on_write else self.variables.ref(t.key, t.name, t.dtype, t.shape)

    def adopt_outputs(self, values: list[Any], skip: list[Any]) -> None:
        """``output_target(i).adopt(values[i])`` for every output whose ``skip[i]`` is None, in one pass
        over the store (no Ref is made: the variable's op makes it, with the same key)."""
        targets = self._targets
        if targets is None:
            return
        store = self.variables._values
        ndarray = np.ndarray
        for target, value, done in zip(targets, values, skip, strict=True):
            if target is None or done is not None or target.copy_on_write:
                continue
            key = target.key
            # The usual case, decided without a call: a fresh array of exactly the variable's static
            # dtype and shape (a subset of what adopt accepts; anything else goes through adopt).
            if (key not in store and type(value) is ndarray and value.base is None
                    and value.dtype is target.np_dtype and value.shape == target.shape._dims):
                flags = value.flags
                if flags.c_contiguous and flags.writeable:
                    store[key] = value
                    continue
            adopt(store, key, target.np_dtype, target.shape, value)


def variable_ref_args(op: Operation) -> tuple:
    """``VariableStore.ref`` arguments for a VariableV2 op: its store key, name, dtype and shape."""
    return variable_key(op), op._name, op._attrs["dtype"], op._attrs["shape"]


class _Item:
    """One op of a plan template, as the executor runs it (session-independent).

    Kept lean (flags rather than tuples where the data is elsewhere): a template for a 10,000-variable
    initializer or restore has tens of thousands of items, and the graph caches it. ``same`` is True for
    an Assign the run loop may skip (see PlanTemplate).
    """

    __slots__ = (
        "op", "kernel", "in_slots", "deref", "read", "out_slot", "n_out", "expensive", "targets", "same"
    )
    op: Operation
    kernel: Any
    in_slots: tuple[int, ...]
    deref: tuple[int, ...]
    read: Any  # how the deref inputs are read: Ref.value, or Ref.buffer_value (OpInfo.reads_buffers)
    out_slot: int
    n_out: int
    expensive: bool
    targets: tuple[_Target | None, ...] | None
    same: bool | None


class _Hoisted:
    """An input-less op computed when a template is bound (see PlanTemplate.hoisted): a third of the ops
    of a variable-heavy plan, so it holds only what binding needs. ``is_variable``: a VariableV2, whose
    output is its store entry's Ref (bound from ``PlanTemplate.variable_specs``, not by its kernel)."""

    __slots__ = ("op", "kernel", "out_slot", "n_out", "is_variable")

    def __init__(self, op: Operation, kernel: Any, out_slot: int) -> None:
        self.op = op
        self.kernel = kernel
        self.out_slot = out_slot
        self.n_out = len(op._outputs)
        self.is_variable = op._type == "VariableV2"


class PlanTemplate:
    """What one (fetches, feeds, targets) request needs from a graph, prepared once per graph.

    Session-independent, so every session on the graph shares it (see :func:`template_for`): building
    this for a 20,000-op restore costs more than running it. :class:`Plan` binds it to a session.

    * ``items``: the ops to run, in topological order, each input resolved to a slot of a flat value
      list (each op's outputs are contiguous; fed values come after all op outputs);
    * ``hoisted``: input-less ops with ``hoist`` kernels (variables, constants), computed when the
      template is bound instead of on every run;
    * ``steps``: the scheduling units when the plan has expensive (pool) ops: an expensive item alone,
      or every cheap item waiting for the same set of steps, run together on the calling thread. A
      restore's 10,000 Assigns waiting for one RestoreV2 are one step, not 10,000.
    """

    def __init__(self, fetches: list[Tensor], targets: list[Operation], feeds: list[Tensor]) -> None:
        fed = {t: i for i, t in enumerate(feeds)}
        # 1. Prune. Not kept once the template is built: for a 10,000-variable initializer it is a few MiB
        # a cached template would hold for nothing.
        needed = prune(fetches, targets, fed)
        # 2. Topological order.
        order = _toposort(needed)
        # 3. Slots. Consts holding one attrs dict (zeros()/ones() of a shape share them, see array_ops) have
        # the same read-only value: they share one slot and one hoisted record (an initializer of 10,000
        # zeros()-initialized variables has 20,000 such Consts).
        slot_of: dict[Operation, int] = {}
        const_slot: dict[int, int] = {}
        shared: set[Operation] = set()
        n = 0
        for op in order:
            if op._type == "Const" and not op._inputs and not op._control_inputs and op._info is not None:
                first = const_slot.get(id(op._attrs))  # the attrs dicts live while the ops do
                if first is not None:
                    slot_of[op] = first
                    shared.add(op)
                    continue
                const_slot[id(op._attrs)] = n
            slot_of[op] = n
            n += len(op._outputs)
        feed_base = n
        self.n_slots = n + len(feeds)
        self.feeds = feeds
        self.feed_slots = [feed_base + i for i in range(len(feeds))]
        fetched = set(fetches)
        self.fetch_slots = [
            feed_base + fed[t] if t in fed else slot_of[t._op] + t._value_index for t in fetches
        ]
        items: list[_Item] = []
        hoisted: list[_Hoisted] = []
        wants_targets: list[bool] = []  # per item: may its kernel write outputs in place?
        for op in order:
            info = op._info
            kernel = info.kernel if info is not None else None
            if kernel is None or info is None:  # (info is set when kernel is: the check is for mypy)
                why = (
                    "saverkit has no OpDef for it (it was imported as an opaque node)"
                    if info is None
                    else "no kernel is registered for it"
                )
                raise errors.NotFoundError(
                    op.node_def, op, f"Cannot run op type '{op._type}' of node '{op._name}': {why}."
                )
            inputs = op._inputs
            if info.hoist and not inputs and not op._control_inputs:
                if op not in shared:
                    hoisted.append(_Hoisted(op, kernel, slot_of[op]))
                continue
            item = _Item()
            item.op = op
            item.kernel = kernel
            if not inputs:  # sources (variables, constants): a third of a typical graph
                item.in_slots = item.deref = _NONE
            else:
                # Tuples (one allocation each, the empty one shared): templates of big graphs are cached.
                # Output 0 reuses its op's slot number (an int object per input adds up in big templates).
                if fed:
                    slots = [
                        feed_base + fed[t] if t in fed
                        else slot_of[t._op] + t._value_index if t._value_index else slot_of[t._op]
                        for t in inputs
                    ]
                else:
                    slots = [
                        slot_of[t._op] + t._value_index if t._value_index else slot_of[t._op] for t in inputs
                    ]
                item.in_slots = tuple(slots)
                # Ref inputs are read (dereferenced) unless the op's argument itself is a Ref.
                deref = [i for i, t in enumerate(inputs) if t._dtype._enum > _REF_OFFSET]
                if deref and info.has_ref_inputs:
                    is_ref = info.input_is_ref(op._attrs)
                    deref = [i for i in deref if not is_ref[i]]
                item.deref = tuple(deref) if deref else _NONE
            item.read = Ref.buffer_value if info.reads_buffers else Ref.value
            item.out_slot = slot_of[op]
            item.n_out = len(op._outputs)
            item.expensive = info.expensive
            item.same = None
            items.append(item)
            wants_targets.append(info.output_buffers)  # resolved below, once every hoisted op is known
        self.items = items
        self.hoisted = hoisted
        # What VariableStore.refs needs to bind every hoisted variable in one pass (a fresh session on a
        # 10,000-variable graph makes 10,000 Refs): (slot, key, name, base dtype, shape, numpy dtype).
        variable_args = {it.op: variable_ref_args(it.op) for it in hoisted if it.is_variable}
        self.variable_specs = [
            (it.out_slot, key, name, dtype.base_dtype, shape, numpy_dtype(dtype))
            for it in hoisted
            if it.is_variable
            for key, name, dtype, shape in (variable_args[it.op],)
        ]
        self.variable_slots = [spec[0] for spec in self.variable_specs]
        self.hoisted_kernels = [it for it in hoisted if not it.is_variable]
        hoisted_ops = {it.op for it in hoisted}
        # Store keys already made, for _in_place_targets.
        var_keys = {op: args[0] for op, args in variable_args.items()}
        for it, wants in zip(items, wants_targets, strict=True):
            it.targets = _in_place_targets(it.op, needed, fetched, var_keys) if wants else None
        # An Assign of a hoisted variable whose value is already the variable's buffer (a restore that read
        # straight into it, see _in_place_targets) has nothing to do: the run loop sees that from its first
        # two input slots (ref, value) without calling the kernel (what Ref.assign would find first).
        for it in items:
            op = it.op
            if op._type == "Assign" and op._inputs[0]._op in hoisted_ops and not it.deref:
                it.same = True
        self.big = len(items) + len(hoisted) > _BIG_PLAN
        self.has_expensive = any(it.expensive for it in items)
        if self.has_expensive:
            self._build_steps(needed, {it.op for it in hoisted} | shared)

    def _build_steps(self, needed: dict[Operation, Sequence[Operation]], hoisted: set[Operation]) -> None:
        step_of: dict[Operation, int] = {}
        steps: list[list[int]] = []
        step_deps: list[frozenset[int]] = []
        open_groups: dict[frozenset[int], int] = {}  # dep steps -> the step cheap items with them join
        for i, it in enumerate(self.items):
            deps = frozenset(step_of[d] for d in needed[it.op] if d not in hoisted)
            step = None if it.expensive else open_groups.get(deps)
            if step is None:
                step = len(steps)
                steps.append([])
                step_deps.append(deps)
                if not it.expensive:
                    open_groups[deps] = step
            steps[step].append(i)
            step_of[it.op] = step
        consumers: list[list[int]] = [[] for _ in steps]
        for s, deps in enumerate(step_deps):
            for d in deps:
                consumers[d].append(s)
        self.steps = steps
        self.step_expensive = [self.items[members[0]].expensive for members in steps]
        self.step_n_deps = [len(d) for d in step_deps]
        self.step_consumers = consumers
        self.roots = [s for s, d in enumerate(step_deps) if not d]


def prune(
    fetches: list[Tensor], targets: list[Operation], fed: dict[Tensor, int]
) -> dict[Operation, Sequence[Operation]]:
    """Every op the fetches and targets need, stopping at fed tensors: op -> the distinct ops it waits for."""
    needed: dict[Operation, Sequence[Operation]] = {}
    stack = [t._op for t in fetches if t not in fed] + list(targets)
    while stack:
        op = stack.pop()
        if op in needed:
            continue
        inputs = op._inputs
        deps: list[Operation] | tuple[()]
        if not inputs:  # a source, or a NoOp grouping control inputs
            controls = op._control_inputs
            # Sources share one empty tuple: a list each was a third of the peak of pruning an initializer.
            deps = (
                list(dict.fromkeys(controls)) if len(controls) > 1 else list(controls) if controls else _NONE
            )
        else:
            deps = [t._op for t in inputs if t not in fed] if fed else [t._op for t in inputs]
            if op._control_inputs:
                deps += op._control_inputs
            n = len(deps)
            if n == 2:  # the common case: dedupe without building a dict
                if deps[0] is deps[1]:
                    del deps[1]
            elif n > 2:
                deps = list(dict.fromkeys(deps))
        needed[op] = deps
        stack.extend(deps)
    return needed


class _TemplateCache(NamedTuple):
    """A graph's plan templates (``Graph._plan_templates``), valid while its edges are unchanged."""

    edges_version: int
    templates: dict[tuple, PlanTemplate]


def template_for(
    graph: Any, fetches: list[Tensor], targets: list[Operation], feeds: list[Tensor]
) -> PlanTemplate:
    """The graph's cached template for this request (built on first use, dropped when an existing op's
    edges change: ``Graph._edges_version``)."""
    cache = graph._plan_templates
    if cache is None or cache.edges_version != graph._edges_version:
        cache = graph._plan_templates = _TemplateCache(graph._edges_version, {})
    key = (tuple(fetches), tuple(targets), frozenset(feeds))
    templates = cache.templates
    template = templates.get(key)
    if template is None:
        template = PlanTemplate(fetches, targets, feeds)
        if len(templates) >= _MAX_TEMPLATES:
            templates.clear()
        templates[key] = template
    return template


class Plan:
    """A template bound to one session: kernel contexts, variable handles, hoisted values."""

    def __init__(self, template: PlanTemplate, variables: VariableStore, session: Any) -> None:
        self.template = template
        self.feeds = template.feeds
        self.has_expensive = template.has_expensive
        initial: list[Any] = [None] * template.n_slots
        try:
            refs = variables.refs(template.variable_specs)
            for slot, ref in zip(template.variable_slots, refs, strict=True):
                initial[slot] = ref
            for item in template.hoisted_kernels:
                initial[item.out_slot : item.out_slot + item.n_out] = item.kernel(
                    OpKernelContext(item.op, variables, session)
                )
        except Exception:  # noqa: BLE001 - redone one op at a time below, to raise what names the op
            initial = self._bind_one_by_one(template, variables, session)
        self._initial = initial
        self._variables = variables
        self._session = session
        # Kernel contexts are made on first use: a restore's 10,000 Assigns usually skip their kernel. Big
        # plans (initializers, restores: run once or rarely) make them per run instead of keeping one per op,
        # until they run a second time (a save of 10,000 variables runs again and again).
        self.ctxs: list[OpKernelContext | None] = [None] * len(template.items)
        self._keep_ctxs = not template.big
        self._ran = False

    @staticmethod
    def _bind_one_by_one(template: PlanTemplate, variables: VariableStore, session: Any) -> list[Any]:
        """The hoisted values in template order, raising the first failure as an error naming its op."""
        initial: list[Any] = [None] * template.n_slots
        item: Any = None  # the item running, for the error
        try:
            for item in template.hoisted:
                if item.is_variable:
                    initial[item.out_slot] = variables.ref(*variable_ref_args(item.op))
                    continue
                outs = item.kernel(OpKernelContext(item.op, variables, session))
                initial[item.out_slot : item.out_slot + item.n_out] = outs
        except Exception as e:
            error = as_op_error(e, item.op)
            if error is e:
                raise
            raise error from e
        return initial

    def context(self, index: int, options: RunOptions = DEFAULT_RUN_OPTIONS) -> OpKernelContext:
        """The kernel context of item ``index`` for a run with ``options``. Contexts with the default
        options are kept (made on first use). Run options are for the expensive (I/O) kernels, the only
        ones that read them: in a run with other options those get a context of their own, so threads
        running this plan with different options never see each other's, and every other kernel its
        kept default one (a durable or asynchronous save of 10,000 variables makes no 10,000 contexts)."""
        item = self.template.items[index]
        ctx = self.ctxs[index] if options is DEFAULT_RUN_OPTIONS or not item.expensive else None
        if ctx is None:
            if options is not DEFAULT_RUN_OPTIONS and not item.expensive:
                options = DEFAULT_RUN_OPTIONS  # kept below, for every run
            ctx = OpKernelContext(item.op, self._variables, self._session, options)
            ctx._targets = item.targets
            if self._keep_ctxs and options is DEFAULT_RUN_OPTIONS:
                self.ctxs[index] = ctx
        return ctx

    # --- running -------------------------------------------------------------------------------
    def run(
        self, feed_values: list[Any], pool_fn: Any, options: RunOptions = DEFAULT_RUN_OPTIONS
    ) -> list[Any]:
        template = self.template
        if not self._keep_ctxs:
            self._keep_ctxs = self._ran
            self._ran = True
        vals = self._initial.copy()
        for s, v in zip(template.feed_slots, feed_values, strict=False):
            vals[s] = v
        with np.errstate(all="ignore"), _gc.paused() if template.big else contextlib.nullcontext():
            # errstate: TF semantics (overflow / NaN are values, not errors); GC: see saverkit._gc
            if self.has_expensive:
                self._run_scheduled(vals, pool_fn, options)
            else:
                self._run_items(range(len(template.items)), vals, options)
        return [vals[s] for s in template.fetch_slots]

    def _run_items(self, indices: Any, vals: list[Any], options: RunOptions = DEFAULT_RUN_OPTIONS) -> None:
        """Run items in order on this thread (the hot loop: gather, dereference, call, store inlined)."""
        items = self.template.items
        ctxs = self.ctxs
        plain = options is DEFAULT_RUN_OPTIONS  # else expensive kernels get contexts of their own: context()
        item: Any = None  # the item running, for the error
        try:
            for i in indices:
                item = items[i]
                if item.same is not None:
                    same = item.in_slots
                    ref = vals[same[0]]
                    if type(ref) is Ref and vals[same[1]] is ref._values.get(ref.key):
                        vals[item.out_slot] = ref  # the value was restored into the buffer: nothing to do
                        continue
                args = [vals[s] for s in item.in_slots]
                for j in item.deref:
                    if type(args[j]) is Ref:
                        args[j] = item.read(args[j])
                ctx = ctxs[i]
                if ctx is None or not plain and item.expensive:
                    ctx = self.context(i, options)
                outs = item.kernel(ctx, *args)
                n = item.n_out
                if (0 if outs is None else len(outs)) != n:  # the rule of _call, inline
                    raise _wrong_outputs(item, outs)
                if n:
                    vals[item.out_slot : item.out_slot + n] = outs
        except Exception as e:
            error = as_op_error(e, item.op)
            if error is e:
                raise
            raise error from e

    def _run_scheduled(self, vals: list[Any], pool_fn: Any, options: RunOptions) -> None:
        t = self.template
        pool = None  # made on the first hand-off
        items, steps, consumers = t.items, t.steps, t.step_consumers
        ready = deque(t.roots)
        pending = list(t.step_n_deps)
        done: queue.SimpleQueue = queue.SimpleQueue()
        in_flight = 0
        failure: BaseException | None = None

        def finish(step: int) -> None:
            for c in consumers[step]:
                pending[c] -= 1
                if pending[c] == 0:
                    ready.append(c)

        def background(step: int, i: int, ctx: OpKernelContext, args: list[Any]) -> None:
            try:
                done.put((step, i, _call(items[i], ctx, args), None))
            except BaseException as e:  # noqa: BLE001 - handed to the scheduler thread
                done.put((step, i, None, e))

        while ready or in_flight:
            # Collect finished background ops first so their successors start as early as possible.
            while in_flight and (not ready or not done.empty()):
                step, i, outs, exc = done.get()
                in_flight -= 1
                if exc is not None:
                    if failure is None:
                        failure = _chained(as_op_error(exc, items[i].op), exc)
                elif failure is None:
                    _store(items[i], outs, vals)
                    finish(step)
            if failure is not None:
                ready.clear()
                continue
            if not ready:
                continue
            step = ready.popleft()
            if t.step_expensive[step]:
                i = steps[step][0]
                try:
                    args = _gather(items[i], vals)
                except Exception as e:
                    failure = _chained(as_op_error(e, items[i].op), e)
                    continue
                if not ready and not in_flight:
                    # Nothing could run beside it: run it here, sparing a thread hand-off (and, in a new
                    # session, the start of a pool thread) per save or restore.
                    try:
                        outs = _call(items[i], self.context(i, options), args)
                    except Exception as e:
                        failure = _chained(as_op_error(e, items[i].op), e)
                        continue
                    _store(items[i], outs, vals)
                    finish(step)
                    continue
                if pool is None:
                    pool = pool_fn()
                in_flight += 1
                pool.submit(background, step, i, self.context(i, options), args)
            else:
                try:
                    self._run_items(steps[step], vals, options)
                except errors.OpError as e:
                    failure = e
                    continue
                finish(step)
        if failure is not None:
            raise failure


def _toposort(needed: dict[Operation, Sequence[Operation]]) -> list[Operation]:
    """Ops in an order where each comes after those it waits for."""
    # Ops are created after their inputs, so creation order almost always works: check it first.
    order = sorted(needed, key=_creation_id)
    if all(d._id < op._id for op, deps in needed.items() for d in deps):
        return order
    # An edge added later (_add_control_input) can point backwards: Kahn's algorithm, earliest first.
    pending = {op: len(deps) for op, deps in needed.items()}
    users: dict[Operation, list[Operation]] = {}
    for op, deps in needed.items():
        for d in deps:
            users.setdefault(d, []).append(op)
    ready = [(op._id, op) for op in order if pending[op] == 0]
    heapq.heapify(ready)
    out: list[Operation] = []
    while ready:
        op = heapq.heappop(ready)[1]
        out.append(op)
        for u in users.get(op, ()):
            pending[u] -= 1
            if pending[u] == 0:
                heapq.heappush(ready, (u._id, u))
    if len(out) != len(needed):
        stuck = sorted(op._name for op, k in pending.items() if k > 0)[:5]
        raise errors.InvalidArgumentError(None, None, f"Graph has a cycle through {stuck}; cannot run it.")
    return out


_creation_id = operator.attrgetter("_id")
_NONE: tuple = ()  # shared in_slots / deref of ops without inputs (never mutated)
_MAX_TEMPLATES = 256  # per graph; a program asking for more distinct fetch sets rebuilds them
_BIG_PLAN = 1000  # ops; runs of bigger plans pause the cyclic GC


class _Target(NamedTuple):
    """The variable an op's output may be written straight into (see _in_place_targets)."""

    key: Any  # its VariableStore key
    name: str
    dtype: Any
    shape: Any  # TensorShape
    copy_on_write: bool  # a resource variable: earlier reads may still share its buffer
    np_dtype: Any


def _chained(error: errors.OpError, cause: BaseException) -> errors.OpError:
    if error is not cause:
        error.__cause__ = cause
    return error


def _gather(item: _Item, vals: list[Any]) -> list[Any]:
    args = [vals[s] for s in item.in_slots]
    for j in item.deref:
        a = args[j]
        if type(a) is Ref:
            args[j] = item.read(a)
    return args


def _call(item: _Item, ctx: OpKernelContext, args: list[Any]) -> Any:
    """Run ``item``'s kernel. The one rule for what a kernel returns: a sequence of exactly ``n_out``
    values, or None for an op without outputs."""
    outs = item.kernel(ctx, *args)
    if (0 if outs is None else len(outs)) != item.n_out:
        raise _wrong_outputs(item, outs)
    return outs


def _wrong_outputs(item: _Item, outs: Any) -> errors.InternalError:
    n = 0 if outs is None else len(outs)
    return errors.InternalError(
        None, item.op, f"Kernel of {item.op._type} returned {n} outputs, expected {item.n_out}"
    )


def _store(item: _Item, outs: Any, vals: list[Any]) -> None:
    if item.n_out:
        vals[item.out_slot : item.out_slot + item.n_out] = outs


def _in_place_targets(
    op: Operation, needed: dict, fetched: set, var_keys: dict
) -> tuple[_Target | None, ...]:
    """For each output of ``op``: the variable it may be written straight into, if any.

    That is when the output flows, through Identity ops only, into a single assignment of a variable
    (``Assign`` of a VariableV2, or ``AssignVariableOp`` of a VarHandleOp) and nothing else in the plan
    reads or fetches it on the way.
    """
    targets: list[_Target | None] = []
    for t in op._outputs:
        target = None
        while t not in fetched:
            users = [c for c in _consumer_list(t._consumers) if c in needed]
            if len(users) != 1:
                break
            user = users[0]
            if user._type == "Identity":
                t = user._outputs[0]
                continue
            var_op = user._inputs[0]._op
            if user._inputs[1] is t and var_op in needed and user._inputs[0] not in fetched:
                if user._type == "Assign" and var_op._type == "VariableV2":
                    key, cow = var_keys.get(var_op) or variable_key(var_op), False
                elif user._type == "AssignVariableOp" and var_op._type == "VarHandleOp":
                    key, cow = resource_key(var_op), True
                else:
                    break
                dtype = var_op._attrs["dtype"]
                target = _Target(key, key[-1], dtype, var_op._attrs["shape"], cow, numpy_dtype(dtype))
            break
        targets.append(target)
    return tuple(targets)


def as_op_error(e: BaseException, op: Operation | None) -> errors.OpError:
    """``e`` as an OpError naming ``op`` (kernel errors come without one)."""
    if isinstance(e, errors.OpError):
        if e.op is not None or op is None:
            return e
        cls = errors.exception_type_from_error_code(e.error_code)
        return cls(op.node_def, op, e.message)
    if isinstance(e, (ValueError, TypeError, IndexError, ArithmeticError, KeyError)):
        cls = errors.InvalidArgumentError
    elif isinstance(e, MemoryError):
        cls = errors.ResourceExhaustedError
    elif isinstance(e, FileNotFoundError):
        cls = errors.NotFoundError
    elif isinstance(e, PermissionError):
        cls = errors.PermissionDeniedError
    elif isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        cls = errors.ResourceExhaustedError
    else:
        cls = errors.UnknownError
    node_def = op.node_def if op is not None else None
    return cls(node_def, op, f"{type(e).__name__}: {e}")
