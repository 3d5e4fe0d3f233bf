"""Safe intake: only regular files are read, from folders and zips, and every rejected file
gets a reason in plain words (and, for a known notebook name, a row)."""

from __future__ import annotations

import functools
import json
import os
import stat
import threading
import zipfile
from pathlib import Path

import nbformat
import pytest
from toy import CORRECT, TOY_NAME, submission_from

from autograde.submissions import (
    MAX_COMPRESSION_RATIO,
    MAX_JSON_DEPTH,
    SYMLINK_REASON,
    SubmissionsError,
    UnreadableSubmission,
    collect,
    json_depth,
    read_notebook_safely,
)

NOTEBOOK = f"{TOY_NAME}.ipynb"


def _guarded(function, *args, timeout: float = 10.0):
    """Run ``function(*args)`` in a thread; fail (instead of hanging the suite) if it blocks."""
    outcome: dict = {}

    def run():
        try:
            outcome["value"] = function(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"{function!r} blocked for more than {timeout} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _reason(path: Path, **kwargs) -> str:
    with pytest.raises(UnreadableSubmission) as caught:
        _guarded(functools.partial(read_notebook_safely, path, **kwargs))
    assert str(caught.value) == caught.value.reason
    return caught.value.reason


@pytest.fixture
def good_notebook(tmp_path, toy_release) -> Path:
    path = tmp_path / "good" / NOTEBOOK
    path.parent.mkdir()
    nbformat.write(submission_from(toy_release, CORRECT), path)
    return path


def test_a_regular_notebook_is_read_and_validated(good_notebook):
    nb = read_notebook_safely(good_notebook)
    assert nb.nbformat == 4 and any(CORRECT in c.source for c in nb.cells)


# --------------------------------------------------------------------------- one file

def test_fifo_is_rejected_without_blocking(tmp_path):
    fifo = tmp_path / NOTEBOOK
    os.mkfifo(fifo)
    assert _reason(fifo) == "not a regular file (a FIFO)"


def test_symlinked_notebook_is_rejected(tmp_path, good_notebook):
    link = tmp_path / NOTEBOOK
    link.symlink_to(good_notebook)  # e.g. to the instructor's source notebook
    assert _reason(link) == SYMLINK_REASON == "a symbolic link: submissions must be real files"


def test_symlink_to_a_device_is_rejected(tmp_path):
    link = tmp_path / NOTEBOOK
    link.symlink_to("/dev/null")
    assert _reason(link) == SYMLINK_REASON


def test_device_file_is_rejected(tmp_path):
    device = tmp_path / NOTEBOOK
    try:
        os.mknod(device, stat.S_IFCHR | 0o600, os.makedev(1, 3))  # /dev/null's numbers
    except (OSError, AttributeError) as exc:
        pytest.skip(f"cannot create a device here: {exc}")
    assert _reason(device) == "not a regular file (a character device)"


def test_socket_and_directory_are_rejected(tmp_path):
    import socket

    folder = tmp_path / NOTEBOOK
    folder.mkdir()
    assert _reason(folder) == "not a regular file (a directory)"
    sock_path = tmp_path / "s.ipynb"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
        assert _reason(sock_path) == "not a regular file (a socket)"


def test_oversize_notebook_is_rejected(tmp_path, good_notebook):
    assert _reason(good_notebook, max_bytes=100) == "larger than 0.0001 MB"
    big = tmp_path / "big.ipynb"
    with open(big, "wb") as fh:
        fh.truncate(20 * 1000 * 1000 + 1)  # sparse: costs no disk
    assert _reason(big) == "larger than 20 MB"


def test_deep_json_nesting_is_rejected_before_parsing(tmp_path):
    deep = tmp_path / "deep.ipynb"
    deep.write_text("[" * 10_000 + "]" * 10_000)
    assert _reason(deep) == f"nested more than {MAX_JSON_DEPTH} levels deep"
    # brackets inside strings do not count
    assert json_depth(json.dumps({"a": "[" * 500, "b": [[1]]})) == 3


def test_invalid_json_is_rejected(tmp_path, good_notebook):
    truncated = tmp_path / "truncated.ipynb"
    truncated.write_text(good_notebook.read_text()[:200])
    assert _reason(truncated) == "not valid JSON (truncated or corrupted?)"
    binary = tmp_path / "binary.ipynb"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    assert _reason(binary).startswith("not text")
    empty = tmp_path / "empty.ipynb"
    empty.write_text("")
    assert _reason(empty) == "empty"


def test_valid_json_that_is_not_a_notebook_is_rejected(tmp_path):
    cases = {
        "list.ipynb": "[1, 2, 3]",
        "object.ipynb": json.dumps({"hello": "world"}),
        "bad-cells.ipynb": json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": "nope"}),
        "future.ipynb": json.dumps({"nbformat": 99, "nbformat_minor": 0, "metadata": {}, "cells": []}),
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        reason = _reason(tmp_path / name)
        assert reason.startswith("not a notebook: ") and "\n" not in reason and len(reason) < 200, (name, reason)


# --------------------------------------------------------------------------- folders

def _class(tmp_path: Path, good_notebook: Path) -> Path:
    root = tmp_path / "class"
    (root / "honest").mkdir(parents=True)
    (root / "honest" / NOTEBOOK).write_bytes(good_notebook.read_bytes())
    (root / "fifo").mkdir()
    os.mkfifo(root / "fifo" / NOTEBOOK)
    (root / "linked-file").mkdir()
    (root / "linked-file" / NOTEBOOK).symlink_to(good_notebook)
    (root / "linked-folder").symlink_to(good_notebook.parent, target_is_directory=True)
    (root / "fifo-and-copy").mkdir()
    os.mkfifo(root / "fifo-and-copy" / NOTEBOOK)
    (root / "fifo-and-copy" / f"Copy of {NOTEBOOK}").write_bytes(good_notebook.read_bytes())
    (root / "nested" / "work").mkdir(parents=True)
    (root / "nested" / "work" / f"{TOY_NAME} (1).ipynb").write_bytes(good_notebook.read_bytes())
    (root / "linked-subfolder").mkdir()
    (root / "linked-subfolder" / "work").symlink_to(good_notebook.parent, target_is_directory=True)
    return root


def test_folder_collection_rejects_what_is_not_a_regular_file(tmp_path, good_notebook):
    collected = _guarded(collect, _class(tmp_path, good_notebook), [TOY_NAME])
    assert collected.students["honest"][TOY_NAME].name == NOTEBOOK
    assert collected.students["nested"][TOY_NAME].name == f"{TOY_NAME} (1).ipynb"  # rename forgiveness
    # rejected files of a known notebook name: the student is listed, the reason kept
    for student in ("fifo", "linked-file", "linked-folder"):
        assert student in collected.students and TOY_NAME not in collected.students[student]
    assert collected.rejected[("fifo", TOY_NAME)] == "not a regular file (a FIFO)"
    assert collected.rejected[("linked-file", TOY_NAME)] == SYMLINK_REASON
    assert "symbolic link" in collected.rejected[("linked-folder", TOY_NAME)]
    # a regular copy next to a FIFO is graded, and the FIFO is named in the note
    assert collected.students["fifo-and-copy"][TOY_NAME].name == f"Copy of {NOTEBOOK}"
    assert ("fifo-and-copy", TOY_NAME) not in collected.rejected
    assert "FIFO" in collected.notes[("fifo-and-copy", TOY_NAME)]
    # a linked folder inside a student's folder is not followed
    assert collected.students["linked-subfolder"] == {}
    # what the collection let through is readable, what it rejected is rejected again by the reader
    read_notebook_safely(collected.students["honest"][TOY_NAME])
    assert _reason(collected.root / "fifo" / NOTEBOOK) == "not a regular file (a FIFO)"


def test_several_candidates_keep_their_note(tmp_path, good_notebook):
    root = tmp_path / "class"
    (root / "alice").mkdir(parents=True)
    for name in (NOTEBOOK, f"Copy of {NOTEBOOK}"):
        (root / "alice" / name).write_bytes(good_notebook.read_bytes())
    collected = collect(root, [TOY_NAME])
    assert collected.students["alice"][TOY_NAME].name == NOTEBOOK
    assert collected.notes[("alice", TOY_NAME)] == f"graded {NOTEBOOK}; ignored Copy of {NOTEBOOK}"


# --------------------------------------------------------------------------- zips

def _symlink_member(name: str, target: str) -> tuple[zipfile.ZipInfo, str]:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target


def test_zip_traversal_and_absolute_paths_are_refused(tmp_path):
    for bad_name in ("../../escape/toy.ipynb", "alice/../../escape.ipynb", "/etc/cron.d/toy.ipynb",
                     "..\\..\\escape\\toy.ipynb", "C:/escape/toy.ipynb"):
        archive = tmp_path / "evil.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("alice/notes.txt", "hi")
            zf.writestr(bad_name, "{}")
        with pytest.raises(SubmissionsError, match="unsafe path"):
            collect(archive, [TOY_NAME])
        assert not (tmp_path.parent / "escape").exists() and not (tmp_path / "escape").exists()


def test_zip_members_are_checked_one_by_one(tmp_path, good_notebook):
    archive = tmp_path / "class.zip"
    bomb = b'{"cells": [], "x": "' + b"0" * 15_000_000 + b'"}'
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.write(good_notebook, f"submissions/honest/{NOTEBOOK}")
        zf.writestr(*_symlink_member(f"submissions/linker/{NOTEBOOK}", str(good_notebook)))
        zf.writestr(f"submissions/bomber/{NOTEBOOK}", bomb)
        fifo = zipfile.ZipInfo(f"submissions/piper/{NOTEBOOK}")
        fifo.create_system = 3
        fifo.external_attr = (stat.S_IFIFO | 0o644) << 16
        zf.writestr(fifo, "")
        zf.writestr("submissions/absent/notes.txt", "forgot")
    assert zipfile.ZipFile(archive).getinfo(f"submissions/bomber/{NOTEBOOK}").compress_size * MAX_COMPRESSION_RATIO \
        < len(bomb)
    collected = collect(archive, [TOY_NAME])
    try:
        assert set(collected.students) == {"honest", "linker", "bomber", "piper", "absent"}
        read_notebook_safely(collected.students["honest"][TOY_NAME])
        assert collected.rejected[("linker", TOY_NAME)] == SYMLINK_REASON
        assert "zip bomb" in collected.rejected[("bomber", TOY_NAME)]
        assert collected.rejected[("piper", TOY_NAME)] == "not a regular file (a FIFO)"
        assert ("absent", TOY_NAME) not in collected.rejected and collected.students["absent"] == {}
        # nothing but regular files and folders was extracted
        for dirpath, dirnames, filenames in os.walk(collected.cleanup):
            for name in dirnames + filenames:
                mode = os.lstat(os.path.join(dirpath, name)).st_mode
                assert stat.S_ISDIR(mode) or stat.S_ISREG(mode)
    finally:
        collected.close()
    assert not collected.cleanup.exists()


def test_zip_member_over_the_size_limit_is_rejected(tmp_path, monkeypatch):
    from autograde import submissions

    monkeypatch.setattr(submissions, "MAX_NOTEBOOK_BYTES", 1000)
    archive = tmp_path / "class.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(f"alice/{NOTEBOOK}", "x" * 5000)
    collected = collect(archive, [TOY_NAME])
    try:
        assert collected.rejected[("alice", TOY_NAME)] == "larger than 0.001 MB"
    finally:
        collected.close()


def test_zip_with_too_many_members_is_refused(tmp_path, monkeypatch):
    from autograde import submissions

    monkeypatch.setattr(submissions, "MAX_ZIP_MEMBERS", 50)
    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(51):
            zf.writestr(f"alice/file{i}.txt", "")
    with pytest.raises(SubmissionsError, match="51 entries, more than the 50 allowed"):
        collect(archive, [TOY_NAME])


def test_zip_whose_notebooks_unpack_too_large_is_refused(tmp_path, monkeypatch):
    from autograde import submissions

    monkeypatch.setattr(submissions, "MAX_ZIP_BYTES", 10_000)
    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for student in ("a", "b", "c"):
            zf.writestr(f"{student}/{NOTEBOOK}", "0" * 5000)
    with pytest.raises(SubmissionsError, match="more than the 0.01 MB allowed"):
        collect(archive, [TOY_NAME])
