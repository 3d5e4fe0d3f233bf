"""``python -m bench``: run the sections, print one table, write bench/results/<date>.json."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from autograde.assignment import NOTEBOOKS_DIR
from autograde.runner import REPO_ROOT
from bench.figures import expressions_for
from bench.mini import write_mini_source
from bench.report import median_figures, median_or_none, print_table, write_json

SECTIONS = ("notebooks", "grading", "scaling", "classscale")
RESULTS_DIR = Path(__file__).resolve().parent / "results"
GRADED_NOTEBOOK = "colab_a_fastapi"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: a tiny stand-in notebook, 2 submissions, scaling 1/2")
    parser.add_argument("--repeat", type=int, help="repeats per notebook measurement (default 3, quick 1)")
    parser.add_argument("--notebook-budget", type=float, default=150.0,
                        help="seconds per notebook after which no further repeat starts (default %(default)s; "
                             "at least one repeat always runs)")
    parser.add_argument("--submissions", type=int, help="submissions for the throughput section (default 20)")
    parser.add_argument("--scaling", help="comma-separated batch sizes (default 10,20,40; quick 1,2)")
    parser.add_argument("--class-sizes", help="comma-separated class sizes of the class-scale section "
                                              "(default 6,12,24; quick 2)")
    parser.add_argument("--dask-size", type=int, help="class size graded again on a local Dask cluster "
                                                      "(default 12; quick: none)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="workers of the parallel grading runs (default: number of cores)")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {','.join(SECTIONS)} (figures come with notebooks)")
    parser.add_argument("--notebooks", help="comma-separated notebook stems to measure (default: all present)")
    parser.add_argument("--out", type=Path, help="results file (default bench/results/<date>[-quick|-partial].json)")
    parser.add_argument("--scratch", type=Path, help="scratch folder (default: a temporary one, removed)")
    parser.add_argument("--no-kernel-template", action="store_true",
                        help="class scale: start every kernel afresh (the grader's --no-kernel-template)")
    return parser


def _load() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        print(f"error: unknown section(s) {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    repeat = args.repeat or (1 if args.quick else 3)
    n_submissions = args.submissions or (2 if args.quick else 20)
    sizes = [int(x) for x in (args.scaling or ("1,2" if args.quick else "10,20,40")).split(",") if x.strip()]
    class_sizes = [int(x) for x in (args.class_sizes or ("2" if args.quick else "6,12,24")).split(",") if x.strip()]
    dask_size = args.dask_size if args.dask_size is not None else (None if args.quick else 12)
    if repeat < 1 or n_submissions < 1 or args.workers < 1 or not sizes or min(sizes) < 1:
        print("error: --repeat, --submissions, --workers and --scaling sizes must be positive", file=sys.stderr)
        return 2

    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="bench-"))
    scratch.mkdir(parents=True, exist_ok=True)
    if args.quick:
        notebooks = [write_mini_source(scratch / "mini-source")]
    else:
        notebooks = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
    if args.notebooks:
        wanted = {s.strip() for s in args.notebooks.split(",")}
        notebooks = [p for p in notebooks if p.stem in wanted]
    graded = notebooks[0] if args.quick else NOTEBOOKS_DIR / f"{GRADED_NOTEBOOK}.ipynb"
    partial = set(sections) != set(SECTIONS) or bool(args.notebooks) or args.submissions or args.scaling

    today = dt.date.today().isoformat()
    results: dict = {
        "date": today,
        "started_at": dt.datetime.now().isoformat(timespec="seconds"),
        "quick": args.quick,
        "commit": _git_commit(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "load_at_start": _load()},
        "params": {"repeat": repeat, "notebook_budget_s": args.notebook_budget, "submissions": n_submissions, "scaling": sizes, "workers": args.workers,
                   "sections": sections, "notebooks": [p.stem for p in notebooks],
                   "graded_notebook": graded.stem, "class_sizes": class_sizes, "dask_size": dask_size,
                   "kernel_template": not args.no_kernel_template},
        "method": METHOD,
        "notebooks": None, "figures": None, "grading": None, "scaling": None, "classscale": None,
    }
    console = Console()
    started = time.perf_counter()
    total = (len(notebooks) * repeat * 2 if "notebooks" in sections else 0) \
        + (3 if "grading" in sections else 0) + (len(sizes) if "scaling" in sections else 0) \
        + (len(class_sizes) + bool(dask_size) if "classscale" in sections else 0)
    columns = (SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task("benchmarks", total=total)

            def describe(text: str) -> None:
                progress.update(task, description=text)

            def step() -> None:
                progress.advance(task)

            if "notebooks" in sections:
                results["notebooks"], results["figures"] = _notebooks(
                    notebooks, repeat, args.notebook_budget, scratch, describe, step,
                    skip=lambda n: progress.update(task, total=progress.tasks[0].total - n))
            grading_batch = None
            if "grading" in sections or "scaling" in sections:
                from bench.measure import Grading

                if not graded.exists():
                    console.print(f"[yellow]{graded} is absent: no grading sections[/yellow]")
                else:
                    describe(f"preparing submissions of {graded.stem}")
                    grading = Grading(graded, scratch / "grading")
                    if "grading" in sections:
                        results["grading"], grading_batch = _grading(grading, n_submissions, args.workers,
                                                                     describe, step)
                    if "scaling" in sections:
                        results["scaling"] = _scaling(grading, sizes, args.workers, grading_batch, describe, step)
            if "classscale" in sections:
                from bench.classscale import measure

                results["classscale"] = measure(notebooks, class_sizes, args.workers, scratch / "classscale",
                                                describe, step, dask_size=dask_size,
                                                kernel_template=not args.no_kernel_template)
            describe("done")
    finally:
        if args.scratch is None:
            shutil.rmtree(scratch, ignore_errors=True)

    results["duration_s"] = round(time.perf_counter() - started, 1)
    results["machine"]["load_at_end"] = _load()
    suffix = "-quick" if args.quick else "-partial" if partial else ""
    out = args.out or RESULTS_DIR / f"{today}{suffix}.json"
    print_table(results, console)
    console.print(f"results: {write_json(results, out)}  ({results['duration_s']:.0f} s)")
    return 0


def _notebooks(paths: list[Path], repeat: int, budget_s: float, scratch: Path, describe, step, skip):
    from bench.measure import measure_notebook

    per_notebook, figures = {}, {}
    for path in paths:
        describe(f"{path.stem}: headless vs bare, up to {repeat}×")
        pairs = measure_notebook(path, expressions_for(path.stem), repeat, scratch / "notebooks" / path.stem,
                                 on_step=step, budget_s=budget_s)
        skip(2 * (repeat - len(pairs)))
        problems = sorted({f"{side} {run.status}: {run.message}" for pair in pairs
                           for side, run in (("headless", pair.headless), ("bare", pair.bare))
                           if run.status != "completed"})
        per_notebook[path.stem] = {
            "headless_s": median_or_none(p.headless.seconds for p in pairs if p.headless.status == "completed"),
            "bare_s": median_or_none(p.bare.seconds for p in pairs if p.bare.status == "completed"),
            "ratio": median_or_none(p.ratio for p in pairs),
            "runs": [{"headless_s": p.headless.seconds, "headless_status": p.headless.status,
                      "headless_kernel_start_s": p.headless.kernel_start_s,
                      "bare_s": p.bare.seconds, "bare_status": p.bare.status, "ratio": p.ratio} for p in pairs],
            "problems": problems,
        }
        figures[path.stem] = median_figures([p.figures for p in pairs])
    return per_notebook, figures


def _grading(grading, n: int, workers: int, describe, step):
    describe(f"grading {n} × {grading.source.stem}: autograde, 1 worker")
    serial = grading.autograde(n, 1)
    step()
    describe(f"grading {n} × {grading.source.stem}: autograde, {workers} workers")
    parallel = grading.autograde(n, workers)
    step()
    describe(f"grading {n} × {grading.source.stem}: nbgrader autograde")
    reference = grading.nbgrader(n)
    step()

    def vs(batch):
        return batch.per_minute / reference.per_minute if reference.per_minute > 0 else None

    data = {
        "notebook": grading.source.stem, "n": n, "workers": workers,
        "autograde_w1": serial.to_dict(), f"autograde_w{workers}": parallel.to_dict(), "nbgrader": reference.to_dict(),
        "ratio_w1_vs_nbgrader": vs(serial), "ratio_parallel_vs_nbgrader": vs(parallel),
        "overhead_in_worker_s": serial.overhead_in_worker_s, "overhead_batch_s": serial.overhead_batch_s,
    }
    return data, parallel


def _scaling(grading, sizes: list[int], workers: int, reusable, describe, step):
    import numpy as np

    points = []
    for n in sizes:
        reused = reusable is not None and reusable.n == n and reusable.workers == workers
        if reused:
            batch = reusable  # the throughput section's parallel run is this very measurement
        else:
            describe(f"scaling: {n} submissions, {workers} workers")
            batch = grading.autograde(n, workers)
        step()
        points.append({"n": n, "wall_s": batch.wall_s, "s_per_submission": batch.s_per_submission,
                       "full_marks": batch.full_marks, "reused_from_grading": reused})
    data = {"workers": workers, "points": points, "fit": None}
    if len({p["n"] for p in points}) >= 2:
        n = np.array([p["n"] for p in points], dtype=float)
        wall = np.array([p["wall_s"] for p in points])
        slope, intercept = np.polyfit(n, wall, 1)
        predicted = intercept + slope * n
        spread = float(((wall - wall.mean()) ** 2).sum())
        r2 = 1 - float(((wall - predicted) ** 2).sum()) / spread if spread > 0 else 1.0
        data["fit"] = {"intercept_s": float(intercept), "slope_s_per_submission": float(slope), "r2": r2}
    return data


METHOD = {
    "notebooks": "Each source notebook minus its hidden-test blocks (a student's solved run), plus one final cell "
                 "that prints the lesson figures as JSON, is run (a) headlessly through "
                 "autograde.runner.execute_notebook and (b) as a bare script: the same code cells concatenated, "
                 "IPython syntax translated by IPython's TransformerManager with a plain-Python shim for the "
                 "magics (%%writefile writes the file), run by `python` in a fresh folder with the kernel's "
                 "environment, stdout discarded. Wall time of each, back to back, order alternating per repeat; "
                 "ratio = headless / bare per repeat, median over repeats. Up to --repeat pairs per notebook; no new pair "
                 "starts once that notebook's pairs took --notebook-budget seconds (runs lists what was done).",
    "grading": "One perfect submission (nbgrader's release of the graded notebook with the instructor's solutions "
               "filled in) copied to N student folders; graded by autograde.grade.grade() (default options, "
               "sandbox on) with 1 and with --workers workers, and by `nbgrader autograde` (one sequential CLI "
               "run in a course folder made by nbgrader generate_assignment, kernel environment = "
               "autograde.runner.kernel_env, Execute.timeout = the runner's cell timeout). Wall time of the whole "
               "call; submissions/minute; ratio = ours / nbgrader's. Overhead in worker = median over submissions "
               "of duration_s - execution_s from results.json; all-in overhead = (1-worker wall - sum of "
               "execution_s) / N.",
    "scaling": "grade() with --workers workers over 10, 20, 40 copies of the same submission (the 20 point is the "
               "grading section's parallel run when the sizes match); least-squares line wall = a + b*n.",
    "classscale": "A class of N students (perfect, blank, partial, perfect, hostile, right code with wrong "
                  "predictions, cycling), each handing in every notebook, graded by autograde.grade.grade() with "
                  "the sandbox on and --workers workers; wall time of the whole call, seconds per student, a "
                  "least-squares line over the sizes projected to 100 students, the per-phase seconds summed "
                  "from results.json (autograde/phases.py), and the same class of --dask-size students on a "
                  "local Dask cluster of --workers processes.",
    "figures": "Read from the JSON printed by the appended cell of each headless run (see notebooks); numeric "
               "figures are medians over repeats.",
}
