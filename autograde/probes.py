"""Grader probes: the grader's own scripts (``checkpoints/probes/``) that load or run a
student's files, in a sandbox of their own, never in the grader.

A probe is started once per execution and script and kept for that execution's later
requests, because starting one costs more than most requests (Colab B's imports Streamlit,
scikit-learn and pandas, about 1.3 s, and its first AppTest run warms up another 0.5 s;
B's three checkpoints asked three fresh processes before). Every request sees a fresh copy
of the run folder as it is at that moment; the probe forgets the modules it imported from
the previous copy. What one request's student code leaves behind in the probe can only
touch the same student's later observations, which that code could already forge.

The protocol is ``checkpoints/probes/probe_protocol.py``: one JSON line per request, one
per answer, matched by an id the grader draws; the answer is parsed as strict JSON data.
A probe that does not answer in time, crashes or floods is killed, and the next request
starts a new one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import queue
import secrets
import sys
import threading
import time
from pathlib import Path

from autograde import sandbox, templates
from autograde.limits import Limits
from checkpoints.interface import Unavailable, strict_json

PROBES_DIR = Path(__file__).resolve().parent.parent / "checkpoints" / "probes"
# Probes are forked from a template that imported what the probe scripts import (Streamlit,
# scikit-learn, pandas, joblib...), as kernels are (autograde/templates.py).
_SCRIPTS = sorted(PROBES_DIR.glob("*.py"))
PROBE_TEMPLATE = templates.TemplateSpec(
    modules=tuple(m for m in templates.script_imports(_SCRIPTS) if m.split(".")[0] not in {p.stem for p in _SCRIPTS}),
    scripts_dir=str(PROBES_DIR))
MAX_ANSWER_BYTES = 4_000_000
MAX_STDOUT_BYTES = 16_000_000  # all a probe process may write on its answer channel, over every request
_ENDED = object()  # the probe closed its stdout
_FLOODED = object()  # the probe wrote more than MAX_STDOUT_BYTES: nothing more is read or kept


def probe_env(run_dir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"HOME": str(run_dir), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "PYTHONWARNINGS": "ignore", "TQDM_DISABLE": "1",
            "MPLBACKEND": "Agg", "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false", "PYTHONDONTWRITEBYTECODE": "1",
            **(extra or {})}


def _read_lines(stream, lines: queue.Queue) -> None:
    """The probe's stdout as lines; a line over the cap becomes b"" (unreadable, never kept).
    Probed code can write on this channel too: past MAX_STDOUT_BYTES in all, many short
    lines included, reading stops, so the grader never holds more than that."""
    pending, oversized, total = bytearray(), False, 0
    with contextlib.suppress(OSError, ValueError):
        while chunk := stream.read1(65536):
            total += len(chunk)
            if total > MAX_STDOUT_BYTES:
                lines.put(_FLOODED)
                return
            pending += chunk
            while (end := pending.find(b"\n")) >= 0:
                lines.put(b"" if oversized else bytes(pending[:end]))
                del pending[:end + 1]
                oversized = False
            if len(pending) > MAX_ANSWER_BYTES:
                pending.clear()
                oversized = True
    lines.put(_ENDED)


def _discard(stream) -> None:
    with contextlib.suppress(OSError, ValueError):
        while stream.read1(65536):
            pass


class ResidentProbe:
    """One probe script over one run folder, started on the first request."""

    def __init__(self, script: str, *, run_dir: Path, limits: Limits, writable: bool,
                 env: dict[str, str] | None = None, from_template: bool = True, knob_keys: tuple[str, ...] = ()):
        path = PROBES_DIR / f"{script}.py"
        if not path.is_file():
            raise Unavailable(f"no probe named {script}")
        self.argv = [sys.executable, "-I", str(path)]
        self.run_dir, self.limits, self.writable = Path(run_dir), limits, writable
        self.env = probe_env(self.run_dir, env)
        # knob_keys: the assignment's per-notebook variables (checkpoint modules' KERNEL_ENV),
        # so that one probe template serves every notebook's probes.
        self.from_template, self.knob_keys = from_template, tuple(knob_keys)
        self.process: sandbox.ProbeProcess | None = None
        self.lines: queue.Queue = queue.Queue()  # the running process's stdout lines (a new queue per process)
        self.starts = 0  # processes started (one unless a request timed out or crashed it)

    def _start(self) -> None:
        spec = dataclasses.replace(PROBE_TEMPLATE, knob_keys=self.knob_keys)
        template = templates.socket_for({**sandbox.PROBE_BASE_ENV, **self.env}, spec) \
            if self.from_template and self.limits.sandbox else None
        self.process = sandbox.start_probe(self.argv, run_dir=self.run_dir, limits=self.limits,
                                           writable=self.writable, ro_binds=[PROBES_DIR], env=self.env,
                                           template=template)
        self.starts += 1
        self.lines = queue.Queue()
        threading.Thread(target=_read_lines, args=(self.process.proc.stdout, self.lines), daemon=True).start()
        threading.Thread(target=_discard, args=(self.process.proc.stderr,), daemon=True).start()

    def ask(self, payload, timeout: float):
        """The probe's answer to ``payload`` (strict JSON data), within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        if self.process is not None:
            try:
                self.process.refresh()
            except OSError:  # the old copy could not be replaced: start over with a new one
                self.close()
        if self.process is None:
            self._start()
        request_id = secrets.token_hex(16)
        try:
            self.process.proc.stdin.write((json.dumps({"id": request_id, "payload": payload}) + "\n").encode())
            self.process.proc.stdin.flush()
        except (OSError, ValueError):
            self.close()
            raise Unavailable("the check's run of your files stopped before it was asked anything") from None
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                self.close()
                raise Unavailable(f"the check's run of your files did not finish within {timeout:.0f} s") from None
            if line is _ENDED:
                self.close()
                raise Unavailable("the check's run of your files produced no answer (it crashed or was stopped)")
            if line is _FLOODED:
                self.close()
                raise Unavailable("the check's run of your files wrote more output than the check reads")
            try:
                message = json.loads(line)
            except ValueError:
                continue  # not a line of the protocol
            if isinstance(message, dict) and message.get("id") == request_id:
                try:
                    return strict_json(message.get("answer"))
                except ValueError:
                    raise Unavailable("the check's run of your files gave an unreadable answer") from None

    def close(self) -> None:
        if self.process is not None:
            self.process.close()
            self.process = None


class ProbePool:
    """The probes of one execution, closed with it (nothing a probe started outlives it)."""

    def __init__(self, from_template: bool = True, knob_keys: tuple[str, ...] = ()) -> None:
        self._probes: dict[tuple[str, bool], ResidentProbe] = {}
        self.from_template, self.knob_keys = from_template, tuple(knob_keys)

    def ask(self, script: str, payload, *, run_dir: Path, limits: Limits, timeout: float, writable: bool = False,
            env: dict[str, str] | None = None):
        key = (script, writable)
        if key not in self._probes:
            self._probes[key] = ResidentProbe(script, run_dir=run_dir, limits=limits, writable=writable, env=env,
                                              from_template=self.from_template, knob_keys=self.knob_keys)
        return self._probes[key].ask(payload, timeout)

    def close(self) -> None:
        for probe in self._probes.values():
            probe.close()
        self._probes.clear()


def run_probe_process(script: str, payload, *, run_dir: Path, limits: Limits, timeout: float,
                      writable: bool = False, extra_env: dict[str, str] | None = None) -> object:
    """One request to a probe started for it alone, then stopped."""
    probe = ResidentProbe(script, run_dir=run_dir, limits=limits, writable=writable, env=extra_env)
    try:
        return probe.ask(payload, timeout)
    finally:
        probe.close()
