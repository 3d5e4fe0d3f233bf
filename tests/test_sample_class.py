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
