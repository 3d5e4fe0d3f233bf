"""Checkpoints of Colab B (the Streamlit stock-cluster dashboard), judged outside the kernel.

Every behavioural check runs the student's app files (``app_slow.py``, ``app.py``,
``stock_cluster_space/app.py``) under Streamlit's ``AppTest``. That is student code, so it
runs only in the grader's probe ``checkpoints/probes/colab_b_apptest.py``: a sandbox of its
own, kept for the execution's three checkpoints, each request over a fresh copy of the run
folder as it is at that checkpoint, every app in a fresh ``AppTest`` with Streamlit's caches
cleared first. The probe only observes (data
loads, K-Means fits, widget values, the cluster table, exceptions as text); the judges
below decide, in the grader's process.

The sessions the probe drives (which widget moves, in which order) are held out: drawn in
``collect`` from ``session.rng`` within the app's documented ranges, and the judges derive
what a correct app must show from the session that was drawn.

The contract the notebook documents for the apps:
- data is read with ``pandas.read_csv`` (from ``returns.csv`` next to the app);
- clusters come from ``sklearn.cluster.KMeans`` (``fit`` or ``fit_predict``);
- one ``st.slider`` for k (key ``"k"``, 2..8, default 3) and one ``st.selectbox`` for the
  ticker (key ``"ticker"``);
- the cluster table is an ``st.dataframe`` (or ``st.table``) with ``ticker`` and ``cluster``
  columns, one row per ticker (30 tickers).

The notebook's apps get the table through ``fetch_returns``, a simulated market-data API that
waits ``MARKET_API_SECONDS`` (0.6 s) and then calls ``pandas.read_csv``: a load stays one
observable ``read_csv`` call, and the wait only makes the uncached app's reruns slower.
"""

from __future__ import annotations

import ast
import re
import sys
from collections import Counter

from checkpoints.interface import Checkpoint, Prediction, Unavailable, Verdict, quote

PROBE = "colab_b_apptest"
SLOW_APP = "app_slow.py"
FIXED_APP = "app.py"
SPACE_DIR = "stock_cluster_space"
SPACE_FILES = ("app.py", "requirements.txt", "README.md")

START_K = 3  # the slider's documented default
K_MIN, K_MAX = 2, 8  # the slider's documented range
N_TICKERS = 30
APP_TIMEOUT = 60  # seconds one AppTest rerun may take (the first one imports a lot)
MAX_TEXT_BYTES = 200_000

# The notebook's scripted session (its cell prints the same list): the prediction's truth
# is derived from it (7 reruns; k takes 3 distinct values: 3 at the start, 5, 7).
NOTEBOOK_SESSION = [["k", 5], ["ticker", "TECH5"], ["k", 7], ["ticker", "BANK4"], ["k", 5], ["ticker", "ENGY4"]]

# import name -> distribution name, for the requirements check
IMPORT_TO_DIST = {"sklearn": "scikit-learn", "PIL": "pillow", "yaml": "pyyaml", "cv2": "opencv-python"}
SPACE_REQUIRED = {"streamlit", "scikit-learn", "pandas", "matplotlib"}


class _Fail(Exception):
    """A judge's reason to fail, for the student."""


def _need(condition: bool, message: str) -> None:
    if not condition:
        raise _Fail(message)


UNREADABLE = "the check's run of your app gave data it could not read"


# ---------------------------------------------------------------- sessions (held out)
def expected_ks(actions: list) -> list[int]:
    """The slider's value after every rerun of a session (the start included)."""
    ks, k = [START_K], START_K
    for kind, value in actions:
        if kind == "k":
            k = value
        ks.append(k)
    return ks


def _new_k(rng, current: int, low: int = K_MIN, high: int = K_MAX) -> int:
    return rng.choice([v for v in range(low, high + 1) if v != current])


def _ticker(rng, current: int) -> int:
    """An index into the app's own ticker options (the probe maps it and reports the pick);
    never the option shown at start (index 0) nor the current one."""
    return rng.choice([i for i in range(1, N_TICKERS) if i != current])


def caching_session(rng, length: int = 5) -> list:
    """A session for the cached app with at least one ticker change, one new k and one move
    back to a k already fitted: the three cases the cache must tell apart."""
    for _ in range(200):
        actions, k, ticker = [], START_K, 0
        for _ in range(length):
            if rng.random() < 0.4:
                ticker = _ticker(rng, ticker)
                actions.append(["ticker", ticker])
            else:
                k = _new_k(rng, k)
                actions.append(["k", k])
        ks = expected_ks(actions)
        kinds = {kind for kind, _ in actions}
        revisits = [i for i in range(1, len(ks)) if actions[i - 1][0] == "k" and ks[i] in ks[:i]]
        fresh = [i for i in range(1, len(ks)) if ks[i] not in ks[:i]]
        if "ticker" in kinds and revisits and fresh:
            return actions
    return [["ticker", 5], ["k", 5], ["k", START_K]]  # not reached in practice


def slow_session(rng) -> list:
    """The uncached app only has to show that a ticker change and a k change both refit."""
    return [["ticker", _ticker(rng, 0)], ["k", _new_k(rng, START_K)]]


def k_change_session(rng) -> list:
    """Drag k up from 3 to 5..8 (the sectors separate there), then a ticker change and
    another k, in random order: the table must follow the slider throughout."""
    k_up = _new_k(rng, START_K, 5, K_MAX)
    rest = [["ticker", _ticker(rng, 0)], ["k", _new_k(rng, k_up)]]
    rng.shuffle(rest)
    return [["k", k_up], *rest]


def space_session(rng) -> list:
    rest = [["k", _new_k(rng, START_K)], ["ticker", _ticker(rng, 0)]]
    rng.shuffle(rest)
    return rest


def _describe(action: list, chosen=None) -> str:
    kind, value = action
    if kind == "start":
        return "the first run"
    if kind == "ticker":
        return f"picking ticker {quote(chosen) if chosen is not None else value}"
    return f"setting k to {value}"


# ---------------------------------------------------------------- collecting
def _exists(session, path: str) -> bool:
    return session.read_file(path, max_bytes=1) is not None


def _text(session, path: str) -> str | None:
    data = session.read_file(path, max_bytes=MAX_TEXT_BYTES)
    return None if data is None else data.decode("utf-8", errors="replace")


def _run_probe(session, apps: list[dict], timeout: float) -> dict:
    """One probe process for all ``apps``; the evidence part: the answer or the error."""
    nonce = f"{session.rng.getrandbits(64):016x}"
    payload = {"nonce": nonce, "apps": [{**app, "timeout": APP_TIMEOUT} for app in apps]}
    try:
        return {"nonce": nonce, "probe": session.probe(PROBE, payload, timeout=timeout, writable=True)}
    except Unavailable as exc:
        return {"nonce": nonce, "error": str(exc)}


def collect_caching(session) -> dict:
    actions = {FIXED_APP: caching_session(session.rng), SLOW_APP: slow_session(session.rng)}
    evidence = {"apps": [FIXED_APP, SLOW_APP], "actions": [actions[FIXED_APP], actions[SLOW_APP]],
                "missing": [name for name in (FIXED_APP, SLOW_APP) if not _exists(session, name)]}
    if evidence["missing"]:
        return evidence  # nothing to run: no probe
    evidence.update(_run_probe(session, [{"path": name, "actions": actions[name]} for name in evidence["apps"]],
                               timeout=170))
    return evidence


def collect_k_change(session) -> dict:
    actions = k_change_session(session.rng)
    evidence = {"apps": [FIXED_APP], "actions": [actions], "missing": [] if _exists(session, FIXED_APP) else [FIXED_APP]}
    if not evidence["missing"]:
        evidence.update(_run_probe(session, [{"path": FIXED_APP, "actions": actions}], timeout=120))
    return evidence


def collect_space(session) -> dict:
    app = f"{SPACE_DIR}/app.py"
    actions = space_session(session.rng)
    evidence = {
        "folder": SPACE_DIR,
        "files": session.list_files(SPACE_DIR)[:200],
        "readme": _text(session, f"{SPACE_DIR}/README.md"),
        "requirements": _text(session, f"{SPACE_DIR}/requirements.txt"),
        "app_source": _text(session, app),
        "apps": [app],
        "actions": [actions],
        "missing": [] if _exists(session, app) else [app],
    }
    if not evidence["missing"]:
        evidence.update(_run_probe(session, [{"path": app, "actions": actions}], timeout=120))
    return evidence


# ---------------------------------------------------------------- reading the probe's answer
def _int(value) -> bool:
    return type(value) is int


def _table(raw) -> dict | None:
    if raw is None:
        return None
    _need(type(raw) is dict, UNREADABLE)
    tickers, clusters, rows = raw.get("tickers"), raw.get("clusters"), raw.get("rows")
    _need(type(tickers) is list and type(clusters) is list and _int(rows), UNREADABLE)
    _need(all(type(t) is str for t in tickers) and all(type(c) is str for c in clusters), UNREADABLE)
    _need(len(tickers) == len(clusters) <= rows, UNREADABLE)
    return {"rows": rows, "tickers": tickers, "clusters": clusters}


def _step(raw) -> dict:
    _need(type(raw) is dict, UNREADABLE)
    action = raw.get("action")
    _need(type(action) is list and len(action) == 2 and type(action[0]) is str, UNREADABLE)
    _need(_int(raw.get("loads")) and _int(raw.get("fits")), UNREADABLE)
    _need(raw.get("error") is None or type(raw.get("error")) is str, UNREADABLE)
    _need(raw.get("k") is None or type(raw.get("k")) in (int, float, str), UNREADABLE)
    chosen = raw.get("chosen")
    _need(chosen is None or type(chosen) in (int, float, str), UNREADABLE)
    return {"action": action, "chosen": chosen, "k": raw.get("k"), "loads": raw["loads"], "fits": raw["fits"],
            "error": raw.get("error"), "table": _table(raw.get("table"))}


def _probe_apps(evidence: dict) -> list[dict]:
    """The probe's per-app observations, checked for shape and for the request's nonce."""
    names = evidence["apps"]
    missing = evidence.get("missing") or []
    _need(not missing, f"{', '.join(missing)} does not exist in the run folder: write it by running the cells "
                       "that create it (the check runs the file itself).")
    _need("error" not in evidence, f"the check could not run your app: {evidence.get('error')}")
    answer = evidence.get("probe")
    _need(type(answer) is dict and answer.get("nonce") == evidence.get("nonce"), UNREADABLE)
    apps = answer.get("apps")
    _need(type(apps) is list and len(apps) == len(names), UNREADABLE)
    checked = []
    for raw, name in zip(apps, names, strict=True):
        _need(type(raw) is dict and raw.get("path") == name, UNREADABLE)
        steps = raw.get("steps")
        _need(type(steps) is list, UNREADABLE)
        _need(raw.get("error") is None or type(raw.get("error")) is str, UNREADABLE)
        checked.append({"name": name, "missing": raw.get("missing") is True, "error": raw.get("error"),
                        "tampered": raw.get("tampered") is not False, "steps": [_step(s) for s in steps]})
    return checked


def check_run(app: dict, actions: list) -> list[dict]:
    """The app ran the whole session without an error, with intact counters, and its k
    slider followed the session; returns the steps (one per rerun)."""
    name = app["name"]
    _need(not app["missing"], f"{name} does not exist: write it by running the cells that create it.")
    _need(app["error"] is None, f"{name} could not be run: {quote(app['error'])}")
    for step in app["steps"]:
        if step["error"] is not None:
            raise _Fail(f"{name} raised on {_describe(step['action'], step['chosen'])}: {quote(step['error'])}")
    _need(not app["tampered"],
          f"{name} replaced pandas.read_csv or KMeans.fit while running; the check cannot count loads and fits. "
          "Remove that code from the app.")
    steps = app["steps"]
    _need(len(steps) == len(actions) + 1, UNREADABLE)
    for step, action in zip(steps[1:], actions, strict=True):
        _need(step["action"] == action, UNREADABLE)
    ks = expected_ks(actions)
    _need(steps[0]["k"] == START_K,
          f"{name} starts with k={quote(steps[0]['k'])}; the notebook's contract says the k slider "
          f"(key 'k', {K_MIN} to {K_MAX}) starts at {START_K}.")
    for step, k in zip(steps, ks, strict=True):
        _need(step["k"] == k,
              f"after {_describe(step['action'], step['chosen'])}, {name}'s k slider reads {quote(step['k'])}, "
              f"not {k}: use one st.slider with key='k', range {K_MIN} to {K_MAX}.")
    return steps


def _session_text(actions: list, steps: list[dict]) -> str:
    return ", ".join(_describe(action, step["chosen"]) for action, step in zip(actions, steps[1:], strict=True))


# ---------------------------------------------------------------- judges
def assess_slow(app: dict, actions: list) -> str:
    """The wrong way: every rerun loads the data and refits K-Means."""
    steps = check_run(app, actions)
    lazy = [s for s in steps if s["loads"] < 1 or s["fits"] < 1]
    _need(not lazy,
          f"{app['name']} should be the uncached app: it must read returns.csv with pandas.read_csv and fit "
          f"KMeans on every rerun, but {len(lazy)} of {len(steps)} reruns skipped one of them "
          f"(remove any caching from {app['name']}).")
    return (f"{app['name']}: {len(steps)} reruns, {sum(s['loads'] for s in steps)} loads, "
            f"{sum(s['fits'] for s in steps)} fits")


def assess_cached(app: dict, actions: list) -> str:
    """The fix: one load; one fit per distinct k; no refit for a ticker change or a seen k."""
    name = app["name"]
    steps = check_run(app, actions)
    loads = sum(s["loads"] for s in steps)
    _need(loads >= 1, f"{name} never read returns.csv with pandas.read_csv (the notebook's contract).")
    _need(loads == 1, f"{name} loaded the data {loads} times over {len(steps)} reruns; with @st.cache_data on "
                      "the loading function it loads once.")
    seen: set = set()
    for step, k in zip(steps, expected_ks(actions), strict=True):
        what = _describe(step["action"], step["chosen"])
        if k not in seen:
            _need(step["fits"] == 1,
                  f"{name} fitted K-Means {step['fits']} times on {what} (k={k} is new): a new k needs exactly "
                  "one fit, through a cached clustering function keyed by k.")
        else:
            reason = ("a ticker change does not change the clusters" if step["action"][0] == "ticker"
                      else f"k={k} was already fitted")
            _need(step["fits"] == 0,
                  f"{name} refitted K-Means on {what}, but {reason}: cache the clustering function with "
                  "@st.cache_data so it only runs for a k it has not seen.")
        seen.add(k)
    fits = sum(s["fits"] for s in steps)
    return f"{name}: {len(steps)} reruns ({_session_text(actions, steps)}), {loads} load, {fits} fits (one per distinct k)"


def judge_caching(evidence: dict) -> Verdict:
    try:
        fixed, slow = _probe_apps(evidence)
        fixed_actions, slow_actions = evidence["actions"]
        slow_summary = assess_slow(slow, slow_actions)
        fixed_summary = assess_cached(fixed, fixed_actions)
    except _Fail as failure:
        return Verdict.fail(str(failure))
    return Verdict.ok(f"{slow_summary}; {fixed_summary}")


def table_at(step: dict, name: str) -> dict[str, str]:
    table = step["table"]
    _need(table is not None,
          f"{name} shows no cluster table after {_describe(step['action'], step['chosen'])}: render "
          "st.dataframe(...) with columns 'ticker' and 'cluster' (one row per ticker), as the notebook's "
          "contract says.")
    _need(table["rows"] == N_TICKERS, f"{name}'s cluster table has {table['rows']} rows, not {N_TICKERS} tickers.")
    _need(len(set(table["tickers"])) == N_TICKERS, f"{name}'s cluster table repeats tickers.")
    return dict(zip(table["tickers"], table["clusters"], strict=True))


def check_tables_follow_k(app: dict, actions: list) -> list[dict[str, str]]:
    """After every rerun: a table of the same 30 tickers with exactly k clusters."""
    name = app["name"]
    steps = check_run(app, actions)
    tables = []
    for step, k in zip(steps, expected_ks(actions), strict=True):
        table = table_at(step, name)
        _need(not tables or set(table) == set(tables[0]),
              f"{name}: the table lists different tickers after {_describe(step['action'], step['chosen'])}.")
        shown = len(set(table.values()))
        _need(shown == k, f"{name} shows {shown} clusters after {_describe(step['action'], step['chosen'])} "
                          f"(k={k}): the table must follow the slider (cluster with the slider's k).")
        tables.append(table)
    return tables


def assess_k_change(app: dict, actions: list) -> str:
    """Moving k up from 3: k clusters, a smaller largest cluster, some tickers move; and
    the table keeps following the slider afterwards."""
    name = app["name"]
    tables = check_tables_follow_k(app, actions)
    steps = check_run(app, actions)
    k_up = actions[0][1]
    before, after = tables[0], tables[1]
    _need(steps[1]["fits"] >= 1, f"{name} did not fit KMeans when k moved to {k_up}: the table must come from a fit.")
    largest_before = max(Counter(before.values()).values())
    largest_after = max(Counter(after.values()).values())
    _need(largest_after < largest_before,
          f"{name}: the largest cluster did not shrink when k moved from {START_K} to {k_up} "
          f"({largest_before} -> {largest_after} tickers).")
    moved = sum(before[t] != after[t] for t in before)
    _need(moved >= 1, f"{name}: no ticker changed cluster between k={START_K} and k={k_up}.")
    return (f"k {START_K} -> {k_up}: {k_up} clusters, largest {largest_before} -> {largest_after} tickers, "
            f"{moved} tickers changed cluster; the table then followed {_session_text(actions[1:], steps[1:])}")


def judge_k_change(evidence: dict) -> Verdict:
    try:
        (app,) = _probe_apps(evidence)
        (actions,) = evidence["actions"]
        summary = assess_k_change(app, actions)
    except _Fail as failure:
        return Verdict.fail(str(failure))
    return Verdict.ok(summary)


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


def assess_space_files(evidence: dict) -> None:
    folder = evidence["folder"]
    files = evidence["files"]
    _need(type(files) is list and files, f"The Space folder {folder}/ does not exist or is empty.")
    for name in SPACE_FILES:
        _need(name in files, f"The Space folder {folder}/ has no {name}.")
    readme, requirements, source = evidence["readme"], evidence["requirements"], evidence["app_source"]
    _need(all(type(t) is str for t in (readme, requirements, source)), f"The Space folder {folder}/ could not be read.")
    meta = front_matter(readme)
    _need(bool(meta), "README.md must start with the Space front matter: a block between two '---' lines.")
    _need(meta.get("sdk") == "streamlit", "README.md's front matter must say sdk: streamlit.")
    _need(meta.get("app_file", "app.py") == "app.py",
          f"README.md's front matter names app_file: {quote(meta.get('app_file'), 60)}, but the app is app.py.")
    try:
        imports = third_party_imports(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise _Fail(f"{folder}/app.py is not valid Python.") from None
    listed = requirement_names(requirements)
    needed = SPACE_REQUIRED | {IMPORT_TO_DIST.get(n, n).lower() for n in imports}
    missing = sorted(needed - listed)
    _need(not missing, f"requirements.txt does not list {quote(', '.join(missing))}: the Space would not build or "
                       "would crash on import.")


def judge_space(evidence: dict) -> Verdict:
    """The Space folder is complete and its own app.py runs from inside it."""
    try:
        assess_space_files(evidence)
        (app,) = _probe_apps(evidence)
        (actions,) = evidence["actions"]
        steps = check_run(app, actions)
        check_tables_follow_k(app, actions)
    except _Fail as failure:
        return Verdict.fail(str(failure))
    return Verdict.ok(f"{evidence['folder']}/ holds app.py, requirements.txt, README.md (sdk: streamlit); its app "
                      f"runs from inside the folder ({_session_text(actions, steps)})")


# ---------------------------------------------------------------- predictions and declarations
# How much faster a median rerun of the cached app is than one of app_slow.py, as the
# notebook's choices: A under 1.5x, B 1.5x-3x, C 3x-30x, D over 30x. An uncached rerun pays
# the simulated API wait (0.6 s), a K-Means fit and the drawing of one small chart; the median
# cached rerun (4 of the 7 ask nothing new) pays the drawing and Streamlit's bookkeeping only:
# ratio = (600 ms + fit + draw) / draw. Measured here (2 shared cores): ~700 vs ~110 ms, about
# 6.4x. C holds for any machine whose cached rerun takes between ~25 ms (D: not reachable with
# a matplotlib chart) and ~300 ms (B: a CPU three times slower than this one), Colab's included.
SPEEDUP_CHOICE = "C"


def prediction_truths() -> dict:
    """The predictions' truths, derived from the notebook's scripted session where they can be:
    checkpoint_b1 = (fits by app_slow.py, fits by the cached app.py, the speed-up's choice)
    over that session."""
    seen = set(expected_ks([a for a in NOTEBOOK_SESSION if a[0] == "k"]))
    return {"checkpoint_b1": [len(NOTEBOOK_SESSION) + 1, len(seen), SPEEDUP_CHOICE], "checkpoint_b2": "B",
            "checkpoint_b3": "matplotlib"}


TRUTHS = prediction_truths()

# Grading runs shorten the notebook's simulated market-data wait (0.6 s a call in class): the
# caching lesson's figures shrink, no verdict depends on them, and each execution saves ~25 s.
KERNEL_ENV = {"MARKET_API_SECONDS": "0.05"}


CHECKPOINTS = [
    Checkpoint(
        id="cp_b_caching", collect=collect_caching, judge=judge_caching,
        prediction=Prediction("checkpoint_b1", accept=[TRUTHS["checkpoint_b1"]], points=0.5,
                              hint="count the reruns and the distinct values k takes; a cached rerun still draws the chart, "
                                   "an uncached one also waits for the API and fits"),
        description="app_slow.py refits on every rerun; app.py loads once and fits once per distinct k",
        timeout_s=180.0,
    ),
    Checkpoint(
        id="cp_b_k_change", collect=collect_k_change, judge=judge_k_change,
        prediction=Prediction("checkpoint_b2", accept=[TRUTHS["checkpoint_b2"]], points=0.5,
                              hint="compare the two cluster tables, and where the points sit in both scatters"),
        description="app.py's cluster table follows the k slider",
        timeout_s=150.0,
    ),
    Checkpoint(
        id="cp_b_space", collect=collect_space, judge=judge_space,
        prediction=Prediction("checkpoint_b3", accept=[TRUTHS["checkpoint_b3"]], points=0.5,
                              hint="which package does app.py import that none of the handout's three installs?"),
        description="the Space folder is complete and its app.py runs",
        timeout_s=150.0,
    ),
]
