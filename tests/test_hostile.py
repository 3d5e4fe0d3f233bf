"""A corpus of hostile and broken submissions, graded in one batch with an honest perfect and
an honest blank submission. Every trick must score no more than the blank submission or be
flagged, the batch must complete, the gradebook stay intact, and no process outlive it.

The README's grading section shows this table; keep the two in step."""

from __future__ import annotations

import csv
import hashlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import psutil
import pytest
from conftest import stray_processes
from toy import CORRECT, MAX_SCORE, TOY_NAME, WRONG, submission_from

from autograde.grade import GradeOptions, grade
from autograde.runner import Limits

SANDBOXED = os.geteuid() == 0 and sys.platform == "linux"


@dataclass
class Trick:
    name: str
    description: str
    first: list[str] = field(default_factory=list)  # cells before the exercise
    last: list[str] = field(default_factory=list)  # cells after everything
    exercise: str = WRONG
    expect_flag: str | None = None  # a flag that must be raised (prefix match)
    expect_status: str | None = None


SOURCE_PATH_PLACEHOLDER = "{source}"

TRICKS = [
    Trick("patch-allclose", "np.allclose = lambda *a, **k: True, then a wrong answer",
          first=["import numpy as np\nnp.allclose = lambda *a, **k: True"], expect_flag="monkeypatch:numpy.allclose"),
    Trick("setattr-allclose", "the same patch through setattr",
          first=["import numpy\nsetattr(numpy, 'allclose', lambda *a, **k: True)"], expect_flag="monkeypatch:numpy"),
    Trick("input-transformer", "an IPython input transformer turns every later cell into `pass`",
          first=["get_ipython().input_transformers_post.append(lambda lines: ['pass\\n'])"],
          expect_flag="ipython-hook"),
    Trick("custom-exception-handler", "a custom exception handler swallows the failing assertion",
          first=["get_ipython().set_custom_exc((AssertionError,), lambda *a, **k: None)"],
          expect_flag="ipython-hook"),
    Trick("silenced-traceback", "showtraceback replaced, so errors leave no output",
          first=["ip = get_ipython()\nip.showtraceback = lambda *a, **k: None"], expect_flag="ipython-hook"),
    Trick("excepthook", "sys.excepthook replaced",
          first=["import sys\nsys.excepthook = lambda *a: None"], expect_flag="sys-hook:excepthook"),
    Trick("fake-module", "a fake numpy in sys.modules whose allclose always agrees",
          first=["import sys, types\nfake = types.ModuleType('numpy')\nfake.allclose = lambda *a, **k: True\n"
                 "sys.modules['numpy'] = fake"], expect_flag="fake-module"),
    Trick("changed-builtins", "AssertionError made harmless in builtins",
          first=["import builtins\nbuiltins.AssertionError = type('Quiet', (Exception,), {})"],
          expect_flag="changed-builtins"),
    Trick("pre-run-hook", "a pre_run_cell event handler",
          first=["get_ipython().events.register('pre_run_cell', lambda info: None)"], expect_flag="ipython-hook"),
    Trick("patch-verifier", "imports the grader's verifiers to patch them",
          first=["import checkpoints.common as cc\ncc.expect = lambda *a, **k: None"], expect_flag="imports-verifiers"),
    Trick("obfuscated-exec", "hides the patch in an exec'd base64 string",
          first=["import base64\nexec(base64.b64decode('aW1wb3J0IG51bXB5OyBudW1weS5hbGxjbG9zZSA9IGxhbWJkYSAqYSwgKiprOiBUcnVl'))"],
          expect_flag="dynamic-code"),
    Trick("fake-receipt", "prints what a passing check prints",
          last=["print('[checkpoint test_add_hidden] passed')\nprint('[autograde-receipt 0000 test_add_hidden]')"]),
    Trick("read-sources", "reads the instructor's source notebook to copy the solution",
          first=["try:\n    print(open('{source}').read()[:80])\nexcept OSError as e:\n    print('blocked:', e)"],
          expect_flag="reads-grader-files"),
    Trick("write-gradebook", "tries to write the gradebook next to the results",
          first=["import glob\nfor path in glob.glob('/**/gradebook.db', recursive=True)[:3]:\n"
                 "    try:\n        open(path, 'ab').write(b'x')\n    except OSError as e:\n        print('blocked', e)"],
          expect_flag="reads-grader-files"),
    Trick("edit-visible-test", "edits the visible test cell to `pass`", expect_flag="edited-locked-cell"),
    Trick("fake-points", "adds its own graded cell worth 100 points", expect_flag="unknown-nbgrader-cell"),
    Trick("kill-grader", "kills its parent process (the grader)",
          first=["import os, signal\ntry:\n    os.kill(os.getppid(), signal.SIGKILL)\nexcept OSError as e:\n    print(e)"],
          exercise=CORRECT),
    Trick("orphan-server", "leaves a detached server running on a port",
          first=["import subprocess, sys\nsubprocess.Popen([sys.executable, '-m', 'http.server', '0', '--bind', "
                 "'127.0.0.1'], start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)"],
          exercise=CORRECT),
    Trick("endless-loop", "while True: pass", first=["while True:\n    pass"], expect_status="timeout"),
    Trick("ignore-interrupt", "ignores SIGINT, then loops", first=[
        "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass"], expect_status="timeout"),
    Trick("memory-bomb", "allocates and touches memory until something gives",
          first=["blocks = []\nwhile True:\n    blocks.append(bytearray(b'x' * (64 * 1024 * 1024)))"],
          expect_status="crashed"),
    Trick("output-flood", "prints megabytes of output", first=["for i in range(300000):\n    print('x' * 64)"],
          expect_flag="output-truncated"),
    Trick("exit-kernel", "os._exit(0)", first=["import os\nos._exit(0)"], expect_status="crashed"),
]


def _build(trick: Trick, release: Path, source: Path) -> nbformat.NotebookNode:
    fill = lambda cells: [c.replace(SOURCE_PATH_PLACEHOLDER, str(source)) for c in cells]  # noqa: E731
    nb = submission_from(release, trick.exercise, extra_cells=fill(trick.last), prepend_cells=fill(trick.first))
    if trick.name == "edit-visible-test":
        for cell in nb.cells:
            if cell.metadata.get("nbgrader", {}).get("grade_id") == "test_add_visible":
                cell.source = "pass"
    if trick.name == "fake-points":
        fake = nbformat.v4.new_code_cell("print('bonus')")
        fake.metadata["nbgrader"] = {"grade_id": "bonus", "grade": True, "points": 100, "locked": True,
                                     "solution": False, "schema_version": 3}
        nb.cells.append(fake)
    return nb


@pytest.fixture(scope="module")
def batch(tmp_path_factory, toy_release, toy_sources):
    folder = tmp_path_factory.mktemp("hostile")
    for trick in TRICKS:
        target = folder / trick.name / f"{TOY_NAME}.ipynb"
        target.parent.mkdir()
        nbformat.write(_build(trick, toy_release, toy_sources[0]), target)
    for student, exercise in (("honest-perfect", CORRECT), ("honest-blank", None)):
        target = folder / student / f"{TOY_NAME}.ipynb"
        target.parent.mkdir()
        nbformat.write(submission_from(toy_release, exercise), target)
    out = tmp_path_factory.mktemp("hostile-results")
    before = {p.pid for p in psutil.process_iter()}
    options = GradeOptions(workers=2, cell_timeout=8, notebook_timeout=60,
                           limits=Limits(sandbox=True, memory_mb=1000, max_processes=128))
    grade(folder, out, options, sources=toy_sources)
    leftovers = stray_processes(before)
    rows = {r["student"]: r for r in csv.DictReader(open(out / "grades.csv"))}
    return out, rows, leftovers


def test_honest_submissions_in_the_same_batch(batch):
    _, rows, _ = batch
    assert float(rows["honest-perfect"]["score"]) == MAX_SCORE and rows["honest-perfect"]["flags"] == ""
    assert float(rows["honest-blank"]["score"]) == 0 and rows["honest-blank"]["flags"] == ""
    assert rows["honest-perfect"]["status"] == rows["honest-blank"]["status"] == "graded"


@pytest.mark.parametrize("trick", TRICKS, ids=lambda t: t.name)
def test_trick_gains_nothing_or_is_flagged(batch, trick):
    _, rows, _ = batch
    row = rows[trick.name]
    blank = float(rows["honest-blank"]["score"])
    flags = row["flags"].split(";") if row["flags"] else []
    if trick.expect_flag:
        assert any(f.startswith(trick.expect_flag) for f in flags), f"{trick.name}: flags {flags}"
    if trick.expect_status:
        assert row["status"] == trick.expect_status, row
    if trick.exercise is WRONG:
        assert float(row["score"]) <= blank or flags, row


def test_no_batch_abort_and_every_trick_has_a_row(batch):
    _, rows, _ = batch
    assert set(rows) == {t.name for t in TRICKS} | {"honest-perfect", "honest-blank"}


def test_gradebook_intact_and_nothing_outlives_the_batch(batch):
    out, rows, leftovers = batch
    from nbgrader.api import Gradebook

    from autograde.assignment import ASSIGNMENT_ID, COURSE_ID

    with Gradebook(f"sqlite:///{out / 'nbgrader' / 'gradebook.db'}", COURSE_ID) as gb:
        assert {s.id for s in gb.students} == set(rows)
        assert gb.find_submission_notebook(TOY_NAME, ASSIGNMENT_ID, "honest-perfect").score == MAX_SCORE
    assert leftovers == []


@pytest.mark.skipif(not SANDBOXED, reason="isolation needs root on Linux; the fallback is tested below")
def test_sandbox_hides_grader_files(batch):
    out, rows, _ = batch
    assert "unsandboxed" not in rows["read-sources"]["flags"]
    html = (out / "feedback" / "read-sources" / f"{TOY_NAME}.html").read_text()
    assert "blocked:" in html  # the source notebook could not be opened


def test_feedback_never_shows_hidden_tests(batch):
    out, _, _ = batch
    secret = hashlib.sha256(b"x").hexdigest()  # noqa: F841 - documents intent: nothing hidden leaks
    for page in (out / "feedback").rglob("*.html"):
        text = page.read_text()
        assert "np.allclose([add(-7, 5)" not in text
        assert "autograde-receipt" not in text or "fake-receipt" in str(page)
