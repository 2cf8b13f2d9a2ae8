"""Benchmark workloads: deterministic payloads that can be regenerated piecewise for verification.

Float payloads live in one contiguous buffer and each variable is a view of it, so a framework that copies
the values on load frees the whole source at once (no heap fragments left to inflate the RSS figures).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MiB = 1 << 20
GiB = 1 << 30

# name -> (total payload bytes at scale 1, number of variables, kind)
WORKLOADS = {
    "W1": (1 * GiB, 64, "float32"),
    "W2": (256 * MiB, 10_000, "float32"),
    "W3": (4 * GiB, 16, "float32"),
    "W4": (100_000, 10, "string"),  # total is a number of strings, 0-200 bytes each
}
DESCRIPTIONS = {
    "W1": "1 GiB in 64 float32 variables",
    "W2": "256 MiB in 10,000 float32 variables",
    "W3": "4 GiB in 16 float32 variables",
    "W4": "100,000 strings of 0-200 bytes in 10 variables",
}
_GEN_CHUNK = 4 * MiB  # elements generated per step, to bound temporaries


def _fill(dst_u32: np.ndarray, start: int) -> None:
    """Element k of the workload is a hash of k, with the exponent kept below inf/NaN."""
    for lo in range(0, dst_u32.size, _GEN_CHUNK):
        hi = min(lo + _GEN_CHUNK, dst_u32.size)
        idx = np.arange(start + lo, start + hi, dtype=np.uint64)
        idx *= np.uint64(2654435761)
        dst_u32[lo:hi] = idx  # keeps the low 32 bits
        dst_u32[lo:hi] &= np.uint32(0xBF7FFFFF)


@dataclass
class Workload:
    name: str
    scale: float
    count: int
    kind: str
    elems_per_var: int = 0  # float workloads
    strings_per_var: int = 0  # string workload

    @classmethod
    def make(cls, name: str, scale: float = 1.0) -> Workload:
        total, count, kind = WORKLOADS[name]
        if kind == "string":
            return cls(name, scale, count, kind, strings_per_var=max(1, int(total * scale) // count))
        per_var = max(1, int(total * scale) // 4 // count)
        return cls(name, scale, count, kind, elems_per_var=per_var)

    @property
    def names(self) -> list[str]:
        return [f"layer_{i:05d}/kernel" for i in range(self.count)]

    @property
    def dtype(self):
        return np.dtype(np.float32) if self.kind == "float32" else np.dtype(object)

    def shape(self, i: int) -> tuple[int, ...]:
        if self.kind == "string":
            return (self.strings_per_var,)
        n = self.elems_per_var
        return (n // 256, 256) if n % 256 == 0 and n >= 256 else (n,)

    @property
    def elements(self) -> int:
        return self.count * (self.strings_per_var if self.kind == "string" else self.elems_per_var)

    @property
    def nbytes(self) -> int:
        """Payload bytes: tensor bytes for floats, the sum of string lengths for strings."""
        if self.kind == "string":
            return sum(sum(len(s) for s in self._strings(i)) for i in range(self.count))
        return self.elements * 4

    def _strings(self, i: int) -> list[bytes]:
        rng = np.random.default_rng([7, i])
        lengths = rng.integers(0, 201, size=self.strings_per_var)
        blob = rng.bytes(int(lengths.sum()))
        out, pos = [], 0
        for n in lengths.tolist():
            out.append(blob[pos : pos + n])
            pos += n
        return out

    def arrays(self) -> list[np.ndarray]:
        """All variables' values. Float variables are views of one buffer."""
        if self.kind == "string":
            return [self.expected(i) for i in range(self.count)]
        flat = self.buffer().view(np.float32)
        n = self.elems_per_var
        return [flat[i * n : (i + 1) * n].reshape(self.shape(i)) for i in range(self.count)]

    def buffer(self) -> np.ndarray:
        """The whole float payload, contiguous, as uint32 bit patterns."""
        buf = np.empty(self.elements, dtype=np.uint32)
        _fill(buf, 0)
        return buf

    def expected(self, i: int) -> np.ndarray:
        if self.kind == "string":
            arr = np.empty(self.strings_per_var, dtype=object)
            arr[:] = self._strings(i)
            return arr
        out = np.empty(self.elems_per_var, dtype=np.uint32)
        _fill(out, i * self.elems_per_var)
        return out.view(np.float32).reshape(self.shape(i))

    def empty_like_all(self) -> list[np.ndarray]:
        """Touched destination arrays (page faults already paid), for in-place restores."""
        if self.kind == "string":
            return [np.full(self.shape(i), b"", dtype=object) for i in range(self.count)]
        return [np.ones(self.shape(i), dtype=np.float32) for i in range(self.count)]


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Bitwise equality (float payloads are raw bit patterns)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    if a.dtype == object or b.dtype == object:
        return [bytes(x) for x in a.ravel()] == [bytes(x) for x in b.ravel()]
    return a.dtype == b.dtype and np.array_equal(a.view(np.uint8), b.view(np.uint8))
