"""`autograde grade`: a folder (or .zip) of submissions -> grades.csv, checkpoints.csv,
feedback HTML and the nbgrader gradebook, in parallel over worker processes.

Workers only execute and score; this process is the single writer of every output, so the
SQLite gradebook never sees two writers ("database is locked")."""

from __future__ import annotations

import contextlib
import csv
import json
import multiprocessing
import os
import shutil
import time
import warnings
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path

import nbformat
from nbgrader.api import Gradebook
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from autograde import provenance
from autograde.assignment import (
    Assignment,
    AssignmentError,
    build_assignment,
    source_notebooks,
)
from autograde.feedback import write_feedback
from autograde.runner import DEFAULT_CELL_TIMEOUT, DEFAULT_NOTEBOOK_TIMEOUT, Limits, become_subreaper
from autograde.safe_output import csv_cell, plain_student_text
from autograde.schedule import LongestFirst, load_timings, save_timings
from autograde.submissions import collect
from autograde.summary import write_summary
from autograde.templates import TemplateSpec, notebook_imports
from autograde.worker import (
    LATE_FLAG,
    GradeJob,
    NotebookResult,
    checkpoint_runner,
    grade_notebook,
    missing_result,
    read_regular_file,
)

# `score` is before any late penalty (as nbgrader's notebook score); `late_penalty` is what
# nbgrader's late-submission plugin takes off it. The flag `needs-manual-grading` says a person
# still has to grade a cell (a task, a written answer): the score is not final.
GRADES_COLUMNS = ["student", "notebook", "score", "max_score", "status", "flags", "message", "checks_in_kernel",
                  "late_penalty"]
# `judged`: "outside" (collected as data, judged by the grader), "in-kernel" (a plain nbgrader
# test cell, whose verdict the student's interpreter computed: see README, Grading you can trust)
# or "manual" (a task or written answer a person grades in nbgrader's formgrader).
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
    heldout_salt: str = ""  # set by grade(): the results folder's secret for reproducible held-out inputs
    kernel_template: bool = True  # fork kernels from a per-worker template (autograde/templates.py)


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
             label: str = "grading", timings: Path | None = None) -> list[NotebookResult]:
    """Grade every job over ``options.workers`` local processes, or on a Dask cluster when
    ``options.scheduler`` is set, with a progress bar, longest expected jobs first (learnt
    from the batch before, kept in ``timings``, and from this one). Either way this process
    receives every result and writes every output."""
    console = console or Console(stderr=True)
    planner = LongestFirst(load_timings(timings) if timings is not None else None)
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
            planner.record(result.notebook, result.duration_s)
            progress.update(task, advance=1, last=_progress_label(result))

        if options.scheduler:
            from autograde.cluster import run_on_dask

            run_on_dask(pending, options.scheduler, options.workers, finish, _with_feedback, _crashed,
                        order=planner.order(pending))
        else:
            _run_local(pending, options.workers, finish, planner)
    if timings is not None:
        save_timings(timings, planner.medians())
    return [results[i] for i in range(len(jobs))]


def _run_local(pending: dict[int, GradeJob], workers: int, finish, planner: LongestFirst,
               work=grade_notebook) -> None:
    """The jobs over local worker processes, started one by one as workers free up, the
    longest expected first (``planner``). A worker process that dies (killed by the OS, say)
    costs only the jobs it had in flight: those are retried one at a time so only the culprit
    is reported as crashed, the pool is rebuilt, and the rest go on."""
    pending = dict(pending)
    while pending:
        size = max(1, min(workers, len(pending)))
        waiting = dict(pending)
        running: dict[Future, int] = {}
        suspects: list[int] = []
        broken = False
        with ProcessPoolExecutor(size, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_worker_init) as pool:
            while (waiting or running) and not broken:
                while waiting and len(running) <= size:  # one queued beyond the workers: none waits on us
                    index = planner.pick(waiting)
                    try:
                        running[pool.submit(work, waiting[index])] = index
                    except BrokenProcessPool:
                        broken = True
                        break
                    del waiting[index]
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    index = running.pop(future)
                    try:
                        result = _with_feedback(future.result(), pending[index])
                    except BrokenProcessPool:
                        suspects.append(index)
                        broken = True
                        continue
                    except Exception as exc:  # a bug of ours must not stop the batch
                        result = _crashed(pending[index], f"grader error: {type(exc).__name__}: {exc}")
                    del pending[index]
                    finish(index, result)
            # A broken pool fails every job it had in flight; which one killed it is unknowable.
            suspects.extend(running.values())
        for index in sorted(suspects):
            finish(index, _run_isolated(pending.pop(index), work))


def _with_feedback(result: NotebookResult, job: GradeJob) -> NotebookResult:
    """Render the feedback page here, in the parent, while the workers run the next notebooks."""
    if result.executed is not None:
        started = time.perf_counter()
        executed = nbformat.from_dict(result.executed)
        result.feedback_path = str(write_feedback(executed, job.spec, result, job.feedback_dir))
        result.executed = None
        result.phases["reports"] = round(time.perf_counter() - started, 3)
    return result


def _run_isolated(job: GradeJob, work=grade_notebook) -> NotebookResult:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context, initializer=_worker_init) as pool:
        try:
            return _with_feedback(pool.submit(work, job).result(), job)
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
              options: GradeOptions, notes: dict | None = None, rejected: dict | None = None,
              with_student_files: bool = False) -> list[GradeJob]:
    """One job per (student, notebook). Every run gets the assignment's other files; with
    ``with_student_files``, also the student's own files beside their notebook (nbgrader
    copies both; the intake's rules apply to the student's)."""
    from autograde.course import student_files

    notes, rejected = notes or {}, rejected or {}
    kernel_env = dict(options.kernel_env)
    remote = bool(options.scheduler)  # Dask workers get the files' bytes, like the submission itself
    support = [(rel, path.read_bytes() if remote else path) for rel, path in assignment.support_files]
    knob_keys: set[str] = set()
    for spec in assignment.notebooks.values():
        try:
            # a hidden cell naming a missing declaration fails here, before any student runs
            knob_keys |= set(checkpoint_runner(spec).kernel_env)
        except (LookupError, ImportError) as exc:
            raise AssignmentError(f"{spec.name}: a hidden checkpoint cannot be judged: {exc}") from exc
    # One template per worker for the whole assignment: it preloads what any of its notebooks imports.
    template = TemplateSpec(notebook_imports([s.source_path for s in assignment.notebooks.values()]),
                            tuple(sorted(knob_keys))) if options.kernel_template else None
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
            support_files=support,
            heldout_salt=options.heldout_salt,
            concurrent_runs=options.workers if options.scheduler in (None, "local") else 1,
            template=template,
            student_files=_carried(student_files(notebooks[name].parent), remote)
            if with_student_files and notebooks.get(name) is not None else [],
        )
        for student, notebooks in sorted(students.items())
        for name, spec in assignment.notebooks.items()
    ]


def _carried(files: list[tuple[str, Path]], remote: bool) -> list:
    """A student's files as paths (local workers read them by the intake's rules), or read
    here by the same rules for a remote worker that has no access to them."""
    if not remote:
        return files
    carried = []
    for relative, path in files:
        with contextlib.suppress(OSError, ValueError):
            carried.append((relative, read_regular_file(path)))
    return carried


def grade(submissions: str | Path | None, out: str | Path, options: GradeOptions | None = None,
          sources: list[Path] | None = None, force: bool = False,
          console: Console | None = None, course_dir: str | Path | None = None,
          assignment_id: str | None = None, regrade: str | Path | None = None) -> list[NotebookResult]:
    """Grade a folder or .zip of ``<student>/<notebook>.ipynb`` against ``sources``; or, with
    ``course_dir`` and ``assignment_id``, an nbgrader course's ``submitted/*/ID`` against its
    ``source/ID``, as ``nbgrader autograde ID`` would, writing into the course's gradebook.
    With ``regrade`` (an earlier results folder), the same held-out inputs are drawn for an
    unchanged submission, and RESULTS/regrade.csv says which rows changed score and why."""
    from autograde.course import load_course, sync_assignment

    options = options or GradeOptions()
    console = console or Console()
    out = Path(out)
    if (out / "grades.csv").exists() and not force:
        raise ResultsExistError(f"{out} already holds grades; pass --force to replace them")
    if (course_dir is None) != (assignment_id is None):
        raise ValueError("--course-dir and --assignment go together")
    course = load_course(course_dir, assignment_id) if course_dir is not None else None
    if course is not None:
        sources = course.sources
        submissions = course.submitted_root
    elif submissions is None:
        raise ValueError("give a folder or .zip of submissions, or --course-dir and --assignment")
    previous = provenance.load_rows(regrade) if regrade is not None else None
    sources = list(sources) if sources is not None else source_notebooks()
    names = [Path(p).stem for p in sources]
    # Read the submissions first: a bad argument fails before anything is written.
    folders: dict[str, Path] = {}
    if course is not None:
        collected, folders = course.collect(names)
    else:
        collected = collect(submissions, names)
    try:
        if out.exists() and force:
            _clear_results(out)
        out.mkdir(parents=True, exist_ok=True)
        if course is not None:
            assignment = build_assignment(out / "nbgrader", sources, assignment_id=course.assignment_id,
                                          course_id=course.course_id, autotests=course.autotests,
                                          files_from=course.source_dir, reuse=True)
        else:
            assignment = build_assignment(out / "nbgrader", sources, reuse=True)
        if assignment.reused:
            console.print("[dim]sources unchanged: reusing the generated assignment[/dim]")
        # After the build: generating the assignment starts its folder afresh, salt included.
        options = replace(options, heldout_salt=_heldout_salt(out, regrade, console))
        # Student kernels must not see the gradebook, other students' feedback or the sources.
        hidden = {Path(p).resolve().parent for p in sources} | {out.resolve(), Path(submissions).resolve()}
        if course is not None:
            hidden.add(course.root)
        limits = replace(options.limits, hide=[*options.limits.hide, *sorted(hidden)])
        options = with_model_cache(replace(options, limits=limits), console)
        if not collected.students:
            console.print(f"[yellow]no student folders found in {escape(str(submissions))}[/yellow]")
        for warning in collected.warnings:
            console.print(f"[yellow]warning:[/yellow] {escape(warning)}")
        jobs = make_jobs(collected.students, assignment, out / "feedback", options, collected.notes,
                         collected.rejected, with_student_files=True)
        results = run_jobs(jobs, options, console=console, timings=out / "nbgrader")
    finally:
        collected.close()
    if course is not None:
        timestamps = {student: course.timestamp(folder) for student, folder in folders.items()}
        for warning in course.warnings:
            console.print(f"[yellow]warning:[/yellow] {escape(warning)}")
        sync_assignment(assignment, course.db_url)
        write_gradebook(assignment, results, db_url=course.db_url, timestamps=timestamps,
                        penalty=course.late_penalties())
    else:
        write_gradebook(assignment, results)
    write_reports(out, results)
    write_summary(out, results)
    if previous is not None:
        changes = provenance.compare(previous, [r.to_dict() for r in results])
        provenance.write_regrade(out, changes)
        print_regrade(changes, console)
    print_summary(results, console, out, gradebook=course.db_url if course is not None else None)
    return results


def print_regrade(changes, console: Console) -> None:
    moved = [c for c in changes if c.change != "same"]
    console.print(f"regrade: {len(changes) - len(moved)} row(s) unchanged, {len(moved)} changed")
    for c in moved:
        console.print(f"  {escape(c.student)} / {c.notebook}: {c.change} ({escape(c.reason)})")


def _heldout_salt(out: Path, regrade: Path | None, console: Console) -> str:
    """The salt held-out inputs are drawn with: a regrade reuses its previous results' salt."""
    if regrade is not None:
        previous = Path(regrade) / "nbgrader" / provenance.SALT_FILE
        if previous.is_file():
            salt = previous.read_text().strip()
            provenance.keep_salt(salt, out / "nbgrader")
            return salt
        console.print(f"[yellow]warning:[/yellow] {escape(str(regrade))} keeps no held-out salt: held-out "
                      "inputs are drawn afresh, so scores that depend on them may differ")
    return provenance.heldout_salt(out / "nbgrader")


def _clear_results(out: Path) -> None:
    """Remove the results of an earlier run; keep the generated assignment (``nbgrader/``),
    which ``build_assignment`` reuses while the sources are unchanged."""
    for entry in out.iterdir():
        if entry.name == "nbgrader" and entry.is_dir() and not entry.is_symlink():
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def write_gradebook(assignment: Assignment, results: list[NotebookResult], db_url: str | None = None,
                    timestamps: dict | None = None, penalty=None) -> None:
    """Write every score into the gradebook (ours, or the course's ``db_url``) as nbgrader's
    autograde does: auto-graded cells get ``auto_score`` and ``needs_manual_grade`` False,
    cells a person grades keep ``auto_score`` empty and ``needs_manual_grade`` True (so does a
    cell a person already graded); a notebook not handed in scores 0. With ``timestamps``
    (student -> submission time) the assignment's due date sets ``seconds_late``, and
    ``penalty(student, score, seconds_late)`` the notebook's late-submission penalty."""
    aid, timestamps = assignment.assignment_id, timestamps or {}
    with warnings.catch_warnings(), Gradebook(db_url or assignment.db_url, assignment.course_id) as gradebook:
        # nbgrader's own session handling trips SQLAlchemy's autoflush warning; harmless.
        warnings.simplefilter("ignore")
        submissions = {}
        for student in sorted({r.student for r in results}):
            gradebook.update_or_create_student(student)
            stamp = timestamps.get(student)
            submissions[student] = (gradebook.update_or_create_submission(aid, student, timestamp=stamp)
                                    if stamp is not None else gradebook.update_or_create_submission(aid, student))
        for result in results:
            for checkpoint in result.checkpoints:
                grade = gradebook.find_grade(checkpoint.grade_id, result.notebook, aid, result.student)
                manual = checkpoint.needs_manual_grade and result.status != "missing"
                grade.auto_score = None if manual else checkpoint.score
                grade.needs_manual_grade = manual or grade.manual_score is not None
        gradebook.db.commit()
        for result in results:
            submission = submissions[result.student]
            notebook = gradebook.find_submission_notebook(result.notebook, aid, result.student)
            notebook.late_submission_penalty = None
            result.seconds_late = float(submission.total_seconds_late or 0.0)
            if result.seconds_late > 0 and penalty is not None and result.status != "missing":
                value = penalty(result.student, float(notebook.score), result.seconds_late)
                notebook.late_submission_penalty = value
                result.late_penalty = float(value or 0.0)
            if result.seconds_late > 0 and result.status != "missing" and LATE_FLAG not in result.flags:
                result.flags.append(LATE_FLAG)
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
                             "checks_in_kernel": sum(c.judged == "in-kernel" for c in r.checkpoints),
                             "late_penalty": f"{r.late_penalty:g}"}))
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


def print_summary(results: list[NotebookResult], console: Console, out: Path | None = None,
                  gradebook: str | None = None) -> None:
    table = Table(title="Grades", show_lines=False)
    for column in ("student", "notebook", "score", "status", "flags", "message"):
        table.add_column(column, overflow="fold")
    for r in results:
        style = STATUS_STYLE.get(r.status, "")
        score = f"{r.score:g} / {r.max_score:g}" + (f" (-{r.late_penalty:g} late)" if r.late_penalty else "")
        table.add_row(escape(plain_student_text(r.student, 80)), escape(r.notebook), score,
                      f"[{style}]{escape(r.status)}[/{style}]", escape(plain_student_text(", ".join(r.flags), 200)),
                      escape(plain_student_text(r.message, 100)))
    console.print(table)
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    console.print(f"{len(results)} notebook(s): {summary}")
    manual = sum(r.needs_manual_grade for r in results)
    if manual:
        console.print(f"[bold yellow]{manual} notebook(s) need manual grading[/bold yellow] (flag needs-manual-grading): "
                      "their score is not final until a person grades the flagged cells (nbgrader formgrader)")
    unsandboxed = sum("unsandboxed" in r.flags for r in results)
    if unsandboxed:
        console.print(f"[bold red]WARNING: {unsandboxed} notebook(s) ran WITHOUT the sandbox (student code had "
                      "the grader's privileges); grade as root on Linux for isolation. See README, Grading.[/bold red]")
    if out is not None:
        console.print(f"summary: {out / 'summary.html'}  grades: {out / 'grades.csv'}  checkpoints: {out / 'checkpoints.csv'}  "
                      f"feedback: {out / 'feedback'}  gradebook: {gradebook or out / 'nbgrader' / 'gradebook.db'}")
