"""The measurements: a notebook headless vs its bare script, and a batch of submissions
graded by autograde's ``grade()`` or by nbgrader's own ``nbgrader autograde`` CLI."""

from __future__ import annotations

import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat
import psutil
from rich.console import Console

from autograde.assignment import ASSIGNMENT_ID, COURSE_ID, build_assignment
from autograde.grade import GradeOptions, grade
from autograde.runner import (
    DEFAULT_CELL_TIMEOUT,
    DEFAULT_NOTEBOOK_TIMEOUT,
    become_subreaper,
    execute_notebook,
    kernel_env,
    kill_new_descendants,
)
from bench.script import bare_script, read_figures, teaching_notebook

_SOLUTION_MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION")


# ----------------------------------------------------------------------------- notebooks

@dataclass
class Run:
    seconds: float
    status: str  # "completed" | "error" | "timeout" | "crashed"
    message: str = ""
    kernel_start_s: float | None = None  # headless only: part of `seconds` spent starting the kernel


@dataclass
class NotebookPair:
    """One repeat: the teaching notebook headless and its bare script, back to back."""

    headless: Run
    bare: Run
    figures: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        ok = self.headless.status == "completed" and self.bare.status == "completed"
        return self.headless.seconds / self.bare.seconds if ok and self.bare.seconds > 0 else None


def _run_env(run_dir: Path) -> dict[str, str]:
    # The kernel's environment, with the per-run HOME and caches execute_notebook gives a kernel.
    env = kernel_env()
    env.update(HOME=str(run_dir), XDG_CACHE_HOME=str(run_dir / ".cache"),
               HF_HOME=str(run_dir / ".cache" / "huggingface"), MPLCONFIGDIR=str(run_dir / ".cache" / "mpl"))
    return env


def _descendants() -> set[int]:
    try:
        return {p.pid for p in psutil.Process().children(recursive=True)}
    except psutil.Error:
        return set()


def run_headless(notebook: nbformat.NotebookNode, timeout_s: float) -> tuple[Run, dict]:
    """The notebook through the one runner; returns the run and the figures it printed."""
    started = time.perf_counter()
    result = execute_notebook(notebook, allow_errors=False, cell_timeout=min(DEFAULT_CELL_TIMEOUT, timeout_s),
                              notebook_timeout=timeout_s)
    seconds = time.perf_counter() - started
    return Run(seconds, result.status, result.message, result.kernel_start_s), read_figures(result.notebook)


def run_bare(script: str, scratch: Path, timeout_s: float) -> Run:
    """The script with a plain ``python``, in a fresh folder, output discarded; every process
    it leaves behind is killed afterwards (as the runner does for a kernel)."""
    scratch.mkdir(parents=True, exist_ok=True)
    run_dir = scratch / "run"
    run_dir.mkdir()
    script_path = scratch / "bare_script.py"
    script_path.write_text(script, encoding="utf-8")
    become_subreaper()
    before = _descendants()
    started = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, str(script_path)], cwd=run_dir, env=_run_env(run_dir),
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              timeout=timeout_s, start_new_session=True)
        seconds = time.perf_counter() - started
        if proc.returncode == 0:
            run = Run(seconds, "completed")
        else:
            lines = [line for line in proc.stderr.decode(errors="replace").splitlines() if line.strip()]
            run = Run(seconds, "error", (lines[-1] if lines else f"exit code {proc.returncode}")[:300])
    except subprocess.TimeoutExpired:
        run = Run(time.perf_counter() - started, "timeout", f"did not finish within {timeout_s:.0f} s")
    finally:
        kill_new_descendants(before)
        shutil.rmtree(scratch, ignore_errors=True)
    return run


def measure_notebook(source: Path, figure_expressions: dict[str, str], repeat: int, scratch: Path,
                     timeout_s: float = DEFAULT_NOTEBOOK_TIMEOUT, on_step=None,
                     budget_s: float | None = None) -> list[NotebookPair]:
    """Up to ``repeat`` back-to-back pairs; the order alternates so neither side always runs
    on a cold page cache. With ``budget_s``, no new pair starts once the pairs so far took
    that long (at least one pair always runs): a slow notebook gets fewer repeats."""
    notebook = teaching_notebook(nbformat.read(source, as_version=4), figure_expressions)
    script = bare_script(notebook)
    pairs = []
    started = time.perf_counter()
    for i in range(repeat):
        if i and budget_s is not None and time.perf_counter() - started >= budget_s:
            break
        if i % 2 == 0:
            headless, figures = run_headless(notebook, timeout_s)
            _step(on_step)
            bare = run_bare(script, scratch / f"bare-{i}", timeout_s)
        else:
            bare = run_bare(script, scratch / f"bare-{i}", timeout_s)
            _step(on_step)
            headless, figures = run_headless(notebook, timeout_s)
        _step(on_step)
        pairs.append(NotebookPair(headless, bare, figures))
    return pairs


def _step(on_step) -> None:
    if on_step is not None:
        on_step()


# ----------------------------------------------------------------------------- grading

def perfect_submission(source: Path, release: Path) -> nbformat.NotebookNode:
    """What a student who solved everything hands in: the student release with every
    solution cell holding the instructor's solution (markers removed)."""
    solutions = {cell.metadata["nbgrader"]["grade_id"]: cell.source
                 for cell in nbformat.read(source, as_version=4).cells
                 if cell.metadata.get("nbgrader", {}).get("solution")}
    nb = nbformat.read(release, as_version=4)
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in solutions:
            cell.source = "\n".join(line for line in solutions[grade_id].splitlines()
                                    if line.strip() not in _SOLUTION_MARKERS)
    return nb


@dataclass
class Batch:
    grader: str  # "autograde" | "nbgrader"
    workers: int
    n: int
    wall_s: float
    full_marks: int  # submissions that earned every point
    execution_s: list[float] = field(default_factory=list)  # autograde only: time in the kernel
    duration_s: list[float] = field(default_factory=list)  # autograde only: whole job in the worker
    message: str = ""

    @property
    def per_minute(self) -> float:
        return self.n / self.wall_s * 60 if self.wall_s > 0 else 0.0

    @property
    def s_per_submission(self) -> float:
        return self.wall_s / self.n if self.n else 0.0

    @property
    def overhead_in_worker_s(self) -> float | None:
        # Per submission: read + restore + kernel start + scoring + feedback, i.e. beyond execution.
        gaps = [d - e for d, e in zip(self.duration_s, self.execution_s)]
        return statistics.median(gaps) if gaps else None

    @property
    def overhead_batch_s(self) -> float | None:
        # Per submission, all in: wall time beyond the summed execution time (meaningful at 1 worker).
        if not self.execution_s or self.workers != 1:
            return None
        return (self.wall_s - sum(self.execution_s)) / self.n

    def to_dict(self) -> dict:
        data = asdict(self)
        data.update(per_minute=self.per_minute, s_per_submission=self.s_per_submission,
                     overhead_in_worker_s=self.overhead_in_worker_s, overhead_batch_s=self.overhead_batch_s,
                     execution_s_median=statistics.median(self.execution_s) if self.execution_s else None)
        return data


class Grading:
    """A scratch area holding one perfect submission of ``source``, copied to N students."""

    def __init__(self, source: Path, scratch: Path):
        self.source = Path(source).resolve()
        self.scratch = Path(scratch)
        self.scratch.mkdir(parents=True, exist_ok=True)
        # nbgrader generate_assignment gives the release a student starts from.
        assignment = build_assignment(self.scratch / "release-course", [self.source])
        self._course = assignment.course_root
        self.submission = perfect_submission(self.source, assignment.release_dir / self.source.name)
        self._counter = 0

    def _students(self, n: int) -> list[str]:
        return [f"student{i:03d}" for i in range(n)]

    def _fresh(self, label: str) -> Path:
        self._counter += 1
        path = self.scratch / f"{self._counter:02d}-{label}"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def autograde(self, n: int, workers: int) -> Batch:
        """``grade()`` over a folder of ``n`` submissions with ``workers`` processes."""
        work = self._fresh(f"autograde-{n}x-w{workers}")
        submissions = work / "submissions"
        for student in self._students(n):
            (submissions / student).mkdir(parents=True)
            nbformat.write(self.submission, submissions / student / self.source.name)
        out = work / "results"
        quiet = Console(file=io.StringIO(), width=120)
        started = time.perf_counter()
        grade(submissions, out, GradeOptions(workers=workers), sources=[self.source], force=True, console=quiet)
        wall = time.perf_counter() - started
        rows = json.loads((out / "results.json").read_text(encoding="utf-8"))
        batch = Batch("autograde", workers, n, wall,
                      full_marks=sum(r["status"] == "graded" and r["score"] >= r["max_score"] > 0 for r in rows),
                      execution_s=[float(r["execution_s"]) for r in rows],
                      duration_s=[float(r["duration_s"]) for r in rows])
        shutil.rmtree(work, ignore_errors=True)
        return batch

    def nbgrader(self, n: int, cell_timeout: float = DEFAULT_CELL_TIMEOUT) -> Batch:
        """``nbgrader autograde`` the usual way: a course folder made by generate_assignment,
        ``submitted/<student>/<assignment>/<notebook>.ipynb``, one sequential CLI run."""
        work = self._fresh(f"nbgrader-{n}x")
        # A copy of the course folder nbgrader generate_assignment made in __init__ (source,
        # release, gradebook): the gradebook stores names, not paths, so the copy is a course.
        course = work / "course"
        shutil.copytree(self._course, course)
        for student in self._students(n):
            folder = course / "submitted" / student / ASSIGNMENT_ID
            folder.mkdir(parents=True)
            nbformat.write(self.submission, folder / self.source.name)
        (course / "nbgrader_config.py").write_text(
            "c = get_config()\n"
            f"c.CourseDirectory.root = {str(course)!r}\n"
            f"c.CourseDirectory.course_id = {COURSE_ID!r}\n"
            f"c.CourseDirectory.db_url = {'sqlite:///' + str(course / 'gradebook.db')!r}\n"
            f"c.Execute.timeout = {int(cell_timeout)}\n", encoding="utf-8")
        # The kernel nbgrader starts inherits this environment: the same one our kernels get
        # (checkpoints importable, offline model hubs, quiet stderr), and this venv's scripts first.
        env = kernel_env()
        env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
        log = work / "nbgrader.log"
        become_subreaper()
        before = _descendants()
        started = time.perf_counter()
        with open(log, "wb") as handle:
            proc = subprocess.run([str(Path(sys.executable).parent / "nbgrader"), "autograde", ASSIGNMENT_ID],
                                  cwd=course, env=env, stdin=subprocess.DEVNULL, stdout=handle,
                                  stderr=subprocess.STDOUT)
        wall = time.perf_counter() - started
        kill_new_descendants(before)
        full, message = self._nbgrader_full_marks(course, n), ""
        if proc.returncode != 0:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            message = f"nbgrader exited with {proc.returncode}: " + " | ".join(tail)
        batch = Batch("nbgrader", 1, n, wall, full_marks=full, message=message)
        shutil.rmtree(work, ignore_errors=True)
        return batch

    def _nbgrader_full_marks(self, course: Path, n: int) -> int:
        from nbgrader.api import Gradebook, MissingEntry

        full = 0
        with Gradebook(f"sqlite:///{course / 'gradebook.db'}", COURSE_ID) as gradebook:
            for student in self._students(n):
                try:
                    nb = gradebook.find_submission_notebook(self.source.stem, ASSIGNMENT_ID, student)
                except MissingEntry:
                    continue
                full += bool(nb.max_score > 0 and nb.score >= nb.max_score)
        return full
