"""Unit tests of the Colab B verifiers (checkpoints/colab_b.py and its probe).

Small Streamlit apps are written to tmp_path: each verifier must pass on a correct app and
fail, with a message that names the problem, on a wrong one. The fixture apps skip the charts
so that every probe run stays short; no test asserts on wall-clock time.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from checkpoints import colab_b
from checkpoints.colab_b import (
    CheckpointFailed,
    assess_cached,
    assess_k_change,
    assess_slow,
    assess_space_files,
    check_caching,
    check_k_change,
    check_space,
    expected_answers,
    front_matter,
    normalise_answer,
    requirement_names,
    third_party_imports,
)

TRUTH = expected_answers()

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
SLOW_APP = HEADER + PLAIN_FUNCTIONS + PAGE


def write_returns(folder) -> None:
    """30 tickers in 5 sectors of 6, 60 days, standardized: clusters are well defined."""
    rng = np.random.default_rng(0)
    sectors = rng.normal(size=(5, 60))
    data = np.repeat(sectors, 6, axis=0) + 0.6 * rng.normal(size=(30, 60)) + rng.normal(size=60)
    frame = pd.DataFrame(data.T, columns=[f"S{i // 6}T{i % 6}" for i in range(30)])
    ((frame - frame.mean()) / frame.std()).to_csv(folder / "returns.csv")


@pytest.fixture
def workdir(tmp_path):
    write_returns(tmp_path)
    return tmp_path


def write_app(folder, name: str, source: str):
    path = folder / name
    path.write_text(source)
    return path


# ------------------------------------------------------------- pure helpers
def test_normalise_answer_is_case_space_and_sequence_insensitive():
    assert normalise_answer((9, 3)) == normalise_answer([9, 3]) == normalise_answer(" 9 ,3") == "9,3"
    assert normalise_answer(" b ") == "b"
    assert normalise_answer("MatPlotLib") == "matplotlib"
    assert normalise_answer((3, 9)) != normalise_answer((9, 3))


def test_expected_b1_follows_the_notebook_session():
    reruns, distinct_k = TRUTH["checkpoint_b1"]
    assert reruns == len(colab_b.NOTEBOOK_SESSION) + 1
    assert distinct_k == len({3} | {v for kind, v in colab_b.NOTEBOOK_SESSION if kind == "k"})


@pytest.mark.parametrize("answer", [None, ..., (9, 9), "A"])
def test_wrong_or_missing_prediction_fails_before_any_probe(answer, workdir):
    # No app files exist: a failure here can only come from the prediction.
    with pytest.raises(CheckpointFailed, match="checkpoint_b1"):
        check_caching(answer, slow_app=str(workdir / "none.py"), fixed_app=str(workdir / "none.py"))


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


def space_folder(folder, requirements="streamlit\nscikit-learn\npandas\nmatplotlib\n", readme_sdk="streamlit"):
    folder.mkdir(exist_ok=True)
    write_app(folder, "app.py", "import matplotlib\n" + GOOD_APP)
    write_returns(folder)
    (folder / "requirements.txt").write_text(requirements)
    (folder / "README.md").write_text(f"---\ntitle: Clusters\nsdk: {readme_sdk}\napp_file: app.py\n---\n# Clusters\n")
    return folder


def test_space_files_complete_pass(tmp_path):
    assess_space_files(space_folder(tmp_path / "space"))


def test_space_without_matplotlib_requirement_fails(tmp_path):
    folder = space_folder(tmp_path / "space", requirements="streamlit\nscikit-learn\npandas\n")
    with pytest.raises(CheckpointFailed, match="matplotlib"):
        assess_space_files(folder)


def test_space_with_wrong_sdk_fails(tmp_path):
    folder = space_folder(tmp_path / "space", readme_sdk="gradio")
    with pytest.raises(CheckpointFailed, match="sdk: streamlit"):
        assess_space_files(folder)


def test_space_without_readme_fails(tmp_path):
    folder = space_folder(tmp_path / "space")
    (folder / "README.md").unlink()
    with pytest.raises(CheckpointFailed, match="README.md"):
        assess_space_files(folder)


def step(kind, value, k, loads, fits, table=None):
    return {"action": [kind, value], "k": k, "loads": loads, "fits": fits, "seconds": 0.1, "error": None, "table": table}


def test_assess_slow_rejects_an_app_that_skips_a_fit():
    app = {"error": None, "tampered": False, "steps": [step("start", None, 3, 1, 1), step("ticker", "A", 3, 1, 0)]}
    with pytest.raises(CheckpointFailed, match="1 of 2 reruns"):
        assess_slow(app)


def test_assess_cached_rejects_a_refit_for_a_k_already_seen():
    app = {"error": None, "tampered": False, "steps": [
        step("start", None, 3, 1, 1), step("k", 5, 5, 0, 1), step("k", 3, 3, 0, 1)]}
    with pytest.raises(CheckpointFailed, match="k=3 was already fitted"):
        assess_cached(app)


def test_assess_cached_reports_the_exception_of_a_broken_app():
    app = {"error": None, "tampered": False, "steps": [
        {**step("start", None, None, 0, 0), "error": "NotImplementedError"}]}
    with pytest.raises(CheckpointFailed, match="raised on its first run: NotImplementedError"):
        assess_cached(app)


def test_assess_k_change_needs_a_smaller_largest_cluster():
    tickers = [f"T{i}" for i in range(30)]
    k3 = {"tickers": tickers, "clusters": [str(i % 3) for i in range(30)]}
    # six labels, but one cluster still holds 10 tickers, as large as before
    k6 = {"tickers": tickers, "clusters": ["0"] * 10 + [str(1 + i % 5) for i in range(20)]}
    app = {"error": None, "tampered": False, "steps": [step("start", None, 3, 1, 1, k3), step("k", 6, 6, 0, 1, k6)]}
    with pytest.raises(CheckpointFailed, match="largest cluster did not shrink"):
        assess_k_change(app)


# ------------------------------------------------------------- real probes (fresh processes)
def test_caching_passes_on_uncached_slow_and_cached_fixed_app(workdir, capsys):
    slow = write_app(workdir, "app_slow.py", SLOW_APP)
    fixed = write_app(workdir, "app.py", GOOD_APP)
    check_caching(TRUTH["checkpoint_b1"], slow_app=str(slow), fixed_app=str(fixed))
    out = capsys.readouterr()
    assert "passed" in out.out and "1 load" in out.out and out.err == ""


def test_caching_fails_when_the_fixed_app_is_uncached(workdir):
    slow = write_app(workdir, "app_slow.py", SLOW_APP)
    fixed = write_app(workdir, "app.py", SLOW_APP)
    reruns = len(colab_b.PROBE_SESSION) + 1
    with pytest.raises(CheckpointFailed, match=f"loaded the data {reruns} times over {reruns} reruns"):
        check_caching(TRUTH["checkpoint_b1"], slow_app=str(slow), fixed_app=str(fixed))


def test_caching_fails_when_only_loading_is_cached(workdir):
    slow = write_app(workdir, "app_slow.py", SLOW_APP)
    half = HEADER + CACHED_FUNCTIONS.replace("@st.cache_data\ndef cluster", "def cluster") + PAGE
    fixed = write_app(workdir, "app.py", half)
    with pytest.raises(CheckpointFailed, match="refitted K-Means on setting ticker"):
        check_caching(TRUTH["checkpoint_b1"], slow_app=str(slow), fixed_app=str(fixed))


def test_caching_flags_an_app_that_replaces_the_counted_functions(workdir):
    slow = write_app(workdir, "app_slow.py", SLOW_APP)
    sneaky = "import pandas\n_read = pandas.read_csv\npandas.read_csv = lambda *a, **k: _read(*a, **k)\n" + GOOD_APP
    fixed = write_app(workdir, "app.py", sneaky)
    with pytest.raises(CheckpointFailed, match="replaced pandas.read_csv or KMeans.fit"):
        check_caching(TRUTH["checkpoint_b1"], slow_app=str(slow), fixed_app=str(fixed))


def test_k_change_passes_on_a_correct_app(workdir, capsys):
    app = write_app(workdir, "app.py", GOOD_APP)
    check_k_change(TRUTH["checkpoint_b2"], app=str(app))
    assert "6 clusters" in capsys.readouterr().out


def test_k_change_fails_when_the_app_ignores_k(workdir):
    app = write_app(workdir, "app.py", GOOD_APP.replace("KMeans(n_clusters=k", "KMeans(n_clusters=3"))
    with pytest.raises(CheckpointFailed, match="3 clusters at k=6"):
        check_k_change(TRUTH["checkpoint_b2"], app=str(app))


def test_k_change_fails_without_a_cluster_table(workdir):
    no_table = GOOD_APP.replace(
        'st.dataframe(pd.DataFrame({"ticker": returns.columns, "cluster": labels}), hide_index=True)',
        "st.write(list(labels))",
    )
    assert no_table != GOOD_APP
    app = write_app(workdir, "app.py", no_table)
    with pytest.raises(CheckpointFailed, match="no cluster table"):
        check_k_change(TRUTH["checkpoint_b2"], app=str(app))


def test_space_passes_on_a_complete_folder(tmp_path, capsys):
    folder = space_folder(tmp_path / "space")
    check_space(TRUTH["checkpoint_b3"], space_dir=str(folder))
    assert "passed" in capsys.readouterr().out


def test_space_fails_when_its_app_cannot_find_the_data(tmp_path):
    folder = space_folder(tmp_path / "space")
    (folder / "returns.csv").unlink()
    with pytest.raises(CheckpointFailed, match="raised on its first run: FileNotFoundError"):
        check_space(TRUTH["checkpoint_b3"], space_dir=str(folder))
