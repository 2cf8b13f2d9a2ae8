"""Mutation generator for the corruption campaign.

A *subject* is one real checkpoint held in memory (file name -> bytes). A :class:`Mutation` is a
small, replayable description of damage done to a subject (``describe()`` prints it; ``apply()``
returns the damaged file set). Generation is deterministic for a given seed so any failure can be
replayed from its campaign report.

Kinds (the campaign reports counts per kind):
  flip          1-8 random bit flips anywhere in one file
  aimed_flip    bit flips at structural bytes: footer, handles, block trailers and restart arrays,
                entry headers, first/last payload bytes, string length varints
  overwrite     a structural spot overwritten with extreme bytes (0xff.., 0x80.. varint runs, 0x00..)
  truncate      a file cut at every block / trailer / footer / payload boundary (and +-1), and at
                random points
  zero          a range set to zero bytes (random spans and whole blocks / payloads)
  append        garbage appended to a file
  swap          a file replaced by the file in the same role of another checkpoint (mostly another
                generation of the same model), or two data shards exchanged
  delete        a data file removed
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from campaigns.sstable_layout import FOOTER_SIZE, TRAILER_SIZE, IndexLayout, parse_index, tensor_ranges


@dataclass
class Subject:
    name: str  # label for reports, e.g. "tf:v1_dtypes/model.ckpt-7"
    prefix: str  # basename prefix, e.g. "model.ckpt-7"
    files: dict[str, bytes]  # basename -> content (the .index and every data file)
    digests: dict[str, dict]  # key -> {"digest", "dtype", "shape"} read from the pristine files
    group: str = ""  # subjects in one group have the same file names and can swap files

    @property
    def index_name(self) -> str:
        return self.prefix + ".index"

    def data_names(self) -> list[str]:
        return sorted(n for n in self.files if n != self.index_name)

    def layout(self) -> IndexLayout:
        if not hasattr(self, "_layout"):
            self._layout = parse_index(self.files[self.index_name])
        return self._layout


@dataclass
class Mutation:
    kind: str
    subject: Subject
    file: str
    # (kind-specific) ordered list of edits: ("flip", pos, mask) / ("set", pos, bytes) /
    # ("truncate", length) / ("append", bytes) / ("replace", donor subject) / ("swap", other file)
    # / ("delete",)
    edits: tuple
    # whose values a correct read must return: the subject's, or the donor's when its index was used
    expect: Subject | None = None

    def expected(self) -> Subject:
        return self.expect or self.subject

    def describe(self) -> str:
        shown = []
        for e in self.edits:
            if e[0] == "replace":
                shown.append(("replace", e[1].name))
            elif e[0] in ("set", "append"):
                shown.append((e[0], *e[1:-1], e[-1][:16].hex() + ("..." if len(e[-1]) > 16 else "")))
            else:
                shown.append(e)
        return f"{self.kind} {self.subject.name}:{self.file} {shown}"

    def apply(self) -> dict[str, bytes]:
        files = dict(self.subject.files)
        for e in self.edits:
            op = e[0]
            if op == "delete":
                del files[self.file]
                continue
            if op == "replace":  # the donor's file in the same role (".index", ".data-00001-of-00002")
                donor = e[1]
                files[self.file] = donor.files[donor.prefix + self.file[len(self.subject.prefix) :]]
                continue
            if op == "swap":
                files[self.file], files[e[1]] = files[e[1]], files[self.file]
                continue
            buf = bytearray(files[self.file])
            if op == "flip":
                buf[e[1]] ^= e[2]
            elif op == "set":
                buf[e[1] : e[1] + len(e[2])] = e[2]
            elif op == "truncate":
                del buf[e[1] :]
            elif op == "append":
                buf += e[1]
            else:
                raise ValueError(op)
            files[self.file] = bytes(buf)
        return files


def _structural_spots(subject: Subject, file: str) -> list[int]:
    """Byte offsets where damage is most likely to reach a parser's edge cases."""
    size = len(subject.files[file])
    if size == 0:
        return []
    if file != subject.index_name:
        spots = []
        shard = _shard_of(subject, file)
        for off, n in tensor_ranges(subject.layout()).get(shard, []):
            spots += [off, off + 1, off + n - 1, off + n // 2]
        return [s for s in spots if 0 <= s < size] or [0]
    lay = subject.layout()
    spots = list(range(max(0, size - FOOTER_SIZE), size))  # footer: handles, padding, magic
    for b in lay.blocks:
        end = b.offset + b.size
        spots += list(range(max(b.offset, end - 8), min(size, end + TRAILER_SIZE)))  # restarts, trailer
    for at in lay.entry_offsets:
        spots += list(range(at, min(size, at + 6)))  # shared / non_shared / value_length varints
    return [s for s in spots if 0 <= s < size]


def _shard_of(subject: Subject, file: str) -> int:
    return int(file.rsplit(".data-", 1)[1].split("-of-")[0])


_EXTREMES = [
    b"\xff" * 10,
    b"\xff\xff\xff\xff\x0f",
    b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01",
    b"\xff\xff\xff\x7f",
    b"\x00" * 8,
    b"\x7f",
    b"\xfe\xff\xff\xff\xff\xff\xff\xff\x7f",
]


class Generator:
    """Draws mutations for a list of subjects (same seed -> same sequence)."""

    def __init__(self, subjects: list[Subject], seed: int) -> None:
        self.subjects = subjects
        self.rng = random.Random(seed)

    # --- exhaustive part: every truncation boundary of every file of every subject ----------------
    def boundary_truncations(self) -> list[Mutation]:
        out = []
        for s in self.subjects:
            for f in sorted(s.files):
                size = len(s.files[f])
                if f == s.index_name:
                    cuts = s.layout().boundaries()
                else:  # payload boundaries; a file with many tensors gets a sample of them
                    ranges = tensor_ranges(s.layout()).get(_shard_of(s, f), [])
                    if len(ranges) > 24:
                        ranges = random.Random(f).sample(ranges, 24)
                    cuts = [c for off, n in ranges for c in (off, off + n)]
                points = sorted({c + d for c in cuts for d in (-1, 0, 1) if 0 <= c + d < size})
                out += [Mutation("truncate", s, f, (("truncate", p),)) for p in points]
        return out

    # --- random part -------------------------------------------------------------------------------
    KINDS = ("flip", "aimed_flip", "overwrite", "truncate", "zero", "append", "swap", "delete")
    WEIGHTS = (20, 30, 15, 5, 12, 6, 8, 4)

    def random_mutation(self) -> Mutation:
        rng = self.rng
        s = rng.choice(self.subjects)
        kind = rng.choices(self.KINDS, self.WEIGHTS)[0]
        # the index is small but holds all the structure: damage it half of the time
        f = s.index_name if rng.random() < 0.5 or not s.data_names() else rng.choice(s.data_names())
        size = len(s.files[f])
        if size == 0 and kind in ("flip", "aimed_flip", "overwrite", "truncate", "zero"):
            kind = "append"
        if kind == "flip":
            n = rng.randint(1, 8)
            edits = tuple(("flip", rng.randrange(size), 1 << rng.randrange(8)) for _ in range(n))
        elif kind == "aimed_flip":
            spots = _structural_spots(s, f)
            n = rng.randint(1, 3)
            edits = tuple(("flip", rng.choice(spots), 1 << rng.randrange(8)) for _ in range(n))
        elif kind == "overwrite":
            pos = rng.choice(_structural_spots(s, f))
            edits = (("set", pos, rng.choice(_EXTREMES)[: size - pos]),)
        elif kind == "truncate":
            edits = (("truncate", rng.randrange(size)),)
        elif kind == "zero":
            edits = (("set", *self._zero_span(s, f)),)
        elif kind == "append":
            n = rng.choice([1, 4, 48, rng.randint(1, 4096)])
            edits = (("append", rng.randbytes(n)),)
        elif kind == "swap":
            return self._swap(s, f)
        else:  # delete
            if not s.data_names():
                return self.random_mutation()
            f = rng.choice(s.data_names())
            edits = (("delete",),)
        return Mutation(kind, s, f, edits)

    def _zero_span(self, s: Subject, f: str) -> tuple[int, bytes]:
        rng, size = self.rng, len(s.files[f])
        if rng.random() < 0.4:
            if f == s.index_name:
                b = rng.choice(s.layout().blocks)
                start, n = b.offset, b.size + TRAILER_SIZE
            else:
                ranges = tensor_ranges(s.layout()).get(_shard_of(s, f)) or [(0, size)]
                start, n = rng.choice(ranges)
        else:
            start = rng.randrange(size)
            n = rng.choice([1, 2, 4, 8, 16, 64, 512, 4096])
        n = max(1, min(n, size - start))
        return start, bytes(n)

    def _swap(self, s: Subject, f: str) -> Mutation:
        rng = self.rng
        role = f[len(s.prefix) :]
        donors = [d for d in self.subjects if d is not s and d.prefix + role in d.files]
        # mostly another generation of the same model (the realistic mix-up), sometimes anything
        same = [d for d in donors if d.group and d.group == s.group]
        if same and rng.random() < 0.8:
            donors = same
        datas = s.data_names()
        if donors and (len(datas) < 2 or rng.random() < 0.6):
            donor = rng.choice(donors)
            # the index defines what a correct read returns
            expect = donor if f == s.index_name else None
            return Mutation("swap", s, f, (("replace", donor),), expect=expect)
        if len(datas) >= 2:
            a, b = rng.sample(datas, 2)
            return Mutation("swap", s, a, (("swap", b),))
        return Mutation("truncate", s, f, (("truncate", 0),))  # nothing to swap with: empty the file

    def mutations(self, total: int) -> list[Mutation]:
        """`total` mutations: every boundary truncation first (capped at half), the rest random."""
        exhaustive = self.boundary_truncations()
        if len(exhaustive) > total // 2:
            exhaustive = self.rng.sample(exhaustive, total // 2)
        return exhaustive + [self.random_mutation() for _ in range(total - len(exhaustive))]
