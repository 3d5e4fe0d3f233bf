"""Grading beyond one machine: the same worker function on a Dask distributed cluster.

    autograde grade SUBMISSIONS --out RESULTS --scheduler tcp://HOST:8786   # an existing cluster
    autograde grade SUBMISSIONS --out RESULTS --scheduler local             # a cluster on this machine

Only ``worker.grade_notebook`` runs on the cluster; this process stays the only writer of the
gradebook and the reports. Each job carries the submission itself (read and checked here by
the safe intake), so a worker on another machine needs only the same environment (this
package, its requirements and bubblewrap) and no shared file system. A worker that dies
mid-batch loses only its in-flight jobs: the scheduler runs them again on another worker,
and each job's result is taken exactly once, so nothing is lost and no row is duplicated.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace

from distributed import Client, LocalCluster, as_completed
from distributed.diagnostics.plugin import WorkerPlugin

from autograde.submissions import UnreadableSubmission, read_notebook_safely
from autograde.worker import GradeJob, NotebookResult, grade_notebook

# A job is retried this many times when the worker running it dies (not when it fails:
# grade_notebook never raises for anything a submission does).
RETRIES = 2


class SubreaperPlugin(WorkerPlugin):
    """Every worker process (started now or later, replacements included) adopts orphans, as
    the local pool's workers do, so a submission's stray processes can be found and killed."""

    name = "autograde-subreaper"

    def setup(self, worker) -> None:
        from autograde.runner import become_subreaper

        become_subreaper()


def _portable(job: GradeJob) -> GradeJob:
    """The job with its submission inside: remote workers cannot read the parent's files."""
    if job.path is None or job.rejected or job.notebook is not None:
        return job
    try:
        notebook = read_notebook_safely(job.path)
    except UnreadableSubmission as exc:
        return replace(job, path=None, rejected=exc.reason)
    return replace(job, notebook=dict(notebook))


def connect(address: str, workers: int):
    """A client of the cluster at ``address``, or of a new local one for ``"local"``."""
    if address == "local":
        cluster = LocalCluster(n_workers=max(1, workers), threads_per_worker=1, processes=True,
                               dashboard_address=None, host="127.0.0.1")
        return Client(cluster), cluster
    return Client(address, timeout="30s"), None


def run_on_dask(pending: dict[int, GradeJob], address: str, workers: int,
                finish: Callable[[int, NotebookResult], None],
                with_feedback: Callable[[NotebookResult, GradeJob], NotebookResult],
                crashed: Callable[[GradeJob, str], NotebookResult], order: list[int] | None = None) -> None:
    """Grade ``pending`` on the cluster; ``finish(index, result)`` is called here exactly
    once per job, in completion order. ``order`` is the start order wanted (longest first):
    the scheduler gets it as task priorities."""
    rank = {index: position for position, index in enumerate(order or sorted(pending))}
    client, cluster = connect(address, workers)
    try:
        client.register_plugin(SubreaperPlugin(), name=SubreaperPlugin.name)
        batch = uuid.uuid4().hex[:8]
        jobs = {index: _portable(job) for index, job in pending.items()}
        futures = {
            client.submit(grade_notebook, job, key=f"autograde-{batch}-{index}", pure=False, retries=RETRIES,
                          priority=len(rank) - rank.get(index, len(rank))): index
            for index, job in jobs.items()
        }
        done: set[int] = set()
        for future in as_completed(futures):
            index = futures[future]
            if index in done:  # never two rows for one job
                continue
            job = jobs[index]
            try:
                result = with_feedback(future.result(), job)
            except Exception as exc:  # the job's workers kept dying (KilledWorker), or a bug of ours
                result = crashed(job, f"grader error on the cluster: {type(exc).__name__}: {exc}"[:300])
            done.add(index)
            finish(index, result)
            future.release()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
