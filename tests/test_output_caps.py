"""Output caps count display updates and the whole notebook: a tiny notebook that multiplies
one display through update_display_data cannot blow up the executed notebook (and so the
grader's memory and the feedback page)."""

from __future__ import annotations

import json
import resource

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

from autograde.limits import Limits
from autograde.runner import execute_notebook

FLOOD = """
from IPython.display import display, update_display
handle = display('start', display_id=True)
chunk = 'x' * 2_000_000
for i in range(200):  # 400 MB of display updates if nothing caps them
    update_display({'text/plain': chunk + str(i)}, display_id=handle.display_id, raw=True)
"""
MANY_CELLS = "print('y' * 1_500_000)"


def _notebook(*sources: str) -> nbformat.NotebookNode:
    nb = new_notebook(cells=[new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def test_display_updates_count_against_the_caps():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = execute_notebook(_notebook(FLOOD, "print('after the flood')"), cell_timeout=120,
                              limits=Limits(output_mb=4, notebook_output_mb=16))
    size = len(json.dumps(result.notebook))
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    print(f"executed notebook {size / 1e6:.1f} MB; grader peak RSS grew {grown_mb:.0f} MB")
    assert result.status == "completed" and result.truncated_cells == [0]
    assert size < 8_000_000  # the 4 MB cell cap holds, updates included
    assert "after the flood" in result.notebook.cells[1].outputs[0]["text"]  # the notebook went on
    # The 400 MB never accumulate: what is kept is capped, and what is dropped is only ever
    # buffered transiently (ZeroMQ's queue of messages not yet read).
    assert grown_mb < 1000


def test_the_whole_notebook_has_a_cap_too():
    result = execute_notebook(_notebook(*[MANY_CELLS] * 20), cell_timeout=60,
                              limits=Limits(output_mb=4, notebook_output_mb=10))
    assert len(json.dumps(result.notebook)) < 14_000_000  # 20 x 1.5 MB would be 30 MB
    assert result.truncated_cells  # the cells past the notebook's budget say they were cut
