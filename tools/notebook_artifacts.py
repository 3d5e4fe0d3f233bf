"""The files the source notebooks write (the credit bundle, the Space folders), produced by
executing the notebooks once through the one runner (autograde.runner.execute_notebook,
keep_workdir=True). Shared by tests/test_shipping.py and tests/test_browser.py: each notebook
runs at most once per Python process; the working folders are removed at exit.

    python tools/notebook_artifacts.py credit-bundle DEST     # copy Colab A's bundle to DEST
                                                                # (e.g. deploy/credit-api before docker build)
"""

from __future__ import annotations

import argparse
import atexit
import functools
import shutil
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

NOTEBOOKS = REPO_ROOT / "notebooks"
# What each notebook leaves in its working folder that ships.
CREDIT_BUNDLE = ("credit_model.joblib", "credit_model.json")
SPACE_FOLDERS = {"colab_b_streamlit": "stock_cluster_space", "colab_c_rag": "rag_space"}


class NotebookFailed(RuntimeError):
    pass


@functools.cache
def executed_workdir(name: str) -> Path:
    """Execute notebooks/<name>.ipynb (the source, solutions included) and return its
    working folder. Raises NotebookFailed unless every cell ran without error."""
    from autograde.runner import execute_notebook

    path = NOTEBOOKS / f"{name}.ipynb"
    if not path.exists():
        raise FileNotFoundError(path)
    result = execute_notebook(path, allow_errors=False, keep_workdir=True,
                              cell_timeout=300, notebook_timeout=1200)
    if result.workdir is not None:
        atexit.register(shutil.rmtree, result.workdir, ignore_errors=True)
    if result.status != "completed":
        raise NotebookFailed(f"{path.name}: {result.status}: {result.message}")
    return result.workdir


def space_folder(name: str) -> Path:
    """The Space folder notebooks/<name>.ipynb wrote."""
    folder = executed_workdir(name) / SPACE_FOLDERS[name]
    if not folder.is_dir():
        raise NotebookFailed(f"{name}.ipynb did not write {SPACE_FOLDERS[name]}/")
    return folder


def credit_bundle(dest: Path) -> list[Path]:
    """Copy the bundle Colab A wrote (model + manifest) into ``dest``."""
    workdir = executed_workdir("colab_a_fastapi")
    dest.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy2(workdir / name, dest / name)) for name in CREDIT_BUNDLE]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("credit-bundle").add_argument("dest", type=Path)
    args = parser.parse_args()
    for path in credit_bundle(args.dest):
        print("wrote", path)


if __name__ == "__main__":
    main()
