"""Device strings (``/job:ps/replica:0/task:1/device:CPU:0``): parse, merge, print canonically like TF."""

from __future__ import annotations

import functools

_FIELDS = ("job", "replica", "task", "device_type", "device_index")


@functools.lru_cache(maxsize=1024)
def parse(spec: str) -> tuple:
    """(job, replica, task, device_type, device_index), None for unspecified fields."""
    job = replica = task = device_type = device_index = None
    for part in spec.split("/"):
        if not part:
            continue
        y = part.split(":")
        key = y[0]
        try:
            if key == "job" and len(y) == 2:
                job = y[1]
            elif key == "replica" and len(y) == 2:
                replica = int(y[1])
            elif key == "task" and len(y) == 2:
                task = int(y[1])
            elif key == "device" and len(y) in (2, 3):
                device_type = y[1].upper() if y[1].upper() in ("CPU", "GPU") else y[1]
                device_index = int(y[2]) if len(y) == 3 and y[2] != "*" else None
            elif len(y) in (1, 2) and key.upper() in ("CPU", "GPU"):
                device_type = key.upper()
                device_index = int(y[1]) if len(y) == 2 and y[1] != "*" else None
            else:
                raise ValueError
        except ValueError:
            raise ValueError(f"Unknown attribute: '{part}' in device specification {spec!r}") from None
    return (job, replica, task, device_type, device_index)


def to_string(fields: tuple) -> str:
    job, replica, task, device_type, device_index = fields
    out = ""
    if job is not None:
        out += f"/job:{job}"
    if replica is not None:
        out += f"/replica:{replica}"
    if task is not None:
        out += f"/task:{task}"
    if device_type is not None:
        out += f"/device:{device_type}:{'*' if device_index is None else device_index}"
    return out


def canonical_name(spec: str | None) -> str:
    return to_string(parse(spec)) if spec else ""


@functools.lru_cache(maxsize=1024)
def merge(inner: str, outer: str) -> str:
    """``inner``'s fields, with the ones it leaves unspecified taken from ``outer``."""
    a, b = parse(inner), parse(outer)
    # A device type without an index inherits neither the outer type's index nor type.
    if a[3] is not None:
        merged = tuple(x if x is not None else y for x, y in zip(a[:3], b[:3], strict=False)) + a[3:]
    else:
        merged = tuple(x if x is not None else y for x, y in zip(a, b, strict=False))
    return to_string(merged)
