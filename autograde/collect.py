"""The grader's side of a checkpoint: collect data from a running submission, judge it here.

``CheckpointRunner`` is handed to the runner for one execution. When execution reaches a
hidden cell whose gradebook source names a checkpoints module (``# autograde-checkpoint:
checkpoints.colab_a``), the runner does not execute that cell: it calls this object, which
runs the declaration's ``collect`` with a ``KernelSession`` and its ``judge`` in this (the
worker's) process, where no student code has ever run. The kernel only answers grader-issued
requests; what it answers is parsed as strict JSON data, never read as a verdict.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import importlib
import json
import os
import random
import secrets
import select
import shutil
import stat
import struct
import tempfile
import textwrap
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from autograde.limits import Limits
from autograde.probes import ProbePool
from checkpoints.interface import (
    Checkpoint,
    Prediction,
    Unavailable,
    Verdict,
    load_checkpoints,
    marker_module,
    quote,
    strict_json,
)

MAX_HTTP_BODY = 64_000
MAX_RESULT_CHARS = 4_000_000
CLONE_NEWNET = 0x40000000


@dataclass
class KernelAccess:
    """What the runner lends a checkpoint: a way to run grader code in the kernel, the run
    folder, and the pid of a process inside the kernel's network namespace (None when the
    kernel shares the grader's network)."""

    run_code: Callable[[str], str]  # grader code -> the kernel's stdout; raises KernelGone
    run_dir: Path
    netns_pid: int | None
    limits: Limits
    probes: ProbePool = field(default_factory=ProbePool)  # kept for the execution; the runner closes them


class KernelGone(RuntimeError):
    """The kernel died or stopped answering while the grader asked it for data."""


# --------------------------------------------------------------------------- kernel requests

# Runs in the kernel. Every name it needs is a local: nothing of the notebook's namespace
# is trusted, and what it prints is only data.
_SNIPPET = r'''
def {fn}(args):
    import json, math
    def plain(value, depth=0):
        if depth > 32:
            raise ValueError("the value is nested too deeply")
        kind = type(value)
        if value is None or kind in (bool, int, str, float):
            return value
        if kind.__module__ == "numpy" and hasattr(value, "tolist"):
            return plain(value.tolist(), depth + 1)
        if kind in (list, tuple):
            return [plain(v, depth + 1) for v in value]
        if kind is dict:
            return {{(k if type(k) is str else str(k)): plain(v, depth + 1) for k, v in value.items()}}
        raise TypeError("not plain data: " + kind.__name__)
    ns = get_ipython().user_ns
{body}
    return plain(result)
try:
    {out} = {{"ok": {fn}(json_args_{token})}}
except BaseException as error_{token}:
    {out} = {{"raised": type(error_{token}).__name__, "message": str(error_{token})[:300]}}
print({marker!r} + __import__("json").dumps({out}, allow_nan=True))
del {fn}, {out}, json_args_{token}
'''

CALL_BODY = r'''
    target = ns.get(args["name"])
    if target is None:
        raise NameError(args["name"] + " is not defined: run the cells that define it first")
    if not callable(target):
        raise TypeError(args["name"] + " is not a function")
    result = target(*args["args"], **args["kwargs"])
'''

VALUE_BODY = r'''
    if args["name"] not in ns:
        raise NameError(args["name"] + " is not defined")
    result = ns[args["name"]]
'''

_SERVE_BODY = r'''
    import socket, threading, time
    import uvicorn
    app = ns.get(args["app"])
    if app is None or not callable(app):
        raise NameError(args["app"] + " is not a web app: run the cells that build it first")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical",
                                           access_log=False))
    thread = threading.Thread(target=server.run, daemon=True, name="autograde-serve")
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    ns[args["handle"]] = (server, thread)
    result = {"port": port, "started": bool(server.started)}
'''

_STOP_BODY = r'''
    server, thread = ns.pop(args["handle"], (None, None))
    if server is not None:
        server.should_exit = True
        thread.join(10)
    result = True
'''


def snippet(body: str, args, marker: str) -> str:
    token = secrets.token_hex(6)
    body = textwrap.indent(textwrap.dedent(body).strip("\n"), "    ")  # the body of the request function
    code = _SNIPPET.format(fn=f"_autograde_request_{token}", out=f"_autograde_out_{token}", token=token,
                           marker=marker, body=body)
    return f"json_args_{token} = __import__('json').loads({json.dumps(args, allow_nan=True)!r})\n" + code


def parse_answer(stdout: str, marker: str):
    """The kernel's answer to one request, strictly: the last line carrying this request's
    marker, plain JSON types only."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(marker):
            try:
                answer = json.loads(line[len(marker):][:MAX_RESULT_CHARS])
            except ValueError:
                raise Unavailable("the notebook's answer could not be read as data") from None
            answer = strict_json(answer)
            if not isinstance(answer, dict):
                break
            if "ok" in answer:
                return answer["ok"]
            raised = answer.get("raised", "Error")
            raise Unavailable(f"{quote(raised, 40)[1:-1]}: {quote(answer.get('message', ''))}")
    raise Unavailable("the notebook did not answer the grader's request (was its output changed?)")


# --------------------------------------------------------------------------- outside observation


def send_http(url: str, spec: dict, timeout: float = 15.0) -> dict:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        body = spec.get("body")
        headers = {"Content-Type": spec.get("content_type", "application/json")} if body is not None else {}
        conn.request(spec.get("method", "GET"), spec.get("path", "/"),
                     body=None if body is None else str(body).encode("utf-8"), headers=headers)
        response = conn.getresponse()
        text = response.read(MAX_HTTP_BODY).decode("utf-8", errors="replace")
        return {"status": response.status, "body": text}
    except Exception as exc:  # refused, reset, timed out: an answer, not a crash
        return {"status": None, "body": "", "error": f"{type(exc).__name__}: {exc}"[:200]}
    finally:
        conn.close()


def in_network_of(pid: int | None, work: Callable[[], object]) -> object:
    """Run ``work`` in a fresh thread that joined the network namespace of ``pid`` (the
    sandboxed kernel's loopback), so the grader itself talks to the student's servers."""
    if pid is None:
        return work()
    outcome: dict = {}

    def target() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns into the sandbox's network failed")
            finally:
                os.close(fd)
            outcome["value"] = work()
        except BaseException as exc:
            outcome["error"] = exc

    # The thread ends with its namespace: the rest of the grader never leaves its own.
    thread = threading.Thread(target=target, name="autograde-netns", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


IN_OPEN = 0x00000020
IN_CLOSE_WRITE = 0x00000008
IN_CLOSE_NOWRITE = 0x00000010
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000


class OpenCounter:
    """Counts opens of every file below a folder with inotify: the kernel's file system
    events, seen from the grader, whatever the student's process does to itself."""

    SETTLE_TIMEOUT_S = 2.0

    def __init__(self, root: Path, max_dirs: int = 256) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify is not available")
        # A folder of the grader's own, out of the student's sight: an open there is a marker
        # in the event queue (one queue, in order), so settle() knows every earlier event has arrived.
        self._sync_dir = Path(tempfile.mkdtemp(prefix="autograde-sync-"))
        self._sync_wd = self._libc.inotify_add_watch(self._fd, os.fsencode(self._sync_dir), IN_OPEN)
        self._dirs: dict[int, str] = {}
        for dirpath, dirnames, _ in os.walk(root):
            dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
            if len(self._dirs) >= max_dirs:
                break
            # Closes are watched too: inotify merges identical back-to-back events, and a close
            # between two opens of one file keeps them apart.
            wd = self._libc.inotify_add_watch(self._fd, os.fsencode(dirpath),
                                              IN_OPEN | IN_CLOSE_WRITE | IN_CLOSE_NOWRITE)
            if wd >= 0:
                self._dirs[wd] = os.path.relpath(dirpath, root)
        self.counts: dict[str, int] = {}

    def _consume(self, data: bytes, marker: str | None = None) -> bool:
        """Count the opens in ``data``; True when it holds the open of ``marker``."""
        header = struct.calcsize("iIII")
        offset, seen = 0, False
        while offset + header <= len(data):
            wd, mask, _cookie, length = struct.unpack_from("iIII", data, offset)
            name = data[offset + header: offset + header + length].split(b"\0", 1)[0].decode(errors="replace")
            offset += header + length
            if wd == self._sync_wd:
                seen = seen or name == marker
            elif mask & IN_OPEN and name:
                folder = self._dirs.get(wd, "?")
                path = name if folder == "." else f"{folder}/{name}"
                self.counts[path] = self.counts.get(path, 0) + 1
        return seen

    def drain(self) -> dict[str, int]:
        """Count what the queue holds now."""
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                break
            self._consume(data)
        return self.counts

    def settle(self) -> dict[str, int]:
        """Count every open made before this call: put a marker in the queue and read up to it
        (rather than sleeping and hoping the last events have arrived)."""
        marker = f"sync-{secrets.token_hex(4)}"
        if self._sync_wd < 0:
            time.sleep(0.05)
            return self.drain()
        path = self._sync_dir / marker
        with open(path, "w"):
            pass
        path.unlink()
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        deadline = time.monotonic() + self.SETTLE_TIMEOUT_S
        while time.monotonic() < deadline:
            if not poller.poll(max(int((deadline - time.monotonic()) * 1000), 1)):
                continue
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                continue
            if self._consume(data, marker):
                return self.drain()
        return self.drain()

    def close(self) -> None:
        os.close(self._fd)
        shutil.rmtree(self._sync_dir, ignore_errors=True)


@contextlib.contextmanager
def counting_opens(root: Path) -> Iterator[dict[str, int]]:
    """Opens of each file below ``root`` while the block runs (filled when it ends)."""
    counts: dict[str, int] = {}
    counter = OpenCounter(root)
    try:
        counter.drain()
        counter.counts.clear()  # opens from before the block are not its own
        yield counts
        counts.update(counter.settle())
    finally:
        counter.close()


def safe_path(root: Path, relative: str) -> Path | None:
    """``relative`` below ``root``, with no symlink and no ``..`` on the way, or None."""
    base = Path(os.path.realpath(root))
    candidate = Path(os.path.normpath(base / relative))
    if candidate != base and base not in candidate.parents:
        return None
    if os.path.realpath(candidate) != str(candidate) or not candidate.exists():
        return None
    return candidate


def read_regular_file(root: Path, relative: str, max_bytes: int) -> bytes | None:
    path = safe_path(root, relative)
    if path is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read(max_bytes)
    finally:
        os.close(fd)


def list_regular_files(root: Path, folder: str = ".", limit: int = 2000) -> list[str]:
    """Regular files below ``folder`` of ``root`` (relative to ``folder``), skipping symlinks
    and hidden folders (the kernel's own sockets and caches)."""
    base = safe_path(root, folder)
    if base is None or not base.is_dir():
        return []
    found = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d)) and not d.startswith(".")]
        for name in filenames:
            full = os.path.join(dirpath, name)
            if os.path.isfile(full) and not os.path.islink(full):
                found.append(os.path.relpath(full, base))
            if len(found) >= limit:
                return sorted(found)
    return sorted(found)


# --------------------------------------------------------------------------- the session


@dataclass
class _Served:
    url: str
    handle: str


class KernelSession:
    """``checkpoints.interface.Session`` over a live kernel (see that module for the contract)."""

    def __init__(self, access: KernelAccess, seed: int | None = None, budget_s: float = 180.0,
                 env: dict[str, str] | None = None) -> None:
        self._access = access
        self._env = dict(env or {})
        self.rng = random.Random(seed if seed is not None else secrets.randbits(64))
        self.kernel_alive = True
        self._deadline = time.monotonic() + budget_s

    def _remaining(self) -> float:
        """Seconds left of the checkpoint's budget; every step is bounded by it."""
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise Unavailable("the check ran out of time collecting your notebook's answers")
        return left

    # -- kernel requests
    def kernel(self, code: str, args=None):
        if not self.kernel_alive:
            raise Unavailable("the notebook's kernel is no longer running")
        self._remaining()
        marker = f"[autograde-data {secrets.token_hex(8)}]"
        try:
            stdout = self._access.run_code(snippet(code, args, marker))
        except KernelGone as exc:
            self.kernel_alive = False
            raise Unavailable(f"the notebook's kernel stopped answering ({exc})") from None
        return parse_answer(stdout, marker)

    def value(self, name: str):
        return self.kernel(VALUE_BODY, {"name": name})

    def call(self, function: str, *args, **kwargs):
        return self.kernel(CALL_BODY, {"name": function, "args": list(args), "kwargs": kwargs})

    @contextlib.contextmanager
    def serve(self, app: str) -> Iterator[_Served]:
        handle = f"_autograde_server_{secrets.token_hex(6)}"
        answer = self.kernel(_SERVE_BODY, {"app": app, "handle": handle})
        try:
            if not isinstance(answer, dict) or not answer.get("started") or type(answer.get("port")) is not int:
                raise Unavailable(f"`{app}` could not be served (the server did not start)")
            yield _Served(f"http://127.0.0.1:{answer['port']}", handle)
        finally:
            with contextlib.suppress(Unavailable):
                self.kernel(_STOP_BODY, {"handle": handle})

    # -- outside observation
    def http(self, server, requests: list[dict]) -> list[dict]:
        url = server.url if hasattr(server, "url") else str(server)

        def send_all() -> list[dict]:
            return [send_http(url, spec, timeout=min(15.0, self._remaining())) for spec in requests]

        return in_network_of(self._access.netns_pid, send_all)

    def count_opens(self):
        return counting_opens(self._access.run_dir)

    def read_file(self, path: str, max_bytes: int = 1_000_000) -> bytes | None:
        return read_regular_file(self._access.run_dir, path, max_bytes)

    def list_files(self, folder: str = ".", limit: int = 2000) -> list[str]:
        return list_regular_files(self._access.run_dir, folder, limit)

    def probe(self, script: str, payload, timeout: float = 120.0, writable: bool = False):
        return self._access.probes.ask(script, payload, run_dir=self._access.run_dir, limits=self._access.limits,
                                       timeout=min(timeout, self._remaining()), writable=writable, env=self._env)


# --------------------------------------------------------------------------- running a checkpoint


@dataclass
class Outcome:
    """A checkpoint's judged result, split into behaviour and prediction."""

    grade_id: str
    points: float
    behaviour: Verdict
    prediction: Verdict | None
    prediction_points: float = 0.0
    judged: str = "outside"  # "outside": by the grader; "in-kernel": a plain nbgrader test
    seconds: float = 0.0

    @property
    def behaviour_max(self) -> float:
        return max(self.points - self.prediction_points, 0.0)

    @property
    def behaviour_score(self) -> float:
        return round(self.behaviour_max * min(max(self.behaviour.score, 0.0), 1.0), 4)

    @property
    def prediction_score(self) -> float:
        return self.prediction_points if self.prediction and self.prediction.passed else 0.0

    @property
    def score(self) -> float:
        return self.behaviour_score + self.prediction_score

    @property
    def message(self) -> str:
        parts = [self.behaviour.message]
        if self.prediction is not None:
            parts.append(f"prediction: {self.prediction.message}")
        return "; ".join(p for p in parts if p)


def resolve_declaration(grade_id: str, hidden_source: str) -> Checkpoint | None:
    """The declaration a hidden cell (its gradebook source, the instructor's) names, or None
    for a plain in-kernel test. A named module or id that does not exist is an error of the
    course, raised as LookupError or ImportError."""
    module = marker_module(hidden_source)
    if module is None:
        return None
    declared = load_checkpoints(module)
    if grade_id not in declared:
        raise LookupError(f"{module} declares no checkpoint {grade_id}")
    return declared[grade_id]


def module_kernel_env(hidden_sources: list[str]) -> dict[str, str]:
    """What the checkpoint modules these hidden cells name ask of every graded kernel and probe
    (``KERNEL_ENV``): a notebook's knobs that only save grading time, e.g. a shorter simulated
    wait. Grading never depends on them for a verdict."""
    env: dict[str, str] = {}
    for source in hidden_sources:
        module = marker_module(source)
        if module:
            declared = getattr(importlib.import_module(module), "KERNEL_ENV", {})
            env.update({str(k): str(v) for k, v in dict(declared).items()})
    return env


def judge_checkpoint(checkpoint: Checkpoint, points: float, session) -> Outcome:
    """Collect, then judge, in this process. Never raises for anything the student did."""
    started = time.perf_counter()
    try:
        evidence = checkpoint.collect(session)
        behaviour = checkpoint.judge(evidence)
        if not isinstance(behaviour, Verdict):
            raise TypeError("a judge must return a Verdict")
    except Unavailable as exc:
        behaviour = Verdict.fail(str(exc))
    except Exception as exc:  # a collector or judge meeting data it did not expect
        behaviour = Verdict.fail(f"the check could not use what your notebook produced ({type(exc).__name__})")
    prediction, prediction_points = None, 0.0
    if checkpoint.prediction is not None:
        prediction_points = min(checkpoint.prediction.points, points)
        prediction = _judge_prediction(checkpoint.prediction, session)
    return Outcome(checkpoint.id, points, behaviour, prediction, prediction_points,
                   seconds=time.perf_counter() - started)


def _judge_prediction(prediction: Prediction, session) -> Verdict:
    try:
        return prediction.judge(session.value(prediction.variable))
    except Unavailable:
        return prediction.judge(None, available=False)


@dataclass
class CheckpointRunner:
    """Given to ``execute_notebook``: which cells are judged outside, and how."""

    declarations: dict[str, tuple[Checkpoint, float]]  # grade_id -> (declaration, cell points)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    seed: int | None = None  # None: fresh held-out inputs; else derived per checkpoint (reproducible regrades)
    kernel_env: dict[str, str] = field(default_factory=dict)  # the kernel's extra environment, for probes too

    def handles(self, cell) -> bool:
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        return cell.get("cell_type") == "code" and grade_id in self.declarations

    def __call__(self, cell, access: KernelAccess) -> list:
        grade_id = cell.metadata["nbgrader"]["grade_id"]
        checkpoint, points = self.declarations[grade_id]
        seed = None if self.seed is None else (self.seed ^ int.from_bytes(grade_id.encode()[:8].ljust(8, b"\0"), "big"))
        session = KernelSession(access, seed=seed, budget_s=checkpoint.timeout_s, env=self.kernel_env)
        outcome = judge_checkpoint(checkpoint, points, session)
        self.outcomes[grade_id] = outcome
        mark = "passed" if outcome.behaviour.passed else "not passed"
        text = (f"checkpoint {grade_id}: {mark} — behaviour {outcome.behaviour_score:g}/{outcome.behaviour_max:g}"
                + (f", prediction {outcome.prediction_score:g}/{outcome.prediction_points:g}"
                   if outcome.prediction is not None else "")
                + f"\n{outcome.message}\n")
        return [nbformat.v4.new_output("stream", name="stdout", text=text)]
