"""A stand-in for ``grade_notebook`` in the scheduling tests: it runs in the grader's real
worker processes and does what the job's note says (sleep, or kill its worker process)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from autograde.worker import GradeJob, NotebookResult


def fake_grade(job: GradeJob) -> NotebookResult:
    action, seconds, log = job.note.split("|")
    with open(log, "a") as fh:
        fh.write(f"{job.student} {job.spec.name} {os.getpid()}\n")
    if action == "die":
        os._exit(1)  # the worker process dies: the pool breaks
    time.sleep(float(seconds))
    return NotebookResult(student=job.student, notebook=job.spec.name, status="graded", score=1.0,
                          max_score=1.0, duration_s=float(seconds))


def fake_job(student: str, notebook: str, log: Path, seconds: float = 0.05, action: str = "run") -> GradeJob:
    from autograde.assignment import NotebookSpec

    spec = NotebookSpec(name=notebook, source_path=Path(f"{notebook}.ipynb"), release_path=Path(f"{notebook}.ipynb"))
    return GradeJob(student=student, spec=spec, path=Path("unused.ipynb"), feedback_dir=log.parent,
                    cell_timeout=10, notebook_timeout=10, note=f"{action}|{seconds}|{log}")
