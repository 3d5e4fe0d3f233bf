"""The committed student release is exactly what `autograde release` generates now, and each
student notebook opens in Colab from its badge and installs only what Colab lacks."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from autograde.assignment import source_notebooks
from autograde.release import DEFAULT_COLAB_REPO, colab_url, release

REPO_ROOT = Path(__file__).resolve().parent.parent
STUDENT = REPO_ROOT / "student"


@pytest.fixture(scope="module")
def fresh_release(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("release")
    return {p.name: p for p in release(out, source_notebooks(REPO_ROOT / "notebooks"))}


def test_student_folder_is_up_to_date(fresh_release):
    committed = {p.name: p for p in STUDENT.glob("*.ipynb")}
    assert sorted(committed) == sorted(fresh_release)
    stale = [name for name, path in fresh_release.items() if path.read_bytes() != committed[name].read_bytes()]
    assert not stale, f"student/ is stale, run `make release`: {stale}"


@pytest.mark.parametrize("path", sorted(STUDENT.glob("*.ipynb")), ids=lambda p: p.name)
def test_student_notebook_has_its_colab_badge(path):
    first = nbformat.read(path, as_version=4).cells[0]
    assert first.cell_type == "markdown"
    assert colab_url(DEFAULT_COLAB_REPO, path.name) in first.source


@pytest.mark.parametrize("path", sorted(STUDENT.glob("*.ipynb")), ids=lambda p: p.name)
def test_first_code_cell_installs_only_what_is_missing_and_never_torch(path):
    code = next(c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
    assert "find_spec" in code.source, "the install cell should check what is already there"
    code_only = "\n".join(line.split("#", 1)[0] for line in code.source.lower().splitlines())
    assert "torch" not in code_only, "never (re)install torch"


def test_readme_links_every_student_notebook():
    readme = (REPO_ROOT / "README.md").read_text()
    for path in STUDENT.glob("*.ipynb"):
        assert colab_url(DEFAULT_COLAB_REPO, path.name) in readme
