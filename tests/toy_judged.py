"""A tiny assignment whose hidden checks are judged outside the kernel (tests/toy_checkpoints.py):
a function, a prediction and a web API."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from autograde.assignment import nbgrader_metadata

JUDGED_NAME = "judged"
ADD_POINTS = 2.0  # 1.5 behaviour + 0.5 prediction
API_POINTS = 1.0
JUDGED_MAX = ADD_POINTS + API_POINTS
MARKER = "# autograde-checkpoint: toy_checkpoints"


def _meta(grade_id: str, **kinds) -> dict:
    return {"nbgrader": nbgrader_metadata(grade_id, **kinds)}


def _hidden(grade_id: str, points: float):
    return new_code_cell(f"# Hidden checkpoint\n### BEGIN HIDDEN TESTS\n{MARKER}\n### END HIDDEN TESTS",
                         metadata=_meta(grade_id, grade=True, locked=True, points=points))


def judged_source() -> nbformat.NotebookNode:
    cells = [
        new_markdown_cell("# Judged toy\nWrite `add`, predict `add(2, 3)`, serve it."),
        new_code_cell("def add(a, b):\n    ### BEGIN SOLUTION\n    return a + b\n    ### END SOLUTION",
                      metadata=_meta("add", solution=True)),
        new_code_cell("prediction_sum = None\n### BEGIN SOLUTION\nprediction_sum = 5\n### END SOLUTION",
                      metadata=_meta("answer_sum", solution=True)),
        _hidden("cp_add", ADD_POINTS),
        new_code_cell("from fastapi import FastAPI\napp = FastAPI()\n\n@app.get('/add')\ndef add_endpoint(a: float, b: float):\n"
                      "    ### BEGIN SOLUTION\n    return {'sum': add(a, b)}\n    ### END SOLUTION",
                      metadata=_meta("api", solution=True)),
        _hidden("cp_api", API_POINTS),
        new_code_cell("print('the end')", metadata=_meta("judged_end", locked=True)),
    ]
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def write_judged_source(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{JUDGED_NAME}.ipynb"
    nbformat.write(judged_source(), path)
    return path


def judged_submission(release_path: Path, answers: dict[str, str] | None = None, first: list[str] = (),
                      last: list[str] = ()) -> nbformat.NotebookNode:
    """The release with some solution cells replaced (by grade_id) and cells added."""
    nb = nbformat.read(release_path, as_version=4)
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if answers and grade_id in answers:
            cell.source = answers[grade_id]
    first_code = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    for offset, source in enumerate(first):
        nb.cells.insert(first_code + offset, new_code_cell(source))
    for source in last:
        nb.cells.append(new_code_cell(source))
    return nb


CORRECT_ANSWERS = {
    "add": "def add(a, b):\n    return a + b",
    "answer_sum": "prediction_sum = 5",
    "api": "from fastapi import FastAPI\napp = FastAPI()\n\n@app.get('/add')\ndef add_endpoint(a: float, b: float):\n"
           "    return {'sum': add(a, b)}",
}
WRONG_ADD = "def add(a, b):\n    return a - b"
