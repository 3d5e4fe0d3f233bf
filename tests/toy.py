"""A tiny nbgrader assignment for testing the grader without the heavy course notebooks:
one exercise, one visible test, one hidden test, one locked cell."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from autograde.assignment import nbgrader_metadata

TOY_NAME = "toy"
VISIBLE_POINTS = 1.0
HIDDEN_POINTS = 2.0
MAX_SCORE = VISIBLE_POINTS + HIDDEN_POINTS

SOLUTION_LINE = "return a + b  # the whole trick"
HIDDEN_LINE = ("assert np.allclose([add(-7, 5), add(0.5, 0.25), add(10, 20)], [-2, 0.75, 30]), "
               "'add must handle negative numbers'")


def _meta(grade_id: str, **kinds) -> dict:
    return {"nbgrader": nbgrader_metadata(grade_id, **kinds)}


def toy_source() -> nbformat.NotebookNode:
    cells = [
        new_markdown_cell("# Toy assignment\nWrite `add`."),
        new_code_cell(
            "def add(a, b):\n    ### BEGIN SOLUTION\n    " + SOLUTION_LINE + "\n    ### END SOLUTION",
            metadata=_meta("add", solution=True),
        ),
        new_code_cell("assert add(1, 2) == 3", metadata=_meta("test_add_visible", grade=True, locked=True,
                                                             points=VISIBLE_POINTS)),
        new_code_cell(
            "# hidden tests run at grading time\n### BEGIN HIDDEN TESTS\nimport numpy as np\n" + HIDDEN_LINE
            + "\n### END HIDDEN TESTS",
            metadata=_meta("test_add_hidden", grade=True, locked=True, points=HIDDEN_POINTS),
        ),
        new_code_cell("print('the end')", metadata=_meta("locked_end", locked=True)),
    ]
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def write_toy_source(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{TOY_NAME}.ipynb"
    nbformat.write(toy_source(), path)
    return path


def submission_from(release_path: Path, exercise: str | None = None, extra_cells: list[str] = (),
                    prepend_cells: list[str] = ()) -> nbformat.NotebookNode:
    """A student's notebook: the release with the exercise answered (or left blank) and
    cells of their own added."""
    nb = nbformat.read(release_path, as_version=4)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "add" and exercise is not None:
            cell.source = exercise
    first_code = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    for offset, source in enumerate(prepend_cells):
        nb.cells.insert(first_code + offset, new_code_cell(source))
    for source in extra_cells:
        nb.cells.append(new_code_cell(source))
    return nb


CORRECT = "def add(a, b):\n    return a + b"
WRONG = "def add(a, b):\n    return a - b"
ONLY_VISIBLE = "def add(a, b):\n    return 3"
