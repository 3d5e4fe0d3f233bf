#!/usr/bin/env bash
# Build (or bring up to date) the Colab-Python environment: Python 3.13, as Colab runs it,
# with Colab's package versions (constraints-colab.txt) for the notebooks that need no torch
# (A, B, D). The local CPU torch wheel exists for Python 3.11 only, and on 3.13 pip would
# download a multi-GB CUDA build, so the notebook that needs torch (C) keeps running in the
# 3.11 environment of tools/colab_env.sh. tests/test_colab_env.py uses both.
#
#   tools/colab_env_313.sh [VENV]    default: .venv-colab313
#
# Without a Python 3.13 on the machine it says so, builds nothing and exits 0: the tests then
# run every notebook in the 3.11 environment and say that they fell back.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-${COLAB313_VENV:-.venv-colab313}}"
export PIP_DISABLE_PIP_VERSION_CHECK=1
PY313=""
for candidate in "${PYTHON313:-}" "$(command -v pyenv >/dev/null && echo "$(pyenv root)/versions/3.13.0/bin/python3.13")" \
                 /root/.pyenv/versions/3.13*/bin/python3.13 /usr/bin/python3.13 /usr/local/bin/python3.13; do
    if [ -n "$candidate" ] && [ -x "$candidate" ] && "$candidate" -c "import venv" 2>/dev/null; then
        PY313="$candidate"
        break
    fi
done
if [ -z "$PY313" ]; then
    echo "colab env 3.13: no Python 3.13 on this machine; the notebooks will all run on 3.11 (FALLBACK)"
    rm -rf "$VENV"
    exit 0
fi
STAMP="$VENV/.colab-installed"
inputs_hash="$(cat tools/colab_env_313.sh requirements-colab-313.txt constraints-colab.txt | sha256sum | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$inputs_hash" ] && "$VENV/bin/python" -c "import nbclient, sklearn" 2>/dev/null; then
    echo "colab env $VENV (Python 3.13) is up to date"
    exit 0
fi
rm -rf "$VENV"
"$PY313" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -r requirements-colab-313.txt -c constraints-colab.txt
"$VENV/bin/python" -m pip check
echo "$inputs_hash" > "$STAMP"
"$VENV/bin/python" -c "import sys, sklearn, pandas, streamlit; print('colab env 3.13:', sys.version.split()[0], 'scikit-learn', sklearn.__version__, 'pandas', pandas.__version__, 'streamlit', streamlit.__version__)"
