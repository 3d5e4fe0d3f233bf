"""The kernel templates of one grading process: which modules they preload, starting one for a
kernel environment, reusing it for every kernel with that environment, stopping it.

A template (``autograde/forkserver.py``) imports the course's libraries once; each sandboxed
kernel is then forked from it instead of starting an interpreter and importing them again. The
runner asks ``socket_for`` before each execution and passes the socket to the sandbox launcher,
which falls back to the usual start whenever the template cannot serve it.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import secrets
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat

from autograde.forkserver import NEVER_PRELOADED

FORKSERVER = Path(__file__).resolve().parent / "forkserver.py"
# Variables that differ from one kernel to the next: the template sees marker values instead,
# and any module that keeps one is not preloaded.
RUN_KEYS = ("HOME", "PWD", "AUTOGRADE_RUN_DIR", "JPY_SESSION_NAME")
# Ours, read by no library: left unset, so the template is not taken for a notebook's process
# (the tests' leftover checks look for it).
UNSET_KEYS = ("AUTOGRADE_RUN_DIR",)
KERNEL_MODULES = ("ipykernel.kernelapp", "ipykernel.ipkernel", "ipykernel.zmqshell")
START_TIMEOUT_S = 240.0
_BOOT = ("import importlib.util as u, sys; s = u.spec_from_file_location('autograde_forkserver', sys.argv[1]); "
         "m = u.module_from_spec(s); s.loader.exec_module(m); m.main()")
_IMPORT = re.compile(r"^\s*(?:from\s+([A-Za-z_][\w.]*)\s+import\b|import\s+([A-Za-z_][\w.]*(?:\s*,\s*[A-Za-z_][\w.]*)*))")


@dataclass(frozen=True)
class TemplateSpec:
    """What a template preloads, and the per-notebook variables (checkpoint modules'
    ``KERNEL_ENV``) that differ between the kernels it serves. With ``scripts_dir`` it is a
    probe template instead: started with ``python -I`` as probes are, it runs the grader's
    scripts in that folder (``checkpoints/probes``)."""

    modules: tuple[str, ...] = ()
    knob_keys: tuple[str, ...] = ()
    scripts_dir: str = ""


def notebook_imports(paths: list[Path]) -> tuple[str, ...]:
    """The modules the notebooks' code cells import, in order of first appearance, without
    the standard library's (cheap, and some have side effects) and relative imports."""
    sources = []
    for path in paths:
        with contextlib.suppress(OSError, ValueError, nbformat.reader.NotJSONError):
            sources += [c.source for c in nbformat.read(str(path), as_version=4).cells if c.cell_type == "code"]
    return _imports(sources)


def script_imports(paths: list[Path]) -> tuple[str, ...]:
    """The same, for Python scripts."""
    sources = []
    for path in paths:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            sources.append(path.read_text())
    return _imports(sources)


def _imports(sources: list[str]) -> tuple[str, ...]:
    found: dict[str, None] = {}
    for source in sources:
        for line in source.splitlines():
            match = _IMPORT.match(line)
            if match:
                for name in (match.group(1) or match.group(2)).split(","):
                    found[name.strip()] = None
    return tuple(name for name in found
                 if name.split(".")[0] not in sys.stdlib_module_names and name != "__future__")


@dataclass
class KernelTemplate:
    proc: subprocess.Popen
    folder: Path
    socket_path: Path
    preloaded: tuple[str, ...]
    dropped: tuple[str, ...]  # asked for, but left out: they kept a per-run value

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        shutil.rmtree(self.folder, ignore_errors=True)


MAX_TEMPLATES = 2  # a kernel template and a probe template per grading process
_templates: dict[tuple, KernelTemplate] = {}
_failed: dict[tuple, str] = {}


def base_environment(env: dict[str, str], spec: TemplateSpec) -> dict[str, str]:
    """``env`` as the sandbox launcher will hand it to the kernel, without the per-run values."""
    from autograde.sandbox import _sandbox_env

    marker_dir = Path("/nonexistent-autograde-run")
    # jupyter_client adds a kernel's parent pid, which the launcher replaces with 1 (ipykernel reads it at import)
    extra = {} if spec.scripts_dir else {"JPY_PARENT_PID": "1"}
    full = _sandbox_env({**env, **extra}, marker_dir, 0, [Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()])
    return {k: v for k, v in full.items() if k not in set(RUN_KEYS) | set(spec.knob_keys)}


def socket_for(env: dict[str, str], spec: TemplateSpec) -> str | None:
    """The socket of a running template for kernels with this environment, started if need
    be (one per grading process: another environment replaces it), or None if none can run."""
    if os.name != "posix" or not sys.platform.startswith("linux") or os.geteuid() != 0:
        return None
    base = base_environment(env, spec)
    key = (sys.executable, tuple(sorted(base.items())), spec)
    if key in _failed:
        return None
    template = _templates.pop(key, None)
    if template is not None and template.alive():
        _templates[key] = template  # the most recently used last
        return str(template.socket_path)
    while len(_templates) >= MAX_TEMPLATES:  # the least recently used goes
        _templates.pop(next(iter(_templates))).close()
    try:
        template = _start(base, spec)
    except (OSError, RuntimeError, ValueError) as exc:
        _failed[key] = str(exc)
        return None
    _templates[key] = template
    return str(template.socket_path)


def _start(base: dict[str, str], spec: TemplateSpec) -> KernelTemplate:
    modules = [*([] if spec.scripts_dir else KERNEL_MODULES), *spec.modules]
    dropped = [m for m in modules if m.split(".")[0] in NEVER_PRELOADED]
    modules = [m for m in modules if m not in dropped]
    for _attempt in range(2):
        template, report = _launch(base, spec, modules)
        tainted = set(report.get("tainted") or [])
        if not tainted:
            if report.get("python_threads") != 1:
                template.close()
                raise RuntimeError("an import started a Python thread in the template")
            template.preloaded, template.dropped = tuple(report.get("preloaded") or ()), tuple(dropped)
            return template
        template.close()
        added = report.get("preloaded") or {}
        culprits = [m for m in modules if m in tainted or tainted & set(added.get(m, ()))]
        if not culprits:
            break
        dropped += culprits
        modules = [m for m in modules if m not in culprits]
    raise RuntimeError("modules keep per-run values: " + ", ".join(sorted(tainted))[:300])


def _launch(base: dict[str, str], spec: TemplateSpec, modules: list[str]) -> tuple[KernelTemplate, dict]:
    marker = f"autograde-template-{secrets.token_hex(6)}"
    env = dict(base)
    env.update({key: f"/{marker}/{key}" for key in (*RUN_KEYS, *spec.knob_keys) if key not in UNSET_KEYS})
    folder = Path(tempfile.mkdtemp(prefix="autograde-template-"))  # 0700: only this user reaches the socket
    socket_path = folder / "socket"
    read_end, write_end = os.pipe()
    config = {"modules": modules, "run_keys": [*RUN_KEYS, *spec.knob_keys], "marker": marker,
              "interpreter": sys.executable, "report_fd": write_end, "scripts_dir": spec.scripts_dir}
    flags = ["-I"] if spec.scripts_dir else []
    try:
        proc = subprocess.Popen([sys.executable, *flags, "-c", _BOOT, str(FORKSERVER), str(socket_path),
                                 json.dumps(config)],
                                env=env, cwd=folder, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, pass_fds=[write_end], start_new_session=True)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    template = KernelTemplate(proc, folder, socket_path, (), ())
    try:
        lines = _read_lines(read_end, 2, START_TIMEOUT_S)
    finally:
        os.close(read_end)
    if len(lines) < 2 or not lines[1].get("ready"):
        template.close()
        raise RuntimeError("the template did not start" if not lines else "the template stopped after its imports")
    return template, lines[0]


def _read_lines(fd: int, count: int, timeout: float) -> list[dict]:
    """Up to ``count`` JSON lines from a pipe, within ``timeout`` seconds in all."""
    data, deadline = b"", time.monotonic() + timeout
    while data.count(b"\n") < count:
        ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
        if not ready:
            break
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        data += chunk
    return [json.loads(line) for line in data.split(b"\n")[:count] if line.strip()]


def running_pids() -> set[int]:
    """The templates of this process: they outlive every run (a runner's sweep of leftover
    processes must spare them)."""
    return {t.proc.pid for t in _templates.values() if t.alive()}


def close_all() -> None:
    while _templates:
        _templates.popitem()[1].close()


atexit.register(close_all)
