"""The instructor CLI: ``python -m autograde {release,grade,check,strip}``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rich.console import Console

from autograde.assignment import NOTEBOOKS_DIR, AssignmentError
from autograde.runner import DEFAULT_CELL_TIMEOUT, DEFAULT_MEMORY_MB, DEFAULT_NOTEBOOK_TIMEOUT, Limits


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def _add_execution_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=_positive(int), default=os.cpu_count() or 1,
                        help="parallel grading processes (default: number of cores)")
    parser.add_argument("--cell-timeout", type=_positive(float), default=DEFAULT_CELL_TIMEOUT,
                        help="seconds one cell may run before it is interrupted (default %(default)s)")
    parser.add_argument("--notebook-timeout", type=_positive(float), default=DEFAULT_NOTEBOOK_TIMEOUT,
                        help="seconds one notebook may run before it is stopped (default %(default)s)")
    parser.add_argument("--notebooks", type=Path, default=NOTEBOOKS_DIR,
                        help="folder of instructor source notebooks (default: notebooks/)")
    parser.add_argument("--memory-mb", type=_positive(float), default=DEFAULT_MEMORY_MB,
                        help="memory one notebook (kernel and children) may use (default %(default)s)")
    parser.add_argument("--max-processes", type=_positive(int), default=256,
                        help="process limit inside the sandbox (default %(default)s)")
    parser.add_argument("--no-sandbox", action="store_true",
                        help="run kernels with the grader's own privileges (trusted notebooks only)")
    parser.add_argument("--no-kernel-template", action="store_true",
                        help="start every kernel afresh instead of forking it from a template that has "
                             "imported the notebooks' libraries once per worker")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autograde", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)

    rel = verbs.add_parser("release", help="generate the student notebooks, verified leak-free")
    rel.add_argument("--out", type=Path, default=Path("student"), help="output folder (default: student/)")
    rel.add_argument("--notebooks", type=Path, default=NOTEBOOKS_DIR)
    rel.add_argument("--repo", default=None, help="GitHub OWNER/NAME the Open-in-Colab badges point at")

    gra = verbs.add_parser("grade", help="grade a folder or .zip of <student>/<notebook>.ipynb, or an nbgrader "
                                         "course's submissions (--course-dir, --assignment)")
    gra.add_argument("submissions", type=Path, nargs="?", help="folder or .zip of <student>/<notebook>.ipynb")
    gra.add_argument("--course-dir", type=Path, default=None, metavar="DIR",
                     help="an nbgrader course folder: grade submitted/*/ID against source/ID as `nbgrader "
                          "autograde ID` would (nbgrader_config.py, autotests.yml, timestamp.txt, late "
                          "penalties honoured) and write the grades into its gradebook")
    gra.add_argument("--assignment", default=None, metavar="ID", help="the assignment id, with --course-dir")
    gra.add_argument("--out", type=Path, required=True, help="results folder")
    gra.add_argument("--force", action="store_true", help="replace grades already in --out")
    gra.add_argument("--regrade", type=Path, default=None, metavar="PREVIOUS_RESULTS",
                     help="an earlier results folder: draw the same held-out inputs for unchanged submissions and "
                          "write regrade.csv (which rows changed score, and why)")
    gra.add_argument("--scheduler", default=None, metavar="ADDRESS",
                     help="run the jobs on a Dask cluster: a scheduler address (tcp://HOST:8786), or `local` "
                          "for a cluster of --workers processes on this machine")
    _add_execution_options(gra)

    chk = verbs.add_parser("check", help="sources must score full marks, the release exactly zero")
    _add_execution_options(chk)

    strip = verbs.add_parser("strip", help="clear outputs and execution counts in place")
    strip.add_argument("paths", nargs="+", type=Path)
    strip.add_argument("--check", action="store_true", help="only report; exit 1 if any is not clean")

    from autograde import export

    export.add_verbs(verbs)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Logs (CI, `make demo | tee`) are not terminals: give the tables room instead of 80 columns.
    console = Console() if sys.stdout.isatty() else Console(width=150)
    try:
        return _run(args, console)
    except (AssignmentError, FileExistsError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(args, console: Console) -> int:
    from autograde.assignment import source_notebooks

    if args.verb == "release":
        from autograde.release import DEFAULT_COLAB_REPO, release

        for path in release(args.out, source_notebooks(args.notebooks), repo=args.repo or DEFAULT_COLAB_REPO):
            console.print(f"released {path} (leak check passed)")
        return 0

    if args.verb in ("export", "gradescope-bundle"):
        from autograde.export import run_verb

        return run_verb(args, console)

    if args.verb == "strip":
        import nbformat

        from autograde.strip import is_clean, strip_notebook

        dirty = []
        for path in args.paths:
            if args.check:
                if not is_clean(nbformat.read(path, as_version=4)):
                    dirty.append(path)
            elif strip_notebook(path):
                console.print(f"stripped {path}")
        for path in dirty:
            console.print(f"[red]{path} has outputs or execution counts[/red]")
        return 1 if dirty else 0

    from autograde.grade import GradeOptions

    limits = Limits(memory_mb=args.memory_mb, max_processes=args.max_processes, sandbox=not args.no_sandbox)
    options = GradeOptions(workers=args.workers, cell_timeout=args.cell_timeout,
                           notebook_timeout=args.notebook_timeout, limits=limits,
                           scheduler=getattr(args, "scheduler", None), kernel_template=not args.no_kernel_template)
    sources = source_notebooks(args.notebooks) if getattr(args, "course_dir", None) is None else None
    if args.verb == "grade":
        from autograde.grade import grade

        if (args.course_dir is None) != (args.assignment is None):
            raise ValueError("--course-dir and --assignment go together")
        if args.course_dir is not None:
            if args.submissions is not None:
                raise ValueError("with --course-dir the submissions are the course's submitted/ folder; "
                                 "give no submissions argument")
            grade(None, args.out, options, force=args.force, console=console, course_dir=args.course_dir,
                  assignment_id=args.assignment, regrade=args.regrade)
        else:
            if args.submissions is None:
                raise ValueError("give a folder or .zip of submissions, or --course-dir DIR --assignment ID")
            grade(args.submissions, args.out, options, sources=sources, force=args.force, console=console,
                  regrade=args.regrade)
        return 0

    from autograde.check import check

    problems = check(options, sources=sources, console=console)
    for problem in problems:
        console.print(f"[red]deviation:[/red] {problem}")
    if problems:
        console.print(f"[bold red]check failed: {len(problems)} deviation(s)[/bold red]")
        return 1
    console.print("[bold green]check passed: sources full marks, release zero, no leaks[/bold green]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
