"""Prove a student release gives nothing away: no solution line, no hidden-test line, no
reference to the hidden verifiers, no nbgrader markers, no outputs."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

SECRET_BLOCKS = (
    ("### BEGIN SOLUTION", "### END SOLUTION"),
    ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"),
)
MARKERS = re.compile(r"###\s*(BEGIN|END)\s+(SOLUTION|HIDDEN TESTS)", re.IGNORECASE)
VERIFIER_IMPORT = re.compile(r"^\s*(from|import)\s+checkpoints\b", re.MULTILINE)
# Lines too generic to count as a leak on their own ("return result", "pass", "})").
MIN_SECRET_LENGTH = 12


def _secret_lines(source_nb) -> tuple[set[str], set[str]]:
    """Lines inside secret blocks, and all other lines of the source notebook."""
    secret: set[str] = set()
    public: set[str] = set()
    for cell in source_nb.cells:
        inside = False
        for raw in cell.source.splitlines():
            line = raw.strip()
            if any(line.startswith(begin) for begin, _ in SECRET_BLOCKS):
                inside = True
                continue
            if any(line.startswith(end) for _, end in SECRET_BLOCKS):
                inside = False
                continue
            (secret if inside else public).add(line)
    return secret, public


def find_leaks(source_path: Path, release_path: Path) -> list[str]:
    """Every way ``release_path`` leaks what ``source_path`` keeps secret, as messages."""
    source_nb = nbformat.read(source_path, as_version=4)
    release_nb = nbformat.read(release_path, as_version=4)
    secret, public = _secret_lines(source_nb)
    secret = {s for s in secret - public if len(s) >= MIN_SECRET_LENGTH and not s.startswith("#")}
    leaks = []
    name = Path(release_path).name
    for index, cell in enumerate(release_nb.cells):
        where = f"{name} cell {index}"
        for line in cell.source.splitlines():
            stripped = line.strip()
            if stripped in secret:
                leaks.append(f"{where}: a solution or hidden-test line survives: {stripped[:80]!r}")
            elif MARKERS.search(stripped):
                leaks.append(f"{where}: an nbgrader marker survives: {stripped[:80]!r}")
        if VERIFIER_IMPORT.search(cell.source):
            leaks.append(f"{where}: imports the hidden verifiers (checkpoints/), a hidden test left unmarked?")
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count")):
            leaks.append(f"{where}: outputs or an execution count were not cleared")
    return leaks
