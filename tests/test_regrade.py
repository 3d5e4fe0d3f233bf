"""Reproducible regrades: rows record what their score depended on, a regrade reports what
changed and why, and regrading an unchanged batch changes nothing."""

from __future__ import annotations

import csv

import nbformat
import pytest
from toy_judged import CORRECT_ANSWERS, JUDGED_NAME, WRONG_ADD, judged_submission, write_judged_source

from autograde.grade import GradeOptions, grade
from autograde.limits import Limits
from autograde.provenance import compare, heldout_seed


def _row(score, submission="s1", checks="c1", environment="e1", student="ana"):
    return {"student": student, "notebook": "lab", "score": score, "submission_sha256": submission,
            "checks_sha256": checks, "environment_sha256": environment}


def test_compare_names_the_cause_of_each_change():
    previous = [_row(3), _row(1, student="ben"), _row(2, student="cy"), _row(2, student="dee")]
    current = [_row(3), _row(2, submission="s2", student="ben"), _row(3, checks="c2", student="cy"),
               _row(1, student="dee"), _row(0, student="eve")]
    by = {c.student: c for c in compare(previous, current)}
    assert by["ana"].change == "same" and by["ana"].reason == ""
    assert by["ben"].change == "+1" and by["ben"].reason == "submission changed"
    assert by["cy"].reason == "checks changed"
    assert by["dee"].change == "-1" and "not reproducible" in by["dee"].reason
    assert by["eve"].change == "new"


def test_heldout_seed_is_stable_per_submission_and_secret_salt():
    assert heldout_seed("salt", "abc", "cp") == heldout_seed("salt", "abc", "cp")
    assert heldout_seed("salt", "abc", "cp") != heldout_seed("other", "abc", "cp")
    assert heldout_seed("salt", "abc", "cp") != heldout_seed("salt", "abd", "cp")


@pytest.fixture(scope="module")
def batches(tmp_path_factory):
    from autograde.release import release

    source = write_judged_source(tmp_path_factory.mktemp("regrade_source"))
    (release_path,) = release(tmp_path_factory.mktemp("regrade_release"), [source])
    folder = tmp_path_factory.mktemp("regrade_class")
    # A partly right add: right on a few inputs only, so what it is judged on depends on the inputs
    # drawn (it fails on the first input below 900, and the message names that input).
    half_right = "def add(a, b):\n    return a + b if a > 900 else a - b"
    for name, answers in {"right": CORRECT_ANSWERS, "wrong": {**CORRECT_ANSWERS, "add": WRONG_ADD},
                          "half": {**CORRECT_ANSWERS, "add": half_right}}.items():
        (folder / name).mkdir()
        nbformat.write(judged_submission(release_path, answers), folder / name / f"{JUDGED_NAME}.ipynb")
    options = GradeOptions(workers=2, cell_timeout=30, notebook_timeout=120, limits=Limits(sandbox=True))
    first = tmp_path_factory.mktemp("regrade_first")
    grade(folder, first, options, sources=[source], force=True)
    second = tmp_path_factory.mktemp("regrade_second")
    grade(folder, second, options, sources=[source], force=True, regrade=first)
    nbformat.write(judged_submission(release_path, CORRECT_ANSWERS), folder / "wrong" / f"{JUDGED_NAME}.ipynb")
    third = tmp_path_factory.mktemp("regrade_third")
    grade(folder, third, options, sources=[source], force=True, regrade=first)
    return first, second, third


def _regrade_rows(folder):
    return {r["student"]: r for r in csv.DictReader(open(folder / "regrade.csv", encoding="utf-8"))}


def test_regrading_an_unchanged_batch_changes_nothing(batches):
    _, second, _ = batches
    rows = _regrade_rows(second)
    assert {r["change"] for r in rows.values()} == {"same"}, rows
    assert all(r["reason"] == "" for r in rows.values())


def _messages(folder):
    return {(r["student"], r["checkpoint"]): r["message"]
            for r in csv.DictReader(open(folder / "checkpoints.csv", encoding="utf-8"))}


def test_a_regrade_draws_the_same_heldout_inputs(batches):
    # The partly right add fails on the first input below 900 drawn, and its message names it:
    # equal messages mean the regrade called the student's code with the very same inputs.
    first, second, _ = batches
    before, after = _messages(first), _messages(second)
    assert before[("half", "cp_add")] == after[("half", "cp_add")]
    assert "returned" in before[("half", "cp_add")], before
    assert (first / "nbgrader" / "heldout-salt").read_text() == (second / "nbgrader" / "heldout-salt").read_text()


def test_a_changed_submission_is_named_as_the_reason(batches):
    _, _, third = batches
    rows = _regrade_rows(third)
    assert rows["wrong"]["reason"] == "submission changed" and rows["wrong"]["change"].startswith("+")
    assert rows["right"]["change"] == rows["half"]["change"] == "same"
