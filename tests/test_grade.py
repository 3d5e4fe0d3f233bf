"""Grading the toy assignment: every kind of submission gets the right status and score, the
batch always completes, and the outputs (CSVs, feedback, gradebook) are consistent."""

from __future__ import annotations

import csv
import shutil
import zipfile
from pathlib import Path

import nbformat
import psutil
import pytest
from conftest import stray_processes
from nbgrader.api import Gradebook
from toy import CORRECT, HIDDEN_LINE, MAX_SCORE, ONLY_VISIBLE, TOY_NAME, VISIBLE_POINTS, WRONG, submission_from

from autograde.__main__ import main
from autograde.assignment import ASSIGNMENT_ID, COURSE_ID
from autograde.grade import GradeOptions, grade

FAST = GradeOptions(workers=2, cell_timeout=5, notebook_timeout=30)


def _write(folder: Path, student: str, nb_or_text, name: str = f"{TOY_NAME}.ipynb") -> None:
    target = folder / student / name
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(nb_or_text, str):
        target.write_text(nb_or_text)
    else:
        nbformat.write(nb_or_text, target)


@pytest.fixture(scope="module")
def class_folder(tmp_path_factory, toy_release) -> Path:
    folder = tmp_path_factory.mktemp("submissions")
    _write(folder, "perfect", submission_from(toy_release, CORRECT))
    _write(folder, "wrong", submission_from(toy_release, WRONG))
    _write(folder, "visible_only", submission_from(toy_release, ONLY_VISIBLE))
    _write(folder, "blank", submission_from(toy_release))
    _write(folder, "truncated", nbformat.writes(submission_from(toy_release, CORRECT))[:200])
    _write(folder, "looping", submission_from(toy_release, CORRECT, prepend_cells=["while True:\n    pass"]))
    _write(folder, "exiting", submission_from(toy_release, CORRECT, prepend_cells=["import os\nos._exit(0)"]))
    _write(folder, "renamed", submission_from(toy_release, CORRECT), name=f"Copy of {TOY_NAME} (1).ipynb")
    _write(folder, "server_left_running", submission_from(toy_release, CORRECT, extra_cells=[
        "import subprocess, sys\n"
        "p = subprocess.Popen([sys.executable, '-m', 'http.server', '0', '--bind', '127.0.0.1'],"
        " start_new_session=True)\nprint('server pid', p.pid)"]))
    (folder / "absent").mkdir()  # a student who submitted nothing
    (folder / "absent" / "notes.txt").write_text("forgot")
    return folder


@pytest.fixture(scope="module")
def graded(tmp_path_factory, class_folder, toy_sources):
    out = tmp_path_factory.mktemp("results")
    before = {p.pid for p in psutil.process_iter()}
    results = grade(class_folder, out, FAST, sources=toy_sources, force=True)
    leftovers = stray_processes(before)
    rows = {r["student"]: r for r in csv.DictReader(open(out / "grades.csv"))}
    return out, results, rows, leftovers


@pytest.mark.parametrize(
    "student, status, score",
    [
        ("perfect", "graded", MAX_SCORE),
        ("renamed", "graded", MAX_SCORE),
        ("wrong", "graded", 0),
        ("visible_only", "graded", VISIBLE_POINTS),
        ("blank", "graded", 0),
        ("truncated", "unreadable", 0),
        ("looping", "timeout", MAX_SCORE),  # the loop is interrupted, the rest still runs
        ("exiting", "crashed", 0),
        ("absent", "missing", 0),
        ("server_left_running", "graded", MAX_SCORE),
    ],
)
def test_each_submission_gets_its_status_and_score(graded, student, status, score):
    _, _, rows, _ = graded
    row = rows[student]
    assert row["status"] == status
    assert float(row["score"]) == score
    assert float(row["max_score"]) == MAX_SCORE
    if status != "graded":
        assert row["message"], "a non-graded row must say why"


def test_no_process_outlives_the_batch(graded):
    # Kernels and the server a student left running (detached into its own session) are gone.
    *_, leftovers = graded
    assert leftovers == []


def test_checkpoint_detail_and_feedback(graded):
    out, _, _, _ = graded
    detail = list(csv.DictReader(open(out / "checkpoints.csv")))
    wrong = [r for r in detail if r["student"] == "wrong"]
    assert {r["checkpoint"] for r in wrong} == {"test_add_visible", "test_add_hidden"}
    assert all(r["passed"] == "false" for r in wrong)
    hidden = next(r for r in wrong if r["checkpoint"] == "test_add_hidden")
    assert "negative numbers" in hidden["message"]  # the student-facing reason
    html = (out / "feedback" / "wrong" / f"{TOY_NAME}.html").read_text()
    assert "checkpoint test_add_hidden FAILED (0/2)" in html and "Score: 0 / 3" in html
    assert HIDDEN_LINE not in html  # feedback never shows hidden test source
    assert "add(10, 20)" not in html
    assert (out / "feedback" / "perfect" / f"{TOY_NAME}.html").exists()


def test_summary_page_shows_every_checkpoint_and_student(graded):
    out, _, rows, _ = graded
    page = (out / "summary.html").read_text()
    for checkpoint in ("test_add_visible", "test_add_hidden"):
        assert f"<code>{checkpoint}</code>" in page
    assert all(f"<td>{student}</td>" in page for student in rows)
    assert "class='status-timeout'" in page and "class='status-unreadable'" in page


def test_gradebook_holds_the_scores(graded):
    out, _, rows, _ = graded
    with Gradebook(f"sqlite:///{out / 'nbgrader' / 'gradebook.db'}", COURSE_ID) as gb:
        perfect = gb.find_submission_notebook(TOY_NAME, ASSIGNMENT_ID, "perfect")
        assert perfect.score == MAX_SCORE
        visible_only = gb.find_submission_notebook(TOY_NAME, ASSIGNMENT_ID, "visible_only")
        assert visible_only.score == VISIBLE_POINTS
        assert {s.id for s in gb.students} == set(rows)


def test_edited_locked_cell_is_restored_and_flagged(tmp_path, toy_release, toy_sources):
    nb = submission_from(toy_release, WRONG)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "test_add_visible":
            cell.source = "pass  # nothing to see"
    # and a fake graded cell claiming 100 points
    fake = nbformat.v4.new_code_cell("print('free points')")
    fake.metadata["nbgrader"] = {"grade_id": "bonus", "grade": True, "points": 100, "locked": True,
                                 "solution": False, "schema_version": 3}
    nb.cells.append(fake)
    _write(tmp_path / "subs", "tamperer", nb)
    (result,) = grade(tmp_path / "subs", tmp_path / "out", FAST, sources=toy_sources)
    assert result.score == 0 and result.max_score == MAX_SCORE
    assert "edited-locked-cell:test_add_visible" in result.flags
    assert "unknown-nbgrader-cell:bonus" in result.flags


def test_deleted_hidden_cell_is_put_back(tmp_path, toy_release, toy_sources):
    nb = submission_from(toy_release, CORRECT)
    nb.cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") != "test_add_hidden"]
    _write(tmp_path / "subs", "deleter", nb)
    (result,) = grade(tmp_path / "subs", tmp_path / "out", FAST, sources=toy_sources)
    assert result.score == MAX_SCORE
    assert "deleted-locked-cell:test_add_hidden" in result.flags


def test_zip_input_and_cli(tmp_path, class_folder, toy_sources):
    archive = tmp_path / "class.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for student in ("perfect", "blank"):
            zf.write(class_folder / student / f"{TOY_NAME}.ipynb", f"submissions/{student}/{TOY_NAME}.ipynb")
    out = tmp_path / "out"
    src = toy_sources[0].parent
    code = main(["grade", str(archive), "--out", str(out), "--workers", "1", "--cell-timeout", "5",
                 "--notebooks", str(src)])
    assert code == 0
    rows = {r["student"]: r for r in csv.DictReader(open(out / "grades.csv"))}
    assert rows["perfect"]["score"] == f"{MAX_SCORE:g}" and rows["blank"]["score"] == "0"
    # results are never silently overwritten
    assert main(["grade", str(archive), "--out", str(out), "--notebooks", str(src)]) == 2


def test_bad_arguments_get_clear_errors(tmp_path, toy_sources, capsys):
    src = str(toy_sources[0].parent)
    assert main(["grade", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), "--notebooks", src]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "file.txt").write_text("hi")
    assert main(["grade", str(tmp_path / "file.txt"), "--out", str(tmp_path / "o2"), "--notebooks", src]) == 2
    with pytest.raises(SystemExit):
        main(["grade", str(tmp_path), "--out", str(tmp_path / "o3"), "--workers", "0"])


def test_zip_with_unsafe_paths_is_refused(tmp_path, toy_sources, capsys):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../../escape/toy.ipynb", "{}")
    code = main(["grade", str(archive), "--out", str(tmp_path / "o"), "--notebooks", str(toy_sources[0].parent)])
    assert code == 2 and "unsafe path" in capsys.readouterr().err
    assert not (tmp_path.parent / "escape").exists()


def test_parallel_and_serial_grading_agree(tmp_path, class_folder, toy_sources):
    subset = tmp_path / "subset"
    for student in ("perfect", "wrong", "visible_only", "blank"):
        shutil.copytree(class_folder / student, subset / student)
    serial = grade(subset, tmp_path / "serial", GradeOptions(workers=1, cell_timeout=5), sources=toy_sources)
    parallel = grade(subset, tmp_path / "parallel", GradeOptions(workers=3, cell_timeout=5), sources=toy_sources)
    assert [(r.student, r.score, r.status) for r in serial] == [(r.student, r.score, r.status) for r in parallel]
