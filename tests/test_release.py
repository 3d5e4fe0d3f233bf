from __future__ import annotations

import nbformat
import pytest
from toy import HIDDEN_LINE, SOLUTION_LINE, TOY_NAME

from autograde.leakcheck import find_leaks
from autograde.release import LeakError, release


def _sources(nb):
    return "\n".join(cell.source for cell in nb.cells)


def test_release_strips_solutions_hidden_tests_and_outputs(toy_release):
    nb = nbformat.read(toy_release, as_version=4)
    text = _sources(nb)
    assert SOLUTION_LINE not in text
    assert HIDDEN_LINE not in text
    assert "raise NotImplementedError()" in text
    assert "assert add(1, 2) == 3" in text  # visible tests stay visible
    assert all(not c.get("outputs") and c.get("execution_count") is None
               for c in nb.cells if c.cell_type == "code")
    # nbgrader metadata survives, so the release can be graded
    ids = [c.metadata.get("nbgrader", {}).get("grade_id") for c in nb.cells]
    assert {"add", "test_add_visible", "test_add_hidden", "locked_end"} <= set(ids)


def test_leak_check_passes_on_a_clean_release(toy_sources, toy_release):
    assert find_leaks(toy_sources[0], toy_release) == []


@pytest.mark.parametrize(
    "leak, expected",
    [
        (SOLUTION_LINE, "solution or hidden-test line"),
        (HIDDEN_LINE, "solution or hidden-test line"),
        ("from checkpoints.colab_a import check_validation", "hidden verifiers"),
        ("### BEGIN SOLUTION", "marker"),
    ],
)
def test_leak_check_catches_each_kind_of_leak(tmp_path, toy_sources, toy_release, leak, expected):
    nb = nbformat.read(toy_release, as_version=4)
    nb.cells[1].source += "\n" + leak
    leaky = tmp_path / f"{TOY_NAME}.ipynb"
    nbformat.write(nb, leaky)
    leaks = find_leaks(toy_sources[0], leaky)
    assert leaks and expected in leaks[0]


def test_leak_check_catches_outputs(tmp_path, toy_sources, toy_release):
    nb = nbformat.read(toy_release, as_version=4)
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", name="stdout", text="3\n")]
    leaky = tmp_path / f"{TOY_NAME}.ipynb"
    nbformat.write(nb, leaky)
    assert any("outputs" in leak for leak in find_leaks(toy_sources[0], leaky))


def test_release_refuses_a_source_whose_hidden_test_is_mismarked(tmp_path, toy_sources):
    # A typo in the marker keeps the hidden test in the release: the leak check must stop it
    # and nothing may be written to the output folder.
    nb = nbformat.read(toy_sources[0], as_version=4)
    nb.cells[3].source = nb.cells[3].source.replace("### BEGIN HIDDEN TESTS", "### BEGIN HIDDEN TEST")
    nb.cells[3].source = nb.cells[3].source.replace("### END HIDDEN TESTS", "### END HIDDEN TEST")
    nb.cells[3].source += "\nfrom checkpoints.common import passed"
    bad_source = tmp_path / "src" / f"{TOY_NAME}.ipynb"
    bad_source.parent.mkdir()
    nbformat.write(nb, bad_source)
    out = tmp_path / "out"
    with pytest.raises(LeakError, match="leak"):
        release(out, [bad_source])
    assert not out.exists()
