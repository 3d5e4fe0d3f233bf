"""deploy/credit-api/ is generated from notebooks/colab_d_mlops.ipynb: never edit it by hand.

Colab D writes the credit API's build folder while it runs (section 8: ``credit-api/app.py``,
the service it serves itself; ``requirements.txt``, pinned to the versions the kernel runs;
``Dockerfile``; ``.dockerignore``). This tool executes the source notebook through the one
runner (``autograde.runner.execute_notebook``, solutions included, no cell may fail), takes
those four files from its working folder, puts a one-line "generated" comment on top of each
and writes them to deploy/credit-api/ (the bundle the notebook copies there is not taken: the
image is built with the bundle of your choice, e.g. Colab A's, see tools/notebook_artifacts.py).
Executing rather than extracting the cells keeps one source of truth: the pins come from the
environment that runs the notebook, as they do for a student.

    python tools/make_deploy.py            # regenerate deploy/credit-api/
    python tools/make_deploy.py --check    # exit 1 (and list the files) when deploy/credit-api/ is stale

tests/test_deploy_generated.py runs the --check comparison (byte for byte).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO_ROOT / "notebooks" / "colab_d_mlops.ipynb"
DEPLOY_DIR = REPO_ROOT / "deploy" / "credit-api"
WRITTEN_FOLDER = "credit-api"  # where the notebook writes the build folder, in its working directory
GENERATED = ("app.py", "requirements.txt", "Dockerfile", ".dockerignore")
HEADER = (b"# GENERATED from notebooks/colab_d_mlops.ipynb by tools/make_deploy.py: do not edit by hand,\n"
          b"# change the notebook and run `python tools/make_deploy.py`.\n")


class NotebookFailed(RuntimeError):
    pass


def render(written: dict[str, bytes]) -> dict[str, bytes]:
    """The deploy files for the files the notebook wrote: each with the generated header on top."""
    missing = [name for name in GENERATED if name not in written]
    if missing:
        raise NotebookFailed(f"{NOTEBOOK.name} did not write {', '.join(missing)} in {WRITTEN_FOLDER}/")
    return {name: HEADER + written[name] for name in GENERATED}


def notebook_output(workdir: Path | None = None) -> dict[str, bytes]:
    """Execute the notebook (or read an already executed working folder) and return the four files."""
    if workdir is None:
        from autograde.runner import execute_notebook

        result = execute_notebook(NOTEBOOK, allow_errors=False, keep_workdir=True, cell_timeout=300,
                                  notebook_timeout=1200)
        try:
            if result.status != "completed":
                raise NotebookFailed(f"{NOTEBOOK.name}: {result.status}: {result.message}")
            return notebook_output(result.workdir)
        finally:
            if result.workdir is not None:
                shutil.rmtree(result.workdir, ignore_errors=True)
    folder = Path(workdir) / WRITTEN_FOLDER
    return {name: (folder / name).read_bytes() for name in GENERATED if (folder / name).is_file()}


def stale(expected: dict[str, bytes], deploy_dir: Path = DEPLOY_DIR) -> list[str]:
    """The generated files whose bytes in ``deploy_dir`` differ from ``expected`` (or are missing)."""
    return [name for name, data in expected.items()
            if not (deploy_dir / name).is_file() or (deploy_dir / name).read_bytes() != data]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when deploy/credit-api is stale")
    parser.add_argument("--from-workdir", type=Path, help="an executed notebook's working folder (skip execution)")
    args = parser.parse_args(argv)
    expected = render(notebook_output(args.from_workdir))
    outdated = stale(expected)
    if args.check:
        for name in outdated:
            print(f"stale: deploy/credit-api/{name} (run python tools/make_deploy.py)")
        return 1 if outdated else 0
    DEPLOY_DIR.mkdir(parents=True, exist_ok=True)
    for name, data in expected.items():
        (DEPLOY_DIR / name).write_bytes(data)
        print(("wrote " if name in outdated else "unchanged ") + f"deploy/credit-api/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
