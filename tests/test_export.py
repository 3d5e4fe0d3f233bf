"""`autograde export`: each LMS format against its documented columns, and Gradescope's
autograder bundle grading one submission end to end."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from toy import CORRECT, MAX_SCORE, TOY_NAME, submission_from

from autograde.export import CANVAS_IDENTITY, ExportError, export, write_gradescope_bundle


def _row(student, notebook, score, max_score, status="graded", message="", checkpoints=None):
    return {"student": student, "notebook": notebook, "score": score, "max_score": max_score, "status": status,
            "flags": [], "message": message, "duration_s": 3.5,
            "checkpoints": checkpoints if checkpoints is not None else [
                {"grade_id": f"cp_{notebook}", "score": score, "max_score": max_score, "message": "ok",
                 "judged": "outside"}]}


@pytest.fixture()
def results(tmp_path) -> Path:
    rows = [
        _row("ana", "lab_a", 9, 9), _row("ana", "lab_b", 2.5, 6),
        _row("ben", "lab_a", 0, 9, status="unreadable", message="not valid JSON", checkpoints=[]),
        _row("=cmd|' /C calc'!A0", "lab_a", 1, 9),
        _row("zoe", "lab_a", 4, 9),
    ]
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(rows))
    return folder


def _csv(path: Path) -> list[list[str]]:
    return list(csv.reader(open(path, newline="", encoding="utf-8")))


def test_canvas_import_matches_the_roster_and_has_points_possible(results, tmp_path):
    roster = tmp_path / "roster.csv"
    with open(roster, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CANVAS_IDENTITY + ["Unrelated (99)"])
        writer.writerow(["Points Possible", "", "", "", "", "10"])
        writer.writerow(["Ana Lima", "101", "S101", "ana", "Sec 1", "7"])
        writer.writerow(["Ben Ode", "102", "S102", "ben", "Sec 1", ""])
        writer.writerow(["=HYPERLINK(x)", "103", "S103", "cara", "Sec 2", ""])  # no submission
    done = export(results, "canvas", tmp_path / "canvas.csv", roster=roster, canvas_ids={"lab_a": "4417"})
    rows = _csv(done.paths[0])
    assert rows[0] == CANVAS_IDENTITY + ["lab_a (4417)", "lab_b"]
    assert rows[1] == ["Points Possible", "", "", "", "", "9", "6"]
    by_login = {r[3]: r for r in rows[2:]}
    assert by_login["ana"][5:] == ["9", "2.5"] and by_login["ana"][:3] == ["Ana Lima", "101", "S101"]
    assert by_login["ben"][5:] == ["0", ""]
    assert by_login["cara"][5:] == ["", ""] and by_login["cara"][0].startswith("'=")  # a formula is neutralised
    assert any("zoe" in w for w in done.warnings)  # graded but not on the roster: said, not dropped silently


def test_canvas_refuses_a_roster_without_canvas_columns(results, tmp_path):
    roster = tmp_path / "roster.csv"
    roster.write_text("name,email\nAna,ana@x\n")
    with pytest.raises(ExportError, match="lacks Canvas"):
        export(results, "canvas", tmp_path / "c.csv", roster=roster)


def test_gradescope_results_follow_the_autograder_format(results, tmp_path):
    done = export(results, "gradescope", tmp_path / "gs")
    ana = json.loads((tmp_path / "gs" / "ana" / "results.json").read_text())
    assert set(ana) >= {"score", "execution_time", "output", "tests", "visibility"}
    assert ana["score"] == 11.5 and ana["execution_time"] == 7.0
    for test in ana["tests"]:
        assert set(test) == {"name", "score", "max_score", "status", "output", "visibility"}
        assert test["status"] in ("passed", "failed")
    assert [t["status"] for t in ana["tests"]] == ["passed", "failed"]
    ben = json.loads((tmp_path / "gs" / "ben" / "results.json").read_text())
    assert ben["tests"] == [{"name": "lab_a", "score": 0.0, "max_score": 9, "status": "failed",
                             "output": "not valid JSON", "visibility": "visible"}]
    assert len(done.paths) == 4


def test_moodle_import_has_an_identifier_then_grade_and_feedback_per_notebook(results, tmp_path):
    done = export(results, "moodle", tmp_path / "moodle.csv")
    rows = _csv(done.paths[0])
    assert rows[0] == ["Identifier", "lab_a", "lab_a feedback", "lab_b", "lab_b feedback"]
    by_id = {r[0]: r for r in rows[1:]}
    assert by_id["ana"][1] == "9" and by_id["ana"][3] == "2.5" and "2.5/6" in by_id["ana"][4]
    assert by_id["ben"][3] == "" and "unreadable" in by_id["ben"][2]
    assert "'=cmd|' /C calc'!A0" in by_id  # the identifier cannot run as a formula


def test_an_unknown_format_or_a_folder_without_results_is_a_clear_error(results, tmp_path):
    with pytest.raises(ExportError, match="unknown format"):
        export(results, "blackboard")
    with pytest.raises(ExportError, match="results.json"):
        export(tmp_path, "moodle")


def test_the_gradescope_bundle_grades_one_submission(tmp_path, toy_sources, toy_release):
    bundle = write_gradescope_bundle(tmp_path / "bundle", toy_sources)
    assert (bundle / "setup.sh").stat().st_mode & 0o111 and (bundle / "run_autograder").stat().st_mode & 0o111
    assert (bundle / "notebooks" / f"{TOY_NAME}.ipynb").is_file() and (bundle / "autograde" / "grade.py").is_file()
    root = tmp_path / "autograder"
    (root / "submission").mkdir(parents=True)
    nbformat.write(submission_from(toy_release, CORRECT), root / "submission" / f"{TOY_NAME}.ipynb")
    os.mkfifo(root / "submission" / "trap.ipynb")  # never read, never blocks
    (root / "source").symlink_to(bundle)
    env = dict(os.environ, AUTOGRADER_ROOT=str(root), AUTOGRADE_PYTHON=sys.executable)
    proc = subprocess.run([str(bundle / "run_autograder")], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((root / "results" / "results.json").read_text())
    assert result["score"] == MAX_SCORE
    assert {t["name"] for t in result["tests"]} == {f"{TOY_NAME}: test_add_visible", f"{TOY_NAME}: test_add_hidden"}
