"""The order a batch's jobs start in: longest expected first, so a batch does not end with
one long notebook running while the other workers sit idle.

A notebook's expected duration is the median of its runs seen so far: those of the last
batch graded with the same generated assignment (kept in its nbgrader folder), then this
batch's own as they finish. A notebook with no runs seen yet goes first, so every notebook
is measured early in the batch. Ties keep the jobs' own order (student by student).
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

TIMINGS_FILE = "timings.json"
KEPT_PER_NOTEBOOK = 50


class LongestFirst:
    def __init__(self, previous: dict[str, float] | None = None) -> None:
        self._seen: dict[str, list[float]] = {name: [seconds] for name, seconds in (previous or {}).items()
                                              if isinstance(seconds, (int, float)) and math.isfinite(seconds)}

    def expected(self, notebook: str) -> float:
        seen = self._seen.get(notebook)
        return statistics.median(seen) if seen else math.inf

    def record(self, notebook: str, seconds: float) -> None:
        if seconds > 0 and math.isfinite(seconds):
            kept = self._seen.setdefault(notebook, [])
            kept.append(seconds)
            del kept[:-KEPT_PER_NOTEBOOK]

    def pick(self, pending: dict[int, object]) -> int:
        """The index of the job to start next among ``pending`` (index -> job with ``.spec.name``)."""
        return max(pending, key=lambda index: (self.expected(pending[index].spec.name), -index))

    def order(self, pending: dict[int, object]) -> list[int]:
        """All of ``pending`` in start order, for schedulers that take the whole batch at once."""
        return sorted(pending, key=lambda index: (-self.expected(pending[index].spec.name), index))

    def medians(self) -> dict[str, float]:
        return {name: round(statistics.median(seen), 3) for name, seen in sorted(self._seen.items()) if seen}


def load_timings(folder: Path) -> dict[str, float]:
    """The medians saved by the last batch in ``folder``; empty when there are none (or unreadable)."""
    try:
        data = json.loads((Path(folder) / TIMINGS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): float(v) for k, v in data.items() if isinstance(v, (int, float)) and math.isfinite(v) and v > 0}


def save_timings(folder: Path, medians: dict[str, float]) -> None:
    if medians:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / TIMINGS_FILE).write_text(json.dumps(medians, indent=1))
