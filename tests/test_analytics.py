"""Class analytics: summary.html and analytics.csv say, per checkpoint, how many passed, how
many predictions were right and what failed most; per student, how long each notebook ran."""

from __future__ import annotations

import csv

from autograde.summary import write_summary
from autograde.worker import CheckpointResult, NotebookResult


def _result(student, passed: bool, message: str, prediction_right: bool, duration: float, status="graded"):
    checkpoint = CheckpointResult("cp_x", (1.5 if passed else 0) + (0.5 if prediction_right else 0), 2.0,
                                  message, judged="outside", behaviour_score=1.5 if passed else 0,
                                  behaviour_max=1.5, prediction_score=0.5 if prediction_right else 0,
                                  prediction_max=0.5)
    return NotebookResult(student, "lab", status, checkpoint.score, 2.0, checkpoints=[checkpoint],
                          duration_s=duration, execution_s=duration - 1)


def test_analytics_csv_and_page(tmp_path):
    results = [
        _result("ana", True, "all good", True, 12.0),
        _result("ben", False, "add(1, 2) returned 3.5; prediction: your prediction did not match", False, 20.0),
        _result("cy", False, "add(1, 2) returned 3.5; prediction: your prediction matched", True, 8.0),
        _result("dee", False, "add could not be called: NameError", False, 5.0),
        _result("=evil()", False, "not submitted", False, 0.0, status="missing"),
    ]
    write_summary(tmp_path, results)
    rows = list(csv.DictReader(open(tmp_path / "analytics.csv", encoding="utf-8")))
    (checkpoint,) = [r for r in rows if r["kind"] == "checkpoint"]
    assert (checkpoint["handed_in"], checkpoint["passed"], checkpoint["predictions_right"]) == ("4", "1", "2")
    assert checkpoint["pass_rate"] == "0.25"
    # The two failures differ only in their prediction part: they count as one.
    assert checkpoint["top_failure"] == "add(1, 2) returned 3.5" and checkpoint["top_failure_count"] == "2"
    submissions = {r["student"]: r for r in rows if r["kind"] == "submission"}
    assert set(submissions) == {"ana", "ben", "cy", "dee"} and submissions["ben"]["duration_s"] == "20.0"
    page = (tmp_path / "summary.html").read_text()
    assert "2× add(1, 2) returned 3.5" in page and "median 12 s" in page and "longest 20 s" in page
    assert "<td>2 / 4</td>" in page  # predictions right
