"""An nbgrader course folder, read the way ``nbgrader autograde`` reads it, for
``autograde grade --course-dir DIR --assignment ID``:

- ``nbgrader_config.py`` (course id, gradebook location, the late-submission penalty);
- ``source/ID/*.ipynb`` and the assignment's other files, ``autotests.yml`` at the course root;
- ``submitted/STUDENT/ID/*.ipynb`` with ``timestamp.txt``, read through the safe intake;
- ``gradebook.db``: the assignment's due date, manual grades already given; the grades are
  written back into it (by the grading process only, never by a worker).

Everything a student controls (their folders, files, ``timestamp.txt``) is read by the
intake's rules: regular files only, no link followed, sizes capped.
"""

from __future__ import annotations

import fnmatch
import os
import stat
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from nbgrader import utils as nbutils
from nbgrader.api import Gradebook, MissingEntry
from nbgrader.coursedir import CourseDirectory
from traitlets.config import Config
from traitlets.config.loader import PyFileConfigLoader

from autograde.assignment import AUTOTESTS_FILE, COURSE_ID, IGNORED_FILES, Assignment, AssignmentError
from autograde.submissions import IGNORED_PARTS, Collected, collect, student_folders
from autograde.worker import MAX_STUDENT_FILE_BYTES, MAX_STUDENT_FILES

CONFIG_FILE = "nbgrader_config.py"
TIMESTAMP_FILE = "timestamp.txt"
MAX_TIMESTAMP_BYTES = 1000


@dataclass
class Course:
    root: Path
    assignment_id: str
    config: Config
    coursedir: CourseDirectory
    warnings: list[str] = field(default_factory=list)

    @property
    def course_id(self) -> str:
        return self.coursedir.course_id or COURSE_ID

    @property
    def db_url(self) -> str:
        return self.coursedir.db_url

    @property
    def source_dir(self) -> Path:
        return Path(self.coursedir.format_path(self.coursedir.source_directory, ".", self.assignment_id))

    @property
    def submitted_root(self) -> Path:
        return self.root / self.coursedir.submitted_directory

    @property
    def sources(self) -> list[Path]:
        paths = sorted(self.source_dir.glob("*.ipynb"))
        if not paths:
            raise AssignmentError(f"no source notebooks in {self.source_dir}")
        return paths

    @property
    def autotests(self) -> Path | None:
        """nbgrader's order: the assignment folder's autotests.yml, then the course root's."""
        for folder in (self.source_dir, self.root):
            if (folder / AUTOTESTS_FILE).is_file():
                return folder / AUTOTESTS_FILE
        return None

    def collect(self, notebook_names: list[str]) -> tuple[Collected, dict[str, Path]]:
        """The submissions of this assignment: every ``submitted/STUDENT/ID`` folder, read
        through the safe intake (one ``collect`` per student, whose sub-folders are the
        assignments), and the folder of each student's submission (for timestamp.txt)."""
        root = self.submitted_root
        collected = Collected(root=root)
        folders: dict[str, Path] = {}
        if not root.is_dir():
            collected.warnings.append(f"{root} does not exist: nothing was submitted")
            return collected, folders
        for student, entry in student_folders(root, notebook_names, collected):
            if not os.path.lexists(os.path.join(entry.path, self.assignment_id)):
                continue  # nbgrader grades only those who submitted this assignment
            own = collect(entry.path, notebook_names)  # its sub-folders are assignments
            if self.assignment_id not in own.students:
                continue
            collected.students[student] = own.students[self.assignment_id]
            for (folder, name), note in own.notes.items():
                if folder == self.assignment_id:
                    collected.notes[(student, name)] = note
            for (folder, name), reason in own.rejected.items():
                if folder == self.assignment_id:
                    collected.rejected[(student, name)] = reason
            collected.warnings += [f"{student}: {w}" for w in own.warnings]
            folders[student] = Path(entry.path) / self.assignment_id
        return collected, folders

    def timestamp(self, folder: Path) -> datetime | None:
        """The submission time in ``folder/timestamp.txt`` (UTC, naive, as nbgrader stores
        it), read by the intake's rules; None when there is none or it cannot be read."""
        path = folder / TIMESTAMP_FILE
        try:
            st = os.lstat(path)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_TIMESTAMP_BYTES:
            self.warnings.append(f"{path}: not a regular file of at most {MAX_TIMESTAMP_BYTES} bytes; ignored")
            return None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
            try:
                text = os.read(fd, MAX_TIMESTAMP_BYTES).decode("utf-8", "replace").strip()
            finally:
                os.close(fd)
            return nbutils.parse_utc(text) if text else None
        except (OSError, ValueError, OverflowError) as exc:
            self.warnings.append(f"{path}: unreadable timestamp ({exc}); ignored")
            return None

    def late_penalties(self):
        """nbgrader's own late-penalty step, configured by the course: ``penalty(student,
        notebook_score, seconds_late, max_penalty)`` -> points or None."""
        from nbgrader.preprocessors import AssignLatePenalties

        step = AssignLatePenalties(config=self.config)
        step.init_plugin()

        def penalty(student: str, score: float, seconds_late: float) -> float | None:
            value = step.plugin_inst.late_submission_penalty(student, score, seconds_late)
            if value is None:
                return None
            return min(max(float(value), 0.0), score)  # as AssignLatePenalties._check_late_penalty

        return penalty


def load_course(course_dir: str | Path, assignment_id: str) -> Course:
    """The course at ``course_dir`` with its ``nbgrader_config.py`` (instructor code, run as
    nbgrader runs it). ``--course-dir`` wins over a ``CourseDirectory.root`` in the file."""
    root = Path(course_dir).resolve()
    if not root.is_dir():
        raise AssignmentError(f"course folder {root} does not exist")
    config = Config()
    if (root / CONFIG_FILE).is_file():
        try:
            config = PyFileConfigLoader(CONFIG_FILE, path=str(root)).load_config()
        except Exception as exc:  # the instructor's file: say what is wrong with it
            raise AssignmentError(f"{root / CONFIG_FILE} cannot be loaded: {type(exc).__name__}: {exc}") from exc
    config.CourseDirectory.root = str(root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        coursedir = CourseDirectory(config=config)
    course = Course(root=root, assignment_id=assignment_id, config=config, coursedir=coursedir)
    if not course.source_dir.is_dir():
        raise AssignmentError(f"no assignment {assignment_id!r} in {root}: {course.source_dir} does not exist")
    return course


def student_files(folder: Path) -> list[tuple[str, Path]]:
    """A student's own files beside their notebook (what nbgrader copies from the submitted
    folder): regular files only, no link followed, no notebook, nothing nbgrader ignores, each
    at most ``MAX_STUDENT_FILE_BYTES`` (the worker checks again as it copies)."""
    found: list[tuple[str, Path]] = []
    budget = [MAX_STUDENT_FILES * 10]  # entries looked at

    def walk(current: Path) -> None:
        try:
            entries = sorted(os.scandir(current), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            if budget[0] <= 0 or len(found) >= MAX_STUDENT_FILES:
                return
            budget[0] -= 1
            name = entry.name
            if name in IGNORED_PARTS or any(fnmatch.fnmatch(name, g) for g in IGNORED_FILES):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                walk(Path(entry.path))
            elif (stat.S_ISREG(st.st_mode) and not name.lower().endswith(".ipynb")
                  and st.st_size <= MAX_STUDENT_FILE_BYTES):
                found.append((Path(entry.path).relative_to(folder).as_posix(), Path(entry.path)))

    walk(Path(folder))
    return found


def sync_assignment(assignment: Assignment, db_url: str) -> None:
    """Make the course gradebook know the assignment as we generated it (nbgrader's
    generate_assignment records the same rows): notebooks, grade, solution, task and source
    cells. Existing rows are updated, the due date and grades already given are kept."""
    aid = assignment.assignment_id
    with Gradebook(assignment.db_url, assignment.course_id) as ours, Gradebook(db_url, assignment.course_id) as theirs:
        try:
            theirs.find_assignment(aid)
        except MissingEntry:
            theirs.update_or_create_assignment(aid)
        for notebook in ours.find_assignment(aid).notebooks:
            theirs.update_or_create_notebook(notebook.name, aid, kernelspec=notebook.kernelspec)
            for cell in notebook.grade_cells:
                theirs.update_or_create_grade_cell(cell.name, notebook.name, aid, max_score=cell.max_score,
                                                   cell_type=cell.cell_type)
            for cell in notebook.solution_cells:
                theirs.update_or_create_solution_cell(cell.name, notebook.name, aid)
            for cell in notebook.task_cells:
                theirs.update_or_create_task_cell(cell.name, notebook.name, aid, max_score=cell.max_score,
                                                  cell_type=cell.cell_type)
            for cell in notebook.source_cells:
                theirs.update_or_create_source_cell(cell.name, notebook.name, aid, source=cell.source,
                                                    checksum=cell.checksum, cell_type=cell.cell_type,
                                                    locked=cell.locked)
