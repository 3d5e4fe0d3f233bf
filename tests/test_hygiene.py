"""Repository hygiene: notebooks are committed clean and keep their nbgrader metadata."""

from __future__ import annotations

import subprocess
from pathlib import Path

import nbformat
import pytest

from autograde.strip import is_clean

REPO_ROOT = Path(__file__).resolve().parent.parent


# The sample class hands in one notebook truncated on purpose (examples/make_sample_class.py);
# tests/test_sample_class.py checks it is exactly the generated file.
DELIBERATELY_BROKEN = "examples/submissions/dave_broken/"


def committed_notebooks() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "*.ipynb"], cwd=REPO_ROOT, capture_output=True,
                            text=True, check=True).stdout.split()
    return [REPO_ROOT / p for p in listed if not p.startswith(DELIBERATELY_BROKEN)]


def test_there_are_committed_notebooks():
    assert committed_notebooks(), "git ls-files found no notebook"


@pytest.mark.parametrize("path", committed_notebooks(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_notebook_is_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert is_clean(nb), f"{path.name} has outputs or execution counts: run `python -m autograde strip {path}`"


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_source_notebook_has_graded_nbgrader_cells(path):
    nb = nbformat.read(path, as_version=4)
    graded = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
    assert graded, f"{path.name} has no graded cell"
    ids = [c.metadata["nbgrader"]["grade_id"] for c in nb.cells if "nbgrader" in c.metadata]
    assert len(ids) == len(set(ids)), f"{path.name} repeats a grade_id"
    assert all(c.metadata["nbgrader"].get("points", 0) > 0 for c in graded)
