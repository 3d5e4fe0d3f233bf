"""Run a notebook's own definitions outside a kernel, for unit tests of its functions."""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat


def code_sources(notebook: Path) -> list[str]:
    return [cell.source for cell in nbformat.read(notebook, as_version=4).cells if cell.cell_type == "code"]


def exec_definitions(notebook: Path, names: set[str], namespace: dict) -> dict:
    """Run the notebook's top-level assignments and functions that define ``names`` in ``namespace``."""
    kept = []
    for source in code_sources(notebook):
        try:
            tree = ast.parse(source)
        except SyntaxError:  # a cell with IPython magics: nothing of it is needed here
            continue
        for node in tree.body:
            defined = ({t.id for t in node.targets if isinstance(t, ast.Name)} if isinstance(node, ast.Assign)
                       else {node.name} if isinstance(node, ast.FunctionDef) else set())
            if defined & names:
                kept.append(node)
    exec(compile(ast.Module(body=kept, type_ignores=[]), str(notebook), "exec"), namespace)
    return namespace
