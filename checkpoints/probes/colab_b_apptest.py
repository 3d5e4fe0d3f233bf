"""Grader probe for Colab B: drive Streamlit apps of the run folder with AppTest, and count.

Run by the grader as ``python -I colab_b_apptest.py`` in a fresh sandbox whose working
directory is (a throwaway copy of) the student's run folder, and kept for the execution's
later checkpoints (``probe_protocol``: the folder is copied afresh for every request, and
the modules imported from it are forgotten); it imports only installed packages and its
protocol helper. One request's payload::

    {"nonce": "...", "apps": [{"path": "app.py", "actions": [["k", 6], ["ticker", 4]], "timeout": 60}]}

For each app, in order, the probe clears Streamlit's caches (they live as long as the
process: without the clear, a second app would start warm), runs the script once
("start"), then applies each action and reruns: ``["k", value]`` moves the k slider,
``["ticker", i]`` picks option ``i`` (modulo their number) of the ticker selectbox. Every
app gets a fresh ``AppTest``.

It counts the calls the app makes to ``pandas.read_csv`` (data loads) and
``sklearn.cluster.KMeans.fit`` (fits; ``fit_predict`` goes through ``fit``) by wrapping those
library functions in this process, reads the cluster table (an ``st.dataframe`` or
``st.table`` with ``ticker`` and ``cluster`` columns) and the widgets' values after every
rerun, and answers one JSON object (observations only: it never judges). Whatever the apps
print goes to stderr.
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings

STARTED = time.perf_counter()
os.environ.setdefault("MPLBACKEND", "Agg")  # before anything imports matplotlib: no display
warnings.filterwarnings("ignore")

MAX_TEXT = 400
MAX_ROWS = 500
MAX_OPTIONS = 200


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from probe_protocol import private_channels, serve  # noqa: E402

CHANNELS = private_channels()  # before any app can print or read stdin

import pandas  # noqa: E402
import pandas.io.parsers  # noqa: E402
import streamlit as st  # noqa: E402
from sklearn.cluster import KMeans  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

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


def text(value, limit: int = MAX_TEXT) -> str:
    value = str(value)
    return value if len(value) <= limit else value[: limit - 1] + "…"


def plain(value):
    """A widget value as JSON data: int, finite float, or text."""
    if isinstance(value, bool) or value is None:
        return value
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            value = value.item()
        except Exception:
            return text(value, 60)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else text(value, 60)
    return text(value, 60)


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
                "rows": int(len(frame)),
                "tickers": [text(t, 60) for t in list(frame[columns["ticker"]])[:MAX_ROWS]],
                "clusters": [text(c, 60) for c in list(frame[columns["cluster"]])[:MAX_ROWS]],
            }
    return None


def _exception_text(at) -> str | None:
    if not len(at.exception):
        return None
    proto = at.exception[0].proto
    message = f"{proto.type}: {proto.message}".strip(": ")
    return text(message or "the app raised an exception")


def run_app(spec: dict) -> dict:
    """Drive one app through its actions; per rerun: counts, seconds, widgets, the table."""
    name = str(spec["path"])
    path = os.path.abspath(name)
    if not os.path.isfile(path):
        return {"path": name, "missing": True, "steps": [], "options": [], "error": None, "tampered": False}
    os.chdir(os.path.dirname(path))  # relative data paths resolve next to the app
    st.cache_data.clear()
    st.cache_resource.clear()
    at = AppTest.from_file(path, default_timeout=float(spec.get("timeout", 60)))

    steps, options = [], []
    for kind, value in [["start", None]] + list(spec.get("actions", [])):
        loads, fits = COUNTS["loads"], COUNTS["fits"]
        error, chosen = None, value
        started = time.perf_counter()
        try:
            if kind == "k":
                slider = _pick(at.slider, "k")
                if slider is None:
                    raise LookupError("no k slider found (use one st.slider with key='k')")
                slider.set_value(value)
            elif kind == "ticker":
                box = _pick(at.selectbox, "ticker")
                if box is None or not len(box.options):
                    raise LookupError("no ticker selectbox found (use st.selectbox with key='ticker')")
                choice = box.options[int(value) % len(box.options)]
                chosen = plain(choice)
                box.set_value(choice)
            at.run()
        except Exception as exc:  # a timeout or a missing widget: report, do not crash
            error = text(f"{type(exc).__name__}: {exc}")
        seconds = time.perf_counter() - started
        error = error or _exception_text(at)
        slider = box = None
        if error is None:
            slider, box = _pick(at.slider, "k"), _pick(at.selectbox, "ticker")
            if not options and box is not None:
                options = [text(o, 60) for o in list(box.options)[:MAX_OPTIONS]]
        steps.append({
            "action": [kind, value],
            "chosen": chosen,
            "k": plain(slider.value) if slider is not None else None,
            "ticker": plain(box.value) if box is not None else None,
            "loads": COUNTS["loads"] - loads,
            "fits": COUNTS["fits"] - fits,
            "seconds": round(seconds, 4),
            "error": error,
            "table": read_cluster_table(at) if error is None else None,
        })
        if error is not None:
            break
    return {"path": name, "missing": False, "steps": steps, "options": options, "error": None,
            "tampered": not counters_intact()}


IMPORTED = time.perf_counter() - STARTED


def run_apps(payload: dict) -> dict:
    """One request: every app of the payload, in order, each in a fresh AppTest."""
    home = os.getcwd()
    started_request = time.perf_counter()
    install_counters()
    results = []
    for spec in payload["apps"]:
        started = time.perf_counter()
        try:
            result = run_app(spec)
        except Exception as exc:  # AppTest itself failed on this file
            result = {"path": str(spec.get("path")), "missing": False, "steps": [], "options": [],
                      "error": text(f"{type(exc).__name__}: {exc}"), "tampered": not counters_intact()}
        result["seconds"] = round(time.perf_counter() - started, 3)
        results.append(result)
        os.chdir(home)
        install_counters()  # a tampering app must not spoil the next app's counts
    return {"nonce": payload.get("nonce"), "apps": results, "import_seconds": round(IMPORTED, 3),
            "seconds": round(time.perf_counter() - started_request, 3)}


def main() -> None:
    serve(run_apps, *CHANNELS)


if __name__ == "__main__":
    main()
