"""``Session``: runs the part of a graph that fetches need, holding variable state between runs."""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Mapping
from typing import Any

import ml_dtypes
import numpy as np

from saverkit import _gc, dtypes, errors
from saverkit.framework import constant_op, ops
from saverkit.framework.executor import Plan, template_for
from saverkit.framework.run_options import RunOptions, as_run_options
from saverkit.framework.variable_store import Ref, VariableStore

_MAX_CACHED_PLANS = 1024


class _DefaultSessionStack(threading.local):
    def __init__(self) -> None:
        self.stack: list[Session] = []


_default_session_stack = _DefaultSessionStack()


def get_default_session() -> Session | None:
    """The innermost session entered with ``as_default()`` / ``with Session():`` in this thread."""
    stack = _default_session_stack.stack
    return stack[-1] if stack else None


class Session:
    """Runs operations of ``graph`` (default: the default graph) in this process.

    Variable values live in the session (numpy arrays); ``run`` executes only the ops the fetches
    depend on, with an execution plan cached per (fetches, feeds).
    """

    def __init__(self, target: str = "", graph: ops.Graph | None = None, config: Any = None) -> None:
        if target:
            raise ValueError(f"saverkit sessions run in-process; target must be '' (got {target!r})")
        self._graph = graph if graph is not None else ops.get_default_graph()
        if not isinstance(self._graph, ops.Graph):
            raise TypeError(f"graph must be a saverkit.Graph, got {type(self._graph).__name__}")
        self._target = target
        self._config = config
        self._variables = VariableStore()
        self._plans: dict[Any, Plan] = {}
        self._plans_version = self._graph._edges_version
        self._closed = False
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._entered: list[contextlib.ExitStack] = []

    # --- properties --------------------------------------------------------------------------
    @property
    def graph(self) -> ops.Graph:
        return self._graph

    @property
    def graph_def(self) -> Any:
        return self._graph.as_graph_def()

    @property
    def sess_str(self) -> str:
        return self._target

    # --- running ---------------------------------------------------------------------------------
    def run(
        self,
        fetches: Any,
        feed_dict: Mapping | None = None,
        options: RunOptions | None = None,
        run_metadata: Any = None,
    ) -> Any:
        """Compute ``fetches`` (a tensor, op, variable, name, or nested list/tuple/dict/namedtuple of them).

        Returns values in the same structure (None for ops). ``feed_dict`` maps tensors (or their names)
        to values that replace them for this run. ``options`` (a :class:`saverkit.RunOptions`) reaches
        the kernels of this run only; other kinds of options (TF's RunOptions proto) and ``run_metadata``
        are accepted and ignored.
        """
        if self._closed:
            raise RuntimeError("Attempted to use a closed Session.")
        if self._graph.version == 0:
            raise RuntimeError(
                "The Session graph is empty. Add operations to the graph before calling run()."
            )
        elements: list[Any] = []
        template = _fetch_structure(fetches, self._graph, elements)
        tensors: dict[ops.Tensor, None] = {}
        targets: dict[ops.Operation, None] = {}
        for el in elements:
            if isinstance(el, ops.Tensor):
                tensors[el] = None
            else:
                targets[el] = None
        feeds = self._feeds(feed_dict)
        plan = self._plan(list(tensors), list(targets), feeds)
        run_options = as_run_options(options)
        values = plan.run([feeds[t] for t in plan.feeds], self._thread_pool, run_options)
        if run_options.snapshot is not None:  # an asynchronous save's fetches: into its staging memory
            values = run_options.snapshot.stage_fetches([v.value() if type(v) is Ref else v for v in values])
        by_tensor = dict(zip(tensors, [_fetched(v) for v in values], strict=False))
        return _rebuild(template, [by_tensor.get(el) for el in elements])

    def make_callable(
        self, fetches: Any, feed_list: list | None = None, accept_options: bool = False
    ) -> Callable[..., Any]:
        """A function running ``fetches`` with positional values for ``feed_list``."""
        feed_list = list(feed_list or [])

        def call(*args: Any, **kwargs: Any) -> Any:
            if len(args) != len(feed_list):
                raise TypeError(f"Expected {len(feed_list)} feed values, got {len(args)}")
            return self.run(fetches, dict(zip(feed_list, args, strict=False)))

        return call

    def _plan(
        self, tensors: list[ops.Tensor], targets: list[ops.Operation], feeds: dict[ops.Tensor, Any]
    ) -> Plan:
        if self._plans_version != self._graph._edges_version:  # an existing op gained/lost a control input
            self._plans.clear()
            self._plans_version = self._graph._edges_version
        key = (tuple(tensors), tuple(targets), frozenset(feeds))
        plan = self._plans.get(key)
        if plan is None:
            with _gc.paused():
                template = template_for(self._graph, tensors, targets, list(feeds))
                plan = Plan(template, self._variables, self)
            if len(self._plans) >= _MAX_CACHED_PLANS:
                self._plans.clear()
            self._plans[key] = plan
        return plan

    def _feeds(self, feed_dict: Mapping | None) -> dict[ops.Tensor, Any]:
        feeds: dict[ops.Tensor, Any] = {}
        for key, value in (feed_dict or {}).items():
            try:
                t = self._graph.as_graph_element(key, allow_tensor=True, allow_operation=False)
            except (TypeError, ValueError, KeyError) as e:
                raise TypeError(f"Cannot interpret feed_dict key as Tensor: {e}") from None
            if isinstance(value, ops.Tensor) or hasattr(value, "_as_graph_element"):
                raise TypeError(
                    f"The value of a feed cannot be a Tensor or Variable ({key!r}). Acceptable feed "
                    "values include Python scalars, strings, lists and numpy ndarrays."
                )
            feeds[t] = _feed_value(t, value)
        return feeds

    def _thread_pool(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    n = getattr(self._config, "inter_op_parallelism_threads", 0) or None
                    self._pool = concurrent.futures.ThreadPoolExecutor(
                        max_workers=n, thread_name_prefix="saverkit-session"
                    )
        return self._pool

    # --- lifetime --------------------------------------------------------------------------------
    def close(self) -> None:
        """Free the session's variables and threads; later ``run`` calls raise RuntimeError."""
        if self._closed:
            return
        self._closed = True
        self._plans.clear()
        self._variables.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def as_default(self) -> contextlib.AbstractContextManager[Session]:
        """Make this the default session (used by ``Tensor.eval`` / ``Operation.run``) in the block."""
        return ops.pushed_default(_default_session_stack.stack, self)

    def __enter__(self) -> Session:
        contexts = contextlib.ExitStack()
        contexts.enter_context(self._graph.as_default())
        contexts.enter_context(self.as_default())
        self._entered.append(contexts)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._entered:
            self._entered.pop().close()
        self.close()

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False)

    def __repr__(self) -> str:
        return f"<saverkit.Session{' (closed)' if self._closed else ''} on {self._graph!r}>"


class InteractiveSession(Session):
    """A Session that makes itself (and its graph) the default when created, until ``close()``."""

    def __init__(self, target: str = "", graph: ops.Graph | None = None, config: Any = None) -> None:
        super().__init__(target, graph, config)
        interactive = contextlib.ExitStack()
        self._interactive: contextlib.ExitStack | None = interactive
        interactive.enter_context(self._graph.as_default())
        interactive.enter_context(self.as_default())

    def close(self) -> None:
        super().close()
        interactive = getattr(self, "_interactive", None)
        if interactive is not None:
            interactive.close()
            self._interactive = None


# --- fetches --------------------------------------------------------------------------------------


def _fetch_structure(fetch: Any, graph: ops.Graph, elements: list[Any]) -> Any:
    """Append the graph elements of ``fetch`` to ``elements``; return a template of its structure whose
    leaves are indices into ``elements`` (see ``_rebuild``)."""
    kind = type(fetch)
    if kind is ops.Tensor or kind is ops.Operation:  # the common leaves, checked first: fetches can be huge
        elements.append(graph.as_graph_element(fetch))
        return len(elements) - 1
    if fetch is None:
        raise TypeError(f"Fetch argument None has invalid type {type(None)}")
    if isinstance(fetch, (list, tuple)):
        children = [_fetch_structure(f, graph, elements) for f in fetch]
        return ("seq", kind, hasattr(fetch, "_fields"), children)
    if isinstance(fetch, Mapping) and not hasattr(fetch, "_as_graph_element"):
        keys = list(fetch.keys())
        return ("map", fetch, keys, [_fetch_structure(fetch[k], graph, elements) for k in keys])
    try:
        el = graph.as_graph_element(fetch, allow_tensor=True, allow_operation=True)
    except TypeError as e:
        raise TypeError(
            f"Fetch argument {fetch!r} has invalid type {type(fetch)}, must be a string or Tensor. ({e})"
        ) from None
    except (ValueError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        raise ValueError(f"Fetch argument {fetch!r} cannot be interpreted as a Tensor. ({msg})") from None
    elements.append(el)
    return len(elements) - 1


def _rebuild(template: Any, values: list[Any]) -> Any:
    if type(template) is int:
        return values[template]
    if template[0] == "seq":
        _, kind, is_namedtuple, children = template
        items = [values[c] if type(c) is int else _rebuild(c, values) for c in children]
        if is_namedtuple:
            return kind(*items)
        return items if kind is list else kind(items)
    _, original, keys, children = template
    out = (
        original.__class__(original.default_factory)
        if hasattr(original, "default_factory")
        else original.__class__()
    )
    for k, c in zip(keys, children, strict=False):
        out[k] = _rebuild(c, values)
    return out


def _fetched(value: Any) -> Any:
    """A fetched value as the caller may keep it: never an alias of session-owned state."""
    if type(value) is Ref:
        value = value.value()
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            return value[()]  # numpy scalar / bytes, as TF returns for scalars
        if not value.flags.writeable:  # a view of a variable, Const or feed: copy it
            return value.copy()
    return value


# --- feeds ----------------------------------------------------------------------------------------


def _feed_value(t: ops.Tensor, value: Any) -> np.ndarray:
    dt = t.dtype.base_dtype
    try:
        if dt == dtypes.string:
            arr = constant_op._bytes_array(value)
        else:
            arr = _numeric_feed(value, dt)
    except (TypeError, ValueError, OverflowError) as e:
        raise errors.InvalidArgumentError(
            None, None, f"Cannot feed {_describe(value)} to Tensor '{t.name}' of dtype {dt.name}: {e}"
        ) from None
    if not t.shape.is_compatible_with(arr.shape):
        raise errors.InvalidArgumentError(
            None,
            None,
            f"Cannot feed value of shape {arr.shape} for Tensor '{t.name}', which has shape '{t.shape}'",
        )
    view = arr.view()
    view.flags.writeable = False  # the caller's array: kernels must not write it, fetches must copy it
    return view


_FEED_KINDS = {"float": "biuf", "complex": "biufc", "int": "biu", "bool": "b"}


def _numeric_feed(value: Any, dt: dtypes.DType) -> np.ndarray:
    src = value if isinstance(value, np.ndarray) else np.asarray(value)
    if src.dtype.fields:  # a quantized record array
        src = src.view(src.dtype.fields[next(iter(src.dtype.fields))][0])
    kind = src.dtype.kind
    if kind == "V":  # ml_dtypes types (bfloat16, float8, int4...) are numpy "void" kinds
        try:
            sd = dtypes.as_dtype(src.dtype)
            kind = "f" if sd.is_floating else "i" if sd.is_integer else kind
        except TypeError:
            pass
    family = "float" if dt.is_floating else "complex" if dt.is_complex else "bool" if dt.is_bool else "int"
    if kind not in _FEED_KINDS[family]:
        raise TypeError(f"a value of numpy type {src.dtype} is not convertible to {dt.name}")
    target = np.dtype(dt.as_numpy_dtype)
    if family == "int" and src.size and kind in "iu":
        base = target.fields[next(iter(target.fields))][0] if target.fields else target
        info = ml_dtypes.iinfo(base)
        if src.min() < info.min or src.max() > info.max:
            raise ValueError(f"values out of range for {dt.name}")
        if target.fields:
            return src.astype(base).view(target)
    if src.dtype == target:
        return src
    return src.astype(target)


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of {value.dtype}{list(value.shape)}"
    text = repr(value)
    return f"{text[:60]}..." if len(text) > 60 else text
