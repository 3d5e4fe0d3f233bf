"""The one way notebooks are executed: grading, `check`, tests and benchmarks all call
``execute_notebook``.

What it guarantees:
- a fresh working directory per execution (a temporary one unless you pass ``workdir``);
- a kernel environment that is offline for model hubs (``HF_HUB_OFFLINE=1``), keeps progress
  bars and warnings off stderr (nbgrader scores stderr in a graded cell as zero) and can
  import ``checkpoints`` (the hidden verifiers);
- a per-cell timeout (the cell is interrupted and execution goes on) and a per-notebook
  deadline (the kernel is killed);
- every process the kernel started is killed when the execution ends, servers included,
  even ones that detached into their own session.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import psutil
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, DeadKernelError
from nbformat import NotebookNode

from autograde import sandbox, templates
from autograde.limits import (  # noqa: F401  (re-exported for callers)
    DEFAULT_CELL_TIMEOUT,
    DEFAULT_MEMORY_MB,
    DEFAULT_NOTEBOOK_TIMEOUT,
    DEFAULT_OUTPUT_MB,
    Limits,
)
from autograde.templates import TemplateSpec

REPO_ROOT = Path(__file__).resolve().parent.parent
NO_PRELOAD = TemplateSpec()  # a template that preloads only the kernel's own modules

# What a submission's kernel must never see when sandboxed (see autograde/sandbox.py).
GRADER_PRIVATE_PATHS = [REPO_ROOT / name for name in ("notebooks", "tests", "examples", "build", ".git")]

# Kernel environment: offline for model hubs, quiet on stderr, headless plotting.
KERNEL_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "TQDM_DISABLE": "1",
    "PYTHONWARNINGS": "ignore",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
    "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    "PYTHONUNBUFFERED": "1",
}

_PR_SET_CHILD_SUBREAPER = 36


@dataclass
class ExecutionResult:
    """What happened when a notebook ran."""

    notebook: NotebookNode
    status: str  # "completed" | "timeout" | "crashed" | "error"
    message: str = ""
    duration_s: float = 0.0
    kernel_start_s: float = 0.0
    timed_out_cells: list[int] = field(default_factory=list)
    workdir: Path | None = None
    sandbox_mode: str = "off"  # "isolated" | "limits-only" | "off"
    sandbox_reason: str = ""
    truncated_cells: list[int] = field(default_factory=list)
    kernel_from: str = "exec"  # "template": forked from a kernel template
    template_note: str = ""  # why a template was asked for but not used

    @property
    def reached_last_cell(self) -> bool:
        code_cells = [c for c in self.notebook.cells if c.cell_type == "code"]
        return bool(code_cells) and code_cells[-1].get("execution_count") is not None


def kernel_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a notebook kernel runs with."""
    env = dict(os.environ)
    env.update(KERNEL_ENV)
    # Nothing of the repository is importable in a kernel: checkpoints are judged outside.
    env.pop("PYTHONPATH", None)
    # The grader's own virtualenv wins, whatever the caller's shell had activated.
    env.pop("JPY_PARENT_PID", None)
    if extra:
        env.update(extra)
    return env


def become_subreaper() -> None:
    """Make orphaned grandchildren (double-forked servers) re-parent to this process, so
    ``kill_new_descendants`` can still find them. Linux only; elsewhere a no-op."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _descendants() -> set[int]:
    try:
        return {p.pid for p in psutil.Process().children(recursive=True)}
    except psutil.Error:
        return set()


def kill_new_descendants(before: set[int], grace_s: float = 0.5) -> int:
    """Kill every descendant of this process that did not exist in ``before``.

    Returns how many processes were killed."""
    victims = []
    for pid in _descendants() - before:
        with contextlib.suppress(psutil.Error):
            victims.append(psutil.Process(pid))
    for proc in victims:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(victims, timeout=grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=grace_s)
    return len(victims)


class SandboxedKernelManager(AsyncKernelManager):
    """Starts the kernel through the sandbox launcher (``sandbox.launcher_args``: limits,
    and isolation when possible). The launcher runs sandbox.py by path, so it needs no
    PYTHONPATH into the repository."""

    launcher_prefix: list[str] = []

    def format_kernel_cmd(self, extra_arguments=None):
        return [*self.launcher_prefix, *super().format_kernel_cmd(extra_arguments)]


class _Client(NotebookClient):
    """nbclient that records the cells whose timeout fired and caps output per cell and per
    notebook (display updates included), so an output flood cannot exhaust the grader's
    memory."""

    def __init__(self, *args, output_limit_bytes: int, notebook_output_limit_bytes: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.timed_out_cells: list[int] = []
        self.truncated_cells: list[int] = []
        self._current_index = -1
        self._output_limit = output_limit_bytes
        self._notebook_limit = notebook_output_limit_bytes
        self._output_bytes: dict[int, int] = {}
        self._notebook_bytes = 0

    async def _async_handle_timeout(self, timeout, cell=None):
        self.timed_out_cells.append(self._current_index)
        return await super()._async_handle_timeout(timeout, cell)

    def _over_budget(self, cell_index: int, msg) -> bool:
        """Whether this output would go over the cell's or the notebook's budget. Only what is
        kept counts: a dropped flood does not eat the budget of the cells after it."""
        size = len(json.dumps(msg.get("content", {}), default=str))
        used = self._output_bytes.get(cell_index, 0) + size
        if used > self._output_limit or self._notebook_bytes + size > self._notebook_limit:
            return True
        self._output_bytes[cell_index] = used
        self._notebook_bytes += size
        return False

    def _note_truncated(self, outs, cell_index: int) -> None:
        if cell_index not in self.truncated_cells:
            self.truncated_cells.append(cell_index)
            outs.append(nbformat.v4.new_output(
                "stream", name="stdout",
                text=f"\n[output truncated: more than {self._output_limit / 1_000_000:g} MB in this cell "
                     f"or {self._notebook_limit / 1_000_000:g} MB in the notebook]\n"))

    def output(self, outs, msg, display_id, cell_index):
        if self._over_budget(cell_index, msg):
            self._note_truncated(outs, cell_index)
            return None
        return super().output(outs, msg, display_id, cell_index)

    def _update_display_id(self, display_id, msg):
        # An update replaces outputs in place, possibly in many cells at once: it counts
        # against the budget of the running cell like any output.
        if self._over_budget(self._current_index, msg):
            if self._current_index not in self.truncated_cells:
                self.truncated_cells.append(self._current_index)
            return None
        return super()._update_display_id(display_id, msg)


def _load(notebook: str | os.PathLike | NotebookNode) -> NotebookNode:
    if isinstance(notebook, NotebookNode):
        return nbformat.from_dict(notebook)  # a deep copy: the caller's object stays as it was
    return nbformat.read(os.fspath(notebook), as_version=4)


def execute_notebook(
    notebook: str | os.PathLike | NotebookNode,
    *,
    workdir: str | os.PathLike | None = None,
    cell_timeout: float = DEFAULT_CELL_TIMEOUT,
    notebook_timeout: float = DEFAULT_NOTEBOOK_TIMEOUT,
    allow_errors: bool = True,
    extra_env: dict[str, str] | None = None,
    keep_workdir: bool = False,
    limits: Limits | None = None,
    checkpoints=None,
    template: TemplateSpec | None = NO_PRELOAD,
) -> ExecutionResult:
    """Execute a notebook top to bottom and return the executed copy with its status.

    ``status`` is ``completed`` (every cell ran), ``error`` (a cell raised and
    ``allow_errors`` is False), ``timeout`` (a cell hit ``cell_timeout`` and was interrupted,
    or the whole run hit ``notebook_timeout``) or ``crashed`` (the kernel died, never
    started, or went over the memory limit). The notebook's own files are written in
    ``workdir``; a temporary one is created and removed afterwards unless ``keep_workdir``
    or ``workdir`` is given.

    ``checkpoints`` (an ``autograde.collect.CheckpointRunner``) takes over the cells it
    ``handles``: instead of executing them, the runner lends it the live kernel
    (``KernelAccess``) and puts the outputs it returns (the judge's message) in the cell.

    With ``template`` (and the sandbox on) the kernel is forked from a kernel template that has
    imported ``template.modules`` once for this process (``autograde/templates.py``); the
    launcher starts it the usual way whenever the template cannot.
    """
    limits = limits or Limits()
    nb = _load(notebook)
    own_workdir = workdir is None
    run_dir = Path(tempfile.mkdtemp(prefix="autograde-run-")) if own_workdir else Path(workdir)
    run_dir.mkdir(parents=True, exist_ok=True)
    run_dir = run_dir.resolve()

    client = _Client(
        nb,
        timeout=int(cell_timeout),
        interrupt_on_timeout=True,
        allow_errors=allow_errors,
        kernel_name="python3",
        startup_timeout=60,
        record_timing=True,
        shutdown_kernel="immediate",  # everything it started is killed anyway
        resources={"metadata": {"path": str(run_dir)}},
        kernel_manager_class=SandboxedKernelManager,
        output_limit_bytes=int(limits.output_mb * 1_000_000),
        notebook_output_limit_bytes=int(limits.notebook_output_mb * 1_000_000),
    )
    client.log.setLevel(logging.CRITICAL)
    # IPC sockets inside the run folder: no TCP port to collide on, and no plain-TCP warning.
    client.km = client.create_kernel_manager()
    client.km.transport = "ipc"
    client.km.ip = str(run_dir / ".kernel-ipc")
    # The launcher's report (mode, network namespace, cgroups) is written outside the run
    # folder, where the student cannot forge it.
    private_dir = Path(tempfile.mkdtemp(prefix="autograde-sandbox-"))
    info_file = private_dir / "sandbox.json"
    env = kernel_env(extra_env)
    env.update(AUTOGRADE_RUN_DIR=str(run_dir), HOME=str(run_dir), XDG_CACHE_HOME=str(run_dir / ".cache"),
               HF_HOME=str(run_dir / ".cache" / "huggingface"), MPLCONFIGDIR=str(run_dir / ".cache" / "mpl"))
    # Before the list of this process's children is taken: the template outlives the run.
    template_socket = templates.socket_for(env, template) if limits.sandbox and template is not None else None
    client.km.launcher_prefix = sandbox.launcher_args(run_dir, limits, info_file, template=template_socket)

    become_subreaper()
    before = _descendants()
    deadline_hit = threading.Event()
    memory_hit = threading.Event()
    status, message = "completed", ""
    started = time.perf_counter()
    kernel_start_s = 0.0
    try:
        with client.setup_kernel(env=env, cwd=str(run_dir)):
            kernel_start_s = time.perf_counter() - started
            kernel_pid = client.km.provisioner.process.pid  # type: ignore[union-attr]

            def _kill_kernel(flag: threading.Event) -> None:
                flag.set()
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(kernel_pid, signal.SIGKILL)
                kill_new_descendants(before, grace_s=0)

            remaining = max(notebook_timeout - kernel_start_s, 1.0)
            watchdog = threading.Timer(remaining, _kill_kernel, args=(deadline_hit,))
            watchdog.daemon = True
            watchdog.start()
            stop_watching = threading.Event()
            memory_watch = threading.Thread(
                target=_watch_memory, args=(kernel_pid, limits.memory_mb, stop_watching,
                                            lambda: _kill_kernel(memory_hit)), daemon=True)
            memory_watch.start()
            access = None
            try:
                access = _kernel_access(client, run_dir, limits, info_file, template) if checkpoints else None
                for index, cell in enumerate(nb.cells):
                    client._current_index = index
                    if checkpoints is not None and checkpoints.handles(cell):
                        cell.outputs = checkpoints(cell, access)
                        cell.execution_count = index + 1
                        continue
                    client.execute_cell(cell, index)
            finally:
                watchdog.cancel()
                stop_watching.set()
                if access is not None:
                    access.probes.close()
    except CellExecutionError as exc:
        status, message = "error", _first_line(str(exc))
    except DeadKernelError:
        status, message = "crashed", "the kernel died (the notebook exited or crashed the interpreter)"
    except (RuntimeError, TimeoutError) as exc:
        # e.g. the kernel failed to start or stopped answering
        status, message = "crashed", f"kernel failure: {_first_line(str(exc))}"
    finally:
        info = sandbox.read_info(info_file)
        if sandbox.memory_exceeded(info):  # the cgroup's limit stopped it (an OOM kill)
            memory_hit.set()
        sandbox.kill_all(info)  # everything in its cgroups; its uid is released
        kill_new_descendants(before | templates.running_pids())  # a probe template may have started meanwhile
        sandbox_mode, sandbox_reason = _sandbox_report(info, limits)
        kernel_from = info.kernel_from if info.mode == "isolated" else "exec"
        shutil.rmtree(private_dir, ignore_errors=True)
        if own_workdir and not keep_workdir:
            shutil.rmtree(run_dir, ignore_errors=True)

    if memory_hit.is_set():
        status = "crashed"
        message = f"the notebook used more than {limits.memory_mb:.0f} MB of memory and was stopped"
    elif deadline_hit.is_set():
        status = "timeout"
        message = f"the notebook did not finish within {notebook_timeout:.0f} s and was stopped"
    elif client.timed_out_cells and status in ("completed", "error"):
        status = "timeout"
        cells = ", ".join(str(i) for i in client.timed_out_cells)
        message = f"cell(s) {cells} ran longer than {cell_timeout:.0f} s and were interrupted"

    return ExecutionResult(
        notebook=nb,
        status=status,
        message=message,
        duration_s=time.perf_counter() - started,
        kernel_start_s=kernel_start_s,
        timed_out_cells=list(client.timed_out_cells),
        workdir=None if (own_workdir and not keep_workdir) else run_dir,
        sandbox_mode=sandbox_mode,
        sandbox_reason=sandbox_reason,
        truncated_cells=list(client.truncated_cells),
        kernel_from=kernel_from,
        template_note=info.template_note if template_socket else "",
    )


def _kernel_access(client: _Client, run_dir: Path, limits: Limits, info_file: Path, template: TemplateSpec | None):
    """The live kernel as a checkpoint may use it: grader code run without touching the
    student's input history, the run folder, and the kernel's network namespace."""
    from autograde.collect import KernelAccess, KernelGone
    from autograde.probes import ProbePool

    def run_code(code: str) -> str:
        request = nbformat.v4.new_code_cell(code)
        try:
            client.execute_cell(request, client._current_index, store_history=False)
        except DeadKernelError as exc:
            raise KernelGone("the kernel died") from exc
        except CellExecutionError as exc:
            raise KernelGone(_first_line(str(exc))) from exc
        return "".join(o.get("text", "") for o in request.outputs
                       if o.get("output_type") == "stream" and o.get("name") == "stdout")

    info = sandbox.read_info(info_file, timeout=10)  # written once the sandbox is up
    probes = ProbePool(from_template=template is not None, knob_keys=template.knob_keys if template else ())
    return KernelAccess(run_code=run_code, run_dir=run_dir, probes=probes,
                        netns_pid=info.netns_pid if info.mode == "isolated" else None, limits=limits)


def _sandbox_report(info: sandbox.SandboxInfo, limits: Limits) -> tuple[str, str]:
    if not limits.sandbox:
        return ("off", "sandbox not requested")
    return (info.mode, info.reason)


def _watch_memory(pid: int, limit_mb: float, stop: threading.Event, on_exceed) -> None:
    """Poll the resident memory of the kernel and its children; call ``on_exceed`` once
    they use more than ``limit_mb``."""
    try:
        kernel = psutil.Process(pid)
    except psutil.Error:
        return
    while not stop.wait(0.2):
        total = 0
        with contextlib.suppress(psutil.Error):
            for proc in [kernel, *kernel.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += proc.memory_info().rss
        if total > limit_mb * 1024 * 1024:
            on_exceed()
            return


def _first_line(text: str, limit: int = 300) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return (lines[0] if lines else "")[:limit]
