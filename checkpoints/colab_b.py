"""Hidden checkpoint verifiers for Colab B (the Streamlit stock-cluster dashboard).

Every behavioural check runs the student's written ``app.py`` (and ``app_slow.py``) under
``streamlit.testing.v1.AppTest`` in a fresh process (``checkpoints.colab_b_probe``), so
nothing rebound or patched inside the notebook kernel can make a check pass.

The contract the notebook documents for the apps:
- data is read with ``pandas.read_csv`` (from ``returns.csv`` next to the app);
- clusters come from ``sklearn.cluster.KMeans`` (``fit`` or ``fit_predict``);
- one ``st.slider`` for k (key ``"k"``, 2..8, default 3) and one ``st.selectbox`` for the
  ticker (key ``"ticker"``);
- the cluster table is an ``st.dataframe`` (or ``st.table``) with ``ticker`` and ``cluster``
  columns, one row per ticker.
"""

from __future__ import annotations

import ast
import re
import sys
from collections import Counter
from pathlib import Path

from checkpoints.common import CheckpointFailed, expect, normalise_answer, passed, run_probe

PROBE = "checkpoints.colab_b_probe"

# The notebook's scripted session (its cell prints the same list): 7 reruns, k takes the
# values 3 (start), 5, 7, 5, i.e. 3 distinct values.
NOTEBOOK_SESSION = [["k", 5], ["ticker", "TECH5"], ["k", 7], ["ticker", "BANK4"], ["k", 5], ["ticker", "ENGY4"]]

# The shorter session the hidden check drives: a ticker change, a new k, a k already seen.
PROBE_SESSION = [["ticker", 5], ["k", 5], ["k", 3]]
# The slow app only has to show that a ticker change and a k change both refit.
SLOW_PROBE_SESSION = [["ticker", 5], ["k", 5]]

# import name -> distribution name, for the requirements check
IMPORT_TO_DIST = {"sklearn": "scikit-learn", "PIL": "pillow", "yaml": "pyyaml", "cv2": "opencv-python"}
SPACE_REQUIRED = {"streamlit", "scikit-learn", "pandas", "matplotlib"}


# ---------------------------------------------------------------- predictions
def expected_answers() -> dict:
    """The truths, derived from the sessions above where they can be."""
    start_k = 3
    seen = {start_k} | {value for kind, value in NOTEBOOK_SESSION if kind == "k"}
    return {
        "checkpoint_b1": (len(NOTEBOOK_SESSION) + 1, len(seen)),
        "checkpoint_b2": "b",
        "checkpoint_b3": "matplotlib",
    }


def check_prediction(name: str, answer, hint: str) -> None:
    expect(
        answer is not None and answer is not Ellipsis,
        f"No prediction recorded: set {name} in its answer cell before running the check.",
    )
    truth = expected_answers()[name]
    expect(
        normalise_answer(answer) == normalise_answer(truth),
        f"Your recorded prediction {name} = {answer!r} does not match what the run shows. {hint}",
    )


# ---------------------------------------------------------------- probe helpers
def _probe(apps: list[dict], timeout: float = 180.0) -> list[dict]:
    """Run the apps, in order, in one fresh probe process (Streamlit's caches are cleared
    before each app, so the first app starts cold and no app sees another's cache)."""
    return run_probe(PROBE, {"apps": apps}, timeout=timeout)["apps"]


def _first_error(app: dict, name: str) -> None:
    expect(app.get("error") is None, f"{name}: {app.get('error')}")
    for step in app["steps"]:
        if step["error"]:
            kind, value = step["action"]
            when = "on its first run" if kind == "start" else f"after setting {kind} to {value!r}"
            raise CheckpointFailed(f"{name} raised {when}: {step['error']}")
    expect(
        not app.get("tampered"),
        f"{name} replaced pandas.read_csv or KMeans.fit while running; the check cannot count "
        "loads and fits. Remove that code from the app.",
    )


def assess_slow(app: dict, name: str = "app_slow.py") -> str:
    """The wrong way: every rerun loads the data and refits K-Means."""
    _first_error(app, name)
    steps = app["steps"]
    lazy = [s for s in steps if s["loads"] < 1 or s["fits"] < 1]
    expect(
        not lazy,
        f"{name} should be the uncached app: it must read returns.csv with pandas.read_csv and "
        f"fit KMeans on every rerun, but {len(lazy)} of {len(steps)} reruns skipped one of them "
        "(remove any caching from app_slow.py).",
    )
    return (
        f"{name}: {len(steps)} reruns, {sum(s['loads'] for s in steps)} loads, "
        f"{sum(s['fits'] for s in steps)} fits"
    )


def assess_cached(app: dict, name: str = "app.py") -> str:
    """The fix: one load; one fit per distinct k; no refit for a ticker change or a seen k."""
    _first_error(app, name)
    steps = app["steps"]
    loads = sum(s["loads"] for s in steps)
    expect(loads >= 1, f"{name} never read returns.csv with pandas.read_csv (the notebook's contract).")
    expect(
        loads == 1,
        f"{name} loaded the data {loads} times over {len(steps)} reruns; with @st.cache_data on "
        "the loading function it loads once.",
    )
    seen: set = set()
    for step in steps:
        kind, value = step["action"]
        new_k = step["k"] not in seen
        seen.add(step["k"])
        what = "the first run" if kind == "start" else f"setting {kind} to {value!r}"
        if new_k:
            expect(
                step["fits"] == 1,
                f"{name} fitted K-Means {step['fits']} times on {what} (k={step['k']} is new): "
                "a new k needs exactly one fit, through a cached clustering function keyed by k.",
            )
        else:
            reason = "a ticker change does not change the clusters" if kind == "ticker" else (
                f"k={step['k']} was already fitted")
            expect(
                step["fits"] == 0,
                f"{name} refitted K-Means on {what}, but {reason}: cache the clustering "
                "function with @st.cache_data so it only runs for a k it has not seen.",
            )
    return f"{name}: {len(steps)} reruns, {loads} load, {sum(s['fits'] for s in steps)} fits (one per distinct k)"


def _table_at(step: dict, name: str) -> dict:
    table = step["table"]
    expect(
        table is not None,
        f"{name} shows no cluster table: render st.dataframe(...) with columns 'ticker' and "
        "'cluster' (one row per ticker), as the notebook's contract says.",
    )
    expect(len(table["tickers"]) == 30, f"{name}'s cluster table has {len(table['tickers'])} rows, not 30 tickers.")
    expect(len(set(table["tickers"])) == 30, f"{name}'s cluster table repeats tickers.")
    return dict(zip(table["tickers"], table["clusters"]))


def assess_k_change(app: dict, name: str = "app.py") -> str:
    """Moving k from 3 to 6: six clusters, a smaller largest cluster, some tickers move."""
    _first_error(app, name)
    expect(app["steps"][0]["k"] == 3, f"{name} starts with k={app['steps'][0]['k']}; the contract says default 3.")
    by_k = {step["k"]: step for step in app["steps"]}
    expect(6 in by_k, f"{name}: the k slider could not be set to 6 (its range must be 2 to 8).")
    before = _table_at(by_k[3], name)
    after = _table_at(by_k[6], name)
    expect(
        len(set(before.values())) == 3,
        f"{name} shows {len(set(before.values()))} clusters at k=3: the table must follow the slider.",
    )
    expect(
        len(set(after.values())) == 6,
        f"{name} shows {len(set(after.values()))} clusters at k=6: cluster with the slider's k.",
    )
    expect(by_k[6]["fits"] >= 1, f"{name} did not fit KMeans when k moved to 6: the table must come from a fit.")
    largest_before = max(Counter(before.values()).values())
    largest_after = max(Counter(after.values()).values())
    expect(
        largest_after < largest_before,
        f"{name}: the largest cluster did not shrink ({largest_before} -> {largest_after} tickers).",
    )
    expect(set(before) == set(after), f"{name}: the table lists different tickers at k=3 and k=6.")
    moved = sum(before[t] != after[t] for t in before)
    expect(moved >= 1, f"{name}: no ticker changed cluster between k=3 and k=6.")
    return f"6 clusters, largest {largest_before} -> {largest_after} tickers, {moved} tickers changed colour"


# ---------------------------------------------------------------- Space folder
def third_party_imports(source: str) -> set[str]:
    """Top-level module names imported by ``source`` that are not in the standard library."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "__future__"}


def requirement_names(text: str) -> set[str]:
    """Distribution names in a requirements.txt (versions, extras, markers and comments dropped)."""
    names = set()
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line)
        if match:
            names.add(re.sub(r"[-_.]+", "-", match.group(0)).lower())
    return names


def front_matter(text: str) -> dict:
    """The ``key: value`` pairs of a README's leading ``---`` block (empty if there is none)."""
    lines = text.lstrip("\ufeff").splitlines()
    if not lines or lines[0].strip() != "---":
        return {}
    fields = {}
    for line in lines[1:]:
        if line.strip() == "---":
            return fields
        if ":" in line and not line.startswith((" ", "\t")):
            key, value = line.split(":", 1)
            fields[key.strip()] = value.strip().strip("\"'")
    return {}  # never closed: not valid front matter


def assess_space_files(space_dir: Path) -> None:
    expect(space_dir.is_dir(), f"The Space folder {space_dir} does not exist.")
    for name in ("app.py", "requirements.txt", "README.md"):
        expect((space_dir / name).is_file(), f"The Space folder has no {name}.")
    meta = front_matter((space_dir / "README.md").read_text(encoding="utf-8"))
    expect(meta, "README.md must start with the Space front matter: a block between two '---' lines.")
    expect(meta.get("sdk") == "streamlit", "README.md's front matter must say sdk: streamlit.")
    expect(
        meta.get("app_file", "app.py") == "app.py",
        f"README.md's front matter names app_file: {meta.get('app_file')}, but the app is app.py.",
    )
    listed = requirement_names((space_dir / "requirements.txt").read_text(encoding="utf-8"))
    imports = third_party_imports((space_dir / "app.py").read_text(encoding="utf-8"))
    needed = SPACE_REQUIRED | {IMPORT_TO_DIST.get(n, n).lower() for n in imports}
    missing = sorted(needed - listed)
    expect(not missing, f"requirements.txt does not list {', '.join(missing)}: the Space would not build or would crash on import.")


# ---------------------------------------------------------------- the checkpoints
def check_caching(prediction, slow_app: str = "app_slow.py", fixed_app: str = "app.py") -> None:
    """Checkpoint b1: the slow app refits every rerun; the cached app loads once and fits
    once per distinct k, never for a ticker change or a k it has seen."""
    check_prediction(
        "checkpoint_b1", prediction,
        "Count the reruns in the scripted session and the distinct values k takes.",
    )
    fixed, slow = _probe(
        [
            {"path": str(Path(fixed_app).resolve()), "actions": PROBE_SESSION, "timeout": 60},
            {"path": str(Path(slow_app).resolve()), "actions": SLOW_PROBE_SESSION, "timeout": 60},
        ]
    )
    slow_summary = assess_slow(slow, Path(slow_app).name)
    fixed_summary = assess_cached(fixed, Path(fixed_app).name)
    passed("b1 caching", f"{slow_summary}; {fixed_summary}")


def check_k_change(prediction, app: str = "app.py") -> None:
    """Checkpoint b2: dragging k from 3 to 6 gives six clusters, a smaller largest cluster and
    at least one ticker in a different cluster."""
    check_prediction(
        "checkpoint_b2", prediction,
        "Compare the two cluster tables printed above, and where the points sit in both scatters.",
    )
    (result,) = _probe([{"path": str(Path(app).resolve()), "actions": [["k", 6]], "timeout": 60}])
    summary = assess_k_change(result, Path(app).name)
    passed("b2 k 3 -> 6", summary)


def check_space(prediction, space_dir: str = "stock_cluster_space") -> None:
    """Checkpoint b3: the Space folder is complete and its app.py runs under AppTest."""
    check_prediction(
        "checkpoint_b3", prediction,
        "Which package does app.py import that none of streamlit, scikit-learn or pandas installs?",
    )
    folder = Path(space_dir).resolve()
    assess_space_files(folder)
    (result,) = _probe([{"path": str(folder / "app.py"), "actions": [], "timeout": 60}])
    _first_error(result, f"{folder.name}/app.py")
    _table_at(result["steps"][-1], f"{folder.name}/app.py")
    passed("b3 space", f"{folder.name}/ holds app.py, requirements.txt, README.md (sdk: streamlit); the app runs")
