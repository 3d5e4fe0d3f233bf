"""The bundled sample class is exactly what examples/make_sample_class.py generates from the
current sources, and grading it gives each student the outcome the README promises."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

from examples import make_sample_class  # noqa: E402


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.ipynb"))}


def test_sample_class_is_up_to_date(tmp_path):
    make_sample_class.build(tmp_path / "class")
    committed = _tree(REPO_ROOT / "examples" / "submissions")
    fresh = _tree(tmp_path / "class")
    assert sorted(committed) == sorted(fresh)
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"regenerate with `python examples/make_sample_class.py`: {stale}"


def _readme_demo_table() -> dict[tuple[str, str], tuple[str, str]]:
    """(student, notebook) -> (score, status) from the table `make demo` ends with in the README."""
    text = (REPO_ROOT / "README.md").read_text()
    block = text.split("```\nstudent                 notebook", 1)[1].split("```", 1)[0]
    rows = {}
    for line in block.splitlines()[1:]:
        if line.strip():
            student, notebook, score, _slash, max_score, status = line.split()[:6]
            rows[(student, notebook)] = (f"{score}/{max_score}", status)
    return rows


def test_grading_the_sample_class_gives_the_readme_table(tmp_path):
    import csv

    from autograde.grade import GradeOptions, grade
    from autograde.limits import Limits

    grade(REPO_ROOT / "examples" / "submissions", tmp_path / "results",
          GradeOptions(workers=2, limits=Limits(sandbox=True)))
    with open(tmp_path / "results" / "grades.csv", encoding="utf-8") as fh:
        graded = {(r["student"], r["notebook"]): (f"{r['score']}/{r['max_score']}", r["status"])
                  for r in csv.DictReader(fh)}
    assert graded == _readme_demo_table()
