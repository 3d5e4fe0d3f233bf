"""Unit tests of the Colab B checkpoint declarations (checkpoints/colab_b.py) and their probe
(checkpoints/probes/colab_b_apptest.py).

- The judges get good and bad evidence written by hand (wrong counts, wrong types, missing
  keys, forged shapes): they must decide without crashing.
- Each collect runs once, through ``FakeSession``, over a run folder built from the
  notebook's own solution cells (the real dashboard): every checkpoint must pass there. The
  time each takes is printed (``pytest -s``), never asserted.
- Broken apps (small, chart-less, so the run stays short) go through the real probe in ONE
  process; the judges must fail each with a message that names the problem.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import json
import os
import re
import shutil
import time
import types
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

from checkpoints import colab_b
from checkpoints.colab_b import (
    CHECKPOINTS,
    assess_space_files,
    caching_session,
    expected_ks,
    front_matter,
    judge_caching,
    judge_k_change,
    judge_space,
    k_change_session,
    requirement_names,
    slow_session,
    space_session,
    third_party_imports,
)
from checkpoints.interface import Verdict, load_checkpoints, marker_module
from checkpoints.testing import FakeSession

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "colab_b_streamlit.ipynb"
BY_ID = {c.id: c for c in CHECKPOINTS}


# ------------------------------------------------------------- the notebook's own solution
def notebook_cells() -> list[str]:
    return [c.source for c in nbformat.read(NOTEBOOK, as_version=4).cells if c.cell_type == "code"]


def build_solution_run(folder: Path) -> Path:
    """What running the source notebook leaves in its folder: returns.csv, app_parts/,
    app_slow.py, app.py and stock_cluster_space/, made by the notebook's own cells."""
    folder.mkdir(parents=True, exist_ok=True)
    fake_st = types.SimpleNamespace(__version__="1.0.0")
    namespace = {"np": np, "pd": pd, "Path": Path, "shutil": shutil, "difflib": difflib, "st": fake_st, "SEED": 7}
    wanted = ("SECTORS = ", "raw_returns = make_returns()", "PARTS = Path", "def assemble", "assemble(\"app.py\"",
              "space_dir = Path")
    here = os.getcwd()
    os.chdir(folder)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            for source in notebook_cells():
                match = re.match(r"%%writefile (\S+)\n", source)
                if match:
                    Path(match.group(1)).write_text(source[match.end():])
                elif source.startswith(wanted):
                    exec(source, namespace)  # noqa: S102 - the course's own notebook cells
    finally:
        os.chdir(here)
    return folder


def solution_answers() -> dict:
    """The answer cells' assignments (checkpoint_b1 = ..., as the solution has them)."""
    answers: dict = {}
    for source in notebook_cells():
        if re.search(r"^checkpoint_b\d = ", source, re.M):
            exec(source, answers)  # noqa: S102 - plain assignments of the course's solution
    return {k: v for k, v in answers.items() if k.startswith("checkpoint_b")}


@pytest.fixture(scope="module")
def solution_run(tmp_path_factory) -> Path:
    return build_solution_run(tmp_path_factory.mktemp("colab_b_solution"))


@pytest.mark.parametrize("checkpoint_id", sorted(BY_ID))
def test_collect_and_judge_pass_on_the_notebooks_solution(solution_run, checkpoint_id):
    checkpoint = BY_ID[checkpoint_id]
    session = FakeSession(solution_answers(), run_dir=solution_run, seed=len(checkpoint_id))
    started = time.perf_counter()
    evidence = checkpoint.collect(session)
    collected = time.perf_counter() - started
    verdict = checkpoint.judge(evidence)
    probe = evidence.get("probe") or {}
    print(f"\n{checkpoint_id}: collect {collected:.1f} s (probe process {probe.get('seconds')} s, "
          f"of which imports {probe.get('import_seconds')} s); {verdict.message}")
    assert verdict.passed, verdict.message
    assert json.loads(json.dumps(evidence)) == evidence  # plain JSON
    assert checkpoint.prediction.judge(session.value(checkpoint.prediction.variable)).passed


def test_the_notebook_builds_the_files_the_checks_run(solution_run):
    for name in ("app.py", "app_slow.py", "returns.csv", "stock_cluster_space/app.py",
                 "stock_cluster_space/requirements.txt", "stock_cluster_space/README.md"):
        assert (solution_run / name).is_file(), name


# ------------------------------------------------------------- hidden cells and predictions
def test_hidden_cells_are_neutral_markers_of_declared_checkpoints():
    cells = [c for c in nbformat.read(NOTEBOOK, as_version=4).cells
             if c.metadata.get("nbgrader", {}).get("grade_id") in BY_ID]
    assert sorted(c.metadata["nbgrader"]["grade_id"] for c in cells) == sorted(BY_ID)
    declared = load_checkpoints("checkpoints.colab_b")
    for cell in cells:
        meta = cell.metadata["nbgrader"]
        assert meta["grade"] and meta["locked"] and meta["points"] == 2
        assert marker_module(cell.source) == "checkpoints.colab_b" and meta["grade_id"] in declared
        visible = cell.source.split("### BEGIN HIDDEN TESTS")[0]
        assert visible.strip() == "# Hidden checkpoint (graded by your instructor)."
        assert "check_" not in cell.source and "import" not in cell.source


def test_prediction_truths_follow_the_notebooks_scripted_session():
    (source,) = [s for s in notebook_cells() if s.startswith("# A manager explores")]
    scope: dict = {}
    exec(source.split("print(")[0], scope)  # noqa: S102 - the course's own assignment
    session = [list(action) for action in scope["SCRIPTED_SESSION"]]
    assert session == colab_b.NOTEBOOK_SESSION
    fits = [len(session) + 1, len({3} | {v for kind, v in session if kind == "k"})]
    assert colab_b.TRUTHS["checkpoint_b1"] == [*fits, colab_b.SPEEDUP_CHOICE]


def test_the_speedup_choices_in_the_notebook_are_the_ones_the_truth_picks_from():
    (question,) = [c.source for c in nbformat.read(NOTEBOOK, as_version=4).cells
                   if c.cell_type == "markdown" and "### Checkpoint 1" in c.source]
    choices = dict(re.findall(r"\*\*([A-D])\.\*\* ([^;.]*)", question))
    assert sorted(choices) == ["A", "B", "C", "D"]
    assert choices[colab_b.SPEEDUP_CHOICE] == "3x to 30x faster"


@pytest.mark.parametrize("checkpoint_id", sorted(BY_ID))
def test_each_prediction_accepts_the_solution_and_refuses_a_wrong_answer(checkpoint_id):
    prediction = BY_ID[checkpoint_id].prediction
    assert prediction.points == 0.5
    answer = FakeSession(solution_answers()).value(prediction.variable)
    assert prediction.judge(answer).passed
    wrong = {"checkpoint_b1": [7, 3, "D"], "checkpoint_b2": "A", "checkpoint_b3": "numpy"}[prediction.variable]
    assert not prediction.judge(wrong).passed
    assert not prediction.judge(None).passed and not prediction.judge(None, available=False).passed


def test_prediction_b1_is_order_sensitive_and_space_and_case_insensitive():
    prediction = BY_ID["cp_b_caching"].prediction
    assert prediction.judge([7, 3, "C"]).passed and prediction.judge(" 7 ,3, c").passed
    assert not prediction.judge([3, 7, "C"]).passed and not prediction.judge([7, 3]).passed
    assert not prediction.judge([7, 3, "B"]).passed and not prediction.judge("7").passed


# ------------------------------------------------------------- held-out sessions
@pytest.mark.parametrize("seed", range(40))
def test_sessions_stay_in_the_documented_ranges_and_cover_every_case(seed):
    import random

    rng = random.Random(seed)
    caching = caching_session(rng)
    ks = expected_ks(caching)
    kinds = [kind for kind, _ in caching]
    assert "ticker" in kinds and len(set(ks)) < len(ks) - kinds.count("ticker")  # a k revisited
    assert len(set(ks)) >= 2  # a new k
    for actions in (caching, slow_session(rng), k_change_session(rng), space_session(rng)):
        previous = expected_ks(actions)
        for (kind, value), before in zip(actions, previous, strict=False):
            assert kind in ("k", "ticker") and type(value) is int
            if kind == "k":
                assert 2 <= value <= 8 and value != before  # every k move changes k
            else:
                assert 1 <= value <= 29
    assert 5 <= k_change_session(rng)[0][1] <= 8


def test_sessions_vary_between_runs():
    import random

    sessions = {json.dumps(caching_session(random.Random(seed))) for seed in range(20)}
    assert len(sessions) > 10


# ------------------------------------------------------------- judges on hand-written evidence
TICKERS = [f"T{i}" for i in range(30)]


def table(k: int, rows: int = 30) -> dict:
    return {"rows": rows, "tickers": TICKERS[:rows], "clusters": [str(i % k) for i in range(rows)]}


def step(kind, value, k, loads, fits, tab=None, error=None):
    chosen = TICKERS[value] if kind == "ticker" else value
    return {"action": [kind, value], "chosen": chosen, "k": k, "ticker": "T0", "loads": loads, "fits": fits,
            "seconds": 0.1, "error": error, "table": tab if tab is not None or error else table(k)}


def app_result(path, steps, **extra):
    return {"path": path, "missing": False, "steps": steps, "options": TICKERS, "error": None, "tampered": False,
            **extra}


def evidence(names, actions, results, nonce="n1", **extra):
    return {"apps": names, "actions": actions, "missing": [], "nonce": nonce,
            "probe": {"nonce": nonce, "apps": results, "seconds": 1.0}, **extra}


CACHED_ACTIONS = [["ticker", 5], ["k", 5], ["k", 3]]
SLOW_ACTIONS = [["ticker", 5], ["k", 6]]


def good_slow():
    return app_result("app_slow.py", [step("start", None, 3, 1, 1), step("ticker", 5, 3, 1, 1),
                                      step("k", 6, 6, 1, 1)])


def good_cached(**changes):
    steps = [step("start", None, 3, 1, 1), step("ticker", 5, 3, 0, 0), step("k", 5, 5, 0, 1), step("k", 3, 3, 0, 0)]
    for index, values in changes.items():
        steps[int(index[1:])].update(values)
    return app_result("app.py", steps)


def caching_evidence(fixed=None, slow=None, **extra):
    return evidence(["app.py", "app_slow.py"], [CACHED_ACTIONS, SLOW_ACTIONS],
                    [fixed or good_cached(), slow or good_slow()], **extra)


def test_judge_caching_passes_good_counts_and_names_the_session():
    verdict = judge_caching(caching_evidence())
    assert verdict.passed and "1 load" in verdict.message and '"T5"' in verdict.message


@pytest.mark.parametrize(("changes", "message"), [
    ({"s1": {"fits": 1}}, "refitted K-Means on picking ticker"),
    ({"s3": {"fits": 1}}, "k=3 was already fitted"),
    ({"s2": {"fits": 0}}, "k=5 is new"),
    ({"s2": {"fits": 2}}, "fitted K-Means 2 times"),
    ({"s1": {"loads": 1}}, "loaded the data 2 times over 4 reruns"),
    ({"s0": {"loads": 0}}, "never read returns.csv"),
    ({"s2": {"k": 3}}, "k slider reads"),
    ({"s0": {"k": 4}}, "starts with k="),
])
def test_judge_caching_fails_wrong_counts_of_the_cached_app(changes, message):
    verdict = judge_caching(caching_evidence(fixed=good_cached(**changes)))
    assert not verdict.passed and message in verdict.message, verdict.message


def test_judge_caching_fails_a_slow_app_that_skips_a_fit():
    slow = good_slow()
    slow["steps"][1]["fits"] = 0
    verdict = judge_caching(caching_evidence(slow=slow))
    assert not verdict.passed and "1 of 3 reruns" in verdict.message


def test_judge_caching_reports_the_exception_of_a_broken_app_quoted():
    broken = app_result("app.py", [step("start", None, None, 0, 0, error='NotImplementedError: "x"\ny')])
    verdict = judge_caching(caching_evidence(fixed=broken))
    assert not verdict.passed and "app.py raised on the first run: " in verdict.message
    assert "\n" not in verdict.message and '\\"x\\"' in verdict.message


def test_judge_caching_fails_missing_files_tampering_and_probe_errors():
    missing = judge_caching({"apps": ["app.py", "app_slow.py"], "actions": [CACHED_ACTIONS, SLOW_ACTIONS],
                             "missing": ["app.py"]})
    assert not missing.passed and "app.py does not exist" in missing.message
    tampered = judge_caching(caching_evidence(fixed=good_cached() | {"tampered": True}))
    assert not tampered.passed and "replaced pandas.read_csv" in tampered.message
    crashed = judge_caching({"apps": ["app.py", "app_slow.py"], "actions": [CACHED_ACTIONS, SLOW_ACTIONS],
                             "missing": [], "nonce": "n1", "error": "the check's run of your files produced no answer"})
    assert not crashed.passed and "produced no answer" in crashed.message
    absent = app_result("app.py", [], missing=True)
    assert "app.py does not exist" in judge_caching(caching_evidence(fixed=absent)).message


def _broken(mutate):
    ev = caching_evidence()
    mutate(ev)
    return ev


@pytest.mark.parametrize("mutate", [
    lambda ev: ev["probe"].update(nonce="forged"),
    lambda ev: ev.pop("probe"),
    lambda ev: ev.update(probe=["not", "a", "dict"]),
    lambda ev: ev["probe"].update(apps={"app.py": {}}),
    lambda ev: ev["probe"]["apps"].pop(),
    lambda ev: ev["probe"]["apps"][0].update(path="other.py"),
    lambda ev: ev["probe"]["apps"][0].update(steps={"0": {}}),
    lambda ev: ev["probe"]["apps"][0]["steps"].pop(),
    lambda ev: ev["probe"]["apps"][0]["steps"][1].pop("fits"),
    lambda ev: ev["probe"]["apps"][0]["steps"][1].update(fits="0"),
    lambda ev: ev["probe"]["apps"][0]["steps"][1].update(loads=True),
    lambda ev: ev["probe"]["apps"][0]["steps"][1].update(k=[3]),
    lambda ev: ev["probe"]["apps"][0]["steps"][1].update(action=["k", 9]),
    lambda ev: ev["probe"]["apps"][0]["steps"][1].update(table={"tickers": {"a": 1}, "clusters": [], "rows": 0}),
    lambda ev: ev["probe"]["apps"][0]["steps"][1].update(error=["x"]),
    lambda ev: ev["probe"]["apps"][1].update(tampered="no"),
])
def test_judge_caching_refuses_forged_or_malformed_probe_answers(mutate):
    verdict = judge_caching(_broken(mutate))
    assert isinstance(verdict, Verdict) and not verdict.passed


K_ACTIONS = [["k", 6], ["ticker", 4], ["k", 2]]


def k_app(k3=None, k6=None, k2=None, fits6=1):
    k3 = k3 or {"rows": 30, "tickers": TICKERS, "clusters": [str(i // 10) for i in range(30)]}
    k6 = k6 or {"rows": 30, "tickers": TICKERS, "clusters": [str(i // 5) for i in range(30)]}
    return app_result("app.py", [step("start", None, 3, 1, 1, k3), step("k", 6, 6, 0, fits6, k6),
                                 step("ticker", 4, 6, 0, 0, k6), step("k", 2, 2, 0, 1, k2 or table(2))])


def k_evidence(app=None, **extra):
    return evidence(["app.py"], [K_ACTIONS], [app or k_app()], **extra)


def test_judge_k_change_passes_and_reports_the_change():
    verdict = judge_k_change(k_evidence())
    assert verdict.passed and "largest 10 -> 5" in verdict.message and "6 clusters" in verdict.message


@pytest.mark.parametrize(("app", "message"), [
    (k_app(k6={"rows": 30, "tickers": TICKERS, "clusters": ["0"] * 10 + [str(1 + i % 5) for i in range(20)]}),
     "largest cluster did not shrink"),
    (k_app(k6=table(3)), "shows 3 clusters after setting k to 6"),
    (k_app(k2=table(6)), "shows 6 clusters after setting k to 2"),
    (k_app(fits6=0), "did not fit KMeans"),
    (k_app(k6={"rows": 29, "tickers": TICKERS[:29], "clusters": ["0"] * 29}), "29 rows"),
    (k_app(k6={"rows": 30, "tickers": ["T0"] * 30, "clusters": [str(i % 6) for i in range(30)]}), "repeats tickers"),
    (k_app(k2={"rows": 30, "tickers": [f"X{i}" for i in range(30)], "clusters": [str(i % 2) for i in range(30)]}),
     "different tickers"),
])
def test_judge_k_change_fails_tables_that_do_not_follow_k(app, message):
    verdict = judge_k_change(k_evidence(app))
    assert not verdict.passed and message in verdict.message, verdict.message


def test_judge_k_change_fails_an_app_without_a_table():
    app = k_app()
    app["steps"][1]["table"] = None
    verdict = judge_k_change(k_evidence(app))
    assert not verdict.passed and "no cluster table" in verdict.message


# ------------------------------------------------------------- the Space folder
def test_requirement_names_drop_versions_extras_and_comments():
    text = "# deps\nstreamlit>=1.30\nscikit_learn==1.6.1  # ML\nPandas[performance]\n-r other.txt\n\nmatplotlib ; python_version>'3'\n"
    assert requirement_names(text) == {"streamlit", "scikit-learn", "pandas", "matplotlib"}


def test_third_party_imports_skip_stdlib_and_relative():
    source = "import os, json\nimport numpy as np\nfrom sklearn.cluster import KMeans\nfrom . import local\nimport matplotlib.pyplot\n"
    assert third_party_imports(source) == {"numpy", "sklearn", "matplotlib"}


def test_front_matter_needs_a_closed_block_at_the_top():
    assert front_matter("---\ntitle: X\nsdk: streamlit\n---\n# hi")["sdk"] == "streamlit"
    assert front_matter("# hi\n---\nsdk: streamlit\n---") == {}
    assert front_matter("---\nsdk: streamlit\n") == {}


SPACE_ACTIONS = [["k", 5], ["ticker", 3]]
README = "---\ntitle: Clusters\nsdk: streamlit\napp_file: app.py\n---\n# Clusters\n"
APP_SOURCE = "import matplotlib\nimport numpy as np\nimport pandas as pd\nimport streamlit as st\nfrom sklearn.cluster import KMeans\n"


def space_evidence(**changes):
    run = app_result("stock_cluster_space/app.py", [step("start", None, 3, 1, 1), step("k", 5, 5, 0, 1),
                                                    step("ticker", 3, 5, 0, 0)])
    ev = evidence(["stock_cluster_space/app.py"], [SPACE_ACTIONS], [run])
    ev.update(folder="stock_cluster_space", files=["README.md", "app.py", "requirements.txt", "returns.csv"],
              readme=README, requirements="streamlit\nscikit-learn\npandas\nnumpy\nmatplotlib\n", app_source=APP_SOURCE)
    ev.update(changes)
    return ev


def test_judge_space_passes_a_complete_folder():
    verdict = judge_space(space_evidence())
    assert verdict.passed and "sdk: streamlit" in verdict.message


@pytest.mark.parametrize(("changes", "message"), [
    ({"requirements": "streamlit\nscikit-learn\npandas\nnumpy\n"}, "matplotlib"),
    ({"requirements": "streamlit\nsklearn\npandas\nnumpy\nmatplotlib\n"}, "scikit-learn"),
    ({"readme": README.replace("sdk: streamlit", "sdk: gradio")}, "sdk: streamlit"),
    ({"readme": README.replace("app_file: app.py", "app_file: main.py")}, "main.py"),
    ({"readme": "# Clusters\n"}, "front matter"),
    ({"files": ["app.py", "requirements.txt"], "readme": None}, "has no README.md"),
    ({"files": []}, "does not exist"),
    ({"app_source": "def broken(:\n"}, "not valid Python"),
    ({"app_source": "(" * 200_000}, "not valid Python"),
    ({"readme": 42}, "could not be read"),
])
def test_judge_space_fails_incomplete_folders(changes, message):
    verdict = judge_space(space_evidence(**changes))
    assert not verdict.passed and message in verdict.message, verdict.message


def test_judge_space_fails_when_its_app_does_not_run():
    ev = space_evidence()
    ev["probe"]["apps"][0]["steps"] = [step("start", None, None, 0, 0, error="FileNotFoundError: returns.csv")]
    verdict = judge_space(ev)
    assert not verdict.passed and "raised on the first run" in verdict.message and "FileNotFoundError" in verdict.message


def test_assess_space_files_reads_only_the_evidence():
    assess_space_files(space_evidence())  # no exception: complete


# ------------------------------------------------------------- collect without the files
def test_collects_skip_the_probe_when_the_apps_do_not_exist(tmp_path):
    session = FakeSession({}, run_dir=tmp_path)
    session.probe = lambda *a, **k: pytest.fail("no probe without the app files")
    for checkpoint in CHECKPOINTS:
        ev = checkpoint.collect(session)
        assert ev["missing"] and "probe" not in ev
        verdict = checkpoint.judge(ev)
        assert not verdict.passed and "does not exist" in verdict.message


# ------------------------------------------------------------- broken apps through the real probe
HEADER = '''
from pathlib import Path
import pandas as pd
import streamlit as st
from sklearn.cluster import KMeans
DATA = Path(__file__).resolve().parent / "returns.csv"
'''

CACHED_FUNCTIONS = '''
@st.cache_data
def load(path):
    return pd.read_csv(path, index_col=0)

@st.cache_data
def cluster(returns, k):
    return KMeans(n_clusters=k, n_init=3, random_state=0).fit_predict(returns.T.to_numpy())
'''

PLAIN_FUNCTIONS = CACHED_FUNCTIONS.replace("@st.cache_data\n", "")

PAGE = '''
returns = load(DATA)
k = st.slider("Number of clusters", 2, 8, 3, key="k")
ticker = st.selectbox("Ticker", list(returns.columns), key="ticker")
labels = cluster(returns, k)
st.dataframe(pd.DataFrame({"ticker": returns.columns, "cluster": labels}), hide_index=True)
'''

GOOD_APP = HEADER + CACHED_FUNCTIONS + PAGE
FORGED = json.dumps({"nonce": None, "apps": []})
APPS = {
    "good.py": GOOD_APP,
    "uncached.py": HEADER + PLAIN_FUNCTIONS + PAGE,
    "half.py": HEADER + CACHED_FUNCTIONS.replace("@st.cache_data\ndef cluster", "def cluster") + PAGE,
    "sneaky.py": "import pandas\n_read = pandas.read_csv\npandas.read_csv = lambda *a, **k: _read(*a, **k)\n" + GOOD_APP,
    "ignores_k.py": GOOD_APP.replace("KMeans(n_clusters=k", "KMeans(n_clusters=3"),
    "no_table.py": GOOD_APP.replace(
        'st.dataframe(pd.DataFrame({"ticker": returns.columns, "cluster": labels}), hide_index=True)',
        "st.write(list(labels))"),
    "default4.py": GOOD_APP.replace('2, 8, 3, key="k"', '2, 8, 4, key="k"'),
    "broken.py": "raise NotImplementedError('write the app')\n",
    "forger.py": f"import os, sys\nprint({FORGED!r})\nsys.__stdout__.write({FORGED!r} + '\\n')\n"
                 f"sys.__stdout__.flush()\nos.write(1, ({FORGED!r} + '\\n').encode())\n" + GOOD_APP,
}
RUNS = [  # (app, actions) in the order the single probe process drives them
    ("uncached.py", SLOW_ACTIONS), ("good.py", CACHED_ACTIONS), ("uncached.py", CACHED_ACTIONS),
    ("half.py", CACHED_ACTIONS), ("sneaky.py", CACHED_ACTIONS), ("good.py", CACHED_ACTIONS),
    ("forger.py", CACHED_ACTIONS), ("broken.py", CACHED_ACTIONS), ("good.py", K_ACTIONS),
    ("ignores_k.py", K_ACTIONS), ("no_table.py", K_ACTIONS), ("default4.py", K_ACTIONS), ("absent.py", []),
]


def write_returns(folder: Path) -> None:
    """30 tickers in 5 sectors of 6, 60 days, standardized: clusters are well defined."""
    rng = np.random.default_rng(0)
    sectors = rng.normal(size=(5, 60))
    data = np.repeat(sectors, 6, axis=0) + 0.6 * rng.normal(size=(30, 60)) + rng.normal(size=60)
    frame = pd.DataFrame(data.T, columns=[f"S{i // 6}T{i % 6}" for i in range(30)])
    ((frame - frame.mean()) / frame.std()).to_csv(folder / "returns.csv")


@pytest.fixture(scope="module")
def probed(tmp_path_factory):
    """Every app of RUNS through the real probe, in one process: (answer, {(app, index): result})."""
    folder = tmp_path_factory.mktemp("colab_b_apps")
    write_returns(folder)
    for name, source in APPS.items():
        (folder / name).write_text(source)
    payload = {"nonce": "n-42", "apps": [{"path": name, "actions": actions, "timeout": 60} for name, actions in RUNS]}
    answer = FakeSession(run_dir=folder).probe("colab_b_apptest", payload, timeout=170, writable=True)
    return answer, folder


def probed_evidence(probed, *indices):
    answer, _ = probed
    results = [answer["apps"][i] for i in indices]
    return evidence([RUNS[i][0] for i in indices], [RUNS[i][1] for i in indices], results, nonce="n-42")


def test_probe_answers_for_every_app_and_is_not_fooled_by_printed_answers(probed):
    answer, _ = probed
    assert answer["nonce"] == "n-42" and len(answer["apps"]) == len(RUNS)
    assert [a["path"] for a in answer["apps"]] == [name for name, _ in RUNS]
    forger = answer["apps"][6]
    assert not forger["tampered"] and len(forger["steps"]) == len(CACHED_ACTIONS) + 1


def test_probe_reports_the_apps_own_options_and_the_picked_ticker(probed):
    answer, _ = probed
    good = answer["apps"][1]
    assert good["options"] == [f"S{i // 6}T{i % 6}" for i in range(30)]
    picked = good["steps"][1]
    assert picked["action"] == ["ticker", 5] and picked["chosen"] == good["options"][5] == picked["ticker"]


def test_real_probe_good_cached_app_passes_even_after_a_tampering_app(probed):
    for good in (1, 5):  # before and after sneaky.py: the counters are reinstalled
        verdict = judge_caching(probed_evidence(probed, good, 0))
        assert verdict.passed, verdict.message
    assert judge_k_change(probed_evidence(probed, 8)).passed


@pytest.mark.parametrize(("indices", "message"), [
    ((2, 0), "loaded the data 4 times over 4 reruns"),
    ((3, 0), "refitted K-Means on picking ticker"),
    ((4, 0), "replaced pandas.read_csv or KMeans.fit"),
    ((7, 0), "raised on the first run"),
    ((1, 1), "reruns skipped one of them"),
])
def test_real_probe_caching_failures(probed, indices, message):
    verdict = judge_caching(probed_evidence(probed, *indices))
    assert not verdict.passed and message in verdict.message, verdict.message


@pytest.mark.parametrize(("index", "message"), [
    (9, "shows 3 clusters after setting k to 6"),
    (10, "no cluster table"),
    (11, "starts with k="),
    (12, "does not exist"),
])
def test_real_probe_k_change_failures(probed, index, message):
    verdict = judge_k_change(probed_evidence(probed, index))
    assert not verdict.passed and message in verdict.message, verdict.message


def test_an_app_that_ends_the_probe_early_gets_no_verdict_it_wrote(tmp_path):
    write_returns(tmp_path)
    forged = {"nonce": None, "apps": [{"path": "app.py"}, {"path": "app_slow.py"}]}
    exit_early = f"import os\nos.write(1, ({json.dumps(forged)!r} + '\\n').encode())\nos._exit(0)\n"
    (tmp_path / "app.py").write_text(exit_early)
    (tmp_path / "app_slow.py").write_text(HEADER + PLAIN_FUNCTIONS + PAGE)
    checkpoint = BY_ID["cp_b_caching"]
    ev = checkpoint.collect(FakeSession({}, run_dir=tmp_path))
    verdict = checkpoint.judge(ev)
    assert not verdict.passed and "error" in ev, ev
