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
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, DeadKernelError
from nbformat import NotebookNode

REPO_ROOT = Path(__file__).resolve().parent.parent

DEFAULT_CELL_TIMEOUT = 120.0
DEFAULT_NOTEBOOK_TIMEOUT = 600.0

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
    "MPLBACKEND": "Agg",
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

    @property
    def reached_last_cell(self) -> bool:
        code_cells = [c for c in self.notebook.cells if c.cell_type == "code"]
        return bool(code_cells) and code_cells[-1].get("execution_count") is not None


def kernel_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a notebook kernel runs with."""
    env = dict(os.environ)
    env.update(KERNEL_ENV)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
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


class _Client(NotebookClient):
    """nbclient with a record of the cells whose timeout fired."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.timed_out_cells: list[int] = []
        self._current_index = -1

    async def _async_handle_timeout(self, timeout, cell=None):
        self.timed_out_cells.append(self._current_index)
        return await super()._async_handle_timeout(timeout, cell)


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
) -> ExecutionResult:
    """Execute a notebook top to bottom and return the executed copy with its status.

    ``status`` is ``completed`` (every cell ran), ``error`` (a cell raised and
    ``allow_errors`` is False), ``timeout`` (a cell hit ``cell_timeout`` and was interrupted,
    or the whole run hit ``notebook_timeout``) or ``crashed`` (the kernel died or never
    started). The notebook's own files are written in ``workdir``; a temporary one is
    created and removed afterwards unless ``keep_workdir`` or ``workdir`` is given.
    """
    nb = _load(notebook)
    own_workdir = workdir is None
    run_dir = Path(tempfile.mkdtemp(prefix="autograde-run-")) if own_workdir else Path(workdir)
    run_dir.mkdir(parents=True, exist_ok=True)

    client = _Client(
        nb,
        timeout=int(cell_timeout),
        interrupt_on_timeout=True,
        allow_errors=allow_errors,
        kernel_name="python3",
        startup_timeout=60,
        record_timing=True,
        resources={"metadata": {"path": str(run_dir)}},
    )
    client.log.setLevel(logging.CRITICAL)
    # IPC sockets inside the run folder: no TCP port to collide on, and no plain-TCP warning.
    client.km = client.create_kernel_manager()
    client.km.transport = "ipc"
    client.km.ip = str(run_dir / ".kernel-ipc")

    become_subreaper()
    before = _descendants()
    deadline_hit = threading.Event()
    status, message = "completed", ""
    started = time.perf_counter()
    kernel_start_s = 0.0
    try:
        with client.setup_kernel(env=kernel_env(extra_env), cwd=str(run_dir)):
            kernel_start_s = time.perf_counter() - started
            kernel_pid = client.km.provisioner.process.pid  # type: ignore[union-attr]

            def _kill_kernel() -> None:
                deadline_hit.set()
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(kernel_pid, signal.SIGKILL)

            remaining = max(notebook_timeout - kernel_start_s, 1.0)
            watchdog = threading.Timer(remaining, _kill_kernel)
            watchdog.daemon = True
            watchdog.start()
            try:
                for index, cell in enumerate(nb.cells):
                    client._current_index = index
                    client.execute_cell(cell, index)
            finally:
                watchdog.cancel()
    except CellExecutionError as exc:
        status, message = "error", _first_line(str(exc))
    except DeadKernelError:
        status, message = "crashed", "the kernel died (the notebook exited or crashed the interpreter)"
    except (RuntimeError, TimeoutError) as exc:
        # e.g. the kernel failed to start or stopped answering
        status, message = "crashed", f"kernel failure: {_first_line(str(exc))}"
    finally:
        kill_new_descendants(before)
        if own_workdir and not keep_workdir:
            shutil.rmtree(run_dir, ignore_errors=True)

    if deadline_hit.is_set():
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
    )


def _first_line(text: str, limit: int = 300) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return (lines[0] if lines else "")[:limit]
