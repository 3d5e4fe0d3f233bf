"""`autograde grade --course-dir` is a drop-in for `nbgrader autograde`: a fixture nbgrader
course (a data file the tests read, a task, a manually graded markdown answer and code cell,
an ### AUTOTEST with the course's autotests.yml, an existing gradebook with a due date, a late
submission with timestamp.txt and a `zero` penalty) is scored by both, on copies of one
course, and every notebook's total, maximum, late penalty and manual-grading state agree."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from nbgrader.api import Gradebook

from autograde.__main__ import main
from autograde.assignment import NotebookSpec, build_assignment, nbgrader_metadata
from autograde.course import load_course
from autograde.grade import GradeOptions, grade
from autograde.worker import NEEDS_MANUAL_FLAG, kernel_problem

COURSE_ID = "dropin101"
AID = "ps1"
NB = "problem1"
DUE = datetime(2030, 1, 10, 12, 0, 0)
MAX_SCORE = 1 + 2 + 1 + 2 + 1 + 3  # visible test, data test, autotest, written answer, code answer, task
OPTIONS = GradeOptions(workers=1, cell_timeout=30, notebook_timeout=180, model_cache=False)
BIN = Path(sys.executable).parent

CONFIG = f"""c = get_config()
c.CourseDirectory.course_id = {COURSE_ID!r}
c.LateSubmissionPlugin.penalty_method = "zero"
"""

AUTOTESTS = """python3:
    setup: "from hashlib import sha1"
    hash: 'sha1({{snippet}}.encode("utf-8")+b"{{salt}}").hexdigest()'
    dispatch: "type({{snippet}})"
    normalize: "str({{snippet}})"
    check: 'assert {{snippet}} == "{{value}}", "{{message}}"'
    success: "print('Success!')"
    templates:
        default:
            - test: "type({{snippet}})"
              fail: "type of {{snippet}} is not correct"
            - test: "{{snippet}}"
              fail: "value of {{snippet}} is not correct"
"""


def _cell(maker, source: str, grade_id: str, **kinds):
    return maker(source, metadata={"nbgrader": nbgrader_metadata(grade_id, **kinds)})


def source_notebook() -> nbformat.NotebookNode:
    cells = [
        new_markdown_cell("# Problem 1\nWrite `squares(n)`: the squares of 1..n."),
        _cell(new_code_cell, "def squares(n):\n    ### BEGIN SOLUTION\n    return [i * i for i in range(1, n + 1)]\n"
              "    ### END SOLUTION", "squares", solution=True),
        _cell(new_code_cell, "assert squares(3) == [1, 4, 9]", "test_visible", grade=True, locked=True, points=1),
        _cell(new_code_cell, "# the data file ships beside the notebook\n"
              "n = int(open('data.csv').read().split(',')[0])\nassert len(squares(n)) == n\n"
              "### BEGIN HIDDEN TESTS\nassert squares(n)[-1] == n * n\n### END HIDDEN TESTS",
              "test_data", grade=True, locked=True, points=2),
        _cell(new_code_cell, "### BEGIN SOLUTION\nanswer = 42\n### END SOLUTION", "answer", solution=True),
        _cell(new_code_cell, "### AUTOTEST answer", "test_answer", grade=True, locked=True, points=1),
        _cell(new_markdown_cell, "Why do squares grow fast?\n\n=== BEGIN MARK SCHEME ===\nquadratic\n"
              "=== END MARK SCHEME ===", "written", solution=True, grade=True, points=2),
        _cell(new_code_cell, "def cubes(n):\n    ### BEGIN SOLUTION\n    return [i ** 3 for i in range(1, n + 1)]\n"
              "    ### END SOLUTION", "cubes_manual", solution=True, grade=True, points=1),
        _cell(new_markdown_cell, "**Task**: plot squares against cubes.", "task_plot", task=True, locked=True, points=3),
    ]
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def _nbgrader(course: Path, *args: str) -> None:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run([str(BIN / "nbgrader"), *args], cwd=course, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _answer(release: Path, answers: dict[str, str]) -> nbformat.NotebookNode:
    nb = nbformat.read(release, as_version=4)
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in answers:
            cell.source = answers[grade_id]
    return nb


def _submit(course: Path, student: str, nb, timestamp: str, files: dict[str, str] | None = None) -> None:
    folder = course / "submitted" / student / AID
    folder.mkdir(parents=True)
    nbformat.write(nb, folder / f"{NB}.ipynb")
    (folder / "timestamp.txt").write_text(timestamp)
    for name, text in (files or {}).items():
        (folder / name).write_text(text)


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    """The course as an instructor has it after `generate_assignment` and collecting."""
    root = tmp_path_factory.mktemp("course")
    (root / "nbgrader_config.py").write_text(CONFIG)
    (root / "autotests.yml").write_text(AUTOTESTS)
    source = root / "source" / AID
    source.mkdir(parents=True)
    nbformat.write(source_notebook(), source / f"{NB}.ipynb")
    (source / "data.csv").write_text("4,ignored\n")
    _nbgrader(root, "generate_assignment", AID, "--force")
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}", COURSE_ID) as gb:  # the existing gradebook
        gb.update_or_create_assignment(AID, duedate=DUE)
    release = root / "release" / AID / f"{NB}.ipynb"
    right = {"squares": "def squares(n):\n    return [i * i for i in range(1, n + 1)]", "answer": "answer = 42",
             "written": "Because n * n grows quadratically.",
             "cubes_manual": "def cubes(n):\n    return [i ** 3 for i in range(1, n + 1)]"}
    # alice: everything right, on time; her own data.csv is replaced by the instructor's
    _submit(root, "alice", _answer(release, right), "2030-01-09 10:00:00.000000 UTC", {"data.csv": "oops"})
    # bob: right through his own helper module, two days late (penalty: zero)
    helped = {**right, "squares": "from helper import squares"}
    _submit(root, "bob", _answer(release, helped), "2030-01-12 09:00:00.000000 UTC",
            {"helper.py": "def squares(n):\n    return [i * i for i in range(1, n + 1)]\n"})
    # carol: the release as handed out, on time: the written answers score 0 without a person
    _submit(root, "carol", _answer(release, {}), "2030-01-01 00:00:00.000000 UTC")
    return root


@pytest.fixture(scope="module")
def both(course, tmp_path_factory):
    """nbgrader autograde on one copy of the course, ours on another."""
    base = tmp_path_factory.mktemp("copies")
    theirs, ours = base / "nbgrader", base / "ours"
    shutil.copytree(course, theirs)
    shutil.copytree(course, ours)
    _nbgrader(theirs, "autograde", AID, "--force")
    out = base / "results"
    results = grade(None, out, OPTIONS, course_dir=ours, assignment_id=AID)
    return theirs, ours, out, results


def _gradebook_state(course: Path) -> dict:
    state = {}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", COURSE_ID) as gb:
        for submission in gb.find_assignment(AID).submissions:
            for notebook in submission.notebooks:
                state[(submission.student.id, notebook.name)] = {
                    "score": notebook.score, "max_score": notebook.max_score,
                    "needs_manual_grade": notebook.needs_manual_grade,
                    "late_submission_penalty": notebook.late_submission_penalty,
                    "grades": {g.name: (g.auto_score, g.needs_manual_grade) for g in notebook.grades},
                }
    return state


def test_totals_maxima_and_manual_state_match_nbgrader(both):
    theirs, ours, _, _ = both
    expected, got = _gradebook_state(theirs), _gradebook_state(ours)
    assert set(expected) == {("alice", NB), ("bob", NB), ("carol", NB)}
    assert got == expected
    # and what they are: the data file was there, tasks count, the autotest ran
    assert expected[("alice", NB)]["max_score"] == MAX_SCORE
    assert expected[("alice", NB)]["score"] == 1 + 2 + 1  # written, code answer and task await a person
    assert expected[("alice", NB)]["needs_manual_grade"] is True
    assert expected[("bob", NB)]["late_submission_penalty"] == expected[("bob", NB)]["score"] > 0
    assert expected[("carol", NB)]["grades"]["written"] == (0.0, False)  # unanswered: 0, nobody needs to look
    assert expected[("carol", NB)]["grades"]["task_plot"] == (None, True)


def test_reports_say_who_needs_a_person_and_who_was_late(both):
    _, _, out, results = both
    rows = {r["student"]: r for r in csv.DictReader(open(out / "grades.csv"))}
    assert {s: float(r["max_score"]) for s, r in rows.items()} == dict.fromkeys(("alice", "bob", "carol"), MAX_SCORE)
    assert all(NEEDS_MANUAL_FLAG in r["flags"].split(";") for r in rows.values())  # the task, for everyone
    assert "late" in rows["bob"]["flags"].split(";") and float(rows["bob"]["late_penalty"]) == float(rows["bob"]["score"])
    assert "late" not in rows["alice"]["flags"] and float(rows["alice"]["late_penalty"]) == 0
    assert all(r.status == "graded" for r in results)
    assert NEEDS_MANUAL_FLAG in (out / "summary.html").read_text()


def test_generated_assignment_is_reused_and_the_cli_grades_the_course(both):
    _, ours, out, _ = both
    course = load_course(ours, AID)
    again = build_assignment(out / "nbgrader", course.sources, assignment_id=AID, course_id=COURSE_ID,
                             autotests=course.autotests, files_from=course.source_dir, reuse=True)
    assert again.reused
    assert [name for name, _ in again.support_files] == ["data.csv"]
    before = _gradebook_state(ours)
    code = main(["grade", "--course-dir", str(ours), "--assignment", AID, "--out", str(out), "--force",
                 "--workers", "1", "--cell-timeout", "30"])
    assert code == 0
    assert _gradebook_state(ours) == before  # regrading changes nothing
    assert main(["grade", "--course-dir", str(ours), "--out", str(out)]) == 2  # --assignment is needed


def test_a_kernel_that_is_not_installed_is_a_clear_crash(tmp_path):
    spec = NotebookSpec(name="r", source_path=tmp_path / "r.ipynb", release_path=tmp_path / "r.ipynb",
                        kernelspec={"name": "ir", "language": "R", "display_name": "R"})
    assert "'ir' (R) is not installed" in kernel_problem(spec)
    spec.kernelspec = {"name": "python3", "language": "python"}
    assert kernel_problem(spec) == ""
