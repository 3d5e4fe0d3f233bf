"""Real browser: headless Debian Chromium, driven by Playwright (the pip package; its own
browser downloads are never used: executable_path=/usr/bin/chromium), opens each app the way a
user would and saves screenshots to tests/artifacts/ (gitignored; CI keeps them as artifacts).

- Streamlit (the Space folder Colab B writes, `streamlit run app.py`): the page renders, moving
  the k slider with the keyboard reruns the app to six clusters, no exception box.
- FastAPI (deploy/credit-api/app.py with Colab A's bundle): /docs renders, and "Try it out" /
  "Execute" sends a valid request (200 and a probability) and an impossible one (422, income).
- Gradio (the Space folder Colab C writes, `python app.py`): a question typed in the textbox
  and submitted comes back with an answer and numbered citations.

Needs: apt-get install -y chromium; pip install playwright (see the Makefile's test target).
A missing browser FAILS the tests (it never skips them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parent.parent

from tools import notebook_artifacts  # noqa: E402

ARTIFACTS = REPO_ROOT / "tests" / "artifacts"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]
VALID_APPLICANT = {"income": 62000.0, "debt_ratio": 0.28, "credit_score": 710.0,
                   "employment_years": 6.0, "loan_amount": 18000.0}
SERVER_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
              "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false", "TOKENIZERS_PARALLELISM": "false",
              "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A server process in its own session (the whole group is stopped), logging to a file."""

    def __init__(self, argv: list[str], cwd: Path, port: int, ready_path: str, env: dict | None = None):
        self.url = f"http://127.0.0.1:{port}"
        self.ready_url = self.url + ready_path
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        full_env = dict(os.environ, **SERVER_ENV, **(env or {}))
        full_env["PATH"] = f"{Path(sys.executable).parent}:{full_env.get('PATH', '')}"
        self.process = subprocess.Popen(argv, cwd=cwd, env=full_env, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def wait_ready(self, timeout_s: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if self.process.poll() is not None:
                pytest.fail(f"server exited with {self.process.returncode}:\n{self.output()[-3000:]}")
            try:
                if requests.get(self.ready_url, timeout=2).status_code == 200:
                    return time.monotonic() - started
            except requests.RequestException:
                pass
            time.sleep(0.25)
        pytest.fail(f"{self.ready_url} not ready within {timeout_s} s:\n{self.output()[-3000:]}")

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.log.close()
        os.unlink(self.log.name)


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory):
    if not (Path(CHROMIUM).exists() and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install -y chromium (or set CHROMIUM=...)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is missing: pip install playwright (no `playwright install`)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    profile = tmp_path_factory.mktemp("chromium-profile")  # a fresh user-data-dir
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 1000}, timeout=60_000)
        context.set_default_timeout(60_000)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser_context):
    page = browser_context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.page_errors = errors
    yield page
    page.close()


def shot(page, name: str) -> Path:
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


# --- Streamlit ------------------------------------------------------------------------------

def test_streamlit_space_app_moves_the_slider(page, tmp_path):
    folder = tmp_path / "space"
    shutil.copytree(notebook_artifacts.space_folder("colab_b_streamlit"), folder)
    port = free_port()
    server = Server([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                     "--server.address", "127.0.0.1", "--server.port", str(port),
                     "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
                    folder, port, "/_stcore/health")
    try:
        server.wait_ready(60)
        page.goto(server.url)
        # Health alone proves nothing: the script runs only once a browser session connects.
        page.get_by_text(re.compile(r"is in cluster \d+ with")).wait_for()
        # Streamlit's slider is a react-aria group around a native range input.
        slider = page.locator("[data-testid='stSlider']").filter(has_text="Number of clusters")
        thumb_value = slider.locator("[data-testid='stSliderThumbValue']")
        assert thumb_value.inner_text().strip() == "3"
        text_at_k3 = page.get_by_text(re.compile(r"is in cluster \d+ with")).inner_text()
        _wait_streamlit_idle(page)
        shot(page, "streamlit_k3")

        slider.get_by_role("slider").focus()
        for _ in range(3):  # k: 3 -> 6, one step per key press, as a keyboard user would
            page.keyboard.press("ArrowRight")
        page.wait_for_function(
            "() => document.querySelector('[data-testid=stSliderThumbValue]').innerText.trim() === '6'")
        _wait_streamlit_idle(page)
        # The script reran with k=6: the highlighted ticker's peer list is recomputed.
        page.wait_for_function(
            "before => !document.body.innerText.includes(before)", arg=text_at_k3, timeout=60_000)
        shot(page, "streamlit_k6")
        assert page.locator("[data-testid='stException']").count() == 0
        assert slider.get_by_role("slider").input_value() == "6"
        assert not page.page_errors, page.page_errors
    finally:
        server.stop()


def _wait_streamlit_idle(page, timeout_s: float = 60) -> None:
    """Until the rerun is over: Streamlit shows its status widget ("Running...") meanwhile."""
    deadline = time.monotonic() + timeout_s
    time.sleep(0.5)
    while time.monotonic() < deadline:
        if page.locator("[data-testid='stStatusWidget']").count() == 0 and \
                page.locator("[data-stale='true']").count() == 0:
            return
        time.sleep(0.25)
    pytest.fail("the Streamlit app kept running")


# --- FastAPI /docs --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def credit_api_url(tmp_path_factory):
    folder = tmp_path_factory.mktemp("credit-api")
    shutil.copy(REPO_ROOT / "deploy" / "credit-api" / "app.py", folder / "app.py")
    notebook_artifacts.credit_bundle(folder)
    port = free_port()
    server = Server([sys.executable, "-m", "uvicorn", "app:app", "--host", "127.0.0.1", "--port", str(port)],
                    folder, port, "/health")
    try:
        server.wait_ready(30)
        yield server.url
    finally:
        server.stop()


def _execute_from_docs(page, body: dict) -> tuple[str, str]:
    """Fill the open /predict operation's request body, press Execute, return (status, body)."""
    operation = page.locator(".opblock-post").filter(has_text="/predict")
    editor = operation.locator("textarea.body-param__text")
    editor.fill(json.dumps(body, indent=2))
    operation.get_by_role("button", name="Execute").click()
    status = operation.locator(".live-responses-table .response .response-col_status").first
    status.wait_for()
    text = operation.locator(".live-responses-table .response .response-col_description pre").first.inner_text()
    return status.inner_text().strip(), text


def test_fastapi_docs_page_sends_a_request(page, credit_api_url):
    page.goto(f"{credit_api_url}/docs")
    operation = page.locator(".opblock-post").filter(has_text="/predict")
    operation.locator(".opblock-summary").click()
    operation.get_by_role("button", name="Try it out").click()

    status, body = _execute_from_docs(page, VALID_APPLICANT)
    assert status == "200", body
    assert 0 <= json.loads(body)["probability"] <= 1
    operation.locator(".live-responses-table").scroll_into_view_if_needed()
    shot(page, "fastapi_docs_200")

    status, body = _execute_from_docs(page, {**VALID_APPLICANT, "income": -5000})
    assert status == "422", body
    assert json.loads(body)["detail"][0]["field"] == "income"
    operation.locator(".live-responses-table").scroll_into_view_if_needed()
    shot(page, "fastapi_docs_422")
    assert not page.page_errors, page.page_errors


# --- Gradio ---------------------------------------------------------------------------------

def test_gradio_space_app_answers_a_question(page, tmp_path):
    folder = tmp_path / "space"
    shutil.copytree(notebook_artifacts.space_folder("colab_c_rag"), folder)
    port = free_port()
    server = Server([sys.executable, "app.py"], folder, port, "/",
                    env={"GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port)})
    try:
        server.wait_ready(180)  # loads the embedder and the generator before it listens
        page.goto(server.url)
        question = page.get_by_label("Ask about the earnings calls")
        question.fill("What was Acme's revenue growth in the third quarter?")
        page.get_by_role("button", name="Submit").click()
        answer = page.get_by_label("Answer with sources")
        page.wait_for_function(
            "el => el.value.includes('Sources:')", arg=answer.element_handle(), timeout=120_000)
        text = answer.input_value()
        # Gradio dims an output while its request is pending; let it settle before the picture.
        page.wait_for_function("() => !document.querySelector('.pending, .generating')", timeout=30_000)
        page.wait_for_timeout(800)
        shot(page, "gradio_answer")
        assert text.startswith("Answer:") and "[1]" in text and "Acme" in text, text
        assert not page.page_errors, page.page_errors
    finally:
        server.stop()
