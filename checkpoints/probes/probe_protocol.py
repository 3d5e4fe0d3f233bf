"""The probes' side of the grader's request protocol (``autograde/probes.py`` is the other).

A probe is started once per execution and kept for that execution's later requests: the
grader writes one JSON line per request, ``{"id": ..., "payload": ...}``, after copying the
student's run folder afresh into the probe's working directory; the probe answers one
line, ``{"id": ..., "answer": ...}``, on a private copy of its stdout. What probed code
prints goes to stderr, and it reads an empty stdin: it can neither pass for the answer
channel by accident nor swallow the next request. The grader only trusts the line whose
``id`` it chose, parsed as strict JSON data.

Standard library only. Probes run as ``python -I script.py``, so their folder is not on
``sys.path``: they put it there to import this module, before any student code runs.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable

MAX_ERROR = 300  # characters of an exception's message in an error answer


def private_channels():
    """(requests, answers): private copies of stdin and stdout. Afterwards fd 0 reads
    /dev/null, and fd 1 and ``sys.stdout`` lead to stderr."""
    requests = os.fdopen(os.dup(0), "r", encoding="utf-8")
    answers = os.fdopen(os.dup(1), "w", encoding="utf-8")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return requests, answers


def forget_modules_under(folder: str) -> None:
    """Drop the modules imported from ``folder`` (the student's files): the next request's
    copy of the folder may hold different ones under the same names."""
    prefix = os.path.join(os.path.abspath(folder), "")
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if isinstance(path, str) and os.path.abspath(path).startswith(prefix):
            sys.modules.pop(name, None)


def serve(handle: Callable[[object], object], requests, answers) -> None:
    """Answer requests until the grader closes stdin, then exit at once (no thread or
    atexit hook of probed code may write after the last answer)."""
    home = os.getcwd()
    for line in requests:
        try:
            request = json.loads(line)
        except ValueError:
            continue
        if not isinstance(request, dict):
            continue
        try:
            answer = handle(request.get("payload"))
        except Exception as exc:  # the probe's own failure is an observation too
            answer = {"error": f"{type(exc).__name__}: {str(exc)[:MAX_ERROR]}"}
        answers.write(json.dumps({"id": request.get("id"), "answer": answer}) + "\n")
        answers.flush()
        os.chdir(home)
        forget_modules_under(home)
    answers.flush()
    os._exit(0)

