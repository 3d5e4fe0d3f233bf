"""Scheduling a batch: longest expected jobs first (learnt from the last batch and from this
one), and a worker that dies costs only the jobs it had in flight, not the batch's parallelism."""

from __future__ import annotations

import math

from fake_grading import fake_grade, fake_job

from autograde.grade import _run_local
from autograde.schedule import LongestFirst, load_timings, save_timings


def _jobs(tmp_path, notebooks, students=3, **kwargs):
    log = tmp_path / "log.txt"
    jobs = [fake_job(f"s{n}", name, log, **kwargs) for n in range(students) for name in notebooks]
    return dict(enumerate(jobs)), log


def test_unseen_notebooks_go_first_then_the_longest(tmp_path):
    pending, _ = _jobs(tmp_path, ["short", "long", "new"], students=2)
    planner = LongestFirst({"short": 2.0, "long": 20.0})
    assert planner.expected("new") == math.inf
    order = [pending[i].spec.name for i in planner.order(pending)]
    assert order == ["new", "new", "long", "long", "short", "short"]
    assert [pending[i].student for i in planner.order(pending)][:2] == ["s0", "s1"]  # ties keep their order
    assert pending[planner.pick(pending)].spec.name == "new"


def test_this_batch_refines_what_the_last_one_said(tmp_path):
    planner = LongestFirst({"a": 30.0, "b": 10.0})
    for seconds in (1.0, 2.0, 1.5):
        planner.record("a", seconds)
    assert planner.expected("a") == 1.75 and planner.expected("b") == 10.0
    planner.record("b", 0.0)  # a missing notebook took no time: it says nothing
    assert planner.expected("b") == 10.0


def test_timings_survive_a_batch_and_bad_files_are_ignored(tmp_path):
    save_timings(tmp_path, {"a": 12.5, "b": 3.0})
    assert load_timings(tmp_path) == {"a": 12.5, "b": 3.0}
    (tmp_path / "timings.json").write_text("{not json")
    assert load_timings(tmp_path) == {}
    (tmp_path / "timings.json").write_text('{"a": "slow", "b": -1, "c": 4}')
    assert load_timings(tmp_path) == {"c": 4.0}
    assert load_timings(tmp_path / "nowhere") == {}


def test_jobs_start_longest_first_on_the_worker_pool(tmp_path):
    pending, log = _jobs(tmp_path, ["short", "long"], students=4)
    results = {}
    _run_local(pending, 1, results.__setitem__, LongestFirst({"short": 1.0, "long": 9.0}), work=fake_grade)
    assert len(results) == 8 and all(r.status == "graded" for r in results.values())
    started = [line.split()[1] for line in log.read_text().splitlines()]
    assert started == ["long"] * 4 + ["short"] * 4


def test_a_dead_worker_costs_only_its_jobs_in_flight(tmp_path):
    pending, log = _jobs(tmp_path, ["nb"], students=16)
    culprit = 3
    pending[culprit] = fake_job("s3", "nb", log, action="die")
    results = {}
    _run_local(pending, 2, results.__setitem__, LongestFirst(), work=fake_grade)
    assert sorted(results) == sorted(pending)  # one row per job, none lost
    assert {i for i, r in results.items() if r.status == "crashed"} == {culprit}
    assert all(r.status == "graded" for i, r in results.items() if i != culprit)
    # The jobs in flight when the pool broke are retried one per process; the rest go back
    # on a rebuilt pool of two workers. Retrying everything left one by one would use a
    # fresh process for each of the ~12 jobs still waiting.
    pids = {line.split()[2] for line in log.read_text().splitlines()}
    assert len(pids) <= 2 + 3 + 2, pids
