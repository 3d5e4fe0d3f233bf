"""The student release runs on Google Colab's package versions.

Selected by the environment variable COLAB_VENV (the Colab-pinned virtualenv that
tools/colab_env.sh builds; `make test-colab` sets it). This module is its own pytest
invocation: without COLAB_VENV it FAILS rather than skips, so it can never pass unnoticed.

Every notebook is executed by autograde.runner.execute_notebook running inside the Colab
venv's interpreter (tools/colab_execute.py), so the kernel is that venv's ipykernel 6.17 /
IPython 7.34 and the runner itself is exercised on nbclient 0.10 / jupyter_client 7.4.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
EXECUTE = REPO_ROOT / "tools" / "colab_execute.py"
CONSTRAINTS = REPO_ROOT / "constraints-colab.txt"
# The versions the issue names; each must be exactly Colab's pin.
COLAB_PINNED = ["transformers", "sentence-transformers", "scikit-learn", "fastapi", "pydantic", "uvicorn",
                "numpy", "pandas", "ipykernel", "ipython", "jupyter_client", "nbclient", "gradio"]


@pytest.fixture(scope="module")
def colab_python() -> Path:
    venv = os.environ.get("COLAB_VENV")
    if not venv:
        pytest.fail("COLAB_VENV is not set: run `make test-colab` (it builds .venv-colab with "
                    "tools/colab_env.sh and selects it)")
    python = Path(venv).resolve() / "bin" / "python"
    if not python.exists():
        pytest.fail(f"{python} does not exist: build it with tools/colab_env.sh {venv}")
    return python


@pytest.fixture(scope="module")
def colab313_python(colab_python) -> Path | None:
    """Python 3.13 with Colab's versions (tools/colab_env_313.sh), for the notebooks that need
    no torch; None when the machine has no Python 3.13 (then everything runs on 3.11, and the
    tests print that they fell back)."""
    venv = os.environ.get("COLAB313_VENV")
    python = Path(venv).resolve() / "bin" / "python" if venv else None
    if python is None or not python.exists():
        print("FALLBACK: no Python 3.13 environment; every notebook runs on 3.11")
        return None
    return python


def _needs_torch(path: Path) -> bool:
    code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
    return bool(re.search(r"^\s*(import torch|from sentence_transformers|import transformers)", code, re.MULTILINE))


def _by_interpreter(notebooks: list[Path], colab_python: Path, colab313_python: Path | None) -> dict:
    """Which interpreter runs which notebook: Colab's Python 3.13 unless it needs torch."""
    plan: dict[Path, list[Path]] = {}
    for notebook in notebooks:
        python = colab_python if colab313_python is None or _needs_torch(notebook) else colab313_python
        plan.setdefault(python, []).append(notebook)
    return plan


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _colab_pins() -> dict[str, str]:
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[_canonical(name)] = version.strip()
    return pins


def _run(colab_python: Path, notebooks: list[Path], *flags: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), HF_HUB_OFFLINE="1")
    # The main venv first on PATH, as under `make`: the kernel must still be the Colab venv's.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    proc = subprocess.run([str(colab_python), str(EXECUTE), *flags, *map(str, notebooks)],
                          capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def release_dir(tmp_path_factory) -> Path:
    from autograde.release import release

    out = tmp_path_factory.mktemp("colab_release")
    release(out)
    return out


@pytest.fixture(scope="module")
def answered_dir(release_dir, tmp_path_factory) -> Path:
    """The release with every exercise answered by the instructor's solution (as
    examples/make_sample_class.py does for alice_perfect)."""
    from autograde.assignment import source_notebooks
    from examples.make_sample_class import _answered, _solutions

    out = tmp_path_factory.mktemp("colab_answered")
    for source in source_notebooks():
        nbformat.write(_answered(release_dir / source.name, _solutions(source), 1.0), out / source.name)
    return out


def test_colab_venv_has_colabs_versions(colab_python):
    pins = _colab_pins()
    code = ("import json, importlib.metadata as m; "
            f"print(json.dumps({{n: m.version(n) for n in {COLAB_PINNED + ['torch']!r}}}))")
    installed = json.loads(subprocess.check_output([str(colab_python), "-c", code], text=True))
    wrong = {n: (v, pins[_canonical(n)]) for n, v in installed.items()
             if n != "torch" and v != pins[_canonical(n)]}
    assert not wrong, f"installed vs Colab: {wrong}"
    assert installed["torch"].startswith("2.13.0"), installed["torch"]


def test_kernel_is_the_colab_venvs(colab_python, tmp_path):
    probe = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import sys, IPython, sklearn, transformers\n"
        "print(sys.executable, IPython.__version__, sklearn.__version__, transformers.__version__)")])
    nbformat.write(probe, tmp_path / "probe.ipynb")
    report = _run(colab_python, [tmp_path / "probe.ipynb"], "--strict", "--out", str(tmp_path / "out"))
    assert report["runs"][0]["status"] == "completed", report
    printed = nbformat.read(tmp_path / "out" / "probe.ipynb", as_version=4).cells[0].outputs[0].text.split()
    pins = _colab_pins()
    assert Path(printed[0]).parent.parent.resolve() == colab_python.parent.parent.resolve(), printed
    assert printed[1:] == [pins["ipython"], pins["scikit-learn"], pins["transformers"]], printed


def test_student_release_reaches_the_last_cell(colab_python, colab313_python, release_dir):
    """The untouched release, executed with errors allowed: every cell runs, nothing hangs or
    kills the kernel. Errors are expected (the exercises raise NotImplementedError and later
    cells that need their results fail with them), but the FIRST error of each notebook must be
    an unanswered exercise, not an incompatibility with Colab's versions."""
    from autograde.assignment import source_notebooks

    notebooks = sorted(release_dir.glob("*.ipynb"))
    assert [p.name for p in notebooks] == [p.name for p in source_notebooks()]
    runs = [run for python, group in _by_interpreter(notebooks, colab_python, colab313_python).items()
            for run in _run(python, group)["runs"]]
    assert len(runs) == len(notebooks)
    for run in runs:
        assert run["status"] == "completed", run
        assert run["reached_last_cell"], run
        if run["errors"]:
            first = run["errors"][0]
            assert first["ename"] == "NotImplementedError", f"{run['notebook']}: first error {first}"


def test_answered_release_runs_without_any_error(colab_python, colab313_python, answered_dir, tmp_path):
    """Stronger: with correct answers, "Run all" on Colab's versions raises nothing."""
    notebooks = sorted(answered_dir.glob("*.ipynb"))
    runs = [run for python, group in _by_interpreter(notebooks, colab_python, colab313_python).items()
            for run in _run(python, group, "--strict", "--out", str(tmp_path / "executed"))["runs"]]
    assert len(runs) == len(notebooks)
    for run in runs:
        assert run["status"] == "completed" and not run["errors"], run
        assert run["reached_last_cell"], run


def test_colab_python_runs_the_torch_free_notebooks(colab313_python):
    """Colab runs Python 3.13: the notebooks that need no torch are run there, at Colab's
    versions; only the one that needs torch stays on 3.11."""
    import glob

    if colab313_python is None:
        # Only a machine without any Python 3.13 may fall back (the build script said so).
        assert not glob.glob("/root/.pyenv/versions/3.13*/bin/python3.13") and not glob.glob("/usr/bin/python3.13"), \
            "Python 3.13 is on this machine but no environment was built: run tools/colab_env_313.sh"
        return
    version = subprocess.check_output([str(colab313_python), "-c", "import sys; print(sys.version_info[:2])"],
                                      text=True).strip()
    assert version == "(3, 13)"
    from autograde.assignment import source_notebooks

    torch_free = [p.stem for p in source_notebooks() if not _needs_torch(p)]
    assert torch_free and "colab_c_rag" not in torch_free, torch_free
