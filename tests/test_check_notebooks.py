"""Integration: the real course notebooks through `autograde check`: every source notebook
earns full marks, every released notebook runs to its last cell and earns exactly zero, and
the release leaks nothing."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from autograde.assignment import source_notebooks
from autograde.check import check
from autograde.grade import GradeOptions

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_course_notebooks_pass_autograde_check():
    sources = source_notebooks(REPO_ROOT / "notebooks")
    assert {p.stem for p in sources} >= {"colab_a_fastapi", "colab_b_streamlit", "colab_c_rag"}
    problems = check(GradeOptions(workers=2, cell_timeout=180, notebook_timeout=600), sources=sources,
                     console=Console(width=160))
    assert problems == []
