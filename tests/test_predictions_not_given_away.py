"""No "predict before you run" question is answered by the text a student reads before its
answer cell: the markdown since the previous checkpoint and the visible comments of hidden
cells. The answers come from the checkpoint declarations (checkpoints/colab_*.py).

An answer is looked for when it is recognisable as text: a word of three letters or more
("revenue", "falls"), a number of two digits or more (422), or a tuple written out ((20, 0)).
Booleans, single letters and one-digit numbers are too common in prose to be a tell."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from checkpoints.interface import load_checkpoints

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("colab_*.ipynb"))


def _module(path: Path) -> str:
    return "checkpoints." + path.stem.split("_")[0] + "_" + path.stem.split("_")[1]


def _tells(answer) -> list[str]:
    """Regexes that would give ``answer`` away in prose."""
    if isinstance(answer, list | tuple):  # the pair written out; its parts may be part of the question
        return [r"\(?\s*" + r"\s*,\s*".join(rf"[\"']?{re.escape(str(a))}[\"']?" for a in answer) + r"\s*\)"]
    if isinstance(answer, bool):
        return []
    if isinstance(answer, int | float):
        return [rf"(?<![\w.]){re.escape(str(answer))}(?![\w.])"] if abs(answer) >= 10 else []
    text = str(answer).strip()
    return [rf"\b{re.escape(text)}\b"] if len(text) >= 3 and text.isalpha() else []


def _hidden_comments(source: str) -> str:
    return source.split("### BEGIN HIDDEN TESTS")[0]


def cases():
    for path in NOTEBOOKS:
        for checkpoint in load_checkpoints(_module(path)).values():
            if checkpoint.prediction and checkpoint.prediction.accept:
                yield pytest.param(path, checkpoint.prediction, id=f"{path.stem}:{checkpoint.prediction.variable}")


@pytest.mark.parametrize("path, prediction", list(cases()))
def test_the_text_before_an_answer_cell_does_not_give_it_away(path, prediction):
    nb = nbformat.read(path, as_version=4)
    answer_at = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code"
                     and c.metadata.get("nbgrader", {}).get("solution")
                     and re.search(rf"^{prediction.variable}\s*=", c.source, re.MULTILINE))
    start = 0
    for i in range(answer_at - 1, -1, -1):  # back to the previous graded (hidden) cell
        if nb.cells[i].metadata.get("nbgrader", {}).get("grade"):
            start = i + 1
            break
    read_before = "\n".join(
        c.source if c.cell_type == "markdown" else _hidden_comments(c.source)
        for c in nb.cells[start:answer_at]
        if c.cell_type == "markdown" or c.metadata.get("nbgrader", {}).get("grade"))
    hidden_comments = "\n".join(_hidden_comments(c.source) for c in nb.cells
                                if c.metadata.get("nbgrader", {}).get("grade") and not c.metadata["nbgrader"].get(
                                    "solution"))
    for answer in prediction.accept:
        for tell in _tells(answer):
            for where, text in (("the markdown before the answer cell", read_before),
                                ("a hidden cell's visible comment", hidden_comments)):
                found = re.search(tell, text, re.IGNORECASE)
                assert not found, f"{prediction.variable}: {where} says {found.group(0)!r}"


def test_every_notebook_has_predictions_to_check():
    assert {p.stem for p, _ in (c.values for c in cases())} == {p.stem for p in NOTEBOOKS}
