"""The static scan is bounded: it runs in a child process that is killed at its deadline, a
notebook built to be expensive to scan no longer holds up the batch, and the flags are the
same as before for every trick."""

from __future__ import annotations

import time

import nbformat
import psutil
import pytest
from IPython.core.inputtransformer2 import TransformerManager
from nbformat.v4 import new_code_cell, new_notebook

from autograde import integrity
from autograde.integrity import scan_notebook, scan_notebook_bounded

EVERY_CELL = lambda cell: True  # noqa: E731


def scan_cost_cell(magics: int = 100, lines: int = 20_000) -> str:
    """One cell of ``lines`` lines of code with ``magics`` IPython magics spread through it:
    IPython re-tokenizes the whole cell after each magic it rewrites (cost magics x lines)."""
    step = lines // magics
    body = []
    for i in range(lines):
        if i % step == 0:
            body.append(f"%time x = {i}")
        body.append(f"x = {i}")
    return "\n".join(body)


def _notebook(*sources: str):
    return new_notebook(cells=[new_code_cell(source) for source in sources])


def test_scan_cost_notebook_finishes_within_its_budget():
    nb = _notebook(scan_cost_cell())
    assert 250_000 < len(nbformat.writes(nb)) < 450_000  # the "300 KB notebook" of the hostile-student report
    started = time.monotonic()
    flags, used = scan_notebook_bounded(nb, EVERY_CELL, timeout_s=5)
    elapsed = time.monotonic() - started
    assert flags in ([], ["scan-timeout"])  # finished (no tricks in it) or stopped at its deadline
    assert elapsed < 15 and used <= elapsed + 0.1


def test_a_scan_past_its_deadline_is_killed_and_flagged():
    children_before = {p.pid for p in psutil.Process().children(recursive=True)}
    started = time.monotonic()
    flags, used = scan_notebook_bounded(_notebook(scan_cost_cell()), EVERY_CELL, timeout_s=0.05)
    assert flags == ["scan-timeout"] and time.monotonic() - started < 10
    assert scan_notebook_bounded(_notebook("x = 1"), EVERY_CELL, timeout_s=0) == (["scan-timeout"], 0.0)
    time.sleep(0.2)
    left = [p for p in psutil.Process().children(recursive=True)
            if p.pid not in children_before and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, [p.cmdline() for p in left]


TRICKS = {
    "import numpy as np\nnp.allclose = lambda *a, **k: True": ["monkeypatch:numpy.allclose"],
    "import numpy\nsetattr(numpy, 'allclose', lambda *a, **k: True)": ["monkeypatch:numpy.setattr"],
    "get_ipython().input_transformers_post.append(lambda lines: ['pass\\n'])": ["ipython-hook"],
    "import sys\nsys.excepthook = lambda *a: None": ["sys-hook:excepthook"],
    "import sys, types\nfake = types.ModuleType('numpy')\nsys.modules['numpy'] = fake": ["fake-module"],
    "import base64\nexec(base64.b64decode('cGFzcw=='))": ["dynamic-code:exec"],
    "import checkpoints.common as cc\ncc.expect = lambda *a, **k: None": ["imports-verifiers",
                                                                         "monkeypatch:checkpoints.expect"],
    "!pip install nothing\n%time y = 1\nimport numpy as np\nnp.allclose = max": ["monkeypatch:numpy.allclose"],
    "for i in range(2):\n    %time f(i)\nimport numpy as np\nnp.isclose = min": ["monkeypatch:numpy.isclose"],
    "%time np.isclose = min": [],  # a magic's argument is a string to the scan, as it was before
}


@pytest.mark.parametrize("source, expected", list(TRICKS.items()))
def test_flags_are_unchanged_on_known_tricks(source, expected):
    assert scan_notebook(_notebook(source), EVERY_CELL) == expected
    flags, _ = scan_notebook_bounded(_notebook(source), EVERY_CELL, timeout_s=60)
    assert flags == expected


def test_aliases_carry_across_cells_and_a_broken_cell_does_not_hide_the_others():
    assert scan_notebook(_notebook("import numpy as np", "np.allclose = max"), EVERY_CELL) == [
        "monkeypatch:numpy.allclose"]
    flags, _ = scan_notebook_bounded(_notebook("def broken(:", "import sys\nsys.excepthook = print",
                                               "(" * 5000 + ")" * 5000, "x = '\x00'"), EVERY_CELL, timeout_s=60)
    assert flags == ["sys-hook:excepthook"]


def test_only_student_cells_are_scanned():
    nb = _notebook("import numpy as np\nnp.allclose = max", "x = 1")
    nb.cells[0].metadata["locked"] = True
    flags, _ = scan_notebook_bounded(nb, lambda cell: not cell.metadata.get("locked"), timeout_s=60)
    assert flags == []


CELLS = [
    "%time x = 1", "for i in range(3):\n    %time f(i)\n    y = 2\n", "x = !ls\ny = %pwd\n", "%%timeit\nx = 1\n",
    "obj?\n", "obj??\nx=1", "/f x\n,g a b\n;h c\n", "a = '''\n%not magic\n'''\n%time b\n",
    "!echo '''\nx = 1\n'''\nnp.allclose = 1", "%time x = (1,\n 2)\n", "x = f(\n%notmagic\n)\n", "  x = 1\n  %time y\n",
    ">>> x = 1\n>>> %time y\n", "if True:\n    x = 1\n  y = 2\n%time z\n", "print('%s' % x)\n", "%time x \\\n+ 1\n",
    "x = !ls \\\n -la\ny=1\n", "x = 'unterminated\n%time y\n", ")\n    pass\na = [1,\nobj?\n%time x\n\nobj?\nobj?",
    "a = 1;%time b\n", "x = f'{y!r}'\n%time z\n", "x = 1\r\n%time y\r\n", "\\\n", "(\n", "'''", "\tx=1\n\t%time y\n",
    scan_cost_cell(magics=20, lines=2_000),
]


@pytest.mark.parametrize("source", CELLS, ids=range(len(CELLS)))
def test_magics_are_rewritten_exactly_as_ipython_does(source):
    try:
        expected = TransformerManager().transform_cell(source)
    except Exception:
        expected = source
    assert integrity._python_source(source) == expected


def test_more_magics_than_ipython_rewrites_in_one_go_no_longer_hide_a_patch():
    # IPython gives up after 500 rewrites in one cell and the old scan then saw no Python at all.
    source = "%lsmagic\n" * 600 + "import numpy as np\nnp.allclose = max\n"
    assert scan_notebook(_notebook(source), EVERY_CELL) == ["monkeypatch:numpy.allclose"]
