"""bench/: the smoke run end to end, and the pieces that turn a notebook into a bare script
and read the lesson figures. Behaviour and structure only: no wall-clock thresholds."""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from bench.figures import FIGURES, REQUIRED_NAMES
from bench.report import median_figures
from bench.script import FIGURES_MARKER, bare_script, figures_cell_source, read_figures, teaching_notebook

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "quick.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out", str(out)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "headless / bare" in proc.stdout  # the table was printed
    return json.loads(out.read_text())


def test_quick_run_writes_every_section(quick_results):
    r = quick_results
    assert r["quick"] is True
    for key in ("date", "machine", "params", "method", "notebooks", "figures", "grading", "scaling", "classscale",
                "duration_s"):
        assert key in r, key
    (name,) = r["notebooks"]
    nb = r["notebooks"][name]
    assert nb["problems"] == []
    assert all(_positive(nb[k]) for k in ("headless_s", "bare_s", "ratio"))
    assert len(nb["runs"]) == r["params"]["repeat"] == 1


def test_quick_run_grades_every_copy_to_full_marks_with_both_graders(quick_results):
    g = quick_results["grading"]
    n, workers = g["n"], g["workers"]
    for key in ("autograde_w1", f"autograde_w{workers}", "nbgrader"):
        batch = g[key]
        assert batch["n"] == n and batch["full_marks"] == n, (key, batch)
        assert _positive(batch["wall_s"]) and _positive(batch["per_minute"])
    assert len(g["autograde_w1"]["execution_s"]) == n
    assert all(_positive(x) for x in g["autograde_w1"]["execution_s"])
    assert _positive(g["ratio_w1_vs_nbgrader"]) and _positive(g["ratio_parallel_vs_nbgrader"])
    assert _positive(g["overhead_in_worker_s"])


def test_quick_run_class_scale_grades_a_mixed_class_with_phases(quick_results):
    data = quick_results["classscale"]
    (point,) = data["points"]
    assert point["students"] == 2 and point["statuses"] == {"graded": 2}  # a perfect and a blank student
    (notebook,) = point["notebooks"].values()
    assert notebook["executions"] == 2
    phases = notebook["phases_s"]
    assert set(phases) == {"kernel_start", "scan", "imports", "model_loads", "student_cells", "hidden_checks",
                           "reports"}
    assert _positive(phases["kernel_start"]) and _positive(phases["student_cells"]) and _positive(phases["reports"])
    # The split of a student's seconds adds up the phases: the notebooks' own work and the grader's.
    own = sum(phases[k] for k in ("kernel_start", "imports", "model_loads", "student_cells"))
    assert abs(point["notebook_work_s_per_student"] * 2 - own) < 0.1  # phases are rounded to 0.01 s
    assert _positive(point["grading_work_s_per_student"])
    assert 0 < point["machine_busy_share"] <= 1.0 and _positive(point["machine_cpu_s_per_student"])


def test_quick_run_scaling_and_figures(quick_results):
    s = quick_results["scaling"]
    assert [p["n"] for p in s["points"]] == quick_results["params"]["scaling"]
    assert all(_positive(p["wall_s"]) and p["full_marks"] == p["n"] for p in s["points"])
    assert set(s["fit"]) == {"intercept_s", "slope_s_per_submission", "r2"}
    figures = quick_results["figures"]["bench_mini"]
    assert figures["n_fits"] == 50 and _positive(figures["refit_vs_reuse"])


def test_bare_script_runs_magics_in_plain_python_without_hidden_tests(tmp_path):
    source = new_notebook(cells=[
        new_code_cell("%%writefile app.py\nprint('hello')\n"),
        new_code_cell("x = 41\nx + 1"),  # a trailing expression: evaluated, not displayed
        new_code_cell("# hidden\n### BEGIN HIDDEN TESTS\nraise SystemExit(3)\n### END HIDDEN TESTS"),
        new_code_cell("open('done.txt', 'w').write(open('app.py').read())"),
    ])
    notebook = teaching_notebook(source)
    assert "HIDDEN" not in "".join(c.source for c in notebook.cells)
    script = tmp_path / "script.py"
    script.write_text(bare_script(notebook))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "done.txt").read_text() == "print('hello')\n"


def test_bare_script_refuses_a_magic_it_cannot_reproduce(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(bare_script(new_notebook(cells=[new_code_cell("%%bash\necho hi")])))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "no bare equivalent" in proc.stderr


def _run_figures_cell(expressions: dict[str, str], namespace: dict) -> dict:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        exec(figures_cell_source(expressions), dict(namespace))
    cell = new_code_cell("")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=buffer.getvalue())]
    assert buffer.getvalue().startswith(FIGURES_MARKER)
    return read_figures(new_notebook(cells=[cell]))


# Stand-ins with the shape each notebook gives these names.
FAKE_NAMESPACES = {
    "colab_a_fastapi": {"slow_median": 9.0, "fast_median": 3.0, "size_rows": [
        {"hidden layers": "(16, 8)", "artifact MiB": 0.03, "wrong-way median ms": 9.0, "x load-once median": 3.0}]},
    "colab_b_streamlit": {
        "slow_run": pd.DataFrame({"fits": [1] * 7, "loads": [1] * 7, "ms": [300.0] * 7}),
        "fast_run": pd.DataFrame({"fits": [1, 0, 1, 0, 0, 0, 0], "loads": [1] + [0] * 6, "ms": [100.0] * 7})},
    "colab_c_rag": {"chunks": [{"topic": "revenue"}] * 3 + [{"topic": "costs"}] * 17, "context_limit": 512,
                    "wrong_tokens": [1000, 1100], "fixed_tokens": [100, 110], "revenue_question": "q",
                    "top_k_chunks": lambda question, chunks, embeddings, k=3: chunks[:k],
                    "chunk_embeddings": None, "generator": None},
    "colab_d_mlops": {"holdout_metrics": {"accuracy": 0.73}, "realised_accuracy": 0.65, "promised_default_rate": 0.27,
                      "observed_default_rate": 0.54, "psi_by_window": {"weeks 12-13 (campaign)": {"debt_ratio": 1.4}},
                      "rebuild_and_restart_ms": 85.0, "rollback_ms": 7.0},
    "bench_mini": {"n_fits": 50, "slow_ms": 5.0, "fast_ms": 0.01},
}


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_figure_expressions_read_only_the_required_names(name):
    namespace = FAKE_NAMESPACES[name]
    assert set(namespace) == set(REQUIRED_NAMES[name])
    figures = _run_figures_cell(FIGURES[name], namespace)
    assert set(figures) == set(FIGURES[name])
    assert not [k for k, v in figures.items() if isinstance(v, dict) and "error" in v], figures


def test_a_missing_name_is_recorded_not_raised():
    figures = _run_figures_cell({"present": "1 + 1", "absent": "float(no_such_name)"}, {})
    assert figures["present"] == 2 and "NameError" in figures["absent"]["error"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_each_notebook_still_assigns_the_names_the_figures_read(path):
    from IPython.core.inputtransformer2 import TransformerManager

    assert path.stem in REQUIRED_NAMES, f"bench/figures.py defines no lesson figures for {path.stem}"
    assigned = set()
    transformer = TransformerManager()
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type != "code":
            continue
        for node in ast.parse(transformer.transform_cell(cell.source)).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                assigned.add(node.name)
            for sub in ast.walk(node) if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.For,
                                                             ast.With, ast.Try, ast.If)) else []:
                if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
                    assigned.add(sub.id)
    missing = set(REQUIRED_NAMES[path.stem]) - assigned
    assert not missing, f"{path.name} no longer assigns {sorted(missing)}: update bench/figures.py"


def test_median_figures_combines_repeats():
    runs = [{"x": 1.0, "label": "a", "sweep": [{"r": 1.0}, {"r": 10.0}]},
            {"x": 3.0, "label": "a", "sweep": [{"r": 2.0}, {"r": 30.0}]},
            {"x": 2.0, "label": "a", "sweep": [{"r": 3.0}, {"r": 20.0}]}]
    assert median_figures(runs) == {"x": 2.0, "label": "a", "sweep": [{"r": 2.0}, {"r": 20.0}]}
