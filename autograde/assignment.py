"""The assignment as nbgrader sees it: source notebooks -> nbgrader course folder ->
student release + gradebook, and the per-cell facts (locked sources, hidden tests, points)
read back from that gradebook for grading."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nbgrader
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


AUTOTESTS_FILE = "autotests.yml"
STAMP_FILE = "autograde-stamp.json"  # the hash of what the generated assignment was built from
PRISTINE_DB = "gradebook.generated.db"  # the gradebook as generate_assignment left it, no grades
# Files of an assignment folder nbgrader never copies into a run (CourseDirectory.ignore).
IGNORED_FILES = (".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback")


def nbgrader_metadata(grade_id: str, *, solution: bool = False, grade: bool = False, locked: bool = False,
                      points: float | None = None, task: bool = False, checksum: str | None = None) -> dict:
    """A cell's ``metadata["nbgrader"]`` in nbgrader's schema 3."""
    meta = {"grade_id": grade_id, "solution": solution, "grade": grade, "locked": locked, "schema_version": 3}
    if task:
        meta["task"] = True
    if grade or task:
        meta["points"] = points if points is not None else 0.0
    if checksum:
        meta["checksum"] = checksum
    return meta


@dataclass(frozen=True)
class CellSpec:
    """One nbgrader cell of the source, as stored in the gradebook."""

    grade_id: str
    cell_type: str
    source: str  # the instructor's source, hidden tests included
    released_source: str  # what the student received
    locked: bool
    graded: bool  # it has a grade in the gradebook: a grade cell or a task cell
    solution: bool
    points: float
    task: bool = False
    checksum: str = ""  # nbgrader's checksum of the released cell: an unchanged answer scores 0

    @property
    def manual(self) -> bool:
        """A person grades it, as in nbgrader: a task, a written (markdown) answer, or a
        graded code cell the student writes (``solution`` and ``grade``)."""
        return self.task or (self.graded and (self.solution or self.cell_type != "code"))


@dataclass
class NotebookSpec:
    name: str  # file stem, e.g. "colab_a_fastapi"
    source_path: Path
    release_path: Path
    cells: dict[str, CellSpec] = field(default_factory=dict)  # in source order
    released_code: frozenset[str] = frozenset()  # every code cell the student was given, stripped
    kernelspec: dict = field(default_factory=dict)  # the source notebook's, as the gradebook holds it

    @property
    def filename(self) -> str:
        return f"{self.name}.ipynb"

    @property
    def graded_cells(self) -> list[CellSpec]:
        return [c for c in self.cells.values() if c.graded]

    @property
    def max_score(self) -> float:
        """Grade cells and task cells, as nbgrader's ``Notebook.max_score``."""
        return sum(c.points for c in self.graded_cells)

    @property
    def kernel_name(self) -> str:
        return str(self.kernelspec.get("name") or "python3")


@dataclass
class Assignment:
    course_root: Path
    notebooks: dict[str, NotebookSpec]
    assignment_id: str = ASSIGNMENT_ID
    course_id: str = COURSE_ID
    # Files of the source assignment folder other than notebooks, copied into every run as
    # nbgrader does: (path relative to the run folder, absolute source path).
    support_files: list[tuple[str, Path]] = field(default_factory=list)
    reused: bool = False  # the generated assignment of an earlier run was reused

    @property
    def db_path(self) -> Path:
        return self.course_root / "gradebook.db"

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.db_path}"

    @property
    def release_dir(self) -> Path:
        return self.course_root / "release" / self.assignment_id


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


def nbgrader_api(course_root: Path, course_id: str = COURSE_ID, autotests: Path | None = None) -> NbGraderAPI:
    _put_own_scripts_on_path()
    _cache_alembic_head()
    config = Config()
    config.Exchange.root = str(course_root / "exchange")
    config.CourseDirectory.root = str(course_root)
    config.CourseDirectory.course_id = course_id
    config.CourseDirectory.db_url = f"sqlite:///{course_root / 'gradebook.db'}"
    config.NbGraderAPI.log_level = logging.ERROR
    if autotests is not None:
        # nbgrader looks for autotests.yml in the assignment folder, then in its *working
        # directory*: name the course root's file by its absolute path instead.
        config.InstantiateTests.autotest_filename = str(autotests)
    coursedir = CourseDirectory(config=config)
    return NbGraderAPI(coursedir=coursedir, config=config)


def support_files(folder: Path) -> list[tuple[str, Path]]:
    """Every file under an assignment folder that nbgrader copies into a run: not a notebook,
    not ignored (``IGNORED_FILES``), regular files only (a link is not followed)."""
    import fnmatch

    found: list[tuple[str, Path]] = []
    folder = Path(folder)
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not any(fnmatch.fnmatch(d, g) for g in IGNORED_FILES)
                             and not os.path.islink(os.path.join(dirpath, d)))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if name.lower().endswith(".ipynb") or any(fnmatch.fnmatch(name, g) for g in IGNORED_FILES):
                continue
            if path.is_symlink() or not path.is_file():
                continue
            found.append((path.relative_to(folder).as_posix(), path.resolve()))
    return found


def _stamp(sources: list[Path], course_id: str, assignment_id: str, autotests: Path | None,
           files: list[tuple[str, Path]]) -> str:
    """What the generated assignment depends on: the source notebooks, autotests.yml, the
    assignment's other files (autotests run the notebook), the ids and the nbgrader version."""
    digest = hashlib.sha256()
    digest.update(json.dumps([nbgrader.__version__, course_id, assignment_id, 2]).encode())
    named = [(Path(p).name, Path(p)) for p in sorted(sources, key=lambda p: Path(p).name)]
    named += [("autotests", Path(autotests))] if autotests else []
    for name, path in [*named, *files]:
        digest.update(name.encode() + b"\0")
        if path.stat().st_size <= 64 * 1000 * 1000:
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        else:  # a large data file: its size and time, not a minute of hashing
            digest.update(f"{path.stat().st_size}:{path.stat().st_mtime_ns}".encode())
    return digest.hexdigest()


def build_assignment(course_root: Path, sources: list[Path] | None = None, *, assignment_id: str = ASSIGNMENT_ID,
                     course_id: str = COURSE_ID, autotests: Path | None = None, files_from: Path | None = None,
                     reuse: bool = False) -> Assignment:
    """Run nbgrader ``generate_assignment`` over ``sources`` in a course folder of our own.

    The course folder gets ``source/``, ``release/`` and ``gradebook.db``; the gradebook
    holds every locked cell's source as the instructor wrote it (hidden tests included),
    which is what grading restores. ``autotests`` is the course's ``autotests.yml`` (for
    ``### AUTOTEST`` cells; the sources' folder is searched when not given); ``files_from``
    is the assignment folder whose other files every run gets (the sources' folder when not
    given).

    With ``reuse``, a folder generated by an earlier call from the same sources (its stamp,
    a hash of the sources, autotests.yml, the ids and the nbgrader version, matches) is
    reused with a fresh copy of its grade-free gradebook: generate_assignment runs a kernel
    per notebook and takes seconds."""
    sources = list(sources) if sources is not None else source_notebooks()
    course_root = Path(course_root).resolve()
    folders = {Path(p).resolve().parent for p in sources}
    files_from = Path(files_from) if files_from is not None else (folders.pop() if len(folders) == 1 else None)
    if autotests is None and files_from is not None and (files_from / AUTOTESTS_FILE).is_file():
        autotests = files_from / AUTOTESTS_FILE
    files = support_files(files_from) if files_from is not None else []
    stamp = _stamp(sources, course_id, assignment_id, autotests, files)
    stamp_path = course_root / STAMP_FILE
    pristine = course_root / PRISTINE_DB
    reused = False
    if (reuse and stamp_path.is_file() and pristine.is_file()
            and json.loads(stamp_path.read_text()).get("stamp") == stamp
            and all((course_root / "release" / assignment_id / Path(p).name).is_file() for p in sources)):
        shutil.copyfile(pristine, course_root / "gradebook.db")
        reused = True
    else:
        _generate(course_root, sources, assignment_id, course_id, autotests, files)
        shutil.copyfile(course_root / "gradebook.db", pristine)
        stamp_path.write_text(json.dumps({"stamp": stamp, "sources": [str(p) for p in sources]}))

    assignment = Assignment(course_root=course_root, notebooks={}, assignment_id=assignment_id,
                            course_id=course_id, reused=reused, support_files=files)
    with Gradebook(assignment.db_url, course_id) as gradebook:
        for path in sources:
            name = Path(path).stem
            release_path = assignment.release_dir / Path(path).name
            assignment.notebooks[name] = _read_spec(gradebook, name, Path(path), release_path, assignment_id)
    return assignment


def _generate(course_root: Path, sources: list[Path], assignment_id: str, course_id: str,
              autotests: Path | None, files: list[tuple[str, Path]]) -> None:
    if course_root.exists():
        shutil.rmtree(course_root)
    source_dir = course_root / "source" / assignment_id
    source_dir.mkdir(parents=True)
    (course_root / "exchange").mkdir()
    for path in sources:
        shutil.copy2(path, source_dir / Path(path).name)
    for relative, path in files:  # autotests run the notebook, which may read them
        (source_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, source_dir / relative)
    if autotests is not None:
        shutil.copy2(autotests, course_root / AUTOTESTS_FILE)
    api = nbgrader_api(course_root, course_id, course_root / AUTOTESTS_FILE if autotests is not None else None)
    result = api.generate_assignment(assignment_id, force=True)
    if not result.get("success"):
        detail = (result.get("log") or "") + (result.get("error") or "")
        raise AssignmentError("nbgrader generate_assignment failed:\n" + detail.strip())


def _read_spec(gradebook: Gradebook, name: str, source_path: Path, release_path: Path,
               assignment_id: str = ASSIGNMENT_ID) -> NotebookSpec:
    import nbformat

    notebook = gradebook.find_notebook(name, assignment_id)
    stored_source = {c.name: c for c in notebook.source_cells}
    points = {c.name: float(c.max_score) for c in notebook.grade_cells}
    tasks = {c.name: float(c.max_score) for c in notebook.task_cells}
    solutions = {c.name for c in notebook.solution_cells}
    release_nb = nbformat.read(release_path, as_version=4)
    released = {
        cell.metadata["nbgrader"]["grade_id"]: cell.source
        for cell in release_nb.cells
        if cell.metadata.get("nbgrader", {}).get("grade_id")
    }
    released_code = frozenset(c.source.strip() for c in release_nb.cells if c.cell_type == "code")
    kernelspec = json.loads(notebook.kernelspec) if notebook.kernelspec else {}
    spec = NotebookSpec(name=name, source_path=source_path, release_path=release_path, released_code=released_code,
                        kernelspec=kernelspec)
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
            graded=grade_id in points or grade_id in tasks,
            solution=grade_id in solutions,
            points=points.get(grade_id, tasks.get(grade_id, 0.0)),
            task=grade_id in tasks,
            checksum=stored.checksum or "",
        )
    return spec
