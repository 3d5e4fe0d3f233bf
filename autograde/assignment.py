"""The assignment as nbgrader sees it: source notebooks -> nbgrader course folder ->
student release + gradebook, and the per-cell facts (locked sources, hidden tests, points)
read back from that gradebook for grading."""

from __future__ import annotations

import functools
import logging
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nbgrader.api
from nbgrader.api import Gradebook
from nbgrader.apps import NbGraderAPI
from nbgrader.coursedir import CourseDirectory
from traitlets.config import Config

from autograde.runner import REPO_ROOT

ASSIGNMENT_ID = "day7"
COURSE_ID = "day7-deploy"
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"


class AssignmentError(RuntimeError):
    """nbgrader could not turn the sources into an assignment."""


def nbgrader_metadata(grade_id: str, *, solution: bool = False, grade: bool = False, locked: bool = False,
                      points: float | None = None) -> dict:
    """A cell's ``metadata["nbgrader"]`` in nbgrader's schema 3."""
    meta = {"grade_id": grade_id, "solution": solution, "grade": grade, "locked": locked, "schema_version": 3}
    if grade:
        meta["points"] = points if points is not None else 0.0
    return meta


@dataclass(frozen=True)
class CellSpec:
    """One nbgrader cell of the source, as stored in the gradebook."""

    grade_id: str
    cell_type: str
    source: str  # the instructor's source, hidden tests included
    released_source: str  # what the student received
    locked: bool
    graded: bool
    solution: bool
    points: float


@dataclass
class NotebookSpec:
    name: str  # file stem, e.g. "colab_a_fastapi"
    source_path: Path
    release_path: Path
    cells: dict[str, CellSpec] = field(default_factory=dict)  # in source order
    released_code: frozenset[str] = frozenset()  # every code cell the student was given, stripped

    @property
    def filename(self) -> str:
        return f"{self.name}.ipynb"

    @property
    def graded_cells(self) -> list[CellSpec]:
        return [c for c in self.cells.values() if c.graded]

    @property
    def max_score(self) -> float:
        return sum(c.points for c in self.graded_cells)


@dataclass
class Assignment:
    course_root: Path
    notebooks: dict[str, NotebookSpec]

    @property
    def db_path(self) -> Path:
        return self.course_root / "gradebook.db"

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.db_path}"

    @property
    def release_dir(self) -> Path:
        return self.course_root / "release" / ASSIGNMENT_ID


def source_notebooks(notebooks_dir: Path = NOTEBOOKS_DIR) -> list[Path]:
    """The source notebooks of a folder, or the one notebook ``notebooks_dir`` names."""
    if Path(notebooks_dir).suffix == ".ipynb" and Path(notebooks_dir).is_file():
        return [Path(notebooks_dir)]
    paths = sorted(Path(notebooks_dir).glob("*.ipynb"))
    if not paths:
        raise AssignmentError(f"no source notebooks in {notebooks_dir}")
    return paths


def _cache_alembic_head() -> None:
    # nbgrader asks the `alembic` CLI for its schema head every time a Gradebook opens: a
    # 1-2 s subprocess for a constant of the installed nbgrader. Ask once per process.
    original = nbgrader.api.get_alembic_version
    if not hasattr(original, "cache_info"):
        nbgrader.api.get_alembic_version = functools.lru_cache(maxsize=1)(original)


def _put_own_scripts_on_path() -> None:
    # nbgrader runs the `alembic` script by name; it lives beside this interpreter.
    scripts = str(Path(sys.executable).parent)
    if scripts not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = scripts + os.pathsep + os.environ.get("PATH", "")


def nbgrader_api(course_root: Path) -> NbGraderAPI:
    _put_own_scripts_on_path()
    _cache_alembic_head()
    config = Config()
    config.Exchange.root = str(course_root / "exchange")
    config.CourseDirectory.root = str(course_root)
    config.CourseDirectory.course_id = COURSE_ID
    config.CourseDirectory.db_url = f"sqlite:///{course_root / 'gradebook.db'}"
    config.NbGraderAPI.log_level = logging.ERROR
    coursedir = CourseDirectory(config=config)
    return NbGraderAPI(coursedir=coursedir, config=config)


def build_assignment(course_root: Path, sources: list[Path] | None = None) -> Assignment:
    """Run nbgrader ``generate_assignment`` over ``sources`` in a fresh course folder.

    The course folder gets ``source/``, ``release/`` and ``gradebook.db``; the gradebook
    holds every locked cell's source as the instructor wrote it (hidden tests included),
    which is what grading restores."""
    sources = list(sources) if sources is not None else source_notebooks()
    course_root = Path(course_root).resolve()
    if course_root.exists():
        shutil.rmtree(course_root)
    source_dir = course_root / "source" / ASSIGNMENT_ID
    source_dir.mkdir(parents=True)
    (course_root / "exchange").mkdir()
    for path in sources:
        shutil.copy2(path, source_dir / Path(path).name)

    result = nbgrader_api(course_root).generate_assignment(ASSIGNMENT_ID, force=True)
    if not result.get("success"):
        detail = (result.get("log") or "") + (result.get("error") or "")
        raise AssignmentError("nbgrader generate_assignment failed:\n" + detail.strip())

    assignment = Assignment(course_root=course_root, notebooks={})
    with Gradebook(assignment.db_url, COURSE_ID) as gradebook:
        for path in sources:
            name = Path(path).stem
            release_path = assignment.release_dir / Path(path).name
            assignment.notebooks[name] = _read_spec(gradebook, name, Path(path), release_path)
    return assignment


def _read_spec(gradebook: Gradebook, name: str, source_path: Path, release_path: Path) -> NotebookSpec:
    import nbformat

    notebook = gradebook.find_notebook(name, ASSIGNMENT_ID)
    stored_source = {c.name: c for c in notebook.source_cells}
    points = {c.name: float(c.max_score) for c in notebook.grade_cells}
    solutions = {c.name for c in notebook.solution_cells}
    release_nb = nbformat.read(release_path, as_version=4)
    released = {
        cell.metadata["nbgrader"]["grade_id"]: cell.source
        for cell in release_nb.cells
        if cell.metadata.get("nbgrader", {}).get("grade_id")
    }
    released_code = frozenset(c.source.strip() for c in release_nb.cells if c.cell_type == "code")
    spec = NotebookSpec(name=name, source_path=source_path, release_path=release_path, released_code=released_code)
    # Keep the order of the source notebook.
    for cell in nbformat.read(source_path, as_version=4).cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if not grade_id or grade_id not in stored_source:
            continue
        stored = stored_source[grade_id]
        spec.cells[grade_id] = CellSpec(
            grade_id=grade_id,
            cell_type=stored.cell_type,
            source=stored.source,
            released_source=released.get(grade_id, ""),
            locked=bool(stored.locked),
            graded=grade_id in points,
            solution=grade_id in solutions,
            points=points.get(grade_id, 0.0),
        )
    return spec
