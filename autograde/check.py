"""`autograde check`: the sources must earn full marks, the release must run to its last
cell and earn exactly zero, and the release must not leak. Returns the deviations."""

from __future__ import annotations

import tempfile
from pathlib import Path

from rich.console import Console

from autograde.assignment import build_assignment
from autograde.grade import GradeOptions, make_jobs, print_summary, run_jobs, with_model_cache
from autograde.leakcheck import find_leaks
from autograde.worker import NotebookResult

SOURCE, RELEASE = "source", "release"


def deviations(results: list[NotebookResult]) -> list[str]:
    problems = []
    for r in results:
        where = f"{r.student} {r.notebook}"
        if r.status != "graded":
            problems.append(f"{where}: status {r.status} ({r.message})")
        if r.flags:
            problems.append(f"{where}: flagged {', '.join(r.flags)}")
        if r.student == SOURCE:
            problems += [
                f"{where}: {c.grade_id} scored {c.score:g}/{c.max_score:g}: {c.message}"
                for c in r.checkpoints if not c.passed
            ]
        else:
            if not r.reached_last_cell:
                problems.append(f"{where}: did not reach its last cell")
            problems += [
                f"{where}: {c.grade_id} scored {c.score:g} on the blank release: {c.message}"
                for c in r.checkpoints if c.score > 0
            ]
    return problems


def check(options: GradeOptions | None = None, sources: list[Path] | None = None,
          console: Console | None = None) -> list[str]:
    console = console or Console()
    options = with_model_cache(options or GradeOptions(), console)
    with tempfile.TemporaryDirectory(prefix="autograde-check-") as tmp:
        assignment = build_assignment(Path(tmp) / "course", sources)
        problems = [
            leak for spec in assignment.notebooks.values()
            for leak in find_leaks(spec.source_path, spec.release_path)
        ]
        students = {
            SOURCE: {name: spec.source_path for name, spec in assignment.notebooks.items()},
            RELEASE: {name: spec.release_path for name, spec in assignment.notebooks.items()},
        }
        jobs = make_jobs(students, assignment, Path(tmp) / "feedback", options)
        results = run_jobs(jobs, options, console=console, label="checking")
        print_summary(results, console)
        for r in results:
            console.print(f"{r.student:8} {r.notebook:22} {r.duration_s:6.1f} s")
    return problems + deviations(results)
