"""Reproducible regrades: what a row's score depended on, and what a regrade changed.

Every row of results.json records three sha256 digests: of the submitted file, of the
assignment's checks (every graded cell's gradebook source and points, and the code of the
checkpoint modules and probes those cells name) and of the environment (the Python version
and every installed distribution with its version). ``autograde grade --regrade PREVIOUS``
compares a new run with an earlier one row by row and says which rows changed score and
why. Held-out inputs are drawn from a seed derived from a secret salt kept with the results
(never shown to students) and the submission's digest, so regrading an unchanged batch
draws the same inputs and changes nothing.
"""

from __future__ import annotations

import csv
import hashlib
import json
import secrets
import sys
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from autograde.safe_output import csv_cell

SALT_FILE = "heldout-salt"
REGRADE_COLUMNS = ["student", "notebook", "previous_score", "score", "change", "reason"]


def file_sha256(path: Path | None) -> str:
    if path is None:
        return ""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return ""
    return digest.hexdigest()


def bytes_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def checks_sha256(spec) -> str:
    """The assignment's checks for one notebook: graded cells (gradebook source and points)
    and the source of every checkpoint module (and probe script) they name."""
    from checkpoints.interface import marker_module

    digest = hashlib.sha256()
    modules = set()
    for cell in spec.graded_cells:
        digest.update(f"{cell.grade_id}\0{cell.points}\0{cell.source}\0".encode())
        module = marker_module(cell.source)
        if module:
            modules.add(module)
    for module in sorted(modules):
        digest.update(_module_source(module))
    return digest.hexdigest()


def _module_source(module: str) -> bytes:
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        return module.encode()
    data = Path(spec.origin).read_bytes()
    probes = Path(spec.origin).parent / "probes"  # any probe a declaration may run
    for probe in sorted(probes.glob("*.py")) if probes.is_dir() else []:
        data += probe.read_bytes()
    return data


@lru_cache(maxsize=1)
def environment_sha256() -> str:
    installed = sorted(f"{d.metadata['Name']}=={d.version}".lower() for d in metadata.distributions()
                       if d.metadata and d.metadata.get("Name"))
    return bytes_sha256(("\n".join([sys.version, *installed])).encode())


def heldout_salt(folder: Path) -> str:
    """The secret salt of held-out inputs for the results in ``folder`` (created once, 0600)."""
    path = Path(folder) / SALT_FILE
    if path.is_file():
        return path.read_text().strip()
    folder.mkdir(parents=True, exist_ok=True)
    salt = secrets.token_hex(16)
    path.write_text(salt)
    path.chmod(0o600)
    return salt


def keep_salt(salt: str, folder: Path) -> None:
    """A regrade's results keep the salt they were graded with, for the next regrade."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / SALT_FILE
    path.write_text(salt)
    path.chmod(0o600)


def heldout_seed(salt: str, submission_sha: str, grade_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{salt}\0{submission_sha}\0{grade_id}".encode()).digest()[:8], "big")


@dataclass
class Change:
    student: str
    notebook: str
    previous_score: float | None
    score: float | None
    reason: str

    @property
    def change(self) -> str:
        if self.previous_score is None:
            return "new"
        if self.score is None:
            return "gone"
        delta = self.score - self.previous_score
        return "same" if abs(delta) < 1e-9 else f"{delta:+g}"


def compare(previous: list[dict], current: list[dict]) -> list[Change]:
    """Row by row: the score change and why (submission, checks, environment, or none of
    them: then the grading itself was not reproducible, which is said plainly)."""
    before = {(r["student"], r["notebook"]): r for r in previous}
    after = {(r["student"], r["notebook"]): r for r in current}
    changes = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old is None or new is None:
            changes.append(Change(*key, old and old["score"], new and new["score"],
                                  "not in the previous run" if old is None else "not in this run"))
            continue
        reasons = [what for what, field in (("submission changed", "submission_sha256"),
                                            ("checks changed", "checks_sha256"),
                                            ("environment changed", "environment_sha256"))
                   if old.get(field) != new.get(field)]
        if abs(old["score"] - new["score"]) < 1e-9:
            reason = "; ".join(reasons) + " (score unchanged)" if reasons else ""
        else:
            reason = "; ".join(reasons) or "nothing recorded changed: the grading was not reproducible"
        changes.append(Change(*key, old["score"], new["score"], reason))
    return changes


def load_rows(results: Path) -> list[dict]:
    path = Path(results)
    path = path / "results.json" if path.is_dir() else path
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is not a grading run's results.json ({exc})") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "student" in r for r in rows):
        raise ValueError(f"{path} does not hold grading results")
    return rows


def write_regrade(out: Path, changes: list[Change]) -> Path:
    target = Path(out) / "regrade.csv"
    with open(target, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, REGRADE_COLUMNS)
        writer.writeheader()
        for c in changes:
            writer.writerow({"student": csv_cell(c.student), "notebook": c.notebook,
                             "previous_score": "" if c.previous_score is None else f"{c.previous_score:g}",
                             "score": "" if c.score is None else f"{c.score:g}", "change": c.change,
                             "reason": c.reason})
    return target
