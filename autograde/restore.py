"""Put the instructor's locked and test cells back into a submission before it runs.

Hidden tests come back from the gradebook; points and cell kinds come from the gradebook,
never from the submission. What the student changed is reported as flags, because nbgrader
would silently put it back."""

from __future__ import annotations

import nbformat
from nbformat import NotebookNode

from autograde.assignment import CellSpec, NotebookSpec, nbgrader_metadata


def _nbgrader_metadata(spec: CellSpec) -> dict:
    # The checksum is the released cell's, as nbgrader's OverwriteCells puts it: a written
    # answer left as released then scores 0 without a person looking at it.
    return nbgrader_metadata(spec.grade_id, solution=spec.solution, grade=spec.graded and not spec.task,
                             locked=spec.locked, points=spec.points, task=spec.task, checksum=spec.checksum)


def restore_cells(submission: NotebookNode, spec: NotebookSpec) -> tuple[NotebookNode, list[str]]:
    """Return a copy of ``submission`` ready to execute, and the tamper flags found.

    - locked and graded cells get the instructor's source (hidden tests included);
    - every nbgrader cell gets its metadata (kind, points, checksum) from the gradebook;
    - a deleted locked cell is put back; a second copy of a locked cell is dropped; nbgrader metadata on a cell the assignment
      does not know is removed (no fake points);
    - outputs are cleared: only what runs now counts.
    """
    nb = nbformat.from_dict(submission)
    flags: list[str] = []
    seen: set[str] = set()
    kept = []
    for cell in nb.cells:
        cell.pop("outputs", None)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        meta = cell.get("metadata", {}).get("nbgrader")
        grade_id = meta.get("grade_id") if isinstance(meta, dict) else None
        if meta is not None and grade_id not in spec.cells:
            cell.metadata.pop("nbgrader", None)
            flags.append(f"unknown-nbgrader-cell:{grade_id}")
            kept.append(cell)
            continue
        if grade_id is None:
            kept.append(cell)
            continue
        cell_spec = spec.cells[grade_id]
        if grade_id in seen:
            if cell_spec.locked or cell_spec.graded:
                flags.append(f"duplicated-locked-cell:{grade_id}")
                continue
            flags.append(f"duplicated-cell:{grade_id}")
        seen.add(grade_id)
        if cell_spec.locked or (cell_spec.graded and not cell_spec.solution):
            if cell.source.strip() not in (cell_spec.released_source.strip(), cell_spec.source.strip()):
                flags.append(f"edited-locked-cell:{grade_id}")
            cell.source = cell_spec.source
            if cell.cell_type != cell_spec.cell_type:
                flags.append(f"changed-cell-type:{grade_id}")
                cell = _as_type(cell, cell_spec.cell_type)
        cell.metadata["nbgrader"] = _nbgrader_metadata(cell_spec)
        kept.append(cell)
    # A deleted locked cell comes back where it was (after its predecessor in the source),
    # so a student who deleted an empty-looking hidden-test cell still gets it run.
    previous: str | None = None
    for grade_id, cell_spec in spec.cells.items():
        if grade_id not in seen and (cell_spec.locked or cell_spec.graded):
            flags.append(f"deleted-locked-cell:{grade_id}")
            restored = _as_type(nbformat.v4.new_code_cell(source=cell_spec.source), cell_spec.cell_type)
            restored.metadata["nbgrader"] = _nbgrader_metadata(cell_spec)
            kept.insert(_position_after(kept, previous), restored)
            seen.add(grade_id)
        previous = grade_id
    nb.cells = kept
    return nb, flags


def _position_after(cells: list[NotebookNode], grade_id: str | None) -> int:
    if grade_id is not None:
        for index, cell in enumerate(cells):
            if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == grade_id:
                return index + 1
    return 0 if grade_id is None else len(cells)


def _as_type(cell: NotebookNode, cell_type: str) -> NotebookNode:
    maker = nbformat.v4.new_code_cell if cell_type == "code" else nbformat.v4.new_markdown_cell
    new = maker(source=cell.source)
    new.metadata = cell.metadata
    if "id" in cell:
        new.id = cell.id
    return new
