"""`autograde release`: the source notebooks -> student notebooks, verified leak-free."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from autograde.assignment import build_assignment
from autograde.leakcheck import find_leaks

DEFAULT_RELEASE_DIR = "student"


class LeakError(RuntimeError):
    """The generated release would reveal solutions or hidden tests."""


def release(out: str | Path = DEFAULT_RELEASE_DIR, sources: list[Path] | None = None) -> list[Path]:
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
            written.append(target)
    return written
