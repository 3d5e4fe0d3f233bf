"""`autograde strip`: clear outputs and execution counts in place, keeping every cell's
metadata (nbgrader's included), so notebooks are committed clean."""

from __future__ import annotations

from pathlib import Path

import nbformat


def is_clean(nb) -> bool:
    return all(
        not cell.get("outputs") and cell.get("execution_count") is None
        for cell in nb.cells
        if cell.cell_type == "code"
    )


def strip_notebook(path: str | Path) -> bool:
    """Strip one notebook; return True if it changed."""
    nb = nbformat.read(path, as_version=4)
    if is_clean(nb):
        return False
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    nbformat.write(nb, path)
    return True
