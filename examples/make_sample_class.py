"""Regenerate examples/submissions/, the sample class `make demo` grades.

    python examples/make_sample_class.py [--out examples/submissions]

Every student starts from the student release (as a student would) and then:
- alice_perfect: answers every exercise with the instructor's solution;
- bob_blank: hands the release in untouched;
- carol_partial: answers only the first half of each notebook's exercises, and skips one notebook;
- dave_broken: one notebook truncated mid-file, one that kills its own kernel, one missing;
- erin_wrong_predictions: the first notebook with every exercise solved but every "predict
  before you run" answer wrong: her code keeps its points, only the predictions' share is lost.
Do not edit the generated notebooks by hand; change the sources and run this again
(tests/test_sample_class.py fails when they are out of date).
"""

from __future__ import annotations

import argparse
import re
import shutil
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

import nbformat  # noqa: E402
from nbformat.v4 import new_code_cell  # noqa: E402

from autograde.assignment import source_notebooks  # noqa: E402
from autograde.leakcheck import SECRET_BLOCKS  # noqa: E402
from autograde.release import release  # noqa: E402

DEFAULT_OUT = REPO_ROOT / "examples" / "submissions"


def _answer(source_cell_text: str) -> str:
    """The instructor's solution with nbgrader's markers taken out: what a student who got
    everything right would have typed."""
    markers = {m for pair in SECRET_BLOCKS for m in pair}
    return "\n".join(line for line in source_cell_text.splitlines() if line.strip() not in markers)


def _solutions(source_path: Path) -> dict[str, str]:
    nb = nbformat.read(source_path, as_version=4)
    return {
        cell.metadata["nbgrader"]["grade_id"]: _answer(cell.source)
        for cell in nb.cells
        if cell.metadata.get("nbgrader", {}).get("solution")
    }


def _answered(release_path: Path, solutions: dict[str, str], fraction: float) -> nbformat.NotebookNode:
    nb = nbformat.read(release_path, as_version=4)
    wanted = list(solutions)[: round(len(solutions) * fraction)]
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in wanted:
            cell.source = solutions[grade_id]
    return nb


def _wrong_predictions(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Every prediction cell (it sets ``checkpoint_<x><n>``) answered with a guess that is wrong."""
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("solution"):
            names = re.findall(r"^(checkpoint_[a-z]\d+)\s*=", cell.source, flags=re.MULTILINE)
            if names:
                cell.source = f'{names[0]} = "not sure"  # a wrong guess'
    return nb


def build(out: Path) -> list[Path]:
    sources = source_notebooks()
    with tempfile.TemporaryDirectory() as tmp:
        released = {p.stem: p for p in release(Path(tmp), sources)}
        names = sorted(released)
        solutions = {p.stem: _solutions(p) for p in sources}
        class_ = {
            "alice_perfect": {n: _answered(released[n], solutions[n], 1.0) for n in names},
            "bob_blank": {n: nbformat.read(released[n], as_version=4) for n in names},
            "carol_partial": {n: _answered(released[n], solutions[n], 0.5) for n in names[:-1]},
        }
        broken: dict[str, object] = {}
        if names:
            truncated = nbformat.writes(_answered(released[names[0]], solutions[names[0]], 1.0))
            broken[names[0]] = truncated[: len(truncated) // 3]
        if len(names) > 1:
            crashing = _answered(released[names[1]], solutions[names[1]], 1.0)
            stray_exit = new_code_cell("import os\nos._exit(1)  # a stray exit kills the kernel")
            stray_exit.id = "stray-exit"  # fixed, so the generated file is reproducible
            crashing.cells.insert(1, stray_exit)
            broken[names[1]] = crashing
        class_["dave_broken"] = broken
        if names:
            class_["erin_wrong_predictions"] = {
                names[0]: _wrong_predictions(_answered(released[names[0]], solutions[names[0]], 1.0))}

        if out.exists():
            shutil.rmtree(out)
        written = []
        for student, notebooks in class_.items():
            for name, nb in notebooks.items():
                target = out / student / f"{name}.ipynb"
                target.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(nb, str):
                    target.write_text(nb, encoding="utf-8")
                else:
                    nbformat.write(nb, target)
                written.append(target)
            (out / student).mkdir(parents=True, exist_ok=True)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    for path in build(args.out):
        print(f"wrote {path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path}")


if __name__ == "__main__":
    main()
