"""Shipping files: the credit API's Dockerfile (its exact CMD run without Docker) and the
Hugging Face Space folders that Colab B and Colab C write.

No container engine here, so the image is reproduced as a folder: the files the Dockerfile
COPYs (from a build context filtered by .dockerignore, with the bundle Colab A writes) laid
out under its WORKDIR; then the CMD argv parsed from the Dockerfile runs there as an
unprivileged user (the image's USER), with only --host and --port replaced by 127.0.0.1 and a
free port. The notebooks are executed once each through autograde.runner (tools/notebook_artifacts.py).
"""

from __future__ import annotations

import ast
import fnmatch
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from importlib.metadata import packages_distributions, version
from pathlib import Path

import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parent.parent

from tools import notebook_artifacts  # noqa: E402

DEPLOY = REPO_ROOT / "deploy" / "credit-api"
DOCKERFILE = DEPLOY / "Dockerfile"
VALID_APPLICANT = {"income": 62000.0, "debt_ratio": 0.28, "credit_score": 710.0,
                   "employment_years": 6.0, "loan_amount": 18000.0}


# --- reading a Dockerfile ------------------------------------------------------------------

def dockerfile_instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions, pending = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def exec_form(arguments: str) -> list[str]:
    """The argv of an exec-form CMD/RUN (a JSON array); shell form is refused on purpose:
    PID 1 must be the server itself, so `docker stop` reaches it."""
    argv = json.loads(arguments)
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), arguments
    return argv


def only(instructions, keyword: str) -> str:
    found = [args for kw, args in instructions if kw == keyword]
    assert len(found) == 1, f"expected exactly one {keyword}, found {found}"
    return found[0]


def dockerignored(relative: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified to what an allowlist needs: the last matching pattern wins,
    a leading ! re-includes."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        if fnmatch.fnmatch(relative, pattern.lstrip("!")):
            ignored = not negate
    return ignored


def dockerignore_patterns() -> list[str]:
    lines = (DEPLOY / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# --- the credit API image -----------------------------------------------------------------

def test_dockerfile_follows_the_recipe():
    steps = dockerfile_instructions()
    keywords = [kw for kw, _ in steps]
    assert only(steps, "FROM").startswith("python:3.11-slim")
    assert only(steps, "WORKDIR") == "/app"
    # Dependencies before code: editing app.py does not reinstall the packages.
    copies = [args for kw, args in steps if kw == "COPY"]
    assert copies[0].split()[0] == "requirements.txt"
    pip = [args for kw, args in steps if kw == "RUN" and "pip install" in args]
    assert pip and "--no-cache-dir" in pip[0] and "-r requirements.txt" in pip[0]
    # Not root: a USER after the last RUN, before the server starts.
    user = only(steps, "USER")
    assert user not in ("root", "0")
    assert keywords.index("USER") > max(i for i, kw in enumerate(keywords) if kw == "RUN")
    assert keywords.index("USER") < keywords.index("CMD")
    health = only(steps, "HEALTHCHECK")
    assert "CMD" in health and "/health" in health
    assert exec_form(only(steps, "CMD"))[:2] == ["uvicorn", "app:app"]


def test_dockerignore_sends_only_what_the_image_copies():
    patterns = dockerignore_patterns()
    copied = [name for kw, args in dockerfile_instructions() if kw == "COPY" for name in args.split()[:-1]]
    assert set(copied) == {"requirements.txt", "app.py", "credit_model.joblib", "credit_model.json"}
    for name in copied:
        assert not dockerignored(name, patterns), f"{name} is COPYed but .dockerignore excludes it"
    for stray in ("predictions.jsonl", ".venv", "__pycache__", "Dockerfile", "notebook.ipynb", ".env"):
        assert dockerignored(stray, patterns), f"{stray} would be sent to the build"


def test_image_requirements_are_the_tested_versions():
    """The image installs exactly the versions this test suite runs the CMD with (and that
    trained the bundle: the app refuses another scikit-learn)."""
    pins = {}
    for line in (DEPLOY / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, sep, pinned = line.partition("==")
            assert sep, f"unpinned requirement in the image: {line}"
            pins[name] = pinned
    assert {canonical(n) for n in pins} >= {"fastapi", "uvicorn", "pydantic", "scikit-learn", "joblib", "pandas"}
    mismatched = {n: (p, version(n)) for n, p in pins.items() if version(n) != p}
    assert not mismatched, f"image pin vs this environment: {mismatched}"


@pytest.fixture(scope="module")
def image_root(tmp_path_factory) -> Path:
    """The image's filesystem as far as the app is concerned: the build context (deploy/credit-api
    plus Colab A's bundle) filtered by .dockerignore, COPYed under WORKDIR, readable by anyone,
    writable by root only (as in the image, whose files root owns)."""
    context = tmp_path_factory.mktemp("build-context")
    for path in DEPLOY.iterdir():
        if path.is_file():
            (context / path.name).write_bytes(path.read_bytes())
    notebook_artifacts.credit_bundle(context)
    (context / "predictions.jsonl").write_text("{}\n")  # a stray file .dockerignore must keep out
    patterns = dockerignore_patterns()
    sent = {p.name for p in context.iterdir() if not dockerignored(p.name, patterns)}

    root = tmp_path_factory.mktemp("image")
    workdir = root
    for keyword, args in dockerfile_instructions():
        if keyword == "WORKDIR":
            workdir = root / args.lstrip("/")
            workdir.mkdir(parents=True, exist_ok=True)
        elif keyword == "COPY":
            *sources, target = args.split()
            destination = workdir if target in (".", "./") else workdir / target
            for source in sources:
                assert source in sent, f"COPY {source}: not in the build context after .dockerignore"
                (destination / source).write_bytes((context / source).read_bytes())
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    assert {p.name for p in workdir.iterdir()} == {"requirements.txt", "app.py", "credit_model.joblib",
                                                  "credit_model.json"}
    return root


def _image_workdir(root: Path) -> Path:
    return root / only(dockerfile_instructions(), "WORKDIR").lstrip("/")


def _local_argv(argv: list[str], port: int) -> list[str]:
    """The CMD with its bind address and port replaced (and nothing else)."""
    argv = list(argv)
    assert "--host" in argv and "--port" in argv
    argv[argv.index("--host") + 1] = "127.0.0.1"
    argv[argv.index("--port") + 1] = str(port)
    return argv


IMAGE_ENV = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "LANG": "C.UTF-8",
             "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}  # the ENV line, and a PATH to uvicorn
NOBODY = {"user": 65534, "group": 65534, "extra_groups": []}


def _unprivileged() -> dict:
    """Run as nobody (like the image's USER) when this interpreter is reachable by nobody;
    a venv on a pyenv under /root (mode 700) is not, and then the app runs as the current
    user and the tests check instead that it wrote nothing (the image's files are root's)."""
    if os.geteuid() != 0:
        return {}
    probe = subprocess.run([sys.executable, "-c", "import uvicorn"], capture_output=True, env=IMAGE_ENV,
                           cwd="/", **NOBODY) if os.access(sys.executable, os.X_OK) else None
    return NOBODY if probe is not None and probe.returncode == 0 else {}


def _start(argv: list[str], cwd: Path, port: int) -> subprocess.Popen:
    env = dict(IMAGE_ENV, HOME=str(cwd))
    try:
        as_user = _unprivileged()
    except (OSError, subprocess.SubprocessError):
        as_user = {}
    return subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, **as_user)


def _stop(process: subprocess.Popen) -> tuple[str, str]:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)  # what `docker stop` sends
        try:
            return process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
    return process.communicate()


def _wait_healthy(process: subprocess.Popen, url: str, timeout_s: float = 30.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if process.poll() is not None:
            _, err = process.communicate()
            pytest.fail(f"the server exited with {process.returncode}: {err[-2000:]}")
        try:
            if requests.get(f"{url}/health", timeout=1).status_code == 200:
                return time.monotonic() - started
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    pytest.fail(f"{url}/health did not answer within {timeout_s} s")


@pytest.fixture(scope="module")
def credit_api(image_root):
    """The image's CMD, running: yields the base URL."""
    port = free_port()
    argv = _local_argv(exec_form(only(dockerfile_instructions(), "CMD")), port)
    process = _start(argv, _image_workdir(image_root), port)
    url = f"http://127.0.0.1:{port}"
    before = sorted(p.name for p in _image_workdir(image_root).iterdir())
    try:
        _wait_healthy(process, url)
        yield url
    finally:
        _stop(process)
    assert process.returncode is not None
    # Nothing written next to the app (in the image, root owns that folder and USER cannot write).
    assert sorted(p.name for p in _image_workdir(image_root).iterdir()) == before


def test_image_cmd_serves_health_and_its_healthcheck_passes(credit_api, image_root):
    health = requests.get(f"{credit_api}/health", timeout=5)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    manifest = json.loads((_image_workdir(image_root) / "credit_model.json").read_text())
    assert health.json()["model_version"] == manifest["model_version"]
    # The HEALTHCHECK's own command, pointed at this port, succeeds.
    check = exec_form(only(dockerfile_instructions(), "HEALTHCHECK").split("CMD", 1)[1].strip())
    port = credit_api.rsplit(":", 1)[1]
    check = [arg.replace("127.0.0.1:8000", f"127.0.0.1:{port}") for arg in check]
    check[0] = sys.executable if check[0] == "python" else check[0]
    assert subprocess.run(check, timeout=20).returncode == 0


def test_image_cmd_predicts_like_the_bundle(credit_api, image_root):
    import joblib
    import pandas as pd

    reply = requests.post(f"{credit_api}/predict", json=VALID_APPLICANT, timeout=10)
    assert reply.status_code == 200, reply.text
    bundle = joblib.load(_image_workdir(image_root) / "credit_model.joblib")
    row = pd.DataFrame([VALID_APPLICANT])[bundle["feature_names"]]
    assert reply.json()["probability"] == pytest.approx(float(bundle["pipeline"].predict_proba(row)[0, 1]), abs=1e-12)
    assert reply.json()["approved"] == (reply.json()["probability"] < 0.5)


@pytest.mark.parametrize("raw_body, field", [
    (json.dumps({**VALID_APPLICANT, "income": -5000}), "income"),
    (json.dumps(VALID_APPLICANT).replace("710.0", "NaN"), "credit_score"),
    (json.dumps(VALID_APPLICANT).replace("18000.0", "1e309"), "loan_amount"),
    (json.dumps({**VALID_APPLICANT, "debt_ratio": "0.3"}), "debt_ratio"),
    (json.dumps({**VALID_APPLICANT, "zip_code": 10001}), "zip_code"),
])
def test_image_cmd_rejects_impossible_input_with_422(credit_api, raw_body, field):
    reply = requests.post(f"{credit_api}/predict", data=raw_body,
                          headers={"Content-Type": "application/json"}, timeout=10)
    assert reply.status_code == 422, reply.text
    assert field in [problem["field"] for problem in reply.json()["detail"]]


def test_image_docs_page_needs_no_cdn(credit_api):
    page = requests.get(f"{credit_api}/docs", timeout=10)
    assert page.status_code == 200 and "swagger" in page.text.lower()
    assert "cdn.jsdelivr.net" not in page.text and "unpkg.com" not in page.text


def test_image_cmd_refuses_a_tampered_bundle(image_root, tmp_path):
    tampered = tmp_path / "app"
    tampered.mkdir()
    for path in _image_workdir(image_root).iterdir():
        (tampered / path.name).write_bytes(path.read_bytes())
    model = tampered / "credit_model.joblib"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    tmp_path.chmod(0o755)
    for path in [tampered, *tampered.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    port = free_port()
    process = _start(_local_argv(exec_form(only(dockerfile_instructions(), "CMD")), port), tampered, port)
    try:
        process.wait(timeout=30)
    finally:
        _, err = _stop(process)
    assert process.returncode != 0
    assert "refused" in err and "sha256" in err, err[-2000:]


# --- the Space folders ----------------------------------------------------------------------

SPACES = {"colab_b_streamlit": "streamlit", "colab_c_rag": "gradio"}


def front_matter(readme: str) -> dict[str, str]:
    match = re.match(r"\A---\n(.*?)\n---\n", readme, re.S)
    assert match, "README.md must start with a --- front matter block"
    return {key.strip(): value.strip() for key, _, value in
            (line.partition(":") for line in match.group(1).splitlines() if ":" in line)}


def third_party_imports(app_file: Path) -> set[str]:
    """Top-level names of every module app.py imports (anywhere in the file), minus the
    standard library and the folder's own modules."""
    names = set()
    for node in ast.walk(ast.parse(app_file.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    local = {p.stem for p in app_file.parent.glob("*.py")} | {p.name for p in app_file.parent.iterdir() if p.is_dir()}
    return {n for n in names if n not in sys.stdlib_module_names and n not in local}


def requirement_names(requirements: Path) -> set[str]:
    names = set()
    for line in requirements.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            names.add(canonical(re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0]))
    return names


@pytest.mark.parametrize("notebook, sdk", SPACES.items())
def test_space_folder_is_complete(notebook, sdk):
    if not (REPO_ROOT / "notebooks" / f"{notebook}.ipynb").exists():
        pytest.fail(f"notebooks/{notebook}.ipynb does not exist yet")
    folder = notebook_artifacts.space_folder(notebook)
    assert (folder / "app.py").is_file() and (folder / "requirements.txt").is_file()
    meta = front_matter((folder / "README.md").read_text(encoding="utf-8"))
    assert meta.get("sdk") == sdk, meta
    assert meta.get("app_file", "app.py") == "app.py", meta
    assert re.fullmatch(r"\d+\.\d+(\.\d+)?", meta.get("sdk_version", "")), meta
    # Every third-party import is installable from requirements.txt; the SDK package itself
    # may come from the Space (sdk_version) instead.
    listed = requirement_names(folder / "requirements.txt") | {sdk}
    distributions = packages_distributions()
    missing = {}
    for module in third_party_imports(folder / "app.py"):
        candidates = {canonical(d) for d in distributions.get(module, [module])}
        if not candidates & listed:
            missing[module] = sorted(candidates)
    assert not missing, f"{notebook}: app.py imports these, requirements.txt does not list them: {missing}"
    # Data files app.py opens by name are in the folder.
    for data_name in re.findall(r"""["']([\w.-]+\.(?:csv|json|parquet))["']""", (folder / "app.py").read_text()):
        assert (folder / data_name).is_file(), f"app.py reads {data_name}, which is not in the Space folder"
