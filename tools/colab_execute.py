"""Execute notebooks with autograde.runner.execute_notebook in THIS interpreter's environment
and print a JSON report. Run it with the Colab-pinned venv's python, so that the kernel (which
is `sys.executable`'s ipykernel) has Colab's package versions:

    PYTHONPATH=. .venv-colab/bin/python tools/colab_execute.py [--strict] [--out DIR] NB.ipynb ...

--strict      execute with allow_errors=False (stop at the first error)
--out DIR     also write each executed notebook there (to read the tracebacks)
--keep        keep each run's working directory (its path is in the report)
The report is one JSON object on the last line of stdout:
{"versions": {...}, "runs": [{"notebook", "status", "message", "reached_last_cell",
"errors": [{"cell", "ename", "evalue"}], "duration_s", "workdir"}]}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import nbformat

# The Colab-pinned venv does not install this package: the caller puts the repository on
# PYTHONPATH (tests/test_colab_env.py does).
from autograde.runner import execute_notebook

VERSIONED = ["torch", "transformers", "sentence-transformers", "scikit-learn", "fastapi", "pydantic",
             "uvicorn", "numpy", "pandas", "ipykernel", "ipython", "jupyter_client", "nbclient",
             "nbformat", "streamlit", "gradio"]


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _errors(nb) -> list[dict]:
    found = []
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                found.append({"cell": index, "ename": output.get("ename", ""), "evalue": output.get("evalue", "")[:500]})
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--strict", action="store_true")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--cell-timeout", type=float, default=300.0)
    parser.add_argument("--notebook-timeout", type=float, default=1200.0)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    runs = []
    for path in args.notebooks:
        result = execute_notebook(path, allow_errors=not args.strict, keep_workdir=args.keep,
                                  cell_timeout=args.cell_timeout, notebook_timeout=args.notebook_timeout)
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            nbformat.write(result.notebook, args.out / path.name)
        runs.append({
            "notebook": path.name,
            "status": result.status,
            "message": result.message,
            "reached_last_cell": result.reached_last_cell,
            "errors": _errors(result.notebook),
            "duration_s": round(result.duration_s, 1),
            "workdir": str(result.workdir) if result.workdir else None,
        })
    report = {"python": sys.executable, "versions": {n: _version(n) for n in VERSIONED}, "runs": runs}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
