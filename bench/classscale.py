"""Class scale: a realistic class, every notebook, graded the way an instructor grades it.

A class of N students cycles through six kinds: perfect, blank, partial (the first half of
each notebook's exercises), perfect, hostile (a perfect notebook that also leaves a
double-forked daemon, floods its output and tries to read other runs), and right code with
wrong predictions. Each student hands in every notebook of the course. The class is graded
by ``autograde.grade.grade`` with the sandbox on; seconds per student, the projection to 100
students (the least-squares line over the sizes, so fixed costs are not multiplied), and
where the time went by phase (from results.json, ``autograde/phases.py``).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell

from autograde.grade import GradeOptions, grade
from autograde.leakcheck import SECRET_BLOCKS
from autograde.limits import Limits
from autograde.release import release

KINDS = ("perfect", "blank", "partial", "perfect", "hostile", "wrong_predictions")
HOSTILE_CELLS = [
    # outlive the run
    "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(600)\n"
    "    os._exit(0)",
    # flood the output
    "for i in range(20000):\n    print('flood', i, 'x' * 200)",
    # look for other students
    "import glob\nprint((glob.glob('/tmp/autograde-run-*') + glob.glob('/proc/*/cwd'))[:5])",
]


def _answer(text: str) -> str:
    markers = {m for pair in SECRET_BLOCKS for m in pair}
    return "\n".join(line for line in text.splitlines() if line.strip() not in markers)


def _solutions(source: Path) -> dict[str, str]:
    nb = nbformat.read(source, as_version=4)
    return {c.metadata["nbgrader"]["grade_id"]: _answer(c.source) for c in nb.cells
            if c.metadata.get("nbgrader", {}).get("solution")}


def _student_notebook(kind: str, released: Path, solutions: dict[str, str]) -> nbformat.NotebookNode:
    nb = nbformat.read(released, as_version=4)
    wanted = {"blank": [], "partial": list(solutions)[: len(solutions) // 2]}.get(kind, list(solutions))
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in wanted:
            cell.source = solutions[grade_id]
            names = re.findall(r"^(checkpoint_[a-z]\d+)\s*=", cell.source, flags=re.MULTILINE)
            if kind == "wrong_predictions" and names:
                cell.source = f'{names[0]} = "not sure"'
    if kind == "hostile":
        first_code = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
        for offset, source in enumerate(HOSTILE_CELLS):
            nb.cells.insert(first_code + 1 + offset, new_code_cell(source))
    return nb


def build_class(sources: list[Path], n: int, folder: Path) -> Path:
    """``n`` students, each with every notebook of ``sources``; returns the class folder."""
    with tempfile.TemporaryDirectory() as tmp:
        released = {p.stem: p for p in release(Path(tmp), sources)}
        solutions = {p.stem: _solutions(p) for p in sources}
        for i in range(n):
            kind = KINDS[i % len(KINDS)]
            student = folder / f"student{i:03d}_{kind}"
            student.mkdir(parents=True)
            for name, path in released.items():
                nbformat.write(_student_notebook(kind, path, solutions[name]), student / f"{name}.ipynb")
    return folder


NOTEBOOK_PHASES = ("kernel_start", "imports", "model_loads", "student_cells")  # the notebook's own work
GRADING_PHASES = ("scan", "hidden_checks", "reports")  # the grader's


def _machine_cpu_seconds() -> float | None:
    """CPU time the whole machine has spent busy (all processes, all cores), from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def grade_class(folder: Path, out: Path, sources: list[Path], workers: int, scheduler: str | None = None,
                kernel_template: bool = True) -> dict:
    started, cpu_before = time.perf_counter(), _machine_cpu_seconds()
    options = GradeOptions(workers=workers, limits=Limits(sandbox=True), scheduler=scheduler,
                           kernel_template=kernel_template)
    results = grade(folder, out, options, sources=sources, force=True)
    wall = time.perf_counter() - started
    cpu_after = _machine_cpu_seconds()
    busy = round(cpu_after - cpu_before, 1) if cpu_before is not None and cpu_after is not None else None
    students = len({r.student for r in results})
    phases: dict[str, dict[str, float]] = {}
    for r in results:
        for phase, seconds in r.phases.items():
            phases.setdefault(r.notebook, {}).setdefault(phase, 0.0)
            phases[r.notebook][phase] += seconds
    per_notebook = {}
    for name in sorted({r.notebook for r in results}):
        rows = [r for r in results if r.notebook == name and r.status != "missing"]
        per_notebook[name] = {
            "executions": len(rows),
            "mean_duration_s": round(sum(r.duration_s for r in rows) / max(len(rows), 1), 2),
            "phases_s": {k: round(v, 2) for k, v in phases.get(name, {}).items()},
        }
    statuses: dict[str, int] = {}
    kernels: dict[str, int] = {}
    for r in results:
        statuses[r.status] = statuses.get(r.status, 0) + 1
        if r.kernel_from:
            kernels[r.kernel_from] = kernels.get(r.kernel_from, 0) + 1
    per_student = max(students, 1)
    return {"students": students, "workers": workers, "scheduler": scheduler, "wall_s": round(wall, 1),
            "s_per_student": round(wall / per_student, 2), "statuses": statuses, "kernels_from": kernels,
            # Where a student's seconds go, summed over their notebooks: the notebooks' own work
            # (the floor any grader pays) against the grader's; and how busy the machine was.
            "notebook_work_s_per_student": round(sum(phases[nb].get(k, 0.0) for nb in phases
                                                     for k in NOTEBOOK_PHASES) / per_student, 2),
            "grading_work_s_per_student": round(sum(phases[nb].get(k, 0.0) for nb in phases
                                                    for k in GRADING_PHASES) / per_student, 2),
            "machine_cpu_s_per_student": round(busy / per_student, 2) if busy is not None else None,
            "machine_busy_share": round(busy / (wall * (os.cpu_count() or 1)), 3) if busy is not None else None,
            "notebooks": per_notebook,
            "overhead_in_worker_s": _median([r.duration_s - r.execution_s - r.kernel_start_s
                                              - r.phases.get("scan", 0.0) for r in results if r.execution_s])}


def _median(values: list[float]) -> float | None:
    values = sorted(values)
    return round(values[len(values) // 2], 3) if values else None


def measure(sources: list[Path], sizes: list[int], workers: int, scratch: Path, describe=None, step=None,
            dask_size: int | None = None, kernel_template: bool = True) -> dict:
    import numpy as np

    points = []
    for n in sizes:
        if describe:
            describe(f"class scale: {n} students x {len(sources)} notebooks, {workers} workers")
        folder = build_class(sources, n, scratch / f"class-{n}")
        points.append(grade_class(folder, scratch / f"results-{n}", sources, workers,
                                  kernel_template=kernel_template))
        if step:
            step()
    data: dict = {"workers": workers, "kinds": list(KINDS), "kernel_template": kernel_template, "points": points,
                  "fit": None, "dask": None}
    if len(sizes) >= 2:
        n = np.array([p["students"] for p in points], dtype=float)
        wall = np.array([p["wall_s"] for p in points])
        slope, intercept = np.polyfit(n, wall, 1)
        data["fit"] = {"intercept_s": float(intercept), "slope_s_per_student": float(slope),
                       "projected_100_students_min": float(intercept + slope * 100) / 60}
    if dask_size:
        if describe:
            describe(f"class scale on Dask: {dask_size} students, {workers} local workers")
        folder = scratch / f"class-{dask_size}"
        if not folder.exists():
            build_class(sources, dask_size, folder)
        on_dask = grade_class(folder, scratch / "results-dask", sources, workers, scheduler="local",
                              kernel_template=kernel_template)
        local = next((p for p in points if p["students"] == dask_size), None)
        data["dask"] = {**on_dask, "vs_local": round(on_dask["wall_s"] / local["wall_s"], 3) if local else None}
        if step:
            step()
    shutil.rmtree(scratch, ignore_errors=True)
    return data


def table_rows(data: dict) -> list[tuple[str, str, str]]:
    rows = []
    for p in data["points"]:
        rows.append((f"{p['students']} students x {len(p['notebooks'])} notebooks, {p['workers']} workers",
                     f"{p['wall_s']:.0f} s = {p['s_per_student']:.1f} s/student", "<= 18 s/student"))
        if p.get("notebook_work_s_per_student") is not None:
            busy = "" if p.get("machine_busy_share") is None else \
                f"; machine {p['machine_busy_share']:.0%} busy, {p['machine_cpu_s_per_student']:.0f} CPU-s/student"
            rows.append((f"  per student ({p['students']}): notebooks' own work vs the grader's",
                         f"{p['notebook_work_s_per_student']:.1f} s vs {p['grading_work_s_per_student']:.1f} s{busy}",
                         ""))
    if data.get("fit"):
        fit = data["fit"]
        rows.append(("projection to 100 students (line over the sizes)",
                     f"{fit['projected_100_students_min']:.1f} min (a = {fit['intercept_s']:.0f} s, "
                     f"b = {fit['slope_s_per_student']:.1f} s/student)", "<= 30 min"))
    if data["points"]:
        last = data["points"][-1]
        for name, nb in last["notebooks"].items():
            phases = ", ".join(f"{k} {v:.0f}" for k, v in nb["phases_s"].items() if v >= 0.5)
            rows.append((f"{name}: where {nb['executions']} executions spent their seconds", phases, ""))
    if data.get("dask"):
        d = data["dask"]
        versus = "n/a" if d["vs_local"] is None else f"{d['vs_local']:.2f}x the local run"
        rows.append((f"Dask, {d['workers']} local workers, {d['students']} students",
                     f"{d['wall_s']:.0f} s ({versus})", "within 15%"))
    return rows
