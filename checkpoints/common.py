"""Shared pieces of the checkpoint verifiers.

A verifier either returns quietly after printing one ``passed`` line to stdout, or raises
``CheckpointFailed`` with a message written for the student. Verifiers never write to
stderr on success: nbgrader scores any stderr output in a graded cell as zero.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path


class CheckpointFailed(AssertionError):
    """A checkpoint's expectation was not met; the message is shown to the student."""


def expect(condition: bool, message: str) -> None:
    """Raise ``CheckpointFailed(message)`` unless ``condition`` holds."""
    if not condition:
        raise CheckpointFailed(message)


def normalise_answer(answer) -> str:
    """A prediction in canonical form: lower-case, no spaces, sequences joined by commas,
    so (11, 4) -> '11,4' and ' B ' -> 'b'."""
    if isinstance(answer, list | tuple):
        return ",".join(normalise_answer(part) for part in answer)
    return re.sub(r"\s+", "", str(answer)).lower()


def answer_digest(answer) -> str:
    """The sha256 a notebook's self-check compares against, so it never shows the answer."""
    return hashlib.sha256(normalise_answer(answer).encode()).hexdigest()


def passed(checkpoint: str, detail: str = "") -> None:
    """Print the single success line of a checkpoint (stdout only)."""
    suffix = f": {detail}" if detail else ""
    print(f"[checkpoint {checkpoint}] passed{suffix}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_probe(module: str, payload: dict, timeout: float = 120.0) -> dict:
    """Run ``python -m <module>`` in a fresh process, send ``payload`` as JSON on stdin,
    and return the JSON object it prints as its last stdout line.

    The probe process starts from a clean interpreter, so nothing a student rebinds or
    patches inside the notebook kernel can change what it observes.
    """
    repo_root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo_root, env.get("PYTHONPATH", "")) if p)
    try:
        proc = subprocess.run(
            # -P: the working directory is not put on sys.path, so a folder the notebook
            # created there cannot shadow the verifiers.
            [sys.executable, "-P", "-m", module],
            input=json.dumps(payload),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired as exc:
        raise CheckpointFailed(f"the check did not finish within {timeout:.0f} s") from exc
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise CheckpointFailed("the check could not run: " + " | ".join(tail))
    return json.loads(lines[-1])
