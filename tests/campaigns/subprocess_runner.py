"""Parent side of read_worker.py: a long-lived child that is restarted after a crash or a hang."""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKER = Path(__file__).with_name("read_worker.py")


class WorkerCrashed(Exception):
    """The worker died (signal or non-zero exit) while answering."""

    def __init__(self, returncode: int, stderr_tail: str) -> None:
        super().__init__(f"worker exited with {describe_returncode(returncode)}: {stderr_tail}")
        self.returncode = returncode
        self.stderr_tail = stderr_tail


class WorkerHung(Exception):
    """The worker gave no answer before the deadline (it has been killed)."""


def describe_returncode(rc: int | None) -> str:
    if rc is None:
        return "no exit status"
    if rc < 0:
        try:
            return f"signal {signal.Signals(-rc).name}"
        except ValueError:
            return f"signal {-rc}"
    return f"status {rc}"


class Worker:
    """One read_worker.py process. `address_space_limit` (bytes) turns a huge allocation driven by a
    corrupt size into a MemoryError/abort the campaign counts, instead of a swapping machine."""

    def __init__(self, address_space_limit: int | None = 4 << 30, python: str = sys.executable,
                 env: dict | None = None) -> None:
        # ASan reserves terabytes of shadow address space: no limit under scripts/sanitize.sh
        sanitized = "libasan" in os.environ.get("LD_PRELOAD", "")
        self.limit = None if sanitized else address_space_limit
        self.python = python
        self.env = dict(os.environ if env is None else env)
        # one BLAS thread: keeps the worker's virtual size small and predictable
        self.env.setdefault("OPENBLAS_NUM_THREADS", "1")
        self.proc: subprocess.Popen | None = None
        self.restarts = 0

    def _preexec(self) -> None:
        if self.limit:
            resource.setrlimit(resource.RLIMIT_AS, (self.limit, self.limit))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    def start(self) -> None:
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [self.python, str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
            env=self.env, preexec_fn=self._preexec,
        )
        self._buf = b""

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            for f in (self.proc.stdin, self.proc.stdout):
                f.close()
            self._stderr.close()
            self.proc = None

    def _stderr_tail(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read()[-3000:].decode(errors="replace")

    def request(self, req: dict, timeout: float) -> dict:
        if self.proc is None:
            self.start()
        proc = self.proc
        try:
            proc.stdin.write((json.dumps(req) + "\n").encode())
            proc.stdin.flush()
        except BrokenPipeError:
            pass  # died already; reported below
        deadline = time.monotonic() + timeout
        fd = proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                proc.send_signal(signal.SIGKILL)
                self.stop()
                self.restarts += 1
                raise WorkerHung(f"no answer within {timeout:.0f} s")
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 1 << 20)
            if not chunk:  # EOF: the worker died
                rc = proc.wait()
                tail = self._stderr_tail()
                self.stop()
                self.restarts += 1
                raise WorkerCrashed(rc, tail)
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
