"""A tiny course-shaped notebook for ``--quick``: the same nbgrader anatomy as the real ones
(an exercise with a solution block, a measured wrong way and fix, a locked hidden test cell,
judged in the kernel as plain nbgrader does), but it runs in about a second, so a smoke run of every
benchmark section fits in the test suite."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from autograde.assignment import nbgrader_metadata

MINI_NAME = "bench_mini"


def _meta(grade_id: str, **kinds) -> dict:
    return {"nbgrader": nbgrader_metadata(grade_id, **kinds)}


def mini_source() -> nbformat.NotebookNode:
    cells = [
        new_markdown_cell("# Bench mini notebook\nRefit on every call vs fit once."),
        new_code_cell("import time\n\nimport numpy as np\n\nrng = np.random.default_rng(0)\n"
                      "X = rng.normal(size=(400, 8))\ntrue_w = np.arange(1.0, 9.0)\n"
                      "y = X @ true_w + rng.normal(scale=0.01, size=400)"),
        new_code_cell("def fit(X, y):\n    ### BEGIN SOLUTION\n    return np.linalg.lstsq(X, y, rcond=None)[0]\n"
                      "    ### END SOLUTION", metadata=_meta("mini_fit", solution=True)),
        new_code_cell("def timed_ms(function, repeats):\n    started = time.perf_counter()\n"
                      "    for _ in range(repeats):\n        function()\n"
                      "    return (time.perf_counter() - started) * 1000\n\n\n"
                      "n_fits = 50\nslow_ms = timed_ms(lambda: fit(X, y), n_fits)  # the wrong way: refit per call\n"
                      "weights = fit(X, y)\nfast_ms = timed_ms(lambda: weights, n_fits)  # the fix: fit once\n"
                      "print(f'refit {slow_ms:.2f} ms vs reuse {fast_ms:.3f} ms')"),
        new_code_cell("# Hidden checkpoint: the fitted weights are the true ones.\n### BEGIN HIDDEN TESTS\n"
                      "assert np.allclose(weights, true_w, atol=0.01), 'fit does not recover the weights'\n"
                      "### END HIDDEN TESTS", metadata=_meta("cp_mini_fit", grade=True, locked=True, points=1)),
    ]
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def write_mini_source(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{MINI_NAME}.ipynb"
    nbformat.write(mini_source(), path)
    return path
