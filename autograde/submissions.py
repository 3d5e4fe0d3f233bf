"""Find the submissions in a folder (or a .zip of one): ``<student_id>/<notebook>.ipynb``.

Notebook files are matched by name, forgiving the renames students' tools make
("Copy of colab_a_fastapi.ipynb", "colab_a_fastapi (1).ipynb"). Anything else in the folder
is ignored.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

MAX_ZIP_BYTES = 512 * 1024 * 1024  # uncompressed; a zip bomb stops here
IGNORED_PARTS = {"__MACOSX", ".ipynb_checkpoints", ".git"}
_RENAME_NOISE = re.compile(r"^(copy of |copia de |kopie von )+|( ?\(\d+\)| - copy)+$", re.IGNORECASE)


class SubmissionsError(ValueError):
    """The submissions argument cannot be read at all."""


@dataclass
class Collected:
    root: Path
    # student -> notebook name (stem) -> path
    students: dict[str, dict[str, Path]] = field(default_factory=dict)
    # (student, notebook) -> note, e.g. several candidate files for one notebook
    notes: dict[tuple[str, str], str] = field(default_factory=dict)
    cleanup: Path | None = None

    def close(self) -> None:
        if self.cleanup is not None:
            shutil.rmtree(self.cleanup, ignore_errors=True)


def canonical_name(filename: str) -> str:
    """'Copy of colab_a_fastapi (1).ipynb' -> 'colab_a_fastapi'."""
    stem = filename[: -len(".ipynb")] if filename.lower().endswith(".ipynb") else filename
    return _RENAME_NOISE.sub("", stem.strip()).strip().lower()


def collect(submissions: str | Path, notebook_names: list[str]) -> Collected:
    """Map every student folder to its notebooks. ``notebook_names`` are the assignment's
    notebook stems; files that match none of them are ignored."""
    path = Path(submissions)
    if not path.exists():
        raise SubmissionsError(f"{path} does not exist")
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise SubmissionsError(f"{path} is neither a folder nor a .zip file")
        extracted = Path(tempfile.mkdtemp(prefix="autograde-zip-"))
        _safe_extract(path, extracted)
        collected = _collect_folder(_unwrap(extracted), notebook_names)
        collected.cleanup = extracted
        return collected
    return _collect_folder(path, notebook_names)


def _safe_extract(archive: Path, target: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        total = sum(info.file_size for info in zf.infolist())
        if total > MAX_ZIP_BYTES:
            raise SubmissionsError(
                f"{archive} would unpack to {total / 1e6:.0f} MB, more than the "
                f"{MAX_ZIP_BYTES / 1e6:.0f} MB allowed"
            )
        root = target.resolve()
        for info in zf.infolist():
            destination = (target / info.filename).resolve()
            if not destination.is_relative_to(root):
                raise SubmissionsError(f"{archive} holds an unsafe path: {info.filename!r}")
        zf.extractall(target)


def _unwrap(folder: Path) -> Path:
    """A zip of the folder 'submissions/' holds one top folder: look inside it."""
    entries = [p for p in folder.iterdir() if p.name not in IGNORED_PARTS]
    while len(entries) == 1 and entries[0].is_dir() and not any(entries[0].glob("*.ipynb")):
        folder = entries[0]
        entries = [p for p in folder.iterdir() if p.name not in IGNORED_PARTS]
    return folder


def _collect_folder(root: Path, notebook_names: list[str]) -> Collected:
    wanted = {name.lower(): name for name in notebook_names}
    collected = Collected(root=root)
    for student_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if student_dir.name in IGNORED_PARTS or student_dir.name.startswith("."):
            continue
        student = student_dir.name
        notebooks: dict[str, list[Path]] = {}
        for file in sorted(student_dir.rglob("*.ipynb")):
            if IGNORED_PARTS.intersection(file.relative_to(student_dir).parts):
                continue
            name = wanted.get(canonical_name(file.name))
            if name is not None:
                notebooks.setdefault(name, []).append(file)
        collected.students[student] = {}
        for name, files in notebooks.items():
            # Several candidates (a copy and the original): the exact name wins, then the newest.
            files.sort(key=lambda f: (f.name != f"{name}.ipynb", -f.stat().st_mtime))
            collected.students[student][name] = files[0]
            if len(files) > 1:
                others = ", ".join(f.name for f in files[1:])
                collected.notes[(student, name)] = f"graded {files[0].name}; ignored {others}"
    return collected
