"""`autograde release`: the source notebooks -> student notebooks, verified leak-free."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import nbformat

from autograde.assignment import build_assignment
from autograde.leakcheck import find_leaks

DEFAULT_RELEASE_DIR = "student"
# Where the published repository lives; the Open-in-Colab badges point at its student/ folder.
# Change it (or pass --repo) once the course repository is published elsewhere.
DEFAULT_COLAB_REPO = "finance-ml-course/day7-deploy"
BADGE_KEY = "autograde_colab_badge"


def colab_url(repo: str, notebook_name: str, folder: str = DEFAULT_RELEASE_DIR, branch: str = "main") -> str:
    return f"https://colab.research.google.com/github/{repo}/blob/{branch}/{folder}/{notebook_name}"


def add_colab_badge(path: Path, repo: str) -> None:
    """Put (or refresh) an Open-in-Colab badge as the notebook's first cell."""
    nb = nbformat.read(path, as_version=4)
    nb.cells = [c for c in nb.cells if BADGE_KEY not in c.metadata]
    badge = nbformat.v4.new_markdown_cell(
        f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
        f"({colab_url(repo, path.name)})"
    )
    badge.metadata[BADGE_KEY] = True
    badge.id = "colab-badge"
    nb.cells.insert(0, badge)
    nbformat.write(nb, path)


class LeakError(RuntimeError):
    """The generated release would reveal solutions or hidden tests."""


def release(out: str | Path = DEFAULT_RELEASE_DIR, sources: list[Path] | None = None,
            repo: str = DEFAULT_COLAB_REPO) -> list[Path]:
    """Generate the student notebooks into ``out`` and return their paths.

    Nothing is written to ``out`` unless every notebook passes the leak check."""
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="autograde-release-") as tmp:
        assignment = build_assignment(Path(tmp) / "course", sources)
        leaks = [
            leak
            for spec in assignment.notebooks.values()
            for leak in find_leaks(spec.source_path, spec.release_path)
        ]
        if leaks:
            raise LeakError("the release would leak:\n  " + "\n  ".join(leaks))
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for spec in assignment.notebooks.values():
            target = out / spec.filename
            shutil.copyfile(spec.release_path, target)
            add_colab_badge(target, repo)
            written.append(target)
    return written
