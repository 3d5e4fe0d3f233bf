"""integrity: the flags for the instructor (receipts, the injected guard and audit, what the
feedback hides). No score of a checkpoint judged outside depends on any of this."""

from __future__ import annotations

import json

import nbformat
from nbformat.v4 import new_code_cell, new_notebook, new_output

from autograde import integrity


def _nb():
    cells = [new_code_cell("x = 1"), new_code_cell("assert x == 1"), new_code_cell("# autograde-checkpoint: m")]
    cells[1].metadata["nbgrader"] = {"grade_id": "t_in_kernel", "grade": True}
    cells[2].metadata["nbgrader"] = {"grade_id": "cp_outside", "grade": True}
    return new_notebook(cells=cells)


def test_instrument_wraps_only_in_kernel_tests_between_a_guard_and_an_audit():
    nb = integrity.instrument(_nb(), {"t_in_kernel"}, "n0nce", ["/secret"])
    assert nb.cells[0].metadata[integrity.INJECTED] == "guard" and nb.cells[-1].metadata[integrity.INJECTED] == "audit"
    wrapped, outside = nb.cells[2], nb.cells[3]
    assert "[autograde-receipt n0nce t_in_kernel]" in wrapped.source and "assert x == 1" in wrapped.source
    assert outside.source == "# autograde-checkpoint: m"  # judged outside: never wrapped, never run
    assert "/secret" in nb.cells[0].source


def test_a_receipt_counts_only_with_its_own_nonce_and_grade_id():
    cell = new_code_cell("")
    cell.outputs = [new_output("stream", name="stdout", text="[autograde-receipt n0nce t_in_kernel]\n")]
    assert integrity.has_receipt(cell, "t_in_kernel", "n0nce")
    assert not integrity.has_receipt(cell, "t_in_kernel", "other")
    assert not integrity.has_receipt(cell, "another_test", "n0nce")
    cell.outputs = [new_output("stream", name="stderr", text="[autograde-receipt n0nce t_in_kernel]\n")]
    assert not integrity.has_receipt(cell, "t_in_kernel", "n0nce")  # stdout only


def _audited(text: str) -> nbformat.NotebookNode:
    nb = integrity.instrument(_nb(), {"t_in_kernel"}, "n0nce", [])
    nb.cells[-1].outputs = [new_output("stream", name="stdout", text=text)]
    return nb


def test_audit_flags_are_read_only_from_a_well_formed_report():
    prefix = integrity.AUDIT_PREFIX.format(nonce="n0nce")
    assert integrity.audit_flags(_audited(f"{prefix} " + json.dumps(["ipython-hook"]) + "\n"), "n0nce") == [
        "ipython-hook"]
    assert integrity.audit_flags(_audited(f"{prefix} " + json.dumps({"ok": 1}) + "\n"), "n0nce") == [
        "audit-tampered"]
    assert integrity.audit_flags(_audited("nothing\n"), "n0nce") == ["audit-missing"]


def test_feedback_copy_has_no_injected_cells_and_no_receipts():
    nb = integrity.instrument(_nb(), {"t_in_kernel"}, "n0nce", [])
    nb.cells[2].outputs = [new_output("stream", name="stdout", text="hello\n[autograde-receipt n0nce t_in_kernel]\n")]
    clean = integrity.remove_instrumentation(nb, "n0nce")
    assert all(integrity.INJECTED not in c.metadata for c in clean.cells) and len(clean.cells) == 3
    assert clean.cells[1].outputs[0]["text"] == "hello\n"
