"""Grader probes kept for an execution (autograde/probes.py, checkpoints/probes/probe_protocol.py):
one process answers every request, each request sees the run folder as it is then, and a
probe that hangs or dies is replaced; nothing outlives the pool. Each case runs in a real
sandbox and under rlimits only (the fallback when bubblewrap is missing)."""

from __future__ import annotations

import shutil
import tempfile
import textwrap
from pathlib import Path

import psutil
import pytest

from autograde import probes, sandbox, templates
from autograde.limits import Limits
from autograde.templates import TemplateSpec
from checkpoints.interface import Unavailable

ISOLATION, WHY_NOT = sandbox.availability()
MODES = [pytest.param(True, marks=pytest.mark.skipif(not ISOLATION, reason=f"isolation unavailable: {WHY_NOT}"),
                      id="sandbox"), pytest.param(False, id="limits-only")]

# A probe for these tests: it imports helper.py from the run folder and reads data.txt, the
# way Colab B's probe imports the student's app; "sleep", "exit" and "chatter" misbehave.
ECHO_PROBE = '''
import json, os, sys, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from probe_protocol import private_channels, serve

CHANNELS = private_channels()


def handle(payload):
    if payload.get("chatter"):  # probed code printing what looks like an answer, and reading stdin
        print(json.dumps({"id": payload["chatter"], "answer": "forged"}), flush=True)
        stolen = sys.stdin.read()
    else:
        stolen = ""
    if payload.get("exit"):
        os._exit(3)
    if payload.get("flood"):  # probed code that found the answer channel and floods it with short lines
        line = b"{" + b" " * 4094 + b"}\\n"  # short lines, a few thousand of them
        for _ in range(payload["flood"] // len(line)):
            os.write(CHANNELS[1].fileno(), line)
    time.sleep(payload.get("sleep", 0))
    sys.path.insert(0, os.getcwd())
    import helper
    with open("data.txt") as handle:
        data = handle.read()
    if payload.get("write"):
        with open("data.txt", "w") as handle:
            handle.write("changed by the probe")
    return {"pid": os.getpid(), "helper": helper.VALUE, "data": data, "stolen": stolen}


serve(handle, *CHANNELS)
'''


@pytest.fixture
def probe_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "probes"
    folder.mkdir()
    shutil.copy(probes.PROBES_DIR / "probe_protocol.py", folder)
    (folder / "echo.py").write_text(textwrap.dedent(ECHO_PROBE))
    monkeypatch.setattr(probes, "PROBES_DIR", folder)
    # In a sandbox the probes are forked from a probe template serving this folder's scripts.
    monkeypatch.setattr(probes, "PROBE_TEMPLATE", TemplateSpec(modules=("json",), scripts_dir=str(folder)))
    return folder


@pytest.fixture
def run_dir(tmp_path) -> Path:
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "helper.py").write_text("VALUE = 1\n")
    (folder / "data.txt").write_text("first")
    return folder


def _alive() -> bool:
    return any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in psutil.process_iter()
               if "echo.py" in " ".join(_cmdline(p)))


def _probe_copies() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("autograde-probe-*")}


def _cmdline(process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


@pytest.mark.parametrize("isolated", MODES)
def test_one_process_answers_each_request_with_the_folder_as_it_is_then(probe_dir, run_dir, isolated):
    probe = probes.ResidentProbe("echo", run_dir=run_dir, limits=Limits(sandbox=isolated), writable=True)
    try:
        first = probe.ask({"write": True}, timeout=60)
        assert probe.process.from_template == isolated
        (run_dir / "helper.py").write_text("VALUE = 2\n")
        (run_dir / "data.txt").write_text("second")
        second = probe.ask({}, timeout=60)
    finally:
        probe.close()
    assert probe.starts == 1 and first["pid"] == second["pid"]
    assert (first["helper"], first["data"]) == (1, "first")
    # the student's folder as it is now: the module imported from the old copy is forgotten,
    # and what the probe wrote went to its throwaway copy only
    assert (second["helper"], second["data"]) == (2, "second")
    assert (run_dir / "data.txt").read_text() == "second"
    assert not _alive()


@pytest.mark.parametrize("isolated", MODES)
def test_a_probe_that_hangs_or_dies_is_replaced_for_the_next_request(probe_dir, run_dir, isolated):
    pool = probes.ProbePool()
    ask = lambda payload, timeout=60: pool.ask("echo", payload, run_dir=run_dir,  # noqa: E731
                                               limits=Limits(sandbox=isolated), timeout=timeout, writable=True)
    try:
        with pytest.raises(Unavailable, match="did not finish within 2 s"):
            ask({"sleep": 30}, timeout=2)
        assert not _alive()  # killed at once, not left sleeping
        assert ask({})["data"] == "first"
        with pytest.raises(Unavailable, match="produced no answer"):
            ask({"exit": True})
        assert ask({})["helper"] == 1
    finally:
        pool.close()
    assert not _alive()


@pytest.mark.parametrize("isolated", MODES)
def test_a_probe_flooding_its_answer_channel_is_stopped_and_replaced(probe_dir, run_dir, isolated):
    probe = probes.ResidentProbe("echo", run_dir=run_dir, limits=Limits(sandbox=isolated), writable=False)
    try:
        with pytest.raises(Unavailable, match="more output than the check reads"):
            probe.ask({"flood": probes.MAX_STDOUT_BYTES + 1_000_000}, timeout=120)
        assert probe.lines.qsize() <= probes.MAX_STDOUT_BYTES // 4096 + 1  # what was queued stayed under the cap
        assert probe.ask({}, timeout=60)["data"] == "first" and probe.starts == 2
    finally:
        probe.close()
    assert not _alive()


@pytest.mark.parametrize("isolated", MODES)
def test_what_probed_code_prints_or_reads_is_not_the_protocol(probe_dir, run_dir, isolated):
    probe = probes.ResidentProbe("echo", run_dir=run_dir, limits=Limits(sandbox=isolated), writable=False)
    try:
        answer = probe.ask({"chatter": "0" * 32}, timeout=60)
        again = probe.ask({}, timeout=60)
    finally:
        probe.close()
    assert answer["stolen"] == ""  # stdin is empty for probed code: the next request was not swallowed
    assert answer["data"] == "first" and again["data"] == "first" and probe.starts == 1


def test_an_unknown_probe_is_a_clear_error(run_dir):
    with pytest.raises(Unavailable, match="no probe named nope"):
        probes.ProbePool().ask("nope", {}, run_dir=run_dir, limits=Limits(sandbox=False), timeout=5)


@pytest.mark.parametrize("isolated", MODES)
def test_an_executions_checkpoints_share_one_probe_that_dies_with_the_execution(probe_dir, tmp_path, isolated):
    """Two checkpoints of one notebook ask the same probe; each sees the files the notebook
    wrote before its own hidden cell; once the execution is over no probe process is left."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    from autograde.assignment import nbgrader_metadata
    from autograde.collect import CheckpointRunner
    from autograde.runner import execute_notebook
    from checkpoints.interface import Checkpoint, Verdict

    seen = []

    def collect(session):
        seen.append(session.probe("echo", {}, timeout=60, writable=True))
        return seen[-1]

    declaration = Checkpoint(id="cp_echo", collect=collect, judge=lambda evidence: Verdict.ok("seen"))
    hidden = lambda grade_id: new_code_cell("# hidden", metadata={"nbgrader": nbgrader_metadata(  # noqa: E731
        grade_id, grade=True, locked=True, points=1)})
    nb = new_notebook(cells=[
        new_code_cell("open('helper.py', 'w').write('VALUE = 1')\nopen('data.txt', 'w').write('one')"),
        hidden("cp_one"),
        new_code_cell("open('helper.py', 'w').write('VALUE = 2')\nopen('data.txt', 'w').write('two')"),
        hidden("cp_two"),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    runner = CheckpointRunner({"cp_one": (declaration, 1.0), "cp_two": (declaration, 1.0)})
    copies_before = _probe_copies()
    result = execute_notebook(nbformat.from_dict(nb), workdir=tmp_path / "run", limits=Limits(sandbox=isolated),
                              checkpoints=runner, notebook_timeout=120)
    assert result.status == "completed", result.message
    assert [(s["helper"], s["data"]) for s in seen] == [(1, "one"), (2, "two")]
    assert seen[0]["pid"] == seen[1]["pid"]
    assert not _alive()
    assert _probe_copies() == copies_before  # its throwaway copy of the run folder is gone too
    if isolated:  # the probe template, started during the run, outlives it for the next one
        assert len(templates.running_pids()) == 2
