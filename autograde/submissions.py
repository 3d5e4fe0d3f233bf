"""Find the submissions in a folder (or a .zip of one): ``<student_id>/<notebook>.ipynb``,
and read a submitted notebook without trusting it.

Notebook files are matched by name, forgiving the renames students' tools make
("Copy of colab_a_fastapi.ipynb", "colab_a_fastapi (1).ipynb"). Anything else in the folder
is ignored.

Only regular files are ever read. A FIFO, a device, a socket or a symbolic link (a linked
student folder included) is rejected without being opened, so nothing can block the grader or
point it at the instructor's files; a zip member that is a link, leaves the archive (``..``, an
absolute path), is too large or compresses suspiciously well is not extracted. A rejected
notebook of a known name is never dropped silently: it is kept in ``Collected.rejected`` with a
reason in plain words, for the grader to report as an ``unreadable`` row.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path, PurePosixPath

import nbformat

MAX_ZIP_BYTES = 512 * 1000 * 1000  # uncompressed notebooks of one archive; a zip bomb stops here
MAX_ZIP_MEMBERS = 20_000  # entries of one archive
MAX_NOTEBOOK_BYTES = 20 * 1000 * 1000  # one notebook file
MAX_COMPRESSION_RATIO = 200  # uncompressed / compressed, for zip members above RATIO_FLOOR_BYTES
RATIO_FLOOR_BYTES = 1000 * 1000
MAX_JSON_DEPTH = 64  # nesting of JSON arrays and objects; a notebook needs about ten
MAX_ENTRIES_PER_STUDENT = 10_000  # files and folders looked at in one student's folder
IGNORED_PARTS = {"__MACOSX", ".ipynb_checkpoints", ".git"}
_RENAME_NOISE = re.compile(r"^(copy of |copia de |kopie von )+|( ?\(\d+\)| - copy)+$", re.IGNORECASE)

SYMLINK_REASON = "a symbolic link: submissions must be real files"
SYMLINKED_FOLDER_REASON = "the student's folder is a symbolic link: submissions must be real files"
INVALID_JSON_REASON = "not valid JSON (truncated or corrupted?)"


class SubmissionsError(ValueError):
    """The submissions argument cannot be read at all."""


class UnreadableSubmission(ValueError):
    """A submitted file that is not read; ``reason`` says why, in plain words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Collected:
    root: Path
    # student -> notebook name (stem) -> path
    students: dict[str, dict[str, Path]] = field(default_factory=dict)
    # (student, notebook) -> note, e.g. several candidate files for one notebook
    notes: dict[tuple[str, str], str] = field(default_factory=dict)
    # (student, notebook) -> why the only file(s) handed in for it cannot be read: report these
    # as status "unreadable" with the reason (the student is in ``students`` too, without a path)
    rejected: dict[tuple[str, str], str] = field(default_factory=dict)
    # things skipped that belong to no student (e.g. a zip member "../../x.ipynb"), to print
    warnings: list[str] = field(default_factory=list)
    cleanup: Path | None = None

    def close(self) -> None:
        if self.cleanup is not None:
            shutil.rmtree(self.cleanup, ignore_errors=True)


def student_folders(root: Path, notebook_names: list[str], collected: Collected):
    """The real student folders of ``root`` as (student, entry), in name order. A linked
    folder is a student whose files are not read: each of their notebooks is recorded in
    ``collected.rejected`` with the reason, never dropped."""
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name in IGNORED_PARTS or entry.name.startswith("."):
            continue
        if entry.is_symlink():
            if os.path.isdir(entry.path):
                collected.students[entry.name] = {}
                for name in notebook_names:
                    collected.rejected[(entry.name, name)] = SYMLINKED_FOLDER_REASON
            continue
        if entry.is_dir(follow_symlinks=False):
            yield entry.name, entry


def canonical_name(filename: str) -> str:
    """'Copy of colab_a_fastapi (1).ipynb' -> 'colab_a_fastapi'."""
    stem = filename[: -len(".ipynb")] if filename.lower().endswith(".ipynb") else filename
    return _RENAME_NOISE.sub("", stem.strip()).strip().lower()


def _mb(n: int) -> str:
    return f"{n / 1e6:g} MB"


# --------------------------------------------------------------------------- reading one file

_FILE_TYPES = {
    stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a directory",
}


def _file_problem(st: os.stat_result, max_bytes: int = MAX_NOTEBOOK_BYTES) -> str | None:
    """Why a file with this (l)stat is not read, or None."""
    if stat.S_ISLNK(st.st_mode):
        return SYMLINK_REASON
    if not stat.S_ISREG(st.st_mode):
        return f"not a regular file ({_FILE_TYPES.get(stat.S_IFMT(st.st_mode), 'an unknown kind of file')})"
    if st.st_size > max_bytes:
        return f"larger than {_mb(max_bytes)}"
    return None


def read_notebook_safely(path: Path, max_bytes: int = MAX_NOTEBOOK_BYTES,
                         max_depth: int = MAX_JSON_DEPTH) -> nbformat.NotebookNode:
    """The validated notebook (version 4) at ``path``, read without trusting the file.

    Raises ``UnreadableSubmission(reason)`` for anything that is not a regular file of at
    most ``max_bytes`` holding a notebook nested at most ``max_depth`` levels. Never blocks:
    the file is checked with lstat before it is opened, opened with O_NOFOLLOW | O_NONBLOCK,
    and checked again with fstat (it may have been swapped in between) before it is read."""
    try:
        problem = _file_problem(os.lstat(path), max_bytes)
    except FileNotFoundError:
        raise UnreadableSubmission("the file is gone (deleted while grading?)") from None
    except OSError as exc:
        raise UnreadableSubmission(f"cannot be read ({exc.strerror or exc})") from None
    if problem:
        raise UnreadableSubmission(problem)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NOCTTY", 0) | getattr(
        os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnreadableSubmission(SYMLINK_REASON) from None
        raise UnreadableSubmission(f"cannot be opened ({exc.strerror or exc})") from None
    try:
        problem = _file_problem(os.fstat(fd), max_bytes)
        if problem:
            raise UnreadableSubmission(problem)
        chunks: list[bytes] = []
        total = 0
        while total <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except BlockingIOError:
        raise UnreadableSubmission("not a regular file (it would block)") from None
    except OSError as exc:
        raise UnreadableSubmission(f"cannot be read ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    if total > max_bytes:  # it grew after fstat
        raise UnreadableSubmission(f"larger than {_mb(max_bytes)}")
    return parse_notebook(b"".join(chunks), max_depth)


_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def json_depth(text: str) -> int:
    """How deeply the arrays and objects of JSON ``text`` nest, without parsing it (brackets
    inside strings do not count); linear in the text, so it can run before ``json.loads``."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub('""', text))
    return max(accumulate(map(_STEP.__getitem__, brackets.encode("ascii"))), default=0)


def parse_notebook(data: bytes, max_depth: int = MAX_JSON_DEPTH) -> nbformat.NotebookNode:
    """A validated version-4 notebook from the bytes of a file; ``UnreadableSubmission`` if not."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UnreadableSubmission("not text (a notebook is UTF-8 JSON; is this a binary file?)") from None
    if not text.strip():
        raise UnreadableSubmission("empty")
    if json_depth(text) > max_depth:
        raise UnreadableSubmission(f"nested more than {max_depth} levels deep")
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        raise UnreadableSubmission(INVALID_JSON_REASON) from None
    if not isinstance(obj, dict):
        raise UnreadableSubmission(f"not a notebook: the file holds a JSON {type(obj).__name__}, not an object")
    try:
        major, minor = nbformat.reader.get_version(obj)
        nb = nbformat.versions[major].to_notebook_json(obj, minor=minor)
        nb = nbformat.convert(nb, 4)
        nbformat.validate(nb)
    except Exception as exc:  # anything that goes wrong here means "not a notebook"
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        if isinstance(exc, KeyError):
            first = f"unsupported notebook format version {first}"
        raise UnreadableSubmission("not a notebook: " + (first if len(first) <= 160 else first[:157] + "...")) from None
    return nb


# --------------------------------------------------------------------------- collecting a folder or zip

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
        try:
            skipped, warnings = _safe_extract(path, extracted)
            root = _unwrap(extracted, set(skipped))
            outside = {parts: reason for parts, reason in skipped.items()
                       if not _is_under(extracted.joinpath(*parts), root)}
            warnings += [f"zip member {'/'.join(parts)!r} skipped: {reason}" for parts, reason in outside.items()]
            inside = {extracted.joinpath(*parts).relative_to(root).parts: reason
                      for parts, reason in skipped.items() if parts not in outside}
            collected = _collect_folder(root, notebook_names, inside)
        except BaseException:
            shutil.rmtree(extracted, ignore_errors=True)
            raise
        collected.warnings = warnings + collected.warnings
        collected.cleanup = extracted
        return collected
    if not path.is_dir():
        raise SubmissionsError(f"{path} is neither a folder nor a .zip file")
    return _collect_folder(path, notebook_names)


def _is_under(path: Path, root: Path) -> bool:
    return path != root and path.is_relative_to(root)


def _member_parts(name: str) -> tuple[str, ...] | None:
    """The member's path as parts, or None when it would leave the extraction folder."""
    name = name.replace("\\", "/")
    if "\x00" in name or name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return None
    parts = tuple(p for p in PurePosixPath(name).parts if p not in ("", "."))
    if any(p == ".." for p in parts):
        return None
    return parts


def _member_problem(info: zipfile.ZipInfo) -> str | None:
    """Why a (file) member is not extracted, or None."""
    mode = info.external_attr >> 16
    if mode and stat.S_IFMT(mode) and not stat.S_ISREG(mode):
        if stat.S_ISLNK(mode):
            return SYMLINK_REASON
        return f"not a regular file ({_FILE_TYPES.get(stat.S_IFMT(mode), 'an unknown kind of file')})"
    if info.flag_bits & 0x1:
        return "encrypted (password-protected) in the zip"
    if info.file_size > MAX_NOTEBOOK_BYTES:
        return f"larger than {_mb(MAX_NOTEBOOK_BYTES)}"
    if info.file_size > RATIO_FLOOR_BYTES and info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1):
        return f"compressed more than {MAX_COMPRESSION_RATIO}:1 in the zip (a zip bomb?)"
    return None


def _safe_extract(archive: Path, target: Path) -> tuple[dict[tuple[str, ...], str], list[str]]:
    """Extract the notebooks of ``archive`` (and the folders of every member) into ``target``.

    Returns the notebook members not extracted, by path parts, with the reason, and warnings
    for members that could not be placed at all. Other files are not extracted: nothing reads
    them, and their folders are enough to know every student."""
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise SubmissionsError(f"{archive} cannot be opened as a zip: {exc}") from None
    skipped: dict[tuple[str, ...], str] = {}
    warnings: list[str] = []
    with zf:
        members = zf.infolist()
        if len(members) > MAX_ZIP_MEMBERS:
            raise SubmissionsError(f"{archive} holds {len(members)} entries, more than the {MAX_ZIP_MEMBERS} allowed")
        total = sum(info.file_size for info in members if info.filename.lower().endswith(".ipynb"))
        if total > MAX_ZIP_BYTES:
            raise SubmissionsError(f"{archive} would unpack to {_mb(total)} of notebooks, more than the "
                                   f"{_mb(MAX_ZIP_BYTES)} allowed")
        for info in members:
            # A member that would land outside the folder is a crafted archive: refuse it whole.
            if _member_parts(info.filename) is None:
                raise SubmissionsError(f"{archive} holds an unsafe path: {info.filename!r} (absolute or "
                                       "leading outside the archive); nothing was extracted")
        written = 0
        for info in members:
            parts = _member_parts(info.filename) or ()
            if not parts or IGNORED_PARTS.intersection(parts):
                continue
            is_dir = info.is_dir() or stat.S_ISDIR(info.external_attr >> 16)
            folder = parts if is_dir else parts[:-1]
            try:
                target.joinpath(*folder).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                warnings.append(f"zip member {info.filename!r} skipped: {exc.strerror or exc}")
                continue
            if is_dir or not parts[-1].lower().endswith(".ipynb"):
                continue
            problem = _member_problem(info)
            if problem is None:
                try:
                    written += _extract_member(zf, info, target.joinpath(*parts), MAX_ZIP_BYTES - written)
                except UnreadableSubmission as exc:
                    problem = exc.reason
            if problem is not None:
                skipped.setdefault(parts, problem)
    return skipped, warnings


def _extract_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, destination: Path, budget: int) -> int:
    """Stream one member to a new regular file, never more than it declared or the budget allows."""
    limit = min(info.file_size, MAX_NOTEBOOK_BYTES, budget)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(destination, flags, 0o644)
    except FileExistsError:
        raise UnreadableSubmission("appears twice in the zip; the first copy is graded") from None
    except OSError as exc:
        raise UnreadableSubmission(f"cannot be extracted ({exc.strerror or exc})") from None
    written = 0
    try:
        with os.fdopen(fd, "wb") as out, zf.open(info) as source:
            while chunk := source.read(1 << 20):
                written += len(chunk)
                if written > limit:
                    raise UnreadableSubmission(f"larger than {_mb(limit)} once unpacked")
                out.write(chunk)
    except UnreadableSubmission:
        destination.unlink(missing_ok=True)
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, RuntimeError, OSError, EOFError, ValueError) as exc:
        destination.unlink(missing_ok=True)
        raise UnreadableSubmission(f"damaged in the zip ({exc})") from None
    return written


def _unwrap(folder: Path, skipped: set[tuple[str, ...]] = frozenset()) -> Path:
    """A zip of the folder 'submissions/' holds one top folder: look inside it. ``skipped``
    are notebooks (path parts under ``folder``) that were not extracted: they count as present."""
    base = folder

    def notebooks_in(path: Path) -> bool:
        relative = path.relative_to(base).parts
        return any(path.glob("*.ipynb")) or any(parts[:-1] == relative for parts in skipped)

    entries = [p for p in folder.iterdir() if p.name not in IGNORED_PARTS]
    while len(entries) == 1 and entries[0].is_dir() and not notebooks_in(entries[0]) and not notebooks_in(folder):
        folder = entries[0]
        entries = [p for p in folder.iterdir() if p.name not in IGNORED_PARTS]
    return folder


def _walk(folder: Path, budget: list[int]):
    """(path, lstat) of every entry under ``folder``, symbolic links not followed, ignored
    folders not entered, at most ``budget[0]`` entries."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        if budget[0] <= 0:
            return
        budget[0] -= 1
        if entry.name in IGNORED_PARTS:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        yield Path(entry.path), st
        if stat.S_ISDIR(st.st_mode):
            yield from _walk(Path(entry.path), budget)


def _collect_folder(root: Path, notebook_names: list[str],
                    skipped: dict[tuple[str, ...], str] | None = None) -> Collected:
    """``skipped``: notebooks under ``root`` (path parts) that were seen but not extracted."""
    wanted = {name.lower(): name for name in notebook_names}
    collected = Collected(root=root)
    # (student, notebook) -> [(path or None, problem or None, mtime)]
    candidates: dict[tuple[str, str], list[tuple[Path | None, str, str | None, float]]] = {}
    for parts, reason in (skipped or {}).items():
        name = wanted.get(canonical_name(parts[-1]))
        if len(parts) >= 2 and name is not None:
            candidates.setdefault((parts[0], name), []).append((None, parts[-1], reason, 0.0))
        elif len(parts) == 1 and name is not None:
            collected.warnings.append(f"{parts[0]} is not inside a student folder and was skipped: {reason}")
    for student, entry in student_folders(root, notebook_names, collected):
        collected.students.setdefault(student, {})
        budget = [MAX_ENTRIES_PER_STUDENT]
        for file, st in _walk(Path(entry.path), budget):
            if not file.name.lower().endswith(".ipynb"):
                continue
            name = wanted.get(canonical_name(file.name))
            if name is not None:
                candidates.setdefault((student, name), []).append((file, file.name, _file_problem(st), st.st_mtime))
        if budget[0] <= 0:
            collected.warnings.append(f"{student}: more than {MAX_ENTRIES_PER_STUDENT} files; only the first "
                                      "ones were looked at")
    for (student, name), files in sorted(candidates.items()):
        collected.students.setdefault(student, {})
        # Several candidates (a copy and the original): the exact name wins, then the newest.
        files.sort(key=lambda f: (f[1] != f"{name}.ipynb", -f[3]))
        good = [f for f in files if f[2] is None]
        bad = [f for f in files if f[2] is not None]
        if good:
            collected.students[student][name] = good[0][0]
        else:
            collected.rejected[(student, name)] = bad[0][2]
        ignored = [f[1] for f in good[1:]] + [f"{f[1]} ({f[2]})" for f in (bad if good else bad[1:])]
        if ignored:
            chosen = good[0][1] if good else "nothing"
            collected.notes[(student, name)] = f"graded {chosen}; ignored {', '.join(ignored)}"
    return collected
