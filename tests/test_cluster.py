"""`autograde grade --scheduler`: the same batch on a Dask cluster of separate processes on
127.0.0.1 (a scheduler and two workers), one worker killed while it runs a job. Nothing is
lost, no row is duplicated, and the CSVs equal a local `--workers 2` run's."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest
from conftest import stray_processes
from toy import CORRECT, WRONG, submission_from

from autograde.grade import GradeOptions, grade
from autograde.limits import Limits

REPO_ROOT = Path(__file__).resolve().parent.parent
DASK = str(Path(sys.executable).parent / "dask")
STUDENTS = {f"s{i}": CORRECT if i % 3 else WRONG for i in range(6)}
SLOW_CELL = "import time\ntime.sleep(4)  # long enough for a worker to die mid-job"


def _spawn(args: list[str], log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.Popen([DASK, *args], stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.2)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dask")
    scheduler_file = folder / "scheduler.json"
    procs = [_spawn(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                     "--scheduler-file", str(scheduler_file)], folder / "scheduler.log")]
    _wait_for(scheduler_file.exists, 60, "the scheduler did not start")
    workers = {}
    for name in ("worker-a", "worker-b"):
        workers[name] = _spawn(["worker", "--scheduler-file", str(scheduler_file), "--name", name, "--nthreads", "1",
                                "--no-nanny", "--no-dashboard", "--host", "127.0.0.1"], folder / f"{name}.log")
    procs += workers.values()
    from distributed import Client

    client = Client(scheduler_file=str(scheduler_file), timeout="30s")
    _wait_for(lambda: len(client.scheduler_info()["workers"]) == 2, 60, "the workers did not join")
    yield client, workers
    client.close()
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)


def _kill_a_busy_worker(client, workers: dict, killed: list) -> None:
    """Wait until a worker is running a job for a second, then kill it outright."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        names = {addr: info["name"] for addr, info in client.scheduler_info()["workers"].items()}
        busy = [names[addr] for addr, keys in client.processing().items() if keys and addr in names]
        if busy:
            time.sleep(1.0)
            os.killpg(workers[busy[0]].pid, signal.SIGKILL)
            killed.append(busy[0])
            return
        time.sleep(0.2)


def _rows(out: Path, name: str) -> list[dict]:
    return list(csv.DictReader(open(out / name, encoding="utf-8")))


def test_a_killed_worker_costs_nothing_and_the_csv_equals_a_local_run(cluster, tmp_path, toy_release, toy_sources):
    client, workers = cluster
    import psutil

    before = {p.pid for p in psutil.process_iter()}
    submissions = tmp_path / "class"
    for student, exercise in STUDENTS.items():
        (submissions / student).mkdir(parents=True)
        nbformat.write(submission_from(toy_release, exercise, prepend_cells=[SLOW_CELL]),
                       submissions / student / "toy.ipynb")
    options = dict(workers=2, cell_timeout=30, notebook_timeout=90, limits=Limits(sandbox=True))
    killed: list[str] = []
    killer = threading.Thread(target=_kill_a_busy_worker, args=(client, workers, killed), daemon=True)
    killer.start()
    on_dask = grade(submissions, tmp_path / "dask", GradeOptions(**options, scheduler=client.scheduler.address),
                    sources=toy_sources)
    killer.join(5)
    assert killed, "no worker was killed mid-batch: the test did not test what it says"
    local = grade(submissions, tmp_path / "local", GradeOptions(**options), sources=toy_sources)

    assert sorted(r.student for r in on_dask) == sorted(STUDENTS)  # every job once
    assert {r.student: (r.status, r.score) for r in on_dask} == {r.student: (r.status, r.score) for r in local}
    for name in ("grades.csv", "checkpoints.csv"):
        assert _rows(tmp_path / "dask", name) == _rows(tmp_path / "local", name), name
    assert all(r.status == "graded" for r in on_dask)
    # The killed worker's kernel was orphaned: its sandbox noticed and went down with it.
    _wait_for(lambda: not stray_processes(before), 15, f"orphaned sandboxes: {stray_processes(before)}")
