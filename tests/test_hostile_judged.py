"""Hostile submissions against checkpoints judged outside the kernel (the judged toy of
tests/toy_judged.py), graded in one batch beside an honest perfect and an honest blank.

Each trick is one of the classes that beat the in-kernel verdicts: swallowed exceptions and
printed receipts, output rewritten by IPython callbacks, exception display / compiler / tracer
replaced through spellings a scan does not know, names the grader's code calls shadowed in
the notebook, patches through indirect module objects, a module written to a file and
imported, a swapped module class, a replaced ``__builtins__``, a syntax error that stops a
scan, objects whose equality is always true, and hidden or verifier source echoed into the
feedback. Every trick here answers wrongly: it must score no more than the honest blank,
whatever it is flagged with, and nothing hidden may reach a report."""

from __future__ import annotations

import csv
import json

import nbformat
import pytest
from conftest import stray_processes
from toy_judged import (
    CORRECT_ANSWERS,
    JUDGED_MAX,
    JUDGED_NAME,
    WRONG_ADD,
    judged_submission,
    write_judged_source,
)

from autograde.grade import GradeOptions, grade
from autograde.limits import Limits

WRONG_API = CORRECT_ANSWERS["api"].replace("add(a, b)", "a - b")
WRONG = {"add": WRONG_ADD, "api": WRONG_API, "answer_sum": "prediction_sum = 7"}

# name -> (description, cells before the answers, cells after everything, answers replacing WRONG's)
TRICKS: dict[str, tuple[str, list[str], list[str], dict[str, str]]] = {
    "receipt-and-swallow": (
        "swallows every exception through set_custom_exc and prints what a passing check prints",
        ["get_ipython().set_custom_exc((BaseException,), lambda *a, **k: print('[checkpoint cp_add] passed'))"],
        ["print('checkpoint cp_add: passed — behaviour 1.5/1.5, prediction 0.5/0.5')\n"
         "print('[autograde-receipt 0 cp_add]')"], {}),
    "post-run-rewrite": (
        "a post_run_cell callback prints a pass line after every cell, the grader's included",
        ["def _rewrite(result):\n    print('checkpoint cp_add: passed')\n"
         "get_ipython().events.register('post_run_cell', _rewrite)"], [], {}),
    "class-level-hooks": (
        "showtraceback and run_cell replaced on the shell's class, not the instance",
        ["shell_class = type(get_ipython())\n_orig = shell_class.run_cell\n"
         "def quiet(self, raw_cell, *a, **k):\n    if 'autograde' in raw_cell:\n"
         "        print('[autograde-data x]{\"ok\": 0}')\n    return _orig(self, raw_cell, *a, **k)\n"
         "shell_class.showtraceback = lambda *a, **k: None\nshell_class.run_cell = quiet"], [], {}),
    "shadowed-builtins": (
        "notebook-level print, globals, type and get_ipython shadow the names grader code uses",
        [], ["def print(*a, **k):\n    pass\ndef globals():\n    return {}\ndef type(x):\n    return int\n"
             "_real = get_ipython\ndef get_ipython():\n    return _real()"], {}),
    "computed-name-patch": (
        "patches json.dumps through a module imported by a computed name",
        ["m = __import__('js' + 'on')\nsetattr(m, 'du' + 'mps', lambda *a, **k: '{\"ok\": 12.5}')"], [], {}),
    "indirect-module": (
        "reaches the json module through another module's globals and replaces loads and dumps",
        ["import importlib\nj = importlib.import_module('ipykernel.jsonutil').__dict__.get('json') or "
         "importlib.import_module('json')\nj.loads = lambda s, *a, **k: {'a': 1}\n"
         "j.dumps = lambda *a, **k: '{\"ok\": 1}'"], [], {}),
    "module-from-file": (
        "writes a fake json.py into the working directory and puts it first on sys.path",
        ["open('json.py', 'w').write('def dumps(*a, **k):\\n    return \\'{\"ok\": 3}\\'\\n"
         "def loads(s, *a, **k):\\n    return {\"name\": \"add\", \"args\": [1, 2], \"kwargs\": {}}\\n')\n"
         "import sys\nsys.path.insert(0, '.')\nsys.modules.pop('json', None)"], [], {}),
    "swapped-module-class": (
        "swaps the json module's __class__ for one whose attributes always agree",
        ["import sys, types\nclass Agreeable(types.ModuleType):\n"
         "    def __getattribute__(self, name):\n        if name == 'dumps':\n"
         "            return lambda *a, **k: '{\"ok\": 2}'\n        return types.ModuleType.__getattribute__(self, name)\n"
         "sys.modules['json'].__class__ = Agreeable"], [], {}),
    "replaced-builtins-dict": (
        "replaces the notebook's __builtins__ with a dict whose print and __import__ lie",
        [], ["import builtins\nfake = dict(vars(builtins))\n"
             "fake['print'] = lambda *a, **k: builtins.print(str(a[0]).split(']')[0] + ']{\"ok\": 4}')\n"
             "__builtins__ = fake"], {}),
    "syntax-error-then-patch": (
        "a cell with a syntax error (which stops a static scan) before the patches",
        ["def broken(:\n    pass", "import numpy\nnumpy.allclose = lambda *a, **k: True\n"
         "import json\njson.dumps = lambda *a, **k: '{\"ok\": 8}'"], [], {}),
    "always-equal": (
        "returns objects whose equality is always true, for the answer and the prediction",
        [], [], {"add": "class Same(float):\n    def __eq__(self, other):\n        return True\n"
                        "    __hash__ = float.__hash__\ndef add(a, b):\n    return Same(a - b)",
                 "answer_sum": "class Same(int):\n    def __eq__(self, other):\n        return True\n"
                               "    __hash__ = int.__hash__\nprediction_sum = Same(7)"}),
    "echo-hidden-and-verifiers": (
        "prints the input history, every global and any verifier file it can find into its feedback",
        [], ["print(In)\nprint(sorted(globals()))\nimport glob, os\n"
             "for path in glob.glob('/work/*/tests/toy_*.py') + glob.glob('/work/*/checkpoints/*.py') + "
             "glob.glob('/proc/*/cwd/checkpoints/interface.py'):\n"
             "    try:\n        print(open(path).read())\n    except OSError as e:\n        print('blocked', e)\n"
             "import sys\nprint([getattr(m, '__file__', '') for m in list(sys.modules.values())][:400])"], {}),
    "exception-message-echo": (
        "its add raises with the calling frame's constants (the grader's request) in the message",
        [], [], {"add": "import sys\ndef add(a, b):\n    raise ValueError(repr(sys._getframe(1).f_code.co_consts)"
                        " + repr(sys._getframe(1).f_globals.get('In')))"}),
    "tracer-and-excepthook": (
        "installs a tracer and an excepthook through `from sys import ...`",
        ["from sys import settrace as st, excepthook\nimport sys\n"
         "st(lambda *a: None)\nsys.__dict__['excepthook'] = lambda *a: None"], [], {}),
}


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    from autograde.release import release

    source = write_judged_source(tmp_path_factory.mktemp("judged_source"))
    (release_path,) = release(tmp_path_factory.mktemp("judged_release"), [source])
    folder = tmp_path_factory.mktemp("judged_hostile")
    submissions = {"honest-perfect": judged_submission(release_path, CORRECT_ANSWERS),
                   "honest-blank": judged_submission(release_path)}
    for name, (_, first, last, answers) in TRICKS.items():
        submissions[name] = judged_submission(release_path, {**WRONG, **answers}, first=first, last=last)
    for name, nb in submissions.items():
        (folder / name).mkdir()
        nbformat.write(nb, folder / name / f"{JUDGED_NAME}.ipynb")
    out = tmp_path_factory.mktemp("judged_results")
    import psutil

    before = {p.pid for p in psutil.process_iter()}
    options = GradeOptions(workers=2, cell_timeout=30, notebook_timeout=120,
                           limits=Limits(sandbox=True, memory_mb=2000, max_processes=128))
    grade(folder, out, options, sources=[source])
    rows = {r["student"]: r for r in csv.DictReader(open(out / "grades.csv"))}
    detail = list(csv.DictReader(open(out / "checkpoints.csv")))
    return out, rows, detail, stray_processes(before), source


def test_honest_students_keep_their_marks(batch):
    _, rows, _, _, _ = batch
    assert float(rows["honest-perfect"]["score"]) == JUDGED_MAX, rows["honest-perfect"]
    assert float(rows["honest-blank"]["score"]) == 0
    assert rows["honest-perfect"]["status"] == rows["honest-blank"]["status"] == "graded"
    assert rows["honest-perfect"]["checks_in_kernel"] == "0"


@pytest.mark.parametrize("trick", sorted(TRICKS))
def test_wrong_answers_score_no_more_than_blank_whatever_the_trick(batch, trick):
    _, rows, _, _, _ = batch
    assert float(rows[trick]["score"]) <= float(rows["honest-blank"]["score"]), rows[trick]


def test_every_trick_has_a_row_and_nothing_outlives_the_batch(batch):
    _, rows, _, leftovers, _ = batch
    assert set(rows) == set(TRICKS) | {"honest-perfect", "honest-blank"}
    assert leftovers == []


def test_prediction_and_behaviour_are_scored_apart(batch):
    _, _, detail, _, _ = batch
    by = {(r["student"], r["checkpoint"]): r for r in detail}
    perfect = by[("honest-perfect", "cp_add")]
    assert (perfect["judged"], perfect["behaviour_score"], perfect["behaviour_max"],
            perfect["prediction_score"], perfect["prediction_max"]) == ("outside", "1.5", "1.5", "0.5", "0.5")
    blank = by[("honest-blank", "cp_add")]
    assert blank["prediction_score"] == "0" and "no prediction" in blank["message"]
    api = by[("honest-perfect", "cp_api")]
    assert api["prediction_max"] == "0" and api["score"] == "1"


def test_no_hidden_source_or_verifier_text_reaches_any_report(batch):
    out, _, _, _, source = batch
    secrets_ = ["judge_add", "collect_add", "Verdict", "toy_checkpoints", "autograde-checkpoint",
                "def judge", "checkpoints.interface"]
    reports = [*(out / "feedback").rglob("*.html"), out / "grades.csv", out / "checkpoints.csv",
               out / "summary.html", out / "results.json"]
    for report in reports:
        text = report.read_text(encoding="utf-8")
        leaked = [s for s in secrets_ if s in text]
        assert not leaked, f"{report.name} quotes {leaked}"
    echo = (out / "feedback" / "echo-hidden-and-verifiers" / f"{JUDGED_NAME}.html").read_text()
    assert "def collect_api" not in echo and "BEGIN HIDDEN TESTS" not in echo


def test_results_json_is_plain_data(batch):
    out, _, _, _, _ = batch
    results = json.loads((out / "results.json").read_text())
    assert {r["student"] for r in results} >= {"honest-perfect", *TRICKS}
