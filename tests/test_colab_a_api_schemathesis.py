"""Schemathesis against the Colab A notebook's final validated app: no request, however
malformed, gets a 5xx.

Why execute the source notebook instead of importing a copy of the app: the notebook is
self-contained by design (nothing in it can be imported from this repository), and a fixture
app in the tests would prove only that the fixture is sound. So a module-scoped fixture runs
``notebooks/colab_a_fastapi.ipynb`` top to bottom once with nbclient (the runner's kernel
environment, a fresh working directory), then executes one extra cell in the same, still
living kernel that serves the notebook's ``app`` with the notebook's own ``start_server``
helper and prints the URL. Schemathesis (its CLI, in a separate process) then fuzzes that
server from its OpenAPI schema in positive and negative mode. Leaving the ``with`` block
shuts the kernel down, and the server thread dies with it.

Costs about 15-20 s for the notebook plus the fuzzing run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from autograde.runner import kernel_env

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO_ROOT / "notebooks" / "colab_a_fastapi.ipynb"

SERVE_CELL = 'print("SERVING", start_server(app))'


@pytest.fixture(scope="module")
def notebook_api_url(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("colab_a_schemathesis")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(SERVE_CELL))
    client = NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        allow_errors=False,
        resources={"metadata": {"path": str(workdir)}},
    )
    client.km = client.create_kernel_manager()
    client.km.transport = "ipc"  # like the project runner: no TCP port for the kernel itself
    client.km.ip = str(workdir / ".kernel-ipc")
    with client.setup_kernel(env=kernel_env(), cwd=str(workdir)):
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
        printed = "".join(out.get("text", "") for out in nb.cells[-1].outputs if out.get("output_type") == "stream")
        match = re.search(r"SERVING (http://127\.0\.0\.1:\d+)", printed)
        assert match, f"the serve cell printed no URL: {printed!r}"
        yield match.group(1)


def test_schemathesis_finds_no_server_errors(notebook_api_url, tmp_path):
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{notebook_api_url}/openapi.json",
        "--checks", "not_a_server_error",
        "--mode", "all",
        "--phases", "examples,coverage,fuzzing",
        "--max-examples", "150",
        "--seed", "7",
        "--workers", "1",
        "--request-timeout", "10",
        "--no-color",
    ]  # fmt: skip
    env = dict(os.environ, SCHEMATHESIS_HOOKS="", NO_COLOR="1")
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    report = result.stdout + result.stderr
    assert result.returncode == 0, f"schemathesis found failures:\n{report[-4000:]}"
    # both operations (POST /predict, GET /health) were really exercised, and nothing failed
    assert "Tested: 2" in report, report[-2000:]
    assert "No issues found" in report, report[-2000:]
