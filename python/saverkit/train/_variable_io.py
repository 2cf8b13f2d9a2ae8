"""Moving values between checkpoint files and the variables of a Session.

Two ways, chosen per call:

* in-graph (the default): SaveV2 + MergeV2Checkpoints, or RestoreV2 + Assign ops, built once per set of
  variables and cached per graph, with the paths (and the object graph) fed through placeholders. The
  kernels read the variables' buffers and restore straight into them, so no value is copied on the way
  (about twice as fast as the other way on a 512 MiB model);
* engine-direct, when the graph is finalized and no cached op fits: values are fetched through the
  variables' existing read tensors and written by `saverkit.bundle`, or read by it and fed into the
  variables' existing initializer assigns (what TF's `Variable.load` does). Nothing is added to the graph,
  at the cost of one host copy per value.

Both write the same bytes; see `saverkit.train.checkpoint` for the reasoning.
"""

from __future__ import annotations

import numpy as np

from saverkit import errors


def default_session():
    from saverkit import get_default_session

    return get_default_session()


def require_session(session, what: str):
    session = session if session is not None else default_session()
    if session is None:
        raise RuntimeError(
            f"{what} needs a Session: pass session=... or call it inside `with saverkit.Session() as sess:` "
            "(or `with sess.as_default():`)."
        )
    return session


def variable_name(var) -> str:
    """The variable's graph name without the output index ("dense/kernel", not "dense/kernel:0")."""
    return var.op.name


def fetch_values(session, variables, options=None) -> list[np.ndarray]:
    """Current values of `variables` in `session`, fetched together through their existing read tensors
    (`options`: the run's RunOptions)."""
    check_same_graph(session, variables)
    if not variables:
        return []
    return list(session.run([v.value() for v in variables], options=options))


def assign_values(session, pairs) -> None:
    """Assign numpy values to variables in `session`, feeding each variable's initializer input.

    A variable's initializer is `Assign(variable, initial_value)`; feeding `initial_value` turns it into
    "assign this value" (what TF's `Variable.load` does) without adding ops to a possibly finalized graph.
    Variables sharing one initial-value tensor cannot be fed in the same run, so they go in later runs.
    """
    if not pairs:
        return
    check_same_graph(session, [v for v, _ in pairs])
    batches: list[tuple[list, dict]] = []
    for var, value in pairs:
        target, feed_tensor = assign_target(var)
        batch = next((b for b in batches if feed_tensor not in b[1]), None)
        if batch is None:
            batch = ([], {})
            batches.append(batch)
        batch[0].append(target)
        batch[1][feed_tensor] = value
    for fetches, feed in batches:
        session.run(fetches, feed_dict=feed)


def assign_op(var, value, validate_shape: bool | None = None):
    """An op storing tensor `value` in `var`: Assign for ref variables, AssignVariableOp for resource
    variables (imported from TF meta graphs)."""
    from saverkit import assign

    if var.op.type == "VarHandleOp":  # a ResourceVariable (the graph layer's class for them)
        return var.assign(value, read_value=False)
    if validate_shape is None:
        validate_shape = var.shape.is_fully_defined()
    return assign(var, value, validate_shape=validate_shape).op


def assign_target(var):
    """(op to run, tensor to feed) that assigns a fed value to `var`."""
    init = var.initializer
    if init is not None and init.type in ("Assign", "AssignVariableOp") and len(init.inputs) == 2:
        return init, init.inputs[1]
    # An initializer of another shape (e.g. from a hand-written meta graph): build a placeholder-fed
    # assign once per variable object, next to the variable. Cached by the graph, with the variable (which
    # keeps its id from being reused while the entry exists).
    cache = var.graph.layer_cache("variable_assign")
    entry = cache.get(id(var))
    if entry is None:
        from saverkit import placeholder

        with var.graph.as_default(), var.graph.name_scope(var.op.name + "/"):
            value = placeholder(var.dtype.base_dtype, shape=var.shape, name="restore_value")
            entry = cache[id(var)] = (assign_op(var, value, validate_shape=False), value, var)
    return entry[0], entry[1]


def check_same_graph(session, variables) -> None:
    for v in variables:
        if v.graph is not session.graph:
            raise ValueError(
                f"Variable {v.name!r} belongs to a different graph than the session's; create the session "
                "on the graph that holds the checkpointed variables."
            )


def check_compatible(var, key: str, dtype, shape, save_path: str) -> None:
    if var.dtype.base_dtype != dtype:
        raise errors.InvalidArgumentError(
            None,
            None,
            f"Cannot restore {key!r} from {save_path} into variable {var.name!r}: the checkpoint holds "
            f"{dtype.name}, the variable is {var.dtype.base_dtype.name}.",
        )
    var_shape = var.shape
    if var_shape.rank is not None and not var_shape.is_compatible_with(shape):
        raise errors.InvalidArgumentError(
            None,
            None,
            f"Cannot restore {key!r} from {save_path} into variable {var.name!r}: the checkpoint holds "
            f"shape {list(shape)}, the variable has shape {var_shape.as_list()}.",
        )


def _cached_ops(graph, signature, build):
    # The cache lives on the graph (signature of a save/restore -> its ops, plus the variables, which keeps
    # their ids from being reused while the entry exists), so it goes away with the graph. A module-level
    # weak-keyed dict would keep every graph alive: its values refer to the graph's ops.
    cache = graph.layer_cache("checkpoint")
    entry = cache.get(signature)
    if entry is None and not graph.finalized:
        # Like TF's init_scope: the user's current name scope, device and control dependencies must not
        # leak into ops that are reused later from anywhere.
        with (
            graph.as_default(),
            graph.name_scope(None),
            graph.device(None),
            graph.control_dependencies(None),
            graph.name_scope("checkpoint"),
        ):
            entry = cache[signature] = build()
    return entry


def save_tensors(session, file_prefix: str, part: str | None, variables, keys, extra_strings,
                 storage_options: dict | None = None, snapshot=None) -> None:
    """Write `variables` under `keys`, then `extra_strings` (key -> bytes), into part `part` and merge
    the part into `file_prefix` (TF2's temp-part-then-merge sequence); `part` None: straight into
    `file_prefix` (a URL).

    With `snapshot` (an asynchronous save), nothing is written: the values are copied into it and the write
    (and the merge of a part) recorded (`saverkit.train.async_save`)."""
    from saverkit import bundle, control_dependencies, dtypes, placeholder
    from saverkit.framework import io_ops
    from saverkit.framework.run_options import RunOptions

    check_same_graph(session, variables)
    extra_keys = list(extra_strings)
    # An asynchronous save fetches its values straight into the snapshot's staging memory (one copy); what
    # exceeds its limit comes back as ordinary copies, and is then written now, synchronously.
    fetch_options = RunOptions(snapshot=snapshot) if snapshot is not None else None
    if part is None:  # a URL (saverkit.storage): written in place, data object then index; no part, no merge
        values = fetch_values(session, variables, fetch_options)
        tensors = values + [np.array(extra_strings[k], dtype=object) for k in extra_keys]
        tensor_dtypes = [v.dtype.base_dtype for v in variables] + [dtypes.string] * len(extra_keys)
        names = list(keys) + extra_keys
        if snapshot is not None and not snapshot.fetches_over_limit:
            snapshot.add_fetched_write(file_prefix, tensors, tensor_dtypes,
                                       names=lambda: (names, [""] * len(names)),
                                       storage_options=storage_options)
            return
        bundle.write_bundle(file_prefix, names, tensors, dtypes=tensor_dtypes,
                            storage_options=storage_options)
        return
    signature = ("save", tuple(keys), tuple(map(id, variables)), tuple(extra_keys))

    def build():
        part_ph = placeholder(dtypes.string, [], name="part")
        parts_ph = placeholder(dtypes.string, [1], name="parts")
        prefix_ph = placeholder(dtypes.string, [], name="prefix")
        extra_phs = [placeholder(dtypes.string, [], name="value") for _ in extra_keys]
        tensors = [v.value() for v in variables] + extra_phs
        save = io_ops.save_v2(part_ph, list(keys) + extra_keys, [""] * len(tensors), tensors)
        with control_dependencies([save]):
            merge = io_ops.merge_v2_checkpoints(parts_ph, prefix_ph, delete_old_dirs=True)
        return merge, part_ph, parts_ph, prefix_ph, extra_phs, list(variables)

    entry = _cached_ops(session.graph, signature, build)
    if entry is not None:
        merge, part_ph, parts_ph, prefix_ph, extra_phs, _ = entry
        feed = {part_ph: part, parts_ph: np.array([part], dtype=object), prefix_ph: file_prefix}
        for ph, key in zip(extra_phs, extra_keys, strict=True):
            feed[ph] = np.array(extra_strings[key], dtype=object)
        if snapshot is None:
            session.run(merge, feed_dict=feed)
            return
        try:
            session.run(merge, feed_dict=feed, options=RunOptions(snapshot=snapshot))
        except BaseException:
            snapshot.abandon()  # its started writes end before the caller removes the part directory
            raise
        return
    values = fetch_values(session, variables, fetch_options)
    names = list(keys) + extra_keys
    tensors = values + [np.array(extra_strings[k], dtype=object) for k in extra_keys]
    tensor_dtypes = [v.dtype.base_dtype for v in variables] + [dtypes.string] * len(extra_keys)
    specs = [""] * len(names)
    if snapshot is not None and not snapshot.fetches_over_limit:
        snapshot.add_fetched_write(part, tensors, tensor_dtypes, names=lambda: (names, specs))
    else:
        bundle.write_bundle(part, names, tensors, dtypes=tensor_dtypes)
    if snapshot is not None:
        snapshot.add_merge([part], file_prefix, delete_old_dirs=True)
        return
    bundle.merge_bundles([part], file_prefix, delete_old_dirs=True)


def restore_tensors(session, source, triples) -> None:
    """Assign tensor `key` (slice `spec`, "" = all of it) of checkpoint `source` (`.prefix`, `.read`) to
    each variable of `triples` = [(variable, key, spec)]."""
    from saverkit import dtypes, group, placeholder
    from saverkit.framework import io_ops

    variables = [v for v, _, _ in triples]
    check_same_graph(session, variables)
    signature = ("restore", tuple((id(v), k, s) for v, k, s in triples))

    def build():
        prefix_ph = placeholder(dtypes.string, [], name="prefix")
        restored = io_ops.restore_v2(
            prefix_ph, [k for _, k, _ in triples], [s for _, _, s in triples],
            [v.dtype.base_dtype for v in variables],
        )
        assigns = [assign_op(v, t) for v, t in zip(variables, restored, strict=True)]
        return group(*assigns), prefix_ph, variables

    entry = _cached_ops(session.graph, signature, build)
    if entry is not None:
        op, prefix_ph, _ = entry
        from saverkit.framework.run_options import RunOptions

        so = getattr(source, "storage_options", None)  # a URL's store options ride with the run
        session.run(op, feed_dict={prefix_ph: source.prefix},
                    options=None if so is None else RunOptions(storage_options=so))
        return
    values = source.read([k for _, k, _ in triples], [s for _, _, s in triples])
    assign_values(session, list(zip(variables, values, strict=True)))
