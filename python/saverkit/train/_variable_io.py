"""Moving variable values between a Session and numpy, without adding ops to the graph.

Saving fetches the variables' existing read tensors (`<name>/read`) in one `session.run`; restoring feeds
values into the variables' existing initializer assigns (what TF's `Variable.load` does). See
`saverkit.train.checkpoint` for why object-based checkpoints move values this way.
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


def fetch_values(session, variables) -> list[np.ndarray]:
    """Current values of `variables` in `session`, fetched together through their existing read tensors."""
    check_same_graph(session, variables)
    if not variables:
        return []
    return list(session.run([v.value() for v in variables]))


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


def assign_target(var):
    """(op to run, tensor to feed) that assigns a fed value to `var`."""
    init = var.initializer
    if init is not None and init.type == "Assign" and len(init.inputs) == 2:
        return init, init.inputs[1]
    # An initializer of another shape (e.g. from a hand-written meta graph): build a placeholder-fed
    # Assign once, next to the variable.
    cached = getattr(var, "_saverkit_assign", None)
    if cached is None:
        from saverkit import assign, placeholder

        with var.graph.as_default(), var.graph.name_scope(var.op.name + "/"):
            value = placeholder(var.dtype.base_dtype, shape=var.shape, name="restore_value")
            cached = (assign(var, value, validate_shape=False).op, value)
        var._saverkit_assign = cached
    return cached


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
