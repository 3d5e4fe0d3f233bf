"""Grade one (student, notebook): read, restore locked cells, execute, score, write feedback.

Runs inside a worker process. Everything it returns is plain data; the parent process is
the only writer of the gradebook and the CSVs."""

from __future__ import annotations

import functools
import os
import shutil
import stat
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import nbformat
from nbgrader import utils as nbutils
from nbgrader.utils import determine_grade

from autograde import integrity, phases, provenance
from autograde.assignment import NotebookSpec
from autograde.collect import CheckpointRunner, Outcome, module_kernel_env, resolve_declaration
from autograde.limits import DEFAULT_SCAN_SECONDS
from autograde.restore import restore_cells
from autograde.runner import GRADER_PRIVATE_PATHS, NO_PRELOAD, Limits, execute_notebook
from autograde.submissions import UnreadableSubmission, read_notebook_safely
from autograde.templates import TemplateSpec

STATUSES = ("graded", "missing", "unreadable", "timeout", "crashed")
NEEDS_MANUAL_FLAG = "needs-manual-grading"  # a person still has to grade a cell of this notebook
LATE_FLAG = "late"
# A student's own files copied into their run (the safe intake's rules: regular files only).
MAX_STUDENT_FILE_BYTES = 20 * 1000 * 1000
MAX_STUDENT_FILES_BYTES = 100 * 1000 * 1000
MAX_STUDENT_FILES = 1000


@dataclass
class CheckpointResult:
    """One graded cell's score. For a checkpoint judged outside the kernel the score is
    split into behaviour (the student's code) and prediction; a plain nbgrader test cell
    (``judged="in-kernel"``) has behaviour only."""

    grade_id: str
    score: float
    max_score: float
    message: str = ""
    judged: str = "in-kernel"  # "outside" | "in-kernel" | "manual" (a person grades it, as in nbgrader)
    behaviour_score: float = 0.0
    behaviour_max: float = 0.0
    prediction_score: float = 0.0
    prediction_max: float = 0.0
    # A person grades it (a task, a written answer, a graded code answer), as in nbgrader:
    # its score stays empty in the gradebook until they do.
    needs_manual_grade: bool = False
    seconds: float = 0.0  # collecting and judging it, outside the kernel (where a batch's time goes)

    def __post_init__(self) -> None:
        if not self.behaviour_max and not self.prediction_max:
            self.behaviour_score, self.behaviour_max = self.score, self.max_score

    @property
    def passed(self) -> bool:
        return self.score >= self.max_score > 0


@dataclass
class NotebookResult:
    student: str
    notebook: str
    status: str
    score: float
    max_score: float
    flags: list[str] = field(default_factory=list)
    message: str = ""
    checkpoints: list[CheckpointResult] = field(default_factory=list)
    feedback_path: str = ""
    # The executed notebook, instrumentation removed, for the parent to render as feedback
    # (rendering there overlaps with the next execution); not part of the reports.
    executed: dict | None = field(default=None, repr=False)
    duration_s: float = 0.0
    execution_s: float = 0.0  # time inside the kernel, kernel start excluded
    kernel_start_s: float = 0.0
    kernel_from: str = ""  # "template" (forked from the worker's kernel template) or "exec"
    reached_last_cell: bool = False
    phases: dict[str, float] = field(default_factory=dict)  # seconds by phase (autograde/phases.py)
    seconds_late: float = 0.0  # set by the parent from timestamp.txt and the due date
    late_penalty: float = 0.0  # points taken off for lateness (nbgrader's LateSubmissionPlugin); not in ``score``
    # What the score depended on (autograde/provenance.py): compared by `grade --regrade`.
    submission_sha256: str = ""
    checks_sha256: str = ""
    environment_sha256: str = ""

    @property
    def needs_manual_grade(self) -> bool:
        return any(c.needs_manual_grade for c in self.checkpoints)

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("executed", None)
        return data


@dataclass
class GradeJob:
    student: str
    spec: NotebookSpec
    path: Path | None  # None: not submitted
    feedback_dir: Path
    cell_timeout: float
    notebook_timeout: float
    note: str = ""
    limits: Limits = field(default_factory=Limits)
    kernel_env: dict[str, str] = field(default_factory=dict)  # e.g. the model cache's location
    rejected: str = ""  # why the submitted file was refused at intake (then ``path`` is None)
    model_cache: bool = False  # point the kernel at this machine's dequantised generator
    notebook: dict | None = None  # the submission itself, read by the parent (a remote worker has no path)
    # Placed in the run folder before it runs, as nbgrader does: (path in the run folder, file,
    # or its bytes for a remote worker without the files). The student's own files first, read
    # by the intake's rules; then the assignment's files, which replace a student's of the same name.
    student_files: list[tuple[str, Path | bytes]] = field(default_factory=list)
    support_files: list[tuple[str, Path | bytes]] = field(default_factory=list)
    heldout_salt: str = ""  # secret of the results folder: held-out inputs reproducible per submission
    concurrent_runs: int = 1  # notebooks graded at once on a machine: each kernel's share of its cores
    template: TemplateSpec | None = NO_PRELOAD  # the kernel template to fork the kernel from (None: none)


def missing_result(job: GradeJob) -> NotebookResult:
    return NotebookResult(
        student=job.student,
        notebook=job.spec.name,
        status="missing",
        score=0.0,
        max_score=job.spec.max_score,
        message="no notebook with this name was submitted",
        checkpoints=[_zero(c.grade_id, c.points, "not submitted", job.spec) for c in job.spec.graded_cells],
    )


def grade_notebook(job: GradeJob) -> NotebookResult:
    """Grade one submission; never raises for anything the submission does."""
    import time

    started = time.perf_counter()
    spec = job.spec
    if job.path is None and not job.rejected:
        return missing_result(job)
    result = NotebookResult(
        student=job.student, notebook=spec.name, status="graded", score=0.0, max_score=spec.max_score
    )
    result.checks_sha256, result.environment_sha256 = provenance.checks_sha256(spec), provenance.environment_sha256()
    try:
        if job.rejected:
            raise UnreadableSubmission(job.rejected)
        submission = nbformat.from_dict(job.notebook) if job.notebook is not None else read_notebook_safely(job.path)
        result.submission_sha256 = provenance.bytes_sha256(nbformat.writes(submission).encode())
    except UnreadableSubmission as exc:
        result.status = "unreadable"
        result.message = f"not a readable notebook: {exc.reason}"
        result.checkpoints = [_zero(c.grade_id, c.points, "notebook unreadable", spec) for c in spec.graded_cells]
        result.duration_s = time.perf_counter() - started
        return result

    prepared, result.flags = restore_cells(submission, spec)
    problem = kernel_problem(spec)
    if problem:
        result.status, result.message = "crashed", problem
        result.checkpoints = score_cells(prepared, spec)
        _note_manual(result)
        result.duration_s = time.perf_counter() - started
        return result
    # Scan what the student wrote or changed (the instructor's own cells are not theirs), in a
    # child process whose time counts against the notebook's budget.
    scan_flags, scan_s = integrity.scan_notebook_bounded(
        prepared, lambda cell: _is_student_cell(cell) and cell.source.strip() not in spec.released_code,
        timeout_s=min(DEFAULT_SCAN_SECONDS, job.notebook_timeout / 4))
    result.flags += scan_flags
    notebook_timeout = max(job.notebook_timeout - scan_s, 1.0)
    limits, kernel_env = job_environment(job)
    nonce = integrity.new_nonce()
    checkpoints = checkpoint_runner(spec)
    if job.heldout_salt:
        checkpoints.seed = provenance.heldout_seed(job.heldout_salt, result.submission_sha256, spec.name)
    kernel_env = {**checkpoints.kernel_env, **kernel_env}
    checkpoints.kernel_env = kernel_env  # the probes run with the kernel's environment
    in_kernel_ids = {c.grade_id for c in spec.graded_cells if not c.manual} - set(checkpoints.declarations)
    private = [str(p) for p in [*GRADER_PRIVATE_PATHS, *job.limits.hide]]
    integrity.instrument(prepared, in_kernel_ids, nonce, private)
    run_dir = Path(tempfile.mkdtemp(prefix="autograde-run-"))
    try:
        result.flags += place_files(run_dir, job)
        execution = execute_notebook(
            prepared,
            workdir=run_dir,
            cell_timeout=job.cell_timeout,
            notebook_timeout=notebook_timeout,
            allow_errors=True,
            limits=limits,
            extra_env=kernel_env,
            checkpoints=checkpoints,
            template=job.template,
        )
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    if job.limits.sandbox and execution.sandbox_mode != "isolated":
        result.flags.append("unsandboxed")
    if execution.truncated_cells:
        result.flags.append("output-truncated")
    if execution.status == "completed":
        result.flags += integrity.audit_flags(execution.notebook, nonce)
    result.flags = sorted(set(result.flags), key=result.flags.index)
    result.execution_s = max(execution.duration_s - execution.kernel_start_s, 0.0)
    result.kernel_start_s = execution.kernel_start_s
    result.kernel_from = execution.kernel_from
    result.reached_last_cell = _reached_last_student_cell(execution.notebook)
    if execution.status in ("timeout", "crashed"):
        result.status = execution.status
        result.message = execution.message
        if execution.timed_out_cells and "were interrupted" in execution.message:
            # Index 0 is the injected guard, so an index here is the student's cell number from 1.
            numbers = ", ".join(str(i) for i in execution.timed_out_cells)
            result.message = (f"cell {numbers} of the notebook (counting from 1) ran longer than "
                              f"{job.cell_timeout:g} s and was interrupted; the cells after it still ran")
    result.checkpoints = score_cells(execution.notebook, spec, nonce, checkpoints.outcomes)
    _note_manual(result)
    result.phases = phases.breakdown(
        execution.notebook, {c.grade_id for c in spec.graded_cells if not c.manual},
        sum(o.seconds for o in checkpoints.outcomes.values()), execution.kernel_start_s, scan_s)
    result.score = sum(c.score for c in result.checkpoints)
    if job.note:
        result.message = "; ".join(m for m in (result.message, job.note) if m)
    result.executed = integrity.remove_instrumentation(execution.notebook, nonce)
    result.duration_s = time.perf_counter() - started
    return result


def _note_manual(result: NotebookResult) -> None:
    if result.needs_manual_grade and NEEDS_MANUAL_FLAG not in result.flags:
        result.flags.insert(0, NEEDS_MANUAL_FLAG)


def _is_student_cell(cell) -> bool:
    return not nbutils.is_locked(cell)


@functools.lru_cache(maxsize=8)
def _installed_kernel(name: str) -> tuple[bool, str]:
    """(installed, language) of a kernel name on this machine."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        return True, KernelSpecManager().get_kernel_spec(name).language or ""
    except NoSuchKernel:
        return False, ""


def kernel_problem(spec: NotebookSpec) -> str:
    """Why the assignment's kernel (its source notebook's kernelspec, as nbgrader's
    OverwriteKernelspec uses) cannot run here, or "". Python kernels run in the grader's own
    environment, sandboxed; the runner and its instrumentation speak Python only."""
    name = spec.kernel_name
    language = str(spec.kernelspec.get("language") or "")
    installed, installed_language = _installed_kernel(name)
    if not installed:
        if language.lower() == "python":
            return ""  # a Python kernel of another name (python3.11, conda-env-x): run it as Python
        return (f"the notebook's kernel {name!r}" + (f" ({language})" if language else "")
                + " is not installed on this machine; install it or grade on a machine that has it")
    language = installed_language or language
    if language.lower() != "python":
        return (f"the notebook's kernel {name!r} runs {language or 'an unknown language'}; "
                "the sandboxed grader executes Python kernels only")
    return ""


def place_files(run_dir: Path, job: GradeJob) -> list[str]:
    """Copy the student's own files, then the assignment's, into the run folder (nbgrader's
    order: the instructor's files win). Returns flags for student files left out."""
    flags: list[str] = []
    budget = MAX_STUDENT_FILES_BYTES
    for count, (relative, path) in enumerate(job.student_files):
        target = _target(run_dir, relative)
        if target is None or count >= MAX_STUDENT_FILES:
            flags.append("student-file-skipped")
            continue
        try:
            data = path if isinstance(path, bytes) else read_regular_file(path, min(MAX_STUDENT_FILE_BYTES, budget))
            if len(data) > min(MAX_STUDENT_FILE_BYTES, budget):
                raise ValueError(f"{relative}: too large")
            target.write_bytes(data)
            budget -= len(data)
        except (OSError, ValueError):
            flags.append("student-file-skipped")
    for relative, path in job.support_files:
        target = _target(run_dir, relative)
        if target is not None:
            if target.exists() or target.is_symlink():
                target.unlink()
            if isinstance(path, bytes):
                target.write_bytes(path)
            else:
                shutil.copyfile(path, target)
    return sorted(set(flags))


def _target(run_dir: Path, relative: str) -> Path | None:
    parts = Path(relative).parts
    if not parts or Path(relative).is_absolute() or ".." in parts:
        return None
    target = run_dir.joinpath(*parts)
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def read_regular_file(source: Path, max_bytes: int = MAX_STUDENT_FILE_BYTES) -> bytes:
    """Read a file the student controls: a regular file (no link followed, nothing that
    blocks), at most ``max_bytes``; OSError or ValueError otherwise."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(source, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > max_bytes:
            raise ValueError(f"{source}: not a regular file of at most {max_bytes} bytes")
        chunks, total = [], 0
        while chunk := os.read(fd, 1 << 20):
            total += len(chunk)
            if total > max_bytes:
                raise ValueError(f"{source} grew past {max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _reached_last_student_cell(executed) -> bool:
    code = [c for c in executed.cells if c.cell_type == "code" and integrity.INJECTED not in c.metadata]
    return bool(code) and code[-1].get("execution_count") is not None


@functools.lru_cache(maxsize=1)
def _machine_model_cache():
    from autograde.modelcache import prepare

    return prepare()


THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def thread_env(concurrent_runs: int, cpus: int | None = None) -> dict[str, str]:
    """Each kernel's thread pools sized to its share of this machine's cores. With as many
    kernels as cores, BLAS and OpenMP threads only wait for each other: one idle-spinning
    pool per kernel costs CPU that another kernel needs (measured: 4.5% of a class's wall
    time on 2 cores and 2 workers)."""
    share = max(1, (cpus or os.cpu_count() or 1) // max(concurrent_runs, 1))
    return dict.fromkeys(THREAD_VARIABLES, str(share))


def job_environment(job: GradeJob) -> tuple[Limits, dict[str, str]]:
    """The limits and kernel environment of one job on this machine: the model cache is
    this machine's (a Dask worker elsewhere builds its own once); thread pools get this
    machine's share of cores unless the instructor set them (in the grader's environment or
    the options' kernel environment)."""
    threads = {name: value for name, value in thread_env(job.concurrent_runs).items() if name not in os.environ}
    env = {**threads, **job.kernel_env}
    if not job.model_cache:
        return job.limits, env
    cache = _machine_model_cache()
    limits = replace(job.limits, ro_paths=[*job.limits.ro_paths, *cache.paths])
    return limits, {**cache.env, **env}


def checkpoint_runner(spec: NotebookSpec) -> CheckpointRunner:
    """The hidden cells of ``spec`` judged outside the kernel: those whose gradebook source
    names a checkpoints module."""
    declarations = {}
    for cell in spec.graded_cells:
        if cell.solution or cell.cell_type != "code":
            continue
        declaration = resolve_declaration(cell.grade_id, cell.source)
        if declaration is not None:
            declarations[cell.grade_id] = (declaration, cell.points)
    return CheckpointRunner(declarations, kernel_env=module_kernel_env([c.source for c in spec.graded_cells]))


def _from_outcome(outcome: Outcome) -> CheckpointResult:
    return CheckpointResult(
        outcome.grade_id, outcome.score, outcome.points, _short(outcome.message, 400), judged="outside",
        behaviour_score=outcome.behaviour_score, behaviour_max=outcome.behaviour_max,
        prediction_score=outcome.prediction_score, prediction_max=outcome.prediction_points,
        seconds=round(outcome.seconds, 3))


def score_cells(executed: nbformat.NotebookNode, spec: NotebookSpec, nonce: str | None = None,
                outcomes: dict[str, Outcome] | None = None) -> list[CheckpointResult]:
    """Score every graded cell of the assignment. A checkpoint judged outside the kernel
    scores what its judge decided (``outcomes``), whatever the notebook printed. A plain
    test cell earns its points when it ran, raised nothing and (when ``nonce`` is given)
    printed its receipt; stderr output (a warning, say) does not cost points, unlike in
    nbgrader. A graded cell that never ran scores zero."""
    outcomes = outcomes or {}
    by_id = {
        cell.metadata["nbgrader"]["grade_id"]: cell
        for cell in executed.cells
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
    }
    # Manually graded cells and tasks wait for a person, as in nbgrader's SaveAutoGrades.
    results = []
    for cell_spec in spec.graded_cells:
        if cell_spec.grade_id in outcomes:
            results.append(_from_outcome(outcomes[cell_spec.grade_id]))
            continue
        cell = by_id.get(cell_spec.grade_id)
        if cell_spec.manual:
            results.append(_manual_result(cell_spec, cell))
            continue
        if cell is None or cell.cell_type != "code" or cell.get("execution_count") is None:
            results.append(_zero(cell_spec.grade_id, cell_spec.points, "did not run", spec))
            continue
        judged = nbformat.from_dict(cell)
        judged.outputs = [o for o in cell.outputs if not (o.output_type == "stream" and o.name == "stderr")]
        score, max_score = determine_grade(judged)
        score = float(score or 0.0)
        message = cell_message(cell)
        if nonce and not cell_spec.solution and score > 0 and not integrity.has_receipt(cell, cell_spec.grade_id, nonce):
            score = 0.0
            message = "the check did not confirm it finished (its receipt is missing): " + message
        results.append(CheckpointResult(cell_spec.grade_id, score, max_score, message))
    return results


def _manual_result(cell_spec, cell) -> CheckpointResult:
    """A cell a person grades. nbgrader scores a written answer left exactly as released 0
    (its checksum is unchanged) and leaves everything else, tasks included, to the person."""
    if not cell_spec.task and cell is not None and nbutils.is_grade(cell):
        auto_score, _ = determine_grade(cell)
        if auto_score is not None:
            return CheckpointResult(cell_spec.grade_id, float(auto_score), cell_spec.points,
                                    "no answer (the cell is as it was released)", judged="manual")
    kind = "task" if cell_spec.task else "answer"
    return CheckpointResult(cell_spec.grade_id, 0.0, cell_spec.points,
                            f"{kind} to be graded by a person", judged="manual", needs_manual_grade=True)


def cell_message(cell: nbformat.NotebookNode) -> str:
    """The student-facing outcome of a graded cell: the error's message, or its stdout."""
    for output in cell.get("outputs", []):
        if output.output_type == "error":
            return _short(f"{output.ename}: {output.evalue}" if output.evalue else output.ename)
    text = "".join(o.text for o in cell.get("outputs", [])
                   if o.output_type == "stream" and o.name == "stdout")
    return _short("".join(line for line in text.splitlines(True) if not line.startswith("[autograde-receipt")))


def _zero(grade_id: str, points: float, message: str, spec: NotebookSpec | None = None) -> CheckpointResult:
    """A graded cell that earned nothing; split like its declaration when it is judged outside."""
    cell = spec.cells.get(grade_id) if spec is not None else None
    if cell is not None and cell.manual:
        return CheckpointResult(grade_id, 0.0, points, message, judged="manual")
    declaration = resolve_declaration(grade_id, cell.source) if cell is not None and not cell.solution else None
    if declaration is None:
        return CheckpointResult(grade_id, 0.0, points, message)
    prediction_max = min(declaration.prediction.points, points) if declaration.prediction else 0.0
    return CheckpointResult(grade_id, 0.0, points, message, judged="outside", behaviour_max=points - prediction_max,
                            prediction_max=prediction_max)


def _short(text: str, limit: int = 240) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
