"""restore_cells: the instructor's locked and test cells come back from the gradebook, points
and kinds never come from the submission, and every repair is reported as a flag."""

from __future__ import annotations

import nbformat
import pytest
from toy import HIDDEN_LINE, TOY_NAME, WRONG, submission_from

from autograde.assignment import build_assignment
from autograde.restore import restore_cells


@pytest.fixture(scope="module")
def spec(tmp_path_factory, toy_sources):
    return build_assignment(tmp_path_factory.mktemp("restore") / "nbgrader", toy_sources).notebooks[TOY_NAME]


def _ids(nb) -> list[str]:
    return [c.metadata.get("nbgrader", {}).get("grade_id") for c in nb.cells]


def _cell(nb, grade_id):
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def test_hidden_tests_come_back_and_outputs_are_cleared(spec, toy_release):
    nb = submission_from(toy_release, WRONG)
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="old output")]
    restored, flags = restore_cells(nb, spec)
    assert HIDDEN_LINE in _cell(restored, "test_add_hidden").source
    assert all(not c.get("outputs") for c in restored.cells if c.cell_type == "code")
    assert flags == []
    assert HIDDEN_LINE not in _cell(nb, "test_add_hidden").source  # the caller's copy is untouched


def test_an_edited_locked_cell_is_put_back_and_flagged(spec, toy_release):
    nb = submission_from(toy_release, WRONG)
    _cell(nb, "test_add_visible").source = "pass"
    restored, flags = restore_cells(nb, spec)
    assert _cell(restored, "test_add_visible").source == spec.cells["test_add_visible"].source
    assert flags == ["edited-locked-cell:test_add_visible"]


def test_a_deleted_locked_cell_returns_in_place(spec, toy_release):
    nb = submission_from(toy_release, WRONG)
    nb.cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") != "test_add_hidden"]
    restored, flags = restore_cells(nb, spec)
    ids = [i for i in _ids(restored) if i]
    assert ids.index("test_add_hidden") == ids.index("test_add_visible") + 1
    assert "deleted-locked-cell:test_add_hidden" in flags


def test_points_and_kinds_come_from_the_gradebook_not_the_submission(spec, toy_release):
    nb = submission_from(toy_release, WRONG)
    _cell(nb, "test_add_hidden").metadata["nbgrader"]["points"] = 100
    fake = nbformat.v4.new_code_cell("print('bonus')")
    fake.metadata["nbgrader"] = {"grade_id": "bonus", "grade": True, "points": 50, "solution": False,
                                 "locked": True, "schema_version": 3}
    nb.cells.append(fake)
    nb.cells.append(nbformat.from_dict(_cell(nb, "test_add_visible")))  # a second copy of a locked cell
    restored, flags = restore_cells(nb, spec)
    assert _cell(restored, "test_add_hidden").metadata["nbgrader"]["points"] == spec.cells["test_add_hidden"].points
    assert "bonus" not in _ids(restored) and "unknown-nbgrader-cell:bonus" in flags
    assert _ids(restored).count("test_add_visible") == 1 and "duplicated-locked-cell:test_add_visible" in flags
