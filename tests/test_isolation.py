"""Students graded side by side cannot touch each other: one hostile submission hunts for the
other runs (processes, run folders, connection files, kernel sockets), kills every pid it can
see and leaves a daemon behind that ignores SIGTERM; the honest students in the same batch
(two workers, so they run while it hunts) keep full marks, and nothing of it outlives the batch.

One grading batch: the whole module shares it."""

from __future__ import annotations

import csv
import html
import json
import re
import time
import uuid
from pathlib import Path

import nbformat
import psutil
import pytest
from conftest import stray_processes
from toy import CORRECT, MAX_SCORE, TOY_NAME, submission_from

from autograde import sandbox
from autograde.grade import GradeOptions, grade
from autograde.limits import Limits

ISOLATION, WHY_NOT = sandbox.availability()
pytestmark = pytest.mark.skipif(not ISOLATION, reason=f"isolation unavailable here: {WHY_NOT}")

REPO_ROOT = Path(__file__).resolve().parent.parent
MARKER = f"hostile-daemon-{uuid.uuid4().hex}"
HONEST = ("honest-a", "honest-b", "honest-c")
HUNT_SECONDS = 8  # long enough to overlap the honest runs on the other worker

# A daemon that outlives its notebook if it can: double fork, new session, SIGTERM/SIGINT/SIGHUP
# ignored, and it kills every process it can see (but its own kernel) until it is killed.
DAEMON = """
import os, signal, sys, time
marker, kernel_pid = sys.argv[1], int(sys.argv[2])
for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(sig, signal.SIG_IGN)
if os.fork():
    os._exit(0)
os.setsid()
if os.fork():
    os._exit(0)
while True:
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) not in (os.getpid(), kernel_pid):
            try:
                os.kill(int(name), signal.SIGKILL)
            except OSError:
                pass
    time.sleep(0.1)
"""

HUNT = r"""
import glob, json, os, signal, socket, subprocess, sys, time
own_run = os.getcwd()
subprocess.run([sys.executable, "-c", DAEMON, MARKER, str(os.getpid())])

def cmdline(pid):
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""

def mine(path):
    return path == own_run or path.startswith(own_run + "/")

findings = {"run_dirs": set(), "connection_files": set(), "sockets": set(), "connected": set(),
            "foreign_processes": set(), "foreign_uids": set(), "killed": set(), "ps": ""}
# Scratch places searched recursively; the big read-only trees (the interpreter, the
# virtualenv) only at their top.
places = ["/tmp", "/var/tmp", "/dev/shm", "/run", "/var/lock", "/home", "/srv", "/mnt"]
findings["top_level"] = {p: sorted(os.listdir(p)) for p in ("/", "/work", REPO, "/root") if os.path.isdir(p)}
deadline = time.time() + HUNT_SECONDS
while time.time() < deadline:
    for place in places:
        for path in glob.glob(place + "/**/autograde-run-*", recursive=True):
            if not mine(path):
                findings["run_dirs"].add(path)
        for pattern in ("/**/*connection*.json", "/**/kernel-*.json"):
            for path in glob.glob(place + pattern, recursive=True):
                if not mine(path):
                    findings["connection_files"].add(path)
        for path in glob.glob(place + "/**/.kernel-ipc*", recursive=True):
            if mine(path):
                continue
            findings["sockets"].add(path)
            try:
                s = socket.socket(socket.AF_UNIX)
                s.connect(path)
                findings["connected"].add(path)
            except OSError:
                pass
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid, line = int(name), cmdline(name)
        try:
            uid = os.stat(f"/proc/{name}").st_uid
        except OSError:
            continue
        # (HOLDER_UID: the sandbox's own holder process, when its kernel was forked from a template)
        if uid not in (0, os.getuid(), HOLDER_UID):
            findings["foreign_uids"].add(uid)
        # Its own sandbox's init (pid 1: bwrap) and kernel name its own run folder; others would not.
        if ("ipykernel" in line or "autograde-run-" in line) and own_run not in line:
            findings["foreign_processes"].add(line[:200])
    # Blind kill of every pid number, in case /proc lies.
    for pid in range(2, 33000):
        if os.path.exists(f"/proc/{os.getpid()}/task/{pid}") or MARKER in cmdline(pid):  # its own threads
            continue
        try:
            os.kill(pid, signal.SIGKILL)
            findings["killed"].add(pid)
        except OSError:
            pass
    time.sleep(0.2)
findings["ps"] = subprocess.run(["ps", "-eo", "pid,user,args"], capture_output=True, text=True).stdout
print("FINDINGS " + json.dumps({k: sorted(v) if isinstance(v, set) else v for k, v in findings.items()}), flush=True)
"""


@pytest.fixture(scope="module")
def batch(tmp_path_factory, toy_release, toy_sources):
    folder = tmp_path_factory.mktemp("isolation")
    hunt = (f"DAEMON = {DAEMON!r}\nMARKER = {MARKER!r}\nHUNT_SECONDS = {HUNT_SECONDS}\nREPO = {str(REPO_ROOT)!r}\n"
            f"HOLDER_UID = {sandbox.HOLDER_UID}\n" + HUNT)
    notebooks = {"hostile": submission_from(toy_release, CORRECT, prepend_cells=[hunt])}
    notebooks.update({name: submission_from(toy_release, CORRECT) for name in HONEST})
    for student, nb in notebooks.items():
        target = folder / student / f"{TOY_NAME}.ipynb"
        target.parent.mkdir()
        nbformat.write(nb, target)
    out = tmp_path_factory.mktemp("isolation-results")
    before = {p.pid for p in psutil.process_iter()}
    options = GradeOptions(workers=2, cell_timeout=HUNT_SECONDS + 20, notebook_timeout=90,
                           limits=Limits(sandbox=True, memory_mb=1000, max_processes=128))
    grade(folder, out, options, sources=toy_sources)
    leftovers = stray_processes(before)
    rows = {r["student"]: r for r in csv.DictReader(open(out / "grades.csv"))}
    page = html.unescape((out / "feedback" / "hostile" / f"{TOY_NAME}.html").read_text())
    match = re.search(r"FINDINGS (\{.*?\})\s*(?:<|$)", page, re.S)
    findings = json.loads(match.group(1)) if match else None
    return rows, findings, leftovers


def test_honest_students_keep_full_marks(batch):
    rows, _, _ = batch
    for student in HONEST:
        assert rows[student]["status"] == "graded", rows[student]
        assert float(rows[student]["score"]) == MAX_SCORE, rows[student]
        assert "unsandboxed" not in rows[student]["flags"]


def test_hostile_found_nothing_of_the_others(batch):
    rows, findings, _ = batch
    assert findings is not None, f"the hostile cell printed no findings: {rows['hostile']}"
    print("what the hostile submission found:", json.dumps(findings, indent=1))
    for key in ("run_dirs", "connection_files", "sockets", "connected", "foreign_processes", "foreign_uids"):
        assert findings[key] == [], (key, findings[key])
    # ps shows its own sandbox only: the sandbox's init (root), its kernel, its daemon, ps.
    assert findings["top_level"][str(REPO_ROOT)] == [".venv"], findings["top_level"]
    users = {line.split()[1] for line in findings["ps"].splitlines()[1:] if line.strip()}
    # (a kernel forked from a template also has its sandbox's holder, which runs as nobody)
    assert users <= {"root", sandbox.SANDBOX_USER, "nobody"}, findings["ps"]
    assert len(findings["ps"].splitlines()) <= 7, findings["ps"]


def test_nothing_of_the_hostile_outlives_the_batch(batch):
    _, _, leftovers = batch
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive_with_marker():
        time.sleep(0.1)
    assert _alive_with_marker() == []
    assert leftovers == []


def _alive_with_marker() -> list[int]:
    alive = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and MARKER in " ".join(proc.info["cmdline"] or []):
                alive.append(proc.pid)
        except psutil.Error:
            continue
    return alive
