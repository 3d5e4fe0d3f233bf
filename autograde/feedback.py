"""Per-student feedback HTML: the executed notebook, with a summary on top and every test
cell showing pass/fail and its student-facing message, never the hidden test source or a
traceback from inside it."""

from __future__ import annotations

import functools
import html
from pathlib import Path
from typing import TYPE_CHECKING

import nbformat
from nbconvert import HTMLExporter

if TYPE_CHECKING:
    from autograde.assignment import NotebookSpec
    from autograde.worker import NotebookResult


@functools.lru_cache(maxsize=1)
def _exporter() -> HTMLExporter:
    exporter = HTMLExporter(template_name="lab")
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    return exporter


def feedback_notebook(executed: nbformat.NotebookNode, spec: NotebookSpec, result: NotebookResult):
    nb = nbformat.from_dict(executed)
    by_id = {c.grade_id: c for c in result.checkpoints}
    for cell in nb.cells:
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        cell_spec = spec.cells.get(grade_id) if grade_id else None
        if cell_spec is None or not cell_spec.graded or cell_spec.solution or cell.cell_type != "code":
            continue
        checkpoint = by_id.get(grade_id)
        # What the student was given, not what the grader ran.
        cell.source = cell_spec.released_source
        verdict = "passed" if checkpoint and checkpoint.passed else "failed"
        score = f"{checkpoint.score:g}/{checkpoint.max_score:g}" if checkpoint else "0"
        text = f"checkpoint {grade_id} {verdict.upper()} ({score})"
        if checkpoint and checkpoint.message:
            text += f"\n{checkpoint.message}"
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text + "\n")]
    nb.cells.insert(0, nbformat.v4.new_markdown_cell(_summary_markdown(result)))
    return nb


def _summary_markdown(result: NotebookResult) -> str:
    lines = [
        f"# Feedback: {html.escape(result.notebook)} ({html.escape(result.student)})",
        "",
        f"**Score: {result.score:g} / {result.max_score:g}** &nbsp; status: `{result.status}`",
    ]
    if result.message:
        lines += ["", f"> {html.escape(result.message)}"]
    lines += ["", "| checkpoint | points | outcome |", "| --- | --- | --- |"]
    for cp in result.checkpoints:
        outcome = "passed" if cp.passed else html.escape(cp.message or "failed").replace("|", "\\|")
        lines.append(f"| `{cp.grade_id}` | {cp.score:g} / {cp.max_score:g} | {outcome} |")
    return "\n".join(lines)


def write_feedback(executed, spec: NotebookSpec, result: NotebookResult, feedback_dir: Path) -> Path:
    target = Path(feedback_dir) / _safe(result.student) / f"{spec.name}.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    body, _ = _exporter().from_notebook_node(feedback_notebook(executed, spec, result))
    target.write_text(body, encoding="utf-8")
    return target


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "_"
