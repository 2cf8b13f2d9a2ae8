"""An in-memory fsspec file system that counts what it serves and records what is written, for the
remote-checkpoint tests (``countmem://``), and can be told to fail a write."""

from __future__ import annotations

import threading

import fsspec
from fsspec.implementations.memory import MemoryFileSystem


class CountingMemoryFS(MemoryFileSystem):
    protocol = "countmem"
    root_marker = "/"
    store: dict = {}  # noqa: RUF012 - fsspec's own convention: the store is a class attribute
    pseudo_dirs = [""]  # noqa: RUF012
    lock = threading.Lock()
    bytes_read = 0
    reads: list = []  # noqa: RUF012
    writes: list = []  # noqa: RUF012
    fail_write = None  # a predicate on the path: raise OSError instead of writing

    @classmethod
    def _strip_protocol(cls, path):
        if path.startswith("countmem://"):
            path = path[len("countmem://"):]
        return MemoryFileSystem._strip_protocol(path)

    @classmethod
    def reset(cls):
        cls.store.clear()
        cls.pseudo_dirs[:] = [""]
        cls.bytes_read = 0
        cls.reads = []
        cls.writes = []
        cls.fail_write = None

    def cat_file(self, path, start=None, end=None, **kwargs):
        data = super().cat_file(path, start=start, end=end, **kwargs)
        with self.lock:
            type(self).bytes_read += len(data)
            type(self).reads.append((self._strip_protocol(path), start, end, len(data)))
        return data

    def pipe_file(self, path, value, **kwargs):
        p = self._strip_protocol(path)
        fail = type(self).fail_write
        if fail is not None and fail(p):
            raise OSError(f"injected failure writing {p}")
        with self.lock:
            type(self).writes.append(p)
        return super().pipe_file(path, value, **kwargs)


fsspec.register_implementation("countmem", CountingMemoryFS, clobber=True)


# --- loopback servers, started by the tests themselves ---------------------------------------------------

def start_moto_s3():
    """moto's S3 on 127.0.0.1 (a free port); returns (server, endpoint URL)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
          "AWS_DEFAULT_REGION": "us-east-1", "AWS_SESSION_TOKEN": "testing"}


class EnvPatch:
    def __init__(self, env):
        self.env = env
        self.old = {}

    def __enter__(self):
        import os

        self.old = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        return self

    def __exit__(self, *exc):
        import os

        for k, v in self.old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class RangeHTTPServer:
    """A read-only HTTP server over a directory on 127.0.0.1 that honours ``Range: bytes=a-b`` (206) and
    HEAD (Content-Length), and counts the body bytes it sends."""

    def __init__(self, root):
        import http.server
        import threading

        outer = self
        self.root = str(root)
        self.bytes_sent = 0
        self.requests = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _file(self):
                import os
                import urllib.parse

                rel = urllib.parse.unquote(self.path.split("?", 1)[0]).lstrip("/")
                path = os.path.normpath(os.path.join(outer.root, rel))
                if not path.startswith(outer.root) or not os.path.isfile(path):
                    self.send_error(404)
                    return None
                return path

            def do_HEAD(self):  # noqa: N802 - http.server's naming
                import os

                path = self._file()
                if path is None:
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(os.path.getsize(path)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()

            def do_GET(self):  # noqa: N802
                path = self._file()
                if path is None:
                    return
                with open(path, "rb") as f:
                    data = f.read()
                rng = self.headers.get("Range")
                outer.requests.append((self.path, rng))
                if rng and rng.startswith("bytes="):
                    a, _, b = rng[len("bytes="):].partition("-")
                    start = int(a) if a else len(data) - int(b)
                    end = min(int(b) + 1, len(data)) if a and b else len(data)
                    body = data[start:end]
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
                else:
                    body = data
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                self.wfile.write(body)
                outer.bytes_sent += len(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


# --- a writer "killed" at its k-th change to a store ------------------------------------------------------

class Killed(BaseException):  # noqa: N818 - not an error: the writer's end
    """Raised where the writer dies; not an Exception, so no handler of the code under test swallows it."""


class KillAt:
    """Makes an fsspec file system instance behave, from its ``at``-th change (0-based: PUT or DELETE) on,
    like a store whose writer was SIGKILLed: that change and every later one never happen (they raise
    :class:`Killed`). Reads keep working, as for the next process. ``changes`` counts the changes asked
    for (with ``at=None``: none fail, to count a save's steps)."""

    def __init__(self, monkeypatch, fs, at):
        self.at, self.changes, self.dead = at, [], False
        for name in ("pipe_file", "rm_file"):
            real = getattr(fs, name)
            monkeypatch.setattr(fs, name, self._wrap(name, real))
        # saverkit's S3 data objects bypass pipe_file (zero-copy PUT and multipart upload of the
        # arrays' buffers): each is one change too, on this file system only.
        from saverkit import storage

        for name in ("_s3_put", "_s3_multipart"):
            real = getattr(storage, name)
            monkeypatch.setattr(storage, name, self._wrap_object_write(name, real, fs))

    def _wrap_object_write(self, name, real, fs):
        wrapped = self._wrap(name, lambda path, *a, **k: real(fs, path, *a, **k))

        def write(target_fs, path, *args, **kwargs):
            if target_fs is not fs:
                return real(target_fs, path, *args, **kwargs)
            return wrapped(path, *args, **kwargs)

        return write

    def _wrap(self, name, real):
        def change(path, *args, **kwargs):
            self.changes.append((name, path))
            if self.dead or self.at is not None and len(self.changes) > self.at:
                self.dead = True
                raise Killed(f"killed at {name} {path}")
            return real(path, *args, **kwargs)

        return change
