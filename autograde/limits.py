"""One home for every default limit of a grading run: the runner, the sandbox, the worker
and the CLI all read them from here."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_CELL_TIMEOUT = 120.0  # seconds a cell may run before it is interrupted
DEFAULT_NOTEBOOK_TIMEOUT = 600.0  # seconds a whole notebook may run before its kernel is killed
DEFAULT_MEMORY_MB = 6144  # memory of a kernel and everything it started
DEFAULT_OUTPUT_MB = 4.0  # output kept per cell, display updates included
DEFAULT_NOTEBOOK_OUTPUT_MB = 16.0  # output kept per notebook: bounds the grader's own memory
DEFAULT_MAX_PROCESSES = 256
DEFAULT_CPU_SECONDS = 1800
DEFAULT_MAX_FILE_MB = 1024
DEFAULT_SCAN_SECONDS = 20.0  # the static scan of one submission, counted in the notebook's budget


@dataclass
class Limits:
    """Resource limits of one execution; ``sandbox`` confines the kernel (see sandbox.py)."""

    memory_mb: float = DEFAULT_MEMORY_MB
    output_mb: float = DEFAULT_OUTPUT_MB
    notebook_output_mb: float = DEFAULT_NOTEBOOK_OUTPUT_MB
    max_processes: int = DEFAULT_MAX_PROCESSES
    cpu_seconds: int = DEFAULT_CPU_SECONDS
    max_file_mb: int = DEFAULT_MAX_FILE_MB
    sandbox: bool = False
    hide: list[Path] = field(default_factory=list)  # limits-only fallback: extra paths to hide
    ro_paths: list[Path] = field(default_factory=list)  # grader-owned folders every sandbox sees read-only
