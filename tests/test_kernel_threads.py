"""Each graded kernel's thread pools get its share of the machine's cores, unless the
instructor set them (autograde.worker.thread_env / job_environment)."""

from __future__ import annotations

from pathlib import Path

import pytest

from autograde.worker import THREAD_VARIABLES, GradeJob, job_environment, thread_env


@pytest.mark.parametrize(("runs", "cpus", "threads"), [(2, 2, "1"), (1, 2, "2"), (2, 8, "4"), (3, 2, "1"), (0, 4, "4")])
def test_thread_share_is_cores_over_concurrent_runs(runs, cpus, threads):
    assert thread_env(runs, cpus) == dict.fromkeys(THREAD_VARIABLES, threads)


def _job(**fields) -> GradeJob:
    return GradeJob(student="s", spec=None, path=None, feedback_dir=Path("/nonexistent"), cell_timeout=1,
                    notebook_timeout=1, **fields)


def test_job_environment_sets_thread_pools_and_instructor_settings_win(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    for name in THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "4")  # exported in the instructor's shell: the kernel inherits it
    _limits, env = job_environment(_job(concurrent_runs=2, kernel_env={"MKL_NUM_THREADS": "3", "X": "y"}))
    assert env["OMP_NUM_THREADS"] == "2"
    assert "OPENBLAS_NUM_THREADS" not in env
    assert env["MKL_NUM_THREADS"] == "3" and env["X"] == "y"


@pytest.mark.parametrize(("scheduler", "runs"), [(None, 2), ("local", 2), ("tcp://10.0.0.5:8786", 1)])
def test_make_jobs_tells_each_job_how_many_runs_share_its_machine(tmp_path, toy_sources, scheduler, runs):
    """Local workers (a pool or a local Dask cluster) share this machine's cores; a remote
    cluster's machine is unknown here, so its kernels keep their libraries' defaults."""
    from autograde.assignment import build_assignment
    from autograde.grade import GradeOptions, make_jobs

    assignment = build_assignment(tmp_path / "nbgrader", toy_sources)
    jobs = make_jobs({"ann": {}}, assignment, tmp_path / "feedback", GradeOptions(workers=2, scheduler=scheduler))
    assert jobs and {job.concurrent_runs for job in jobs} == {runs}
