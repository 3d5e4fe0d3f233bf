"""Fresh-process probe for Colab B: drive a Streamlit ``app.py`` with AppTest and count.

Run as ``python -m checkpoints.colab_b_probe`` (through ``checkpoints.common.run_probe``) with
a JSON payload on stdin::

    {"apps": [{"path": "/abs/app.py", "actions": [["k", 6], ["ticker", 4]], "timeout": 60}]}

For each app, in order, the probe clears Streamlit's caches, runs the script once ("start"),
then applies each action and reruns: ``["k", value]`` moves the k slider, ``["ticker", i]``
picks option ``i`` of the ticker selectbox. It counts the calls the app makes to
``pandas.read_csv`` (data loads) and ``sklearn.cluster.KMeans.fit`` (fits; ``fit_predict``
goes through ``fit``) by wrapping those library functions inside this process, reads the
cluster table (an ``st.dataframe`` or ``st.table`` with ``ticker`` and ``cluster`` columns),
and prints one JSON object as its last stdout line. Nothing the notebook kernel does can
change what this process observes.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import warnings

# Set before anything imports matplotlib: no display in the probe.
os.environ.setdefault("MPLBACKEND", "Agg")
warnings.filterwarnings("ignore")

import pandas  # noqa: E402
import pandas.io.parsers  # noqa: E402
from sklearn.cluster import KMeans  # noqa: E402

COUNTS = {"loads": 0, "fits": 0}
_ORIGINAL_READ_CSV = pandas.read_csv
_ORIGINAL_FIT = KMeans.fit


def _counting_read_csv(*args, **kwargs):
    COUNTS["loads"] += 1
    return _ORIGINAL_READ_CSV(*args, **kwargs)


def _counting_fit(self, *args, **kwargs):
    COUNTS["fits"] += 1
    return _ORIGINAL_FIT(self, *args, **kwargs)


def install_counters() -> None:
    """Wrap the library functions every app must go through (the notebook's contract)."""
    pandas.read_csv = _counting_read_csv
    pandas.io.parsers.read_csv = _counting_read_csv
    pandas.io.parsers.readers.read_csv = _counting_read_csv
    KMeans.fit = _counting_fit


def counters_intact() -> bool:
    """False if the app replaced or restored the wrapped functions (the counts would lie)."""
    return (
        pandas.read_csv is _counting_read_csv
        and pandas.io.parsers.readers.read_csv is _counting_read_csv
        and KMeans.__dict__.get("fit") is _counting_fit
    )


def _pick(widgets, key: str):
    """The widget with ``key``; else the only widget of its kind; else None."""
    widgets = list(widgets)
    for widget in widgets:
        if widget.key == key:
            return widget
    return widgets[0] if len(widgets) == 1 else None


def read_cluster_table(at) -> dict | None:
    """Tickers and cluster labels from the first table that has both columns."""
    for element in list(at.dataframe) + list(at.table):
        try:
            frame = element.value
        except Exception:  # an element AppTest cannot parse is not the table
            continue
        if frame is None or not hasattr(frame, "columns"):
            continue
        columns = {str(c).strip().lower(): c for c in frame.columns}
        if "ticker" not in columns and str(frame.index.name).strip().lower() == "ticker":
            frame = frame.reset_index()
            columns = {str(c).strip().lower(): c for c in frame.columns}
        if "ticker" in columns and "cluster" in columns:
            return {
                "tickers": [str(t) for t in frame[columns["ticker"]]],
                "clusters": [str(c) for c in frame[columns["cluster"]]],
            }
    return None


def _exception_text(at) -> str | None:
    if not len(at.exception):
        return None
    proto = at.exception[0].proto
    text = f"{proto.type}: {proto.message}".strip(": ")
    return text or "the app raised an exception"


def run_app(spec: dict) -> dict:
    """Drive one app through its actions and record counts, time and the table per rerun."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    path = os.path.abspath(spec["path"])
    if not os.path.isfile(path):
        return {"path": path, "steps": [], "error": f"{os.path.basename(path)} does not exist"}
    os.chdir(os.path.dirname(path))  # relative data paths resolve next to the app
    st.cache_data.clear()
    st.cache_resource.clear()
    at = AppTest.from_file(path, default_timeout=float(spec.get("timeout", 60)))

    steps = []
    for kind, value in [["start", None]] + list(spec.get("actions", [])):
        loads, fits = COUNTS["loads"], COUNTS["fits"]
        error = None
        started = time.perf_counter()
        try:
            if kind == "k":
                slider = _pick(at.slider, "k")
                if slider is None:
                    raise LookupError("no k slider found (use one st.slider with key='k')")
                slider.set_value(value)
            elif kind == "ticker":
                box = _pick(at.selectbox, "ticker")
                if box is None:
                    raise LookupError("no ticker selectbox found (use st.selectbox with key='ticker')")
                value = box.options[int(value) % len(box.options)]
                box.set_value(value)
            at.run()
        except Exception as exc:  # a timeout or a missing widget: report, do not crash
            error = f"{type(exc).__name__}: {exc}"
        seconds = time.perf_counter() - started
        error = error or _exception_text(at)
        slider = _pick(at.slider, "k") if error is None else None
        steps.append(
            {
                "action": [kind, value],
                "k": slider.value if slider is not None else None,
                "loads": COUNTS["loads"] - loads,
                "fits": COUNTS["fits"] - fits,
                "seconds": round(seconds, 4),
                "error": error,
                "table": read_cluster_table(at) if error is None else None,
            }
        )
        if error is not None:
            break
    return {"path": path, "steps": steps, "error": None, "tampered": not counters_intact()}


def main() -> None:
    payload = json.loads(sys.stdin.read())
    install_counters()
    results = []
    # Whatever the apps print goes to stderr: stdout carries only the JSON answer.
    with contextlib.redirect_stdout(sys.stderr):
        for spec in payload["apps"]:
            results.append(run_app(spec))
            install_counters()  # a tampering app must not spoil the next app's counts
    print(json.dumps({"apps": results}))


if __name__ == "__main__":
    main()
