"""One checkpoint interface for every notebook.

A checkpoint is one declaration::

    Checkpoint(
        id="cp_a_tamper",                      # the hidden cell's nbgrader grade_id
        collect=collect_tamper,                # Session -> evidence (plain JSON data)
        judge=judge_tamper,                    # evidence -> Verdict (pure, unit-tested)
        prediction=Prediction("checkpoint_a1", accept=[False], points=0.5),
        messages={...},                        # optional: student-facing texts by key
    )

and a notebook module lists its declarations in ``CHECKPOINTS``. The hidden cell in the
source notebook only names the module (``# autograde-checkpoint: checkpoints.colab_a``);
the grader restores that cell from its gradebook, finds the declaration with the cell's
``grade_id`` and runs it *instead of* the cell:

1. ``collect(session)`` runs in the grader's worker. The ``session`` is the only way to the
   student's work: it asks the kernel for data at the checkpoint's position (globals and
   return values of the student's functions on held-out inputs drawn only now, as strict
   JSON), reads files of the run folder, sends HTTP requests to servers the kernel started
   (from a grader thread, never from the kernel), counts file opens from outside, and runs
   grader probes over the run folder in a sandbox of their own. It returns plain JSON data.
2. ``judge(evidence)`` turns that data into a :class:`Verdict` in the grader process, where
   no student code has ever run. Expected values live here and never reach the kernel.
3. The prediction (``Prediction``) is read from the kernel as data and judged apart, with
   its own small number of points: a wrong prediction never costs the behaviour's points.

Nothing the kernel prints is a verdict: a kernel that lies can only hand over wrong data.
"""

from __future__ import annotations

import functools
import importlib
import json
import math
import random
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

JSON = Any  # None | bool | int | float | str | list[JSON] | dict[str, JSON]

CHECKPOINT_MARKER = re.compile(r"autograde-checkpoint:\s*([A-Za-z_][\w.]*)")
MAX_QUOTE = 120


class Unavailable(Exception):
    """The kernel could not supply what was asked (name missing, call raised, not JSON,
    kernel dead). The message is written for the student; student text in it is quoted."""


@dataclass(frozen=True)
class Verdict:
    """The judge's decision on the behaviour: ``score`` is the fraction (0..1) of the
    behaviour points earned; ``message`` is for the student."""

    score: float
    message: str

    @classmethod
    def ok(cls, message: str) -> Verdict:
        return cls(1.0, message)

    @classmethod
    def fail(cls, message: str) -> Verdict:
        return cls(0.0, message)

    @property
    def passed(self) -> bool:
        return self.score >= 1.0


@dataclass(frozen=True)
class Prediction:
    """A 'predict before you run' answer: the kernel global ``variable``, accepted when its
    canonical form (see ``normalise``) equals one of ``accept``'s, worth ``points``."""

    variable: str
    accept: Sequence[JSON] = ()
    points: float = 0.5
    hint: str = ""
    check: Callable[[JSON], bool] | None = None  # instead of ``accept``: answers with many right forms

    def judge(self, answer: JSON, available: bool = True) -> Verdict:
        if not available or answer is None:
            return Verdict.fail(f"no prediction recorded in `{self.variable}`")
        try:
            right = self.check(answer) if self.check is not None else \
                normalise(answer) in {normalise(a) for a in self.accept}
        except Exception:
            right = False
        if right:
            return Verdict.ok("your prediction matched")
        return Verdict.fail("your prediction did not match the run" + (f" ({self.hint})" if self.hint else ""))


@dataclass(frozen=True)
class Checkpoint:
    id: str
    collect: Callable[[Session], JSON]
    judge: Callable[[JSON], Verdict]
    prediction: Prediction | None = None
    description: str = ""
    timeout_s: float = 180.0  # budget of the whole collection: every kernel request, HTTP call and probe
    messages: dict[str, str] = field(default_factory=dict)


class Server(Protocol):
    """A server the kernel runs for the grader; ``url`` is reachable through ``Session.http``."""

    url: str


class Session(Protocol):
    """What ``collect`` may use. Implemented by the grader (``autograde.collect``) and by a
    fake in the tests (``checkpoints.testing.FakeSession``)."""

    rng: random.Random  # seeded freshly for every run: held-out inputs are drawn from it

    def value(self, name: str) -> JSON:
        """A global of the student's notebook, as strict JSON. Raises Unavailable."""

    def call(self, function: str, *args: JSON, **kwargs: JSON) -> JSON:
        """``function(*args, **kwargs)`` in the kernel (a global of the notebook); the
        return value as strict JSON (numpy arrays and scalars become lists and numbers).
        Raises Unavailable (with the exception's type and message quoted) when it raises."""

    def kernel(self, code: str, args: JSON = None) -> JSON:
        """Run grader-written ``code`` in the kernel, with ``args`` bound to the name
        ``args``; the code sets ``result`` (a JSON-able value). Raises Unavailable."""

    def serve(self, app: str) -> AbstractContextManager[Server]:
        """Serve the notebook's ASGI app ``app`` (a global) on 127.0.0.1 in a kernel thread
        for the duration of the ``with`` block."""

    def http(self, server: Server, requests: list[dict]) -> list[dict]:
        """Send ``[{"method", "path", "body" (raw text or None), "content_type"}]`` from the
        grader's side; answers ``[{"status", "body", "error"?}]`` (status None on failure)."""

    def count_opens(self) -> AbstractContextManager[dict[str, int]]:
        """Count, from outside the kernel, how often each file of the run folder (relative
        path) is opened while the block runs; the dict is filled when the block ends."""

    def read_file(self, path: str, max_bytes: int = 1_000_000) -> bytes | None:
        """A regular file of the run folder (no symlinks), or None."""

    def list_files(self, folder: str = ".") -> list[str]:
        """Regular files below ``folder`` of the run folder (relative paths, capped)."""

    def probe(self, script: str, payload: JSON, timeout: float = 120.0, writable: bool = False) -> JSON:
        """Ask the grader's probe ``checkpoints/probes/<script>.py`` about the run folder as it
        is now: the probe runs in a sandbox of its own (student code it loads runs there,
        never in the grader), started on the execution's first request and kept for its
        later ones (``autograde/probes.py``); returns its answer to ``payload`` as JSON
        data. Raises Unavailable."""


# --------------------------------------------------------------------------- helpers


class Malformed(Exception):
    """Evidence that does not have the shape a judge expects (the judge fails on it, never crashes)."""


def robust(judge: Callable[[dict], Verdict]) -> Callable[[object], Verdict]:
    """A judge that fails, instead of raising, on evidence of an unexpected shape."""

    @functools.wraps(judge)
    def wrapper(evidence: object) -> Verdict:
        try:
            if type(evidence) is not dict:
                raise Malformed("evidence is not an object")
            return judge(evidence)
        except (Malformed, KeyError, IndexError, TypeError, ValueError, AttributeError, ZeroDivisionError):
            return Verdict.fail("the check could not read what your notebook produced")

    return wrapper


def normalise(answer: JSON) -> str:
    """A prediction in canonical form: lower-case, no spaces, sequences joined by commas,
    so (11, 4) -> '11,4', ' B ' -> 'b', 2.0 -> '2'."""
    if isinstance(answer, list | tuple):
        return ",".join(normalise(part) for part in answer)
    if isinstance(answer, float) and math.isfinite(answer) and answer.is_integer():
        answer = int(answer)
    return re.sub(r"\s+", "", str(answer)).lower()


def quote(text: object, limit: int = MAX_QUOTE) -> str:
    """Student-controlled text as a short, single-line, quoted literal for a message."""
    text = " ".join(str(text).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return json.dumps(text, ensure_ascii=False)


def strict_json(value: JSON, *, depth: int = 0, max_depth: int = 32) -> JSON:
    """Check that ``value`` holds only plain JSON types (no subclasses: a ``str`` or ``dict``
    subclass could carry a custom ``__eq__``); returns it unchanged or raises Unavailable."""
    if depth > max_depth:
        raise Unavailable("the value is nested too deeply")
    kind = type(value)
    if value is None or kind in (bool, int, str):
        return value
    if kind is float:
        return value
    if kind is list:
        return [strict_json(v, depth=depth + 1, max_depth=max_depth) for v in value]
    if kind is dict:
        if any(type(k) is not str for k in value):
            raise Unavailable("a dict with non-string keys")
        return {k: strict_json(v, depth=depth + 1, max_depth=max_depth) for k, v in value.items()}
    raise Unavailable(f"not plain JSON data ({kind.__name__})")


def load_checkpoints(module_name: str) -> dict[str, Checkpoint]:
    """The declarations of a checkpoints module, by id."""
    module = importlib.import_module(module_name)
    declared = getattr(module, "CHECKPOINTS", None)
    if not isinstance(declared, list | tuple):
        raise LookupError(f"{module_name} declares no CHECKPOINTS")
    return {c.id: c for c in declared}


def marker_module(hidden_source: str) -> str | None:
    """The checkpoints module a hidden cell names, or None (a plain in-kernel test)."""
    found = CHECKPOINT_MARKER.search(hidden_source or "")
    return found.group(1) if found else None


def iter_prediction_variables(checkpoints: dict[str, Checkpoint]) -> Iterator[str]:
    for checkpoint in checkpoints.values():
        if checkpoint.prediction:
            yield checkpoint.prediction.variable
