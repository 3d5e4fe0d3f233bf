"""Where one execution's time went, by phase, for results.json and the class-scale bench.

Phases: ``kernel_start``, ``scan`` (the static scan), ``imports`` (cells that mostly import),
``model_loads`` (cells that load a model or an artifact), ``student_cells`` (every other cell
of the notebook), ``hidden_checks`` (collecting and judging checkpoints, and in-kernel test
cells), ``reports`` (the feedback page, rendered by the parent). Cell times come from
nbclient's timing metadata; a cell is classified by its code, so the split is an estimate
that is good enough to see where a batch's time goes.
"""

from __future__ import annotations

import ast
import datetime as dt
import re

MODEL_LOAD = re.compile(r"from_pretrained|SentenceTransformer\(|load_generator\(|load_embedder\(|joblib\.load|"
                        r"pickle\.load|load_verified_bundle\(")
PHASES = ("kernel_start", "scan", "imports", "model_loads", "student_cells", "hidden_checks", "reports")


def _seconds(cell) -> float:
    timing = cell.get("metadata", {}).get("execution", {})
    start, end = timing.get("iopub.execute_input") or timing.get("shell.execute_request"), \
        timing.get("shell.execute_reply")
    if not start or not end:
        return 0.0
    try:
        delta = dt.datetime.fromisoformat(end.replace("Z", "+00:00")) - \
            dt.datetime.fromisoformat(start.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    return max(delta.total_seconds(), 0.0)


def _mostly_imports(source: str) -> bool:
    try:
        body = ast.parse(source).body
    except SyntaxError:
        return False
    imports = sum(isinstance(node, ast.Import | ast.ImportFrom) for node in body)
    return bool(body) and imports * 2 >= len(body)


def classify(cell, test_ids: set[str]) -> str:
    grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
    if grade_id in test_ids or "autograde_injected" in cell.get("metadata", {}):  # the grader's own cells
        return "hidden_checks"
    source = cell.get("source", "")
    if MODEL_LOAD.search(source):
        return "model_loads"
    if _mostly_imports(source):
        return "imports"
    return "student_cells"


def breakdown(executed, test_ids: set[str], checkpoint_seconds: float, kernel_start_s: float,
              scan_s: float) -> dict[str, float]:
    """Seconds per phase of one execution (``reports`` is added by the parent)."""
    phases = dict.fromkeys(PHASES, 0.0)
    phases["kernel_start"], phases["scan"], phases["hidden_checks"] = kernel_start_s, scan_s, checkpoint_seconds
    for cell in executed.cells:
        if cell.get("cell_type") == "code":
            phases[classify(cell, test_ids)] += _seconds(cell)
    return {name: round(value, 3) for name, value in phases.items()}
