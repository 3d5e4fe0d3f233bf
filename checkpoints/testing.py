"""A ``Session`` without a kernel, for unit tests of checkpoint declarations.

``FakeSession(namespace, run_dir)`` answers ``value``, ``call`` and ``kernel`` from a dict of
Python objects by running the grader's own request code against it and parsing its printed
answer exactly as the grader does (so a test sees the same plain data a judge will see), serves ASGI apps from a thread of the test process,
and observes files with the grader's own helpers. It is the test double of
``autograde.collect.KernelSession``; nothing here is used at grading time.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import json
import random
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from autograde.collect import (
    CALL_BODY,
    VALUE_BODY,
    counting_opens,
    list_regular_files,
    parse_answer,
    read_regular_file,
    send_http,
    snippet,
)
from autograde.limits import Limits
from autograde.probes import run_probe_process
from checkpoints.interface import Unavailable


@dataclass
class _Served:
    url: str


class FakeSession:
    def __init__(self, namespace: dict | None = None, run_dir: Path | str = ".", seed: int = 0,
                 limits: Limits | None = None) -> None:
        self.namespace = namespace if namespace is not None else {}
        self.run_dir = Path(run_dir).resolve()
        self.rng = random.Random(seed)
        self.limits = limits or Limits()
        self.calls: list[tuple[str, list, dict]] = []  # what the checkpoint asked for

    def kernel(self, code: str, args=None):
        """The grader's own request code (``autograde.collect.snippet``), run here against the
        namespace instead of a kernel's, and its printed answer parsed as the grader parses it."""
        marker = f"[autograde-data {secrets.token_hex(8)}]"
        shell = SimpleNamespace(user_ns=self.namespace)
        scope = {"get_ipython": lambda: shell, "__builtins__": builtins}
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(snippet(code, args, marker), scope)  # noqa: S102 - test double: the code is the grader's own
        return parse_answer(printed.getvalue(), marker)

    def value(self, name: str):
        return self.kernel(VALUE_BODY, {"name": name})

    def call(self, function: str, *args, **kwargs):
        args, kwargs = json.loads(json.dumps([list(args), kwargs], allow_nan=True))
        self.calls.append((function, args, kwargs))
        return self.kernel(CALL_BODY, {"name": function, "args": args, "kwargs": kwargs})

    @contextlib.contextmanager
    def serve(self, app: str) -> Iterator[_Served]:
        import uvicorn

        target = self.namespace.get(app)
        if target is None or not callable(target):
            raise Unavailable(f"`{app}` could not be served (the server did not start)")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(target, host="127.0.0.1", port=port, log_level="critical",
                                               access_log=False))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            if not server.started:
                raise Unavailable(f"`{app}` could not be served (the server did not start)")
            yield _Served(f"http://127.0.0.1:{port}")
        finally:
            server.should_exit = True
            thread.join(10)

    def http(self, server, requests: list[dict]) -> list[dict]:
        url = server.url if hasattr(server, "url") else str(server)
        return [send_http(url, spec) for spec in requests]

    def count_opens(self):
        return counting_opens(self.run_dir)

    def read_file(self, path: str, max_bytes: int = 1_000_000) -> bytes | None:
        return read_regular_file(self.run_dir, path, max_bytes)

    def list_files(self, folder: str = ".", limit: int = 2000) -> list[str]:
        return list_regular_files(self.run_dir, folder, limit)

    def probe(self, script: str, payload, timeout: float = 120.0, writable: bool = False):
        return run_probe_process(script, payload, run_dir=self.run_dir, limits=self.limits, timeout=timeout,
                                 writable=writable)
