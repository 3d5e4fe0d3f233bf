"""Notebook -> the two things the first benchmark compares.

* ``teaching_notebook``: the instructor source with the hidden-test blocks removed (what a
  student who solved every exercise runs with *Run all*), plus one final cell that prints
  the lesson figures as JSON.
* ``bare_script``: the same code cells concatenated into one plain Python file. IPython-only
  syntax is translated by IPython's own input transformer (``%%writefile f`` becomes
  ``get_ipython().run_cell_magic("writefile", "f", body)``), and a tiny ``get_ipython()``
  shim does what those few magics do in plain Python. Nothing else is changed: every
  training, model load and server start stays; a cell's trailing expression is evaluated
  but not formatted (no kernel renders it); stdout is discarded by the caller.
"""

from __future__ import annotations

import json
import re

import nbformat
from IPython.core.inputtransformer2 import TransformerManager
from nbformat import NotebookNode

FIGURES_MARKER = "BENCH_FIGURES "
_HIDDEN = re.compile(r"^[ \t]*### BEGIN HIDDEN TESTS.*?^[ \t]*### END HIDDEN TESTS[^\n]*\n?", re.S | re.M)

# Plain-Python stand-ins for the IPython syntax a course notebook may use. Anything else
# raises, so the bench reports "no bare equivalent" instead of silently measuring less.
SHIM = '''\
# --- bench shim: IPython magics in plain Python (there is no kernel and no IPython shell here) ---
import os as _bench_os
import shlex as _bench_shlex
import subprocess as _bench_subprocess
import sys as _bench_sys


class _BareShell:
    def run_cell_magic(self, magic, line, cell):
        if magic == "writefile":
            args = _bench_shlex.split(line)
            mode = "a" if ("-a" in args or "--append" in args) else "w"
            path = [a for a in args if not a.startswith("-")][0]
            with open(_bench_os.path.expanduser(path), mode, encoding="utf-8") as handle:
                handle.write(cell)
        elif magic in ("capture", "time"):
            exec(compile(cell, "<cell>", "exec"), globals())
        else:
            raise NotImplementedError(f"bench: no bare equivalent for %%{magic}")

    def run_line_magic(self, magic, line):
        if magic in ("matplotlib", "load_ext", "config"):
            return None
        if magic == "pip":
            return _bench_subprocess.run([_bench_sys.executable, "-m", "pip", *_bench_shlex.split(line)], check=True)
        raise NotImplementedError(f"bench: no bare equivalent for %{magic}")

    def system(self, command):
        return _bench_subprocess.run(command, shell=True).returncode

    getoutput = system


_bench_shell = _BareShell()


def get_ipython():
    return _bench_shell
'''


def strip_hidden_tests(source: str) -> str:
    """Remove every ``### BEGIN HIDDEN TESTS`` ... ``### END HIDDEN TESTS`` block."""
    return _HIDDEN.sub("", source)


def figures_cell_source(expressions: dict[str, str]) -> str:
    """A cell that evaluates each named expression in the notebook's namespace and prints
    one ``BENCH_FIGURES {...}`` line; a failing expression records its error instead."""
    return (
        "import json as _bench_json\n"
        "import statistics as _bench_stat\n"
        "_bench_figures = {}\n"
        f"for _bench_name, _bench_expr in {json.dumps(expressions, indent=1)}.items():\n"
        "    try:\n"
        "        _bench_figures[_bench_name] = eval(_bench_expr, globals())\n"
        "    except Exception as _bench_exc:\n"
        "        _bench_figures[_bench_name] = {'error': f'{type(_bench_exc).__name__}: {_bench_exc}'}\n"
        f"print({FIGURES_MARKER!r} + _bench_json.dumps(_bench_figures, default=float))\n"
    )


def teaching_notebook(source: NotebookNode, figure_expressions: dict[str, str] | None = None) -> NotebookNode:
    """The source notebook without hidden tests (and without outputs), plus the figures cell."""
    nb = nbformat.from_dict(source)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = strip_hidden_tests(cell.source)
            cell.outputs = []
            cell.execution_count = None
    if figure_expressions:
        nb.cells.append(nbformat.v4.new_code_cell(figures_cell_source(figure_expressions)))
    return nb


def bare_script(notebook: NotebookNode) -> str:
    """Every code cell of ``notebook``, in order, as one plain Python program."""
    transformer = TransformerManager()
    parts = [SHIM]
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        parts.append(f"# --- cell {index} ---\n{transformer.transform_cell(cell.source)}")
    return "\n".join(parts)


def read_figures(executed: NotebookNode) -> dict:
    """The figures JSON printed by the last cell of an executed teaching notebook ({} if none)."""
    for cell in reversed(executed.cells):
        if cell.cell_type != "code":
            continue
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                for line in output.get("text", "").splitlines():
                    if line.startswith(FIGURES_MARKER):
                        return json.loads(line[len(FIGURES_MARKER):])
        break
    return {}
