"""`autograde grade`: a folder (or .zip) of submissions -> grades.csv, checkpoints.csv,
feedback HTML and the nbgrader gradebook, in parallel over worker processes.

Workers only execute and score; this process is the single writer of every output, so the
SQLite gradebook never sees two writers ("database is locked")."""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import shutil
import time
import warnings
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path

import nbformat
from nbgrader.api import Gradebook
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from autograde.assignment import (
    ASSIGNMENT_ID,
    COURSE_ID,
    Assignment,
    AssignmentError,
    build_assignment,
    source_notebooks,
)
from autograde.feedback import write_feedback
from autograde.runner import DEFAULT_CELL_TIMEOUT, DEFAULT_NOTEBOOK_TIMEOUT, Limits, become_subreaper
from autograde.safe_output import csv_cell, plain_student_text
from autograde.submissions import collect
from autograde.summary import write_summary
from autograde.worker import GradeJob, NotebookResult, checkpoint_runner, grade_notebook, missing_result

GRADES_COLUMNS = ["student", "notebook", "score", "max_score", "status", "flags", "message", "checks_in_kernel"]
# `judged`: "outside" (collected as data, judged by the grader) or "in-kernel" (a plain nbgrader
# test cell, whose verdict the student's interpreter computed: see README, Grading you can trust).
CHECKPOINT_COLUMNS = ["student", "notebook", "checkpoint", "score", "max_score", "passed", "judged",
                      "behaviour_score", "behaviour_max", "prediction_score", "prediction_max", "message"]


class ResultsExistError(FileExistsError):
    """The results folder already holds grades and --force was not given."""


@dataclass
class GradeOptions:
    workers: int = os.cpu_count() or 1
    cell_timeout: float = DEFAULT_CELL_TIMEOUT
    notebook_timeout: float = DEFAULT_NOTEBOOK_TIMEOUT
    limits: Limits = field(default_factory=lambda: Limits(sandbox=True))
    model_cache: bool = True  # dequantise the packaged generator once for every kernel (modelcache.py)
    kernel_env: dict[str, str] = field(default_factory=dict)
    scheduler: str | None = None  # a Dask scheduler address, or "local": see autograde/cluster.py


def with_model_cache(options: GradeOptions, console: Console | None = None) -> GradeOptions:
    """Build the dequantised generator cache once, here, before any worker needs it; each
    worker then points its kernels at it (``worker.job_environment``)."""
    if options.model_cache:
        from autograde.modelcache import prepare

        prepare(console)
    return options


def _worker_init() -> None:
    become_subreaper()


def run_jobs(jobs: list[GradeJob], options: GradeOptions, console: Console | None = None,
             label: str = "grading") -> list[NotebookResult]:
    """Grade every job over ``options.workers`` local processes, or on a Dask cluster when
    ``options.scheduler`` is set, with a progress bar. Either way this process receives every
    result and writes every output."""
    console = console or Console(stderr=True)
    results: dict[int, NotebookResult] = {}
    pending = {i: job for i, job in enumerate(jobs) if job.path is not None or job.rejected}
    for i, job in enumerate(jobs):
        if i not in pending:
            results[i] = missing_result(job)

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("{task.fields[last]}"))
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(label, total=len(jobs), completed=len(results), last="")

        def finish(index: int, result: NotebookResult) -> None:
            """Called once per job, in this process: the single writer of every output."""
            results[index] = result
            progress.update(task, advance=1, last=_progress_label(result))

        if options.scheduler:
            from autograde.cluster import run_on_dask

            run_on_dask(pending, options.scheduler, options.workers, finish, _with_feedback, _crashed)
        else:
            _run_local(pending, options.workers, finish)
    return [results[i] for i in range(len(jobs))]


def _run_local(pending: dict[int, GradeJob], workers: int, finish) -> None:
    """The jobs over local worker processes. A worker process that dies (killed by the OS,
    say) costs only the job it was running: that job is reported as crashed, the pool is
    rebuilt, and the rest go on."""
    pending = dict(pending)
    while pending:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max(1, min(workers, len(pending))), mp_context=context,
                                 initializer=_worker_init) as pool:
            futures: dict[Future, int] = {pool.submit(grade_notebook, job): i for i, job in pending.items()}
            broken = False
            for future in as_completed(futures):
                index = futures[future]
                job = pending[index]
                try:
                    result = _with_feedback(future.result(), job)
                except BrokenProcessPool:
                    broken = True
                    continue
                except Exception as exc:  # a bug of ours must not stop the batch
                    result = _crashed(job, f"grader error: {type(exc).__name__}: {exc}")
                del pending[index]
                finish(index, result)
            if broken:
                # Which job killed the pool is unknowable; retry the unfinished ones one at a
                # time so only the culprit is marked crashed.
                for index in list(pending):
                    finish(index, _run_isolated(pending.pop(index)))


def _with_feedback(result: NotebookResult, job: GradeJob) -> NotebookResult:
    """Render the feedback page here, in the parent, while the workers run the next notebooks."""
    if result.executed is not None:
        started = time.perf_counter()
        executed = nbformat.from_dict(result.executed)
        result.feedback_path = str(write_feedback(executed, job.spec, result, job.feedback_dir))
        result.executed = None
        result.phases["reports"] = round(time.perf_counter() - started, 3)
    return result


def _run_isolated(job: GradeJob) -> NotebookResult:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context, initializer=_worker_init) as pool:
        try:
            return _with_feedback(pool.submit(grade_notebook, job).result(), job)
        except BrokenProcessPool:
            return _crashed(job, "the grading process was killed (memory or process limit?)")
        except Exception as exc:
            return _crashed(job, f"grader error: {type(exc).__name__}: {exc}")


def _crashed(job: GradeJob, message: str) -> NotebookResult:
    result = missing_result(job)
    result.status, result.message = "crashed", message
    for checkpoint in result.checkpoints:
        checkpoint.message = "not graded"
    return result


def make_jobs(students: dict[str, dict[str, Path]], assignment: Assignment, feedback_dir: Path,
              options: GradeOptions, notes: dict | None = None, rejected: dict | None = None) -> list[GradeJob]:
    notes, rejected = notes or {}, rejected or {}
    kernel_env = dict(options.kernel_env)
    for spec in assignment.notebooks.values():
        try:
            checkpoint_runner(spec)  # a hidden cell naming a missing declaration fails here, before any student runs
        except (LookupError, ImportError) as exc:
            raise AssignmentError(f"{spec.name}: a hidden checkpoint cannot be judged: {exc}") from exc
    return [
        GradeJob(
            student=student,
            spec=spec,
            path=notebooks.get(name),
            feedback_dir=feedback_dir,
            cell_timeout=options.cell_timeout,
            notebook_timeout=options.notebook_timeout,
            note=notes.get((student, name), ""),
            rejected=rejected.get((student, name), ""),
            limits=options.limits,
            kernel_env=kernel_env,
            model_cache=options.model_cache,
        )
        for student, notebooks in sorted(students.items())
        for name, spec in assignment.notebooks.items()
    ]


def grade(submissions: str | Path, out: str | Path, options: GradeOptions | None = None,
          sources: list[Path] | None = None, force: bool = False,
          console: Console | None = None) -> list[NotebookResult]:
    options = options or GradeOptions()
    console = console or Console()
    out = Path(out)
    if (out / "grades.csv").exists() and not force:
        raise ResultsExistError(f"{out} already holds grades; pass --force to replace them")
    sources = list(sources) if sources is not None else source_notebooks()
    # Read the submissions first: a bad argument fails before anything is written.
    collected = collect(submissions, [Path(p).stem for p in sources])
    try:
        if out.exists() and force:
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        assignment = build_assignment(out / "nbgrader", sources)
        # Student kernels must not see the gradebook, other students' feedback or the sources.
        source_dirs = {Path(p).resolve().parent for p in sources}
        limits = replace(options.limits, hide=[*options.limits.hide, *source_dirs, out.resolve(),
                                               Path(submissions).resolve()])
        options = with_model_cache(replace(options, limits=limits), console)
        if not collected.students:
            console.print(f"[yellow]no student folders found in {escape(str(submissions))}[/yellow]")
        for warning in collected.warnings:
            console.print(f"[yellow]warning:[/yellow] {escape(warning)}")
        jobs = make_jobs(collected.students, assignment, out / "feedback", options, collected.notes,
                         collected.rejected)
        results = run_jobs(jobs, options, console=console)
    finally:
        collected.close()
    write_gradebook(assignment, results)
    write_reports(out, results)
    write_summary(out, results)
    print_summary(results, console, out)
    return results


def write_gradebook(assignment: Assignment, results: list[NotebookResult]) -> None:
    with warnings.catch_warnings(), Gradebook(assignment.db_url, COURSE_ID) as gradebook:
        # nbgrader's own session handling trips SQLAlchemy's autoflush warning; harmless.
        warnings.simplefilter("ignore")
        for student in sorted({r.student for r in results}):
            gradebook.update_or_create_student(student)
            gradebook.update_or_create_submission(ASSIGNMENT_ID, student)
        for result in results:
            if result.status == "missing":
                continue
            for checkpoint in result.checkpoints:
                grade = gradebook.find_grade(checkpoint.grade_id, result.notebook, ASSIGNMENT_ID, result.student)
                grade.auto_score = checkpoint.score
        gradebook.db.commit()


def _progress_label(result: NotebookResult) -> str:
    # Student folder names are data, not rich markup: "[/bold]" would raise MarkupError mid-batch.
    return escape(f"{plain_student_text(result.student, 60)}/{result.notebook}: {result.status}")


def _csv_row(row: dict) -> dict:
    """Every cell through csv_cell: no student string can start a spreadsheet formula."""
    return {key: csv_cell(value) for key, value in row.items()}


def write_reports(out: Path, results: list[NotebookResult]) -> None:
    with open(out / "grades.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, GRADES_COLUMNS)
        writer.writeheader()
        for r in results:
            writer.writerow(_csv_row({"student": r.student, "notebook": r.notebook, "score": f"{r.score:g}",
                             "max_score": f"{r.max_score:g}", "status": r.status,
                             "flags": ";".join(r.flags), "message": r.message,
                             "checks_in_kernel": sum(c.judged == "in-kernel" for c in r.checkpoints)}))
    with open(out / "checkpoints.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, CHECKPOINT_COLUMNS)
        writer.writeheader()
        for r in results:
            for c in r.checkpoints:
                writer.writerow(_csv_row({"student": r.student, "notebook": r.notebook, "checkpoint": c.grade_id,
                                 "score": f"{c.score:g}", "max_score": f"{c.max_score:g}",
                                 "passed": str(c.passed).lower(), "judged": c.judged,
                                 "behaviour_score": f"{c.behaviour_score:g}", "behaviour_max": f"{c.behaviour_max:g}",
                                 "prediction_score": f"{c.prediction_score:g}",
                                 "prediction_max": f"{c.prediction_max:g}", "message": c.message}))
    (out / "results.json").write_text(json.dumps([r.to_dict() for r in results], indent=1), encoding="utf-8")


STATUS_STYLE = {"graded": "green", "missing": "dim", "unreadable": "red", "timeout": "yellow", "crashed": "red"}


def print_summary(results: list[NotebookResult], console: Console, out: Path | None = None) -> None:
    table = Table(title="Grades", show_lines=False)
    for column in ("student", "notebook", "score", "status", "flags", "message"):
        table.add_column(column, overflow="fold")
    for r in results:
        style = STATUS_STYLE.get(r.status, "")
        table.add_row(escape(plain_student_text(r.student, 80)), escape(r.notebook), f"{r.score:g} / {r.max_score:g}",
                      f"[{style}]{escape(r.status)}[/{style}]", escape(plain_student_text(", ".join(r.flags), 200)),
                      escape(plain_student_text(r.message, 100)))
    console.print(table)
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    console.print(f"{len(results)} notebook(s): {summary}")
    unsandboxed = sum("unsandboxed" in r.flags for r in results)
    if unsandboxed:
        console.print(f"[bold red]WARNING: {unsandboxed} notebook(s) ran WITHOUT the sandbox (student code had "
                      "the grader's privileges); grade as root on Linux for isolation. See README, Grading.[/bold red]")
    if out is not None:
        console.print(f"summary: {out / 'summary.html'}  grades: {out / 'grades.csv'}  checkpoints: {out / 'checkpoints.csv'}  "
                      f"feedback: {out / 'feedback'}  gradebook: {out / 'nbgrader' / 'gradebook.db'}")
