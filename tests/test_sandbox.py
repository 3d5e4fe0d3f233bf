"""The bubblewrap sandbox on its own: what a submission can see, who it runs as, what it
shares with another submission, what survives it, and the limits-only fallback.

Kernels are started exactly as the runner starts them (jupyter_client with the
``launcher_args`` prefix, IPC sockets in the run folder); one-off probes go through
``run_sandboxed``. The isolated cases need root on Linux with bwrap; the fallback logic runs
anywhere."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import nbformat
import psutil
import pytest
from jupyter_client.manager import KernelManager

from autograde import sandbox, templates
from autograde.limits import Limits
from autograde.sandbox import (
    SandboxInfo,
    kill_all,
    launcher_args,
    memory_exceeded,
    read_info,
    run_sandboxed,
    uid_locked,
)
from autograde.templates import TemplateSpec

REPO_ROOT = Path(__file__).resolve().parent.parent
ISOLATION, WHY_NOT = sandbox.availability()
isolated = pytest.mark.skipif(not ISOLATION, reason=f"isolation unavailable here: {WHY_NOT}")
CLONE_NEWNET = 0x40000000


# --------------------------------------------------------------------------- helpers


def alive_with_marker(marker: str) -> list[int]:
    """Host pids of live (non-zombie) processes whose command line carries ``marker``."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        with contextlib.suppress(psutil.Error):
            if proc.info["status"] != psutil.STATUS_ZOMBIE and marker in " ".join(proc.info["cmdline"] or []):
                found.append(proc.pid)
    return found


def wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def in_netns(pid: int, fn):
    """Run ``fn`` in a grader thread that entered the network namespace of ``pid``
    (setns is per thread: the rest of the process stays on the host's network)."""
    outcome: dict = {}

    def target() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                outcome["error"] = OSError(ctypes.get_errno(), "setns")
                return
        finally:
            os.close(fd)
        try:
            outcome["value"] = fn()
        except Exception as exc:  # reported to the caller
            outcome["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


class _LauncherKernelManager(KernelManager):
    prefix: list[str] = []

    def format_kernel_cmd(self, extra_arguments=None):
        return [*self.prefix, *super().format_kernel_cmd(extra_arguments)]


class Kernel:
    """A kernel started through the sandbox launcher, as the runner starts it; with
    ``from_template``, forked from a kernel template that preloaded numpy."""

    def __init__(self, base: Path, limits: Limits, from_template: bool = False):
        self.run_dir = base / "run"
        self.run_dir.mkdir(parents=True)
        self.info_file = base / "grader-private" / "sandbox.json"  # outside the run folder
        self.km = _LauncherKernelManager(kernel_name="python3")
        self.km.transport = "ipc"
        self.km.ip = str(self.run_dir / ".kernel-ipc")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        template = templates.socket_for(env, TemplateSpec(modules=("numpy",))) if from_template else None
        assert template or not from_template, "no kernel template could start"
        self.km.prefix = launcher_args(self.run_dir, limits, self.info_file, template=template)
        self.km.start_kernel(cwd=str(self.run_dir), env=env)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self.info = read_info(self.info_file, timeout=10)
        assert self.info.kernel_from == ("template" if from_template else "exec"), self.info.template_note

    def run(self, code: str, timeout: float = 30) -> str:
        """Execute ``code``; its stdout, or the error's name and value."""
        chunks: list[str] = []

        def hook(msg):
            content = msg["content"]
            if msg["msg_type"] == "stream" and content["name"] == "stdout":
                chunks.append(content["text"])
            elif msg["msg_type"] == "error":
                chunks.append(f"{content['ename']}: {content['evalue']}")

        self.kc.execute_interactive(textwrap.dedent(code), output_hook=hook, timeout=timeout)
        return "".join(chunks)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.kc.stop_channels()
        with contextlib.suppress(Exception):
            self.km.shutdown_kernel(now=True)
        kill_all(self.info)


@pytest.fixture(params=["exec", "template"])
def kernel_factory(tmp_path, request):
    """Kernels started afresh, then (the same test again) forked from a kernel template."""
    kernels: list[Kernel] = []

    def start(limits: Limits | None = None, name: str = "k") -> Kernel:
        kernel = Kernel(tmp_path / f"{name}{len(kernels)}", limits or Limits(sandbox=True, memory_mb=1000),
                        from_template=request.param == "template")
        kernels.append(kernel)
        return kernel

    yield start
    for kernel in kernels:
        kernel.close()


@pytest.fixture
def run_dir(tmp_path) -> Path:
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "answer.txt").write_text("42")
    return folder


@pytest.fixture(scope="module")
def secret(tmp_path_factory) -> Path:
    """A grader file next to the run folders (same /tmp tree), which no sandbox may see."""
    path = tmp_path_factory.mktemp("grader-secret") / "secret.txt"
    path.write_text("TOP SECRET")
    return path


def probe(code: str, run_dir: Path, limits: Limits | None = None, timeout: float = 30, **kwargs):
    return run_sandboxed([sys.executable, "-c", textwrap.dedent(code)], run_dir=run_dir,
                         limits=limits or Limits(sandbox=True, memory_mb=500), timeout=timeout, **kwargs)


VIEW = """
import json, os, pwd
paths = {p: os.path.exists(p) for p in [
    "/root/.bashrc", REPO + "/deploy", REPO + "/notebooks", REPO + "/autograde",
    REPO + "/checkpoints", "/run/autograde-uids", "/sys/fs/cgroup", "/etc/shadow", SECRET]}
print(json.dumps({"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
                  "user": pwd.getpwuid(os.getuid()).pw_name, "work_main": sorted(os.listdir(REPO)),
                  "root": sorted(os.listdir("/")), "paths": paths,
                  "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
                  "caps": [l for l in open("/proc/self/status") if l.startswith(("CapEff", "CapBnd", "NoNewPrivs"))],
                  "pythonpath": os.environ.get("PYTHONPATH"), "home": os.environ["HOME"]}))
"""


def _view(secret: Path) -> str:
    """The VIEW probe for this checkout (wherever it was cloned) and this test's secret file."""
    return VIEW.replace("SECRET", repr(str(secret))).replace("REPO", repr(str(REPO_ROOT)))


def check_view(view: dict, run_dir: Path) -> None:
    assert view["uid"] in sandbox.UID_POOL and view["gid"] == view["uid"] and view["groups"] == []
    assert view["user"] == sandbox.SANDBOX_USER
    assert view["work_main"] == [".venv"]  # the virtualenv, nothing else of the repository
    assert not any(view["paths"].values()), view["paths"]
    # The top folder of the checkout shows because its virtualenv is mounted (CI clones anywhere).
    assert set(view["root"]) <= {"bin", "dev", "etc", "lib", "lib64", "proc", "root", "run", "sbin", "sys", "tmp",
                                 "usr", "var", "lib32", "libx32", REPO_ROOT.parts[1], Path(sys.prefix).parts[1]}
    assert all(line.split()[-1].strip("0") == "" for line in view["caps"] if line.startswith("Cap"))
    assert any(line.split()[-1] == "1" for line in view["caps"] if line.startswith("NoNewPrivs"))
    assert view["pythonpath"] is None
    assert view["home"] == str(run_dir)


# --------------------------------------------------------------------------- run_sandboxed


@isolated
def test_probe_sees_only_the_allow_list(run_dir, secret):
    result = probe(_view(secret), run_dir,
                   env={"PYTHONPATH": f"{REPO_ROOT}:/somewhere/else"})
    assert result.returncode == 0, result.stderr
    view = json.loads(result.stdout)
    check_view(view, run_dir)
    assert result.sandbox_mode == "isolated" and result.uid == view["uid"]
    assert view["pids"][:2] == [1, 2] and len(view["pids"]) <= 3  # its init, itself


@isolated
def test_probe_run_folder_is_a_read_only_copy_unless_writable(run_dir):
    code = """
    import pathlib
    print(pathlib.Path("answer.txt").read_text())
    try:
        pathlib.Path("answer.txt").write_text("changed")
        print("written")
    except OSError as exc:
        print("refused", exc.errno)
    """
    read_only = probe(code, run_dir)
    assert read_only.stdout.split() == ["42", "refused", "30"]  # EROFS
    writable = probe(code, run_dir, writable=True)
    assert writable.stdout.split() == ["42", "written"]
    assert (run_dir / "answer.txt").read_text() == "42"  # a throwaway copy was changed


@isolated
def test_probe_input_extra_binds_and_output_cap(run_dir, tmp_path):
    helper = tmp_path / "probe-code"
    helper.mkdir()
    (helper / "probe.py").write_text("import sys\nprint(sys.stdin.read().upper())\nprint('x' * 20_000_000)\n")
    result = run_sandboxed([sys.executable, "-I", str(helper / "probe.py")], run_dir=run_dir,
                           limits=Limits(sandbox=True), timeout=30, input="hello", ro_binds=[helper])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("HELLO\n")
    assert len(result.stdout) == sandbox.OUTPUT_CAP_BYTES


@isolated
def test_probe_sees_grader_ro_paths_read_only(run_dir, tmp_path):
    shared = tmp_path / "model-cache"
    shared.mkdir()
    (shared / "weights.bin").write_text("w")
    code = f"""
    import pathlib
    print(pathlib.Path({str(shared / 'weights.bin')!r}).read_text())
    try:
        pathlib.Path({str(shared / 'evil')!r}).write_text("x")
    except OSError as exc:
        print("refused", exc.errno)
    """
    result = probe(code, run_dir, limits=Limits(sandbox=True, ro_paths=[shared]))
    assert result.stdout.split() == ["w", "refused", "30"], result.stderr


@isolated
def test_concurrent_sandboxes_get_distinct_uids_and_private_tmp(run_dir):
    code = """
    import os, time, pathlib
    mine = f"/tmp/mine-{os.getuid()}"
    pathlib.Path(mine).write_text("x")
    pathlib.Path(f"/run/lock/mine-{os.getuid()}").write_text("x")
    pathlib.Path(f"/dev/shm/mine-{os.getuid()}").write_text("x")
    time.sleep(1.5)
    print(os.getuid(), sorted(os.listdir("/tmp")), sorted(os.listdir("/run/lock")), sorted(os.listdir("/dev/shm")))
    """
    results = {}
    threads = [threading.Thread(target=lambda i=i: results.setdefault(i, probe(code, run_dir))) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seen = [results[i].stdout.split(" ", 1) for i in range(2)]
    uids = {int(uid) for uid, _ in seen}
    assert len(uids) == 2 and uids <= set(sandbox.UID_POOL)
    for uid, listing in seen:
        others = uids - {int(uid)}
        assert f"mine-{uid}" in listing and not any(f"mine-{o}" in listing for o in others), listing
    assert not any(uid_locked(u) for u in uids)  # both slots released


@isolated
def test_probe_timeout_kills_everything_it_started(run_dir):
    marker = f"autograde-test-{uuid.uuid4().hex}"
    code = f"""
    import os, subprocess, sys, time
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", "{marker}"], start_new_session=True)
    time.sleep(300)
    """
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        probe(code, run_dir, timeout=2)
    assert time.monotonic() - started < 20
    assert wait_until(lambda: not alive_with_marker(marker), 5)


@isolated
def test_double_forked_daemon_dies_with_the_probe(run_dir):
    marker = f"autograde-test-{uuid.uuid4().hex}"
    code = f"""
    import os, signal, subprocess, sys
    daemon = ("import os, signal, time\\n"
              "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n"
              "if os.fork() == 0:\\n"
              "    os.setsid()\\n"
              "    if os.fork() == 0:\\n"
              "        os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(300)', '{marker}'])\\n")
    subprocess.run([sys.executable, "-c", "import sys\\n" + daemon])
    print("launched")
    """
    result = probe(code, run_dir)
    assert result.stdout.strip() == "launched", result.stderr
    assert wait_until(lambda: not alive_with_marker(marker), 5)


@isolated
def test_pids_limit_stops_a_fork_bomb_without_hurting_the_host(run_dir):
    code = """
    import os, time
    children = 0
    while children < 500:
        try:
            pid = os.fork()
        except OSError as exc:
            print("stopped", children, exc.errno)
            break
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        children += 1
    """
    result = probe(code, run_dir, limits=Limits(sandbox=True, max_processes=40, memory_mb=500))
    words = result.stdout.split()
    assert words[0] == "stopped" and int(words[1]) < 40, result.stdout + result.stderr
    assert subprocess.run(["true"]).returncode == 0  # the host still forks


@isolated
def test_memory_limit_kills_an_allocation_loop(run_dir):
    code = """
    blocks = []
    while True:
        blocks.append(bytearray(32 * 1024 * 1024))
    """
    result = probe(code, run_dir, limits=Limits(sandbox=True, memory_mb=200))
    assert result.returncode != 0
    assert result.memory_exceeded


# --------------------------------------------------------------------------- kernels


@isolated
def test_two_kernels_are_isolated_from_each_other_and_the_machine(kernel_factory, secret):
    first, second = kernel_factory(), kernel_factory()
    assert first.info.mode == second.info.mode == "isolated", first.info.reason
    assert first.info.uid != second.info.uid
    views = []
    for kernel in (first, second):
        views.append(json.loads(kernel.run(_view(secret))))
        check_view(views[-1], kernel.run_dir)
        assert views[-1]["uid"] == kernel.info.uid
        # The sandbox's init and the kernel (forked from a template: its holder, then the kernel): nobody else.
        expected = [1, 2, 3] if kernel.info.kernel_from == "template" else [1, 2]
        assert views[-1]["pids"][:len(expected)] == expected
    first.run("open('/tmp/left-by-first', 'w').write('x'); open('/run/lock/left-by-first', 'w').write('x')")
    listing = second.run("import os; print(os.listdir('/tmp'), os.listdir('/run/lock'))")
    assert "left-by-first" not in listing
    # The second kernel cannot reach the first one's run folder or connection file.
    found = second.run(f"import glob; print(glob.glob({str(first.run_dir)!r} + '/*'))")
    assert found.strip() == "[]"


@isolated
def test_student_server_is_reachable_only_from_the_sandbox_network(kernel_factory):
    kernel = kernel_factory()
    port = int(kernel.run("""
        import http.server, threading
        server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        print(server.server_address[1])
    """))
    assert kernel.info.netns_pid

    def get() -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
            return response.status

    assert in_netns(kernel.info.netns_pid, get) == 200
    assert in_netns(kernel.info.launcher_pid, get) == 200  # the launcher sits in that network too
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    outside = kernel.run("""
        import socket
        try:
            socket.create_connection(("1.1.1.1", 53), timeout=2)
            print("reached")
        except OSError as exc:
            print("no network", exc.errno)
    """)
    assert outside.startswith("no network")


@isolated
def test_interrupt_reaches_the_running_cell(kernel_factory):
    kernel = kernel_factory()
    timer = threading.Timer(1.5, kernel.km.interrupt_kernel)
    timer.start()
    started = time.monotonic()
    out = kernel.run("import time; time.sleep(100)")
    assert "KeyboardInterrupt" in out and time.monotonic() - started < 20
    assert kernel.run("print('still alive')").strip() == "still alive"


@isolated
def test_everything_dies_when_the_launcher_is_killed(kernel_factory):
    kernel = kernel_factory()
    marker = f"autograde-test-{uuid.uuid4().hex}"
    kernel.run(f"""
        import os, signal, subprocess, sys
        daemon = ("import os, signal, sys\\n"
                  "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n"
                  "if os.fork() == 0:\\n"
                  "    os.setsid()\\n"
                  "    if os.fork() == 0:\\n"
                  "        os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(300)', '{marker}'])\\n")
        subprocess.run([sys.executable, "-c", daemon])
    """)
    assert wait_until(lambda: alive_with_marker(marker), 5)
    info = kernel.info
    assert info.cgroups and all(Path(p).is_dir() for p in info.cgroups.values())
    assert uid_locked(info.uid)
    os.killpg(info.launcher_pid, signal.SIGKILL)  # what the runner's notebook deadline does
    assert wait_until(lambda: not alive_with_marker(marker), 10)
    kill_all(info)
    kill_all(info)  # idempotent
    assert not any(Path(p).exists() for p in info.cgroups.values())
    assert not uid_locked(info.uid)


@isolated
def test_memory_limit_kills_the_kernel_and_is_reported(kernel_factory):
    kernel = kernel_factory(Limits(sandbox=True, memory_mb=300))
    kernel.kc.execute("blocks = []\nwhile True:\n    blocks.append(bytearray(32 * 1024 * 1024))")
    assert wait_until(lambda: not kernel.km.is_alive(), 20)  # the kernel dies mid-cell
    assert memory_exceeded(kernel.info)
    kill_all(kernel.info)
    assert memory_exceeded(read_info(kernel.info_file))  # recorded before the groups were removed


@isolated
def test_runner_executes_a_notebook_in_the_sandbox(tmp_path, secret):
    """The runner's own path (``execute_notebook``): isolated, interrupts on cell timeout."""
    from autograde.runner import execute_notebook

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in (
        _view(secret), "import time; time.sleep(100)", "print('after')")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    result = execute_notebook(nb, cell_timeout=3, limits=Limits(sandbox=True, memory_mb=1000),
                              workdir=tmp_path / "run")
    assert result.sandbox_mode == "isolated", result.sandbox_reason
    view = json.loads(result.notebook.cells[0].outputs[0].text)
    assert view["uid"] in sandbox.UID_POOL and view["work_main"] == [".venv"]
    assert not any(view["paths"].values())
    assert result.timed_out_cells == [1]
    assert result.notebook.cells[2].outputs[0].text == "after\n"


# --------------------------------------------------------------------------- fallback (no root needed)


def test_fallback_reasons(monkeypatch):
    monkeypatch.setattr(sandbox.os, "geteuid", lambda: 1000)
    assert sandbox.availability() == (False, "not running as root: cannot switch to a per-job uid")
    monkeypatch.setattr(sandbox.os, "geteuid", lambda: 0)
    real_which = sandbox.shutil.which
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None if name == "bwrap" else real_which(name))
    ok, reason = sandbox.availability()
    assert not ok and reason.startswith("bwrap not found")


def test_launcher_args_shape(tmp_path):
    prefix = launcher_args(tmp_path, Limits(sandbox=False, max_processes=7), tmp_path / "info.json")
    assert prefix[0] == sys.executable and prefix[-1] == "--" and "--no-isolation" in prefix
    assert prefix[prefix.index("--max-processes") + 1] == "7"
    assert "--no-isolation" not in launcher_args(tmp_path, Limits(sandbox=True), tmp_path / "info.json")


def test_kernel_environment_drops_paths_outside_the_binds(tmp_path):
    roots = sandbox._allowed_roots(tmp_path)
    inside = str(Path(sys.prefix) / "lib")
    env = sandbox._sandbox_env({"PYTHONPATH": f"{REPO_ROOT}:{inside}:relative", "JPY_PARENT_PID": "123"},
                               tmp_path, 61000, roots)
    assert env["PYTHONPATH"] == inside
    assert env["HOME"] == str(tmp_path) and env["JPY_PARENT_PID"] == "1"


def test_limits_only_launcher_reports_itself(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    info_file = tmp_path / "private" / "info.json"
    prefix = launcher_args(run_dir, Limits(sandbox=False, cpu_seconds=77), info_file)
    code = "import os, resource; print(os.getcwd(), resource.getrlimit(resource.RLIMIT_CORE)[0], " \
           "resource.getrlimit(resource.RLIMIT_CPU)[0])"
    out = subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(run_dir), "0", "77"]
    info = read_info(info_file)
    assert info.mode == "limits-only" and "not requested" in info.reason and info.netns_pid is None
    assert json.loads((run_dir / sandbox.MARKER_FILE).read_text())["mode"] == "limits-only"
    kill_all(info)  # the process is gone: nothing to do, no error
    assert not memory_exceeded(info)


def test_missing_info_and_kill_all_on_nothing(tmp_path):
    info = read_info(tmp_path / "never-written.json")
    assert info.mode == "off" and info.reason
    kill_all(info)
    kill_all(SandboxInfo("isolated", cgroups={"memory": str(tmp_path / "gone")}))
    assert not memory_exceeded(info)


def test_run_sandboxed_limits_only(run_dir):
    result = probe("import os, resource; print(open('answer.txt').read(), resource.getrlimit(resource.RLIMIT_CORE)[0])",
                   run_dir, limits=Limits(sandbox=False))
    assert result.sandbox_mode == "limits-only" and result.stdout.split() == ["42", "0"]
