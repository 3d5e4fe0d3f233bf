"""One sandbox per submission, built on bubblewrap (``bwrap``).

    python -m autograde.sandbox --run-dir DIR --info-file FILE [limits] -- KERNEL ARGV...

As root on Linux with ``bwrap`` and ``setpriv`` installed (the grading server, CI), the
launcher stays alive as a small supervisor of one sandbox:

- a uid/gid of its own from the pool 61000-61999, held with an flock in the root-only
  ``/run/autograde-uids/`` for the job's life: two jobs (two grading batches) never share one;
- cgroup v1 groups of its own (memory + memsw, pids, freezer) that bwrap joins before it
  starts, so everything the kernel starts is counted and can be frozen and killed at once;
- new PID, network (loopback only), IPC, UTS and cgroup namespaces, a new session; the
  sandbox's init is bwrap's reaper, and when it dies the kernel kills every process left in
  the namespace, however it forked; ``--die-with-parent`` ties the sandbox to the launcher;
- an allow-list filesystem: /usr (and the /lib, /bin... links), a few /etc files, the
  interpreter's prefix and the virtualenv read-only, the run folder read-write at the same
  path, a new /proc of its PID namespace, a minimal /dev, and private tmpfs /tmp, /var/tmp,
  /dev/shm, /run and /var/lock. Nothing else of the machine or the repository exists;
- inside, ``setpriv`` drops to the job's uid with no groups, no capabilities (bounding set
  included) and no_new_privs before exec'ing the kernel;
- rlimits: no core dumps, CPU seconds, file size, processes of the uid.

With ``--template SOCKET`` the sandbox is the same, built around a holder process, and the
kernel is forked into it by a kernel template (``autograde/forkserver.py``) that has imported
the notebooks' libraries once; when the template cannot, the launcher starts it as above.

SIGINT sent to the launcher (nbclient's per-cell timeout: ``km.interrupt_kernel()``) is
forwarded to the kernel; SIGTERM/SIGHUP kill the sandbox; SIGKILL of the launcher takes the
sandbox down through ``--die-with-parent``. Once the sandbox is up the launcher writes the
grader-private info file (``--info-file``, chosen by the runner outside the run folder): the
mode, the host pid of the sandbox's init (to enter its network namespace), the cgroups, the
uid. Not root, no bwrap, or namespaces refused: limits only (rlimits), ``mode`` says
"limits-only" with the reason, and the runner flags the row ``unsandboxed``.

The Python API used by the runner: ``launcher_args``, ``read_info``, ``kill_all``,
``memory_exceeded``, ``start_probe`` (a grader probe in a fresh sandbox, kept for several
requests) and ``run_sandboxed`` (the same, run once).
This module uses the standard library only: the launcher runs it as a script (``-I``), so it
needs nothing from the repository on ``sys.path``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from autograde.limits import Limits

MARKER_FILE = ".sandbox.json"  # in the run folder, for the runner's report (not trusted for control)
CONNECTION_FILE = ".kernel-connection.json"
UID_POOL = range(61000, 62000)
UID_LOCK_DIR = Path("/run/autograde-uids")
CGROUP_CONTROLLERS = ("memory", "pids", "freezer")
CGROUP_PREFIX = "autograde-"
OUTPUT_CAP_BYTES = 8 * 1024 * 1024
SANDBOX_HOSTNAME = "sandbox"
SANDBOX_USER = "student"
CLONE_NEWNET = 0x40000000
_FALLBACK_DEFAULTS = {"memory_mb": 6144, "max_processes": 256, "cpu_seconds": 1800, "max_file_mb": 1024}

# Host /etc files a Python kernel needs (dynamic linker, TLS roots, time zone, name service
# switch, the alternatives links of /usr/bin, fonts for plots). passwd, group, hosts and
# hostname are written fresh for the sandbox.
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "ssl", "ca-certificates", "pki",
             "localtime", "timezone", "nsswitch.conf", "alternatives", "fonts", "mime.types",
             "protocols", "services", "gai.conf", "host.conf", "os-release", "matplotlibrc")
# Library caches on the sandbox's private /tmp: the same paths in every sandbox, so a kernel
# template's libraries, which read them once at import, hold the right ones.
SANDBOX_CACHES = {"XDG_CACHE_HOME": "/tmp/.cache", "HF_HOME": "/tmp/.cache/huggingface",
                  "MPLCONFIGDIR": "/tmp/.cache/matplotlib"}
# Keeps a template kernel's sandbox up until the launcher ends it; it runs as nobody, so the
# student's code can see it but not kill it (that would take its own kernel down).
HOLDER_COMMAND = ["sleep", "infinity"]
HOLDER_UID = 65534
SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/lib32", "/libx32", "/bin", "/sbin")


def _default(name: str) -> float:
    try:
        from autograde import limits as _limits

        return getattr(_limits, f"DEFAULT_{name.upper()}")
    except Exception:  # run as a script with -I: the repository is not importable
        return _FALLBACK_DEFAULTS[name]


# --------------------------------------------------------------------------- availability


def availability() -> tuple[bool, str]:
    """Whether isolation is possible here, and if not, why (a plain sentence)."""
    if not sys.platform.startswith("linux"):
        return False, f"isolation needs Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return False, "not running as root: cannot switch to a per-job uid"
    bwrap = shutil.which("bwrap")
    if not bwrap:
        return False, "bwrap not found (install the bubblewrap package)"
    if not shutil.which("setpriv"):
        return False, "setpriv not found (util-linux)"
    try:
        probe = subprocess.run(
            [bwrap, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--die-with-parent",
             "--new-session", "--ro-bind", "/usr", "/usr", *_system_links(), "--proc", "/proc", "--dev", "/dev",
             "--", "true"],
            capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"bwrap failed to run: {exc}"
    if probe.returncode != 0:
        detail = " ".join(probe.stderr.split())[:200] or f"exit status {probe.returncode}"
        return False, f"namespaces refused: {detail}"
    return True, ""


def _system_links() -> list[str]:
    """/lib, /bin... as on the host: symlinks into /usr (merged /usr) or read-only binds."""
    args: list[str] = []
    for path in SYSTEM_DIRS[1:]:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    return args


# --------------------------------------------------------------------------- uid slots


class UidSlot:
    """One uid of the pool, held through an flock on a root-only lock file until released
    (or the holder dies)."""

    def __init__(self, uid: int, fd: int):
        self.uid = self.gid = uid
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, pool: range = UID_POOL, lock_dir: Path = UID_LOCK_DIR) -> UidSlot:
        lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chown(lock_dir, 0, 0)
        os.chmod(lock_dir, 0o700)
        busy = _uids_in_use()
        for uid in pool:
            if uid in busy:
                continue
            fd = os.open(lock_dir / f"{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            if uid in _uids_in_use():  # a leftover of a crashed job: leave that uid alone
                os.close(fd)
                continue
            return cls(uid, fd)
        raise OSError(errno.EAGAIN, "every uid of the sandbox pool is in use")

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def _uids_in_use() -> set[int]:
    uids = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                uids.add(entry.stat().st_uid)
    return uids


def uid_locked(uid: int, lock_dir: Path = UID_LOCK_DIR) -> bool:
    """Whether a job holds ``uid`` right now."""
    path = lock_dir / f"{uid}.lock"
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


# --------------------------------------------------------------------------- cgroups (v1)


def _cgroup_mounts() -> dict[str, Path]:
    """Mount point of each cgroup v1 controller we use."""
    mounts: dict[str, Path] = {}
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return mounts
    for line in lines:
        fields = line.split()
        if len(fields) >= 4 and fields[2] == "cgroup":
            options = fields[3].split(",")
            for controller in CGROUP_CONTROLLERS:
                if controller in options and controller not in mounts:
                    mounts[controller] = Path(fields[1].replace("\\040", " "))
    return mounts


def _own_cgroup(controller: str) -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controller in controllers.split(","):
                return path
    return "/"


def create_cgroups(name: str, memory_mb: float, max_processes: int) -> tuple[dict[str, str], str]:
    """A memory, a pids and a freezer group named ``name`` below this process's own groups,
    with the limits written. Returns the groups created and, if some are missing, why."""
    mounts = _cgroup_mounts()
    created: dict[str, str] = {}
    problems = []
    for controller in CGROUP_CONTROLLERS:
        mount = mounts.get(controller)
        if mount is None:
            problems.append(f"no cgroup v1 {controller} controller")
            continue
        parent = mount / _own_cgroup(controller).lstrip("/")
        _sweep_stale(controller, parent)
        path = parent / name
        try:
            path.mkdir()
            created[controller] = str(path)
            if controller == "memory":
                limit = str(int(memory_mb * 1024 * 1024))
                (path / "memory.limit_in_bytes").write_text(limit)
                with contextlib.suppress(OSError):  # swap accounting may be off
                    (path / "memory.memsw.limit_in_bytes").write_text(limit)
                with contextlib.suppress(OSError):
                    (path / "memory.swappiness").write_text("0")
            elif controller == "pids":
                (path / "pids.max").write_text(str(int(max_processes)))
        except OSError as exc:
            problems.append(f"cgroup {controller}: {exc.strerror or exc}")
    return created, "; ".join(problems)


def _sweep_stale(controller: str, parent: Path) -> None:
    """Remove the groups of launchers that died without cleaning up (SIGKILLed by jupyter's
    immediate shutdown, say): their name carries the launcher's pid."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(parent):
            parts = entry.name.split("-")
            if (entry.name.startswith(CGROUP_PREFIX) and len(parts) == 4 and parts[2].isdigit()
                    and not os.path.exists(f"/proc/{parts[2]}")):
                kill_cgroups({controller: entry.path}, timeout=2.0)


def _join_cgroups(cgroups: dict[str, str]) -> None:
    """Move the calling process into the groups (from a forked child, before exec)."""
    for path in cgroups.values():
        with open(os.path.join(path, "cgroup.procs"), "w") as fh:
            fh.write(str(os.getpid()))


def _cgroup_pids(path: str) -> set[int]:
    try:
        with open(os.path.join(path, "cgroup.procs")) as fh:
            return {int(x) for x in fh.read().split()}
    except (OSError, ValueError):
        return set()


def kill_cgroups(cgroups: dict[str, str], timeout: float = 10.0) -> None:
    """Freeze, SIGKILL every task, thaw, wait until empty, remove the groups."""
    existing = {c: p for c, p in cgroups.items() if os.path.isdir(p)}
    if not existing:
        return
    freezer = existing.get("freezer")
    if freezer:
        with contextlib.suppress(OSError):
            Path(freezer, "freezer.state").write_text("FROZEN")
            for _ in range(100):
                if Path(freezer, "freezer.state").read_text().strip() == "FROZEN":
                    break
                time.sleep(0.01)
    deadline = time.monotonic() + timeout
    thawed = False
    while True:
        pids = set().union(*(_cgroup_pids(p) for p in existing.values()))
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if freezer and not thawed:
            with contextlib.suppress(OSError):
                Path(freezer, "freezer.state").write_text("THAWED")
            thawed = True
        if not pids or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    for path in existing.values():
        for _ in range(50):
            try:
                os.rmdir(path)
                break
            except FileNotFoundError:
                break
            except OSError:  # tasks still exiting
                time.sleep(0.02)


def _memory_stats(memory_cgroup: str | None) -> dict[str, int] | None:
    if not memory_cgroup or not os.path.isdir(memory_cgroup):
        return None
    stats = {"oom_kill": 0, "under_oom": 0, "failcnt": 0, "memsw_failcnt": 0}
    with contextlib.suppress(OSError, ValueError):
        for line in Path(memory_cgroup, "memory.oom_control").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key in ("oom_kill", "under_oom"):
                stats[key] = int(value)
    with contextlib.suppress(OSError, ValueError):
        stats["failcnt"] = int(Path(memory_cgroup, "memory.failcnt").read_text())
    with contextlib.suppress(OSError, ValueError):
        stats["memsw_failcnt"] = int(Path(memory_cgroup, "memory.memsw.failcnt").read_text())
    return stats


def _stats_say_exceeded(stats: dict[str, int] | None) -> bool:
    # failcnt alone counts every reclaim at the limit (page cache too); an OOM kill is the
    # limit actually stopping the submission.
    return bool(stats and (stats.get("oom_kill", 0) > 0 or stats.get("under_oom", 0) > 0))


# --------------------------------------------------------------------------- info


@dataclass
class SandboxInfo:
    """What the launcher reports about one sandbox (grader-private)."""

    mode: str  # "isolated" | "limits-only" | "starting" (never came up) | "off" (no launcher ran)
    reason: str = ""
    netns_pid: int | None = None  # host pid of a process in the sandbox's network namespace
    kernel_pid: int | None = None  # host pid of the kernel inside the sandbox
    launcher_pid: int | None = None
    launcher_start: int | None = None  # start time (clock ticks) of launcher_pid, to recognise it
    uid: int | None = None
    gid: int | None = None
    cgroups: dict[str, str] = field(default_factory=dict)
    memory_mb: float | None = None
    memory: dict[str, int] | None = None  # final memory counters, written when the sandbox ended
    exit_status: int | None = None
    info_file: str = ""
    kernel_from: str = "exec"  # "template": forked from a kernel template (autograde/forkserver.py)
    template_note: str = ""  # why a template was asked for but not used


def read_info(info_file: Path, timeout: float = 0.0) -> SandboxInfo:
    """The launcher's report; ``mode == "off"`` when there is none. With ``timeout``, waits
    that long for the sandbox to be up (the launcher first writes a "starting" report, so
    that ``kill_all`` can clean up even if the sandbox never comes up)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            data = json.loads(Path(info_file).read_text())
        except (OSError, ValueError):
            data = None
        if (data and data.get("mode") != "starting") or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    if not data:
        return SandboxInfo("off", "the kernel did not start through the sandbox launcher", info_file=str(info_file))
    known = {f.name for f in dataclasses.fields(SandboxInfo)}
    info = SandboxInfo(**{k: v for k, v in data.items() if k in known})
    info.info_file = str(info_file)
    return info


def _write_info(info_file: Path | None, info: SandboxInfo) -> None:
    if info_file is None:
        return
    info_file = Path(info_file)
    info.info_file = str(info_file)
    info_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = info_file.with_name(f".{info_file.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(dataclasses.asdict(info), fh)
    os.replace(tmp, info_file)


def _start_time(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def kill_all(info: SandboxInfo) -> None:
    """Every process of the sandbox dead, its cgroups removed, its uid released (the
    launcher holds the uid's lock: it is killed too). Idempotent; fine when nothing started."""
    if info.launcher_pid and _start_time(info.launcher_pid) == info.launcher_start:
        if info.mode == "limits-only":  # the launcher became the kernel: its group is the job
            with contextlib.suppress(OSError):
                os.killpg(info.launcher_pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.kill(info.launcher_pid, signal.SIGKILL)
        for _ in range(250):
            if _start_time(info.launcher_pid) != info.launcher_start or _is_zombie(info.launcher_pid):
                break
            time.sleep(0.02)
    kill_cgroups(info.cgroups)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


def memory_exceeded(info: SandboxInfo) -> bool:
    """Whether the sandbox's memory limit stopped something (an OOM kill in its cgroup)."""
    live = _memory_stats(info.cgroups.get("memory"))
    if live is not None:
        return _stats_say_exceeded(live)
    if info.info_file:  # the launcher recorded the counters before removing the group
        with contextlib.suppress(OSError, ValueError):
            return _stats_say_exceeded(json.loads(Path(info.info_file).read_text()).get("memory"))
    return _stats_say_exceeded(info.memory)


# --------------------------------------------------------------------------- bwrap command


def _allowed_roots(run_dir: Path, extra: list[Path] = ()) -> list[Path]:
    roots = [Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), run_dir, *extra]
    return list(dict.fromkeys(roots))


def _inside(path: Path, roots: list[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def _sandbox_env(env: dict[str, str], run_dir: Path, uid: int, roots: list[Path]) -> dict[str, str]:
    env = dict(env)
    # Inside, the kernel's parent is the sandbox's init (pid 1): ipykernel must not watch for
    # the grader's pid (it would exit at once), and "1" also silences its console banner.
    if "JPY_PARENT_PID" in env:
        env["JPY_PARENT_PID"] = "1"
    kept = [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
            if p and os.path.isabs(p) and _inside(Path(os.path.normpath(p)), roots)]
    if kept:
        env["PYTHONPATH"] = os.pathsep.join(kept)
    else:
        env.pop("PYTHONPATH", None)
    env.update(HOME=str(run_dir), USER=SANDBOX_USER, LOGNAME=SANDBOX_USER, TMPDIR="/tmp", **SANDBOX_CACHES)
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    return env


def _etc_data(uid: int, gid: int, run_dir: Path) -> dict[str, str]:
    return {
        "/etc/passwd": (f"root:x:0:0:root:/nonexistent:/usr/sbin/nologin\n"
                        f"{SANDBOX_USER}:x:{uid}:{gid}:student:{run_dir}:/bin/sh\n"
                        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"),
        "/etc/group": f"root:x:0:\n{SANDBOX_USER}:x:{gid}:\nnogroup:x:65534:\n",
        "/etc/hosts": f"127.0.0.1 localhost {SANDBOX_HOSTNAME}\n::1 localhost ip6-localhost ip6-loopback\n",
        "/etc/hostname": f"{SANDBOX_HOSTNAME}\n",
    }


def _bwrap_argv(run_dir: Path, uid: int, gid: int, *, run_source: Path | None = None, writable: bool = True,
                ro_binds: list[Path] = (), data_fds: dict[str, int], options: list[str] = ()) -> list[str]:
    """bwrap options (up to and including ``--``) for a sandbox whose run folder is
    ``run_dir`` (bound from ``run_source``, the same folder by default)."""
    roots = _allowed_roots(run_dir, list(ro_binds))
    argv = [shutil.which("bwrap") or "bwrap", "--unshare-pid", "--unshare-net", "--unshare-ipc",
            "--unshare-uts", "--unshare-cgroup-try", "--die-with-parent", "--new-session",
            "--hostname", SANDBOX_HOSTNAME,
            "--ro-bind", "/usr", "/usr", *_system_links(),
            "--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/dev/shm",
            "--perms", "1777", "--tmpfs", "/tmp", "--perms", "0755", "--tmpfs", "/run",
            "--perms", "1777", "--dir", "/run/lock", "--perms", "0755", "--dir", "/var",
            "--symlink", "../run/lock", "/var/lock", "--perms", "1777", "--tmpfs", "/var/tmp",
            "--perms", "0755", "--dir", "/etc"]
    for name in ETC_FILES:
        argv += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    for target, fd in data_fds.items():
        argv += ["--perms", "0644", "--ro-bind-data", str(fd), target]
    argv += ["--ro-bind-try", "/sys/devices/system/cpu", "/sys/devices/system/cpu"]
    # Parent folders of every bind, traversable (bwrap would create them 0700).
    made = {"/", "/tmp", "/run", "/var", "/etc", "/usr", "/dev", "/proc"}
    for root in sorted(roots, key=lambda p: len(p.parts)):
        for parent in reversed(root.parents):
            if str(parent) not in made and not _inside(parent, [Path("/usr")]):
                argv += ["--perms", "0755", "--dir", str(parent)]
                made.add(str(parent))
    system = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve()}
    for root in sorted(system, key=lambda p: len(p.parts)):
        if not _inside(root, [Path("/usr")]):
            argv += ["--ro-bind", str(root), str(root)]
    for extra in ro_binds:
        argv += ["--ro-bind", str(extra), str(extra)]
    argv += ["--bind" if writable else "--ro-bind", str(run_source or run_dir), str(run_dir)]
    argv += ["--chdir", str(run_dir), *options, "--",
             shutil.which("setpriv") or "setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
             "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
    return argv


def _data_pipes(contents: dict[str, str]) -> dict[str, int]:
    """Read ends of pipes holding each file's content (small: fits in the pipe buffer)."""
    fds = {}
    for target, text in contents.items():
        r, w = os.pipe()
        os.write(w, text.encode())
        os.close(w)
        fds[target] = r
    return fds


def _rlimits(cpu_seconds: int, max_file_mb: int, max_processes: int | None) -> None:
    _limit(resource.RLIMIT_CORE, 0)
    _limit(resource.RLIMIT_CPU, int(cpu_seconds))
    _limit(resource.RLIMIT_FSIZE, int(max_file_mb) * 1024 * 1024)
    if max_processes:
        _limit(resource.RLIMIT_NPROC, int(max_processes))


def _limit(kind: int, value: int) -> None:
    try:
        resource.setrlimit(kind, (value, value))
    except (ValueError, OSError):
        soft, hard = resource.getrlimit(kind)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(kind, (min(value, hard) if hard != resource.RLIM_INFINITY else value, hard))


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.lchown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            with contextlib.suppress(OSError):
                os.lchown(os.path.join(dirpath, name), uid, gid)


def _children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def _read_bwrap_info(fd: int, timeout: float = 30.0) -> dict:
    """bwrap's --info-fd JSON (it writes it once the child exists, then closes the fd)."""
    data = b""
    deadline = time.monotonic() + timeout
    decoder = json.JSONDecoder()
    with os.fdopen(fd, "rb", buffering=0) as fh:
        while time.monotonic() < deadline:
            chunk = fh.read(4096)
            if not chunk:
                break
            data += chunk
            with contextlib.suppress(ValueError):
                return decoder.raw_decode(data.decode())[0]
    with contextlib.suppress(ValueError):
        return json.loads(data.decode() or "{}")
    return {}


# --------------------------------------------------------------------------- launcher


def launcher_args(run_dir: Path, limits: Limits, info_file: Path, template: str | None = None) -> list[str]:
    """The argv prefix that goes before the kernel's argv."""
    args = [sys.executable, "-I", str(Path(__file__).resolve()),
            "--run-dir", str(Path(run_dir).resolve()), "--info-file", str(info_file),
            "--memory-mb", str(limits.memory_mb), "--max-processes", str(limits.max_processes),
            "--cpu-seconds", str(limits.cpu_seconds), "--max-file-mb", str(limits.max_file_mb)]
    for path in getattr(limits, "ro_paths", ()):
        args += ["--ro-path", str(Path(path).resolve())]
    if not limits.sandbox:
        args.append("--no-isolation")
    elif template:
        args += ["--template", str(template)]
    return [*args, "--"]


def _private_connection_file(command: list[str], run_dir: Path, uid: int | None = None,
                             gid: int | None = None) -> list[str]:
    """The kernel cannot see jupyter's runtime folder: give it a copy in its run folder."""
    command = list(command)
    for i, arg in enumerate(command):
        if arg == "-f" and i + 1 < len(command):
            original = command[i + 1]
        elif arg.startswith("--f="):
            original = arg.split("=", 1)[1]
        else:
            continue
        private = run_dir / CONNECTION_FILE
        with contextlib.suppress(FileNotFoundError):
            private.unlink()
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(Path(original).read_bytes())
        if uid is not None:
            os.chown(private, uid, gid if gid is not None else uid)
        if arg == "-f":
            command[i + 1] = str(private)
        else:
            command[i] = f"--f={private}"
        break
    return command


def _write_marker(run_dir: Path, mode: str, reason: str) -> None:
    marker = run_dir / MARKER_FILE
    with contextlib.suppress(FileNotFoundError):
        marker.unlink()
    marker.write_text(json.dumps({"mode": mode, "reason": reason}))
    with contextlib.suppress(OSError):
        os.chown(marker, 0, 0)
        os.chmod(marker, 0o644)


def _parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    if "--" not in argv:
        sys.exit("usage: python -m autograde.sandbox [options] -- KERNEL ARGV...")
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="autograde.sandbox")
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--info-file", type=Path, default=None)
    parser.add_argument("--memory-mb", type=float, default=None)
    parser.add_argument("--max-processes", type=int, default=None)
    parser.add_argument("--cpu-seconds", type=int, default=None)
    parser.add_argument("--max-file-mb", type=int, default=None)
    parser.add_argument("--no-isolation", action="store_true", help="limits only")
    parser.add_argument("--template", default=None,
                        help="socket of a kernel template (autograde/forkserver.py) to fork the kernel from")
    parser.add_argument("--ro-path", type=Path, action="append", default=[],
                        help="a grader-owned folder the kernel sees read-only (at the same path)")
    # Accepted for the older runner's command line; the allow-list makes them moot.
    parser.add_argument("--hide", type=Path, action="append", default=[])
    parser.add_argument("--expose", type=Path, action="append", default=[])
    parser.add_argument("--uid", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--gid", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv[:split])
    for name in _FALLBACK_DEFAULTS:
        if getattr(args, name) is None:
            setattr(args, name, _default(name))
    command = argv[split + 1:]
    if not command:
        sys.exit("autograde.sandbox: no command after --")
    return args, command


def main(argv: list[str] | None = None) -> None:
    args, command = _parse(list(sys.argv[1:] if argv is None else argv))
    run_dir = args.run_dir.resolve()
    if args.no_isolation:
        ok, reason = False, "sandbox not requested (--no-isolation)"
    else:
        ok, reason = availability()
    if ok:
        try:
            sys.exit(_run_isolated(args, command, run_dir))
        except OSError as exc:  # e.g. the uid pool is exhausted: still run, flagged
            reason = f"isolation failed: {exc}"
    _exec_limits_only(args, command, run_dir, reason)


def _exec_limits_only(args: argparse.Namespace, command: list[str], run_dir: Path, reason: str) -> None:
    _write_marker(run_dir, "limits-only", reason)
    _write_info(args.info_file, SandboxInfo(
        "limits-only", reason, launcher_pid=os.getpid(), launcher_start=_start_time(os.getpid()),
        kernel_pid=os.getpid(), memory_mb=args.memory_mb))
    _rlimits(args.cpu_seconds, args.max_file_mb, None)
    os.chdir(run_dir)
    os.execvp(command[0], command)


def _run_isolated(args: argparse.Namespace, command: list[str], run_dir: Path) -> int:
    slot = UidSlot.acquire()
    cgroups: dict[str, str] = {}
    info = SandboxInfo("starting", "the sandbox did not come up", launcher_pid=os.getpid(),
                       launcher_start=_start_time(os.getpid()), uid=slot.uid, gid=slot.gid, memory_mb=args.memory_mb)
    try:
        cgroups, problem = create_cgroups(f"{CGROUP_PREFIX}{slot.uid}-{os.getpid()}-{time.monotonic_ns()}",
                                          args.memory_mb, args.max_processes)
        info.cgroups = cgroups
        # Written now so that kill_all can clean up even if the sandbox never comes up.
        _write_info(args.info_file, info)
        up_reason = f"limits by rlimit only ({problem})" if problem else ""
        command = _private_connection_file(command, run_dir, slot.uid, slot.gid)
        _chown_tree(run_dir, slot.uid, slot.gid)
        os.chmod(run_dir, 0o700)
        _write_marker(run_dir, "isolated", up_reason)  # for the older runner's report
        ro_paths = [p.resolve() for p in args.ro_path if p.exists()]
        roots = _allowed_roots(run_dir, ro_paths)
        env = _sandbox_env(dict(os.environ), run_dir, slot.uid, roots)
        if args.template and not problem:  # with cgroups only: the kernel is no child of ours to watch
            status = _run_from_template(args, command, run_dir, env, slot, cgroups, ro_paths, info)
            if status is not None:
                return status
        proc, bwrap_info = _start_bwrap(args, command, run_dir, env, slot, cgroups, ro_paths, info)
        child = bwrap_info.get("child-pid")
        if child:
            info.netns_pid = int(child)
            deadline = time.monotonic() + 30
            while proc.poll() is None and time.monotonic() < deadline:
                kids = _children(info.netns_pid)
                if kids:
                    info.kernel_pid = kids[0]
                    break
                time.sleep(0.005)
            if info.kernel_pid:
                # The launcher joins the sandbox's network too (it never uses it): callers that
                # only know the kernel manager's pid still reach the student's servers.
                with contextlib.suppress(OSError):
                    _enter_netns(info.netns_pid)
                info.mode, info.reason = "isolated", up_reason
                _write_info(args.info_file, info)
        status = proc.wait()
        info.exit_status = status
        return status if status >= 0 else 128 - status
    finally:
        info.memory = _memory_stats(cgroups.get("memory"))
        with contextlib.suppress(OSError):
            _write_info(args.info_file, info)
        kill_cgroups(cgroups)
        slot.release()


def _start_bwrap(args: argparse.Namespace, command: list[str], run_dir: Path, env: dict[str, str],
                 slot: UidSlot, cgroups: dict[str, str], ro_paths: list[Path], info: SandboxInfo,
                 run_as: int | None = None) -> tuple[subprocess.Popen, dict]:
    """bwrap around ``command`` (run as the slot's uid, or ``run_as``), in the job's cgroups and
    under its rlimits; with bwrap's report."""
    data_fds = _data_pipes(_etc_data(slot.uid, slot.gid, run_dir))
    info_r, info_w = os.pipe()
    uid = gid = run_as
    argv = _bwrap_argv(run_dir, uid if uid is not None else slot.uid, gid if gid is not None else slot.gid,
                       data_fds=data_fds, ro_binds=ro_paths, options=["--info-fd", str(info_w)]) + command

    def prepare() -> None:  # in the child, before exec'ing bwrap
        _join_cgroups(cgroups)
        _rlimits(args.cpu_seconds, args.max_file_mb, args.max_processes)

    # Its own process group: jupyter signals the launcher's group, and an interrupt must
    # not kill bwrap.
    try:
        proc = subprocess.Popen(argv, env=env, cwd=run_dir, pass_fds=[info_w, *data_fds.values()],
                                preexec_fn=prepare, process_group=0)
    finally:
        os.close(info_w)
        for fd in data_fds.values():
            os.close(fd)
    _forward_signals(proc, info)
    _die_with_grader(proc)
    return proc, _read_bwrap_info(info_r)


def _run_from_template(args: argparse.Namespace, command: list[str], run_dir: Path, env: dict[str, str],
                       slot: UidSlot, cgroups: dict[str, str], ro_paths: list[Path], info: SandboxInfo) -> int | None:
    """The kernel forked from the template at ``args.template`` into a sandbox built around a
    holder process; its exit code, or None (and ``info.template_note`` says why) when the
    template could not start it, with nothing of that attempt left running."""
    proc, bwrap_info = _start_bwrap(args, HOLDER_COMMAND, run_dir, env, slot, cgroups, ro_paths, info,
                                    run_as=HOLDER_UID)
    init = int(bwrap_info.get("child-pid") or 0)
    report_r, report_w = os.pipe()
    try:
        kernel, note = _fork_into(args.template, proc, init, command, run_dir, env, slot, cgroups,
                                  (args.cpu_seconds, args.max_file_mb, args.max_processes), [0, 1, 2, report_w],
                                  report_r)
    finally:
        os.close(report_w)
    with contextlib.closing(_Fd(report_r)) as report:
        if kernel is None:
            info.template_note = note
            with contextlib.suppress(OSError):
                proc.kill()
            proc.wait()
            _empty_cgroups(cgroups)  # the usual start reuses them
            return None
        info.netns_pid, info.kernel_pid, info.kernel_from = init, kernel, "template"
        with contextlib.suppress(OSError):
            _enter_netns(init)
        info.mode, info.reason = "isolated", ""
        _write_info(args.info_file, info)
        status = next((m["status"] for m in _json_lines(report.fd) if type(m.get("status")) is int), 1)
    with contextlib.suppress(OSError):
        proc.kill()  # the holder's sandbox: --die-with-parent takes everything left in it down
    proc.wait()
    info.exit_status = status
    return status if status >= 0 else 128 - status


def _empty_cgroups(cgroups: dict[str, str], timeout: float = 10.0) -> None:
    def killed_all() -> bool:
        pids = set().union(*(_cgroup_pids(p) for p in cgroups.values()))
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        return not pids

    _wait_for(killed_all, timeout)


class _Fd:
    def __init__(self, fd: int):
        self.fd = fd

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _fork_into(template: str, bwrap: subprocess.Popen, init: int, argv: list[str], run_dir: Path,
               env: dict[str, str], slot: UidSlot, cgroups: dict[str, str], rlimits: tuple[int, int, int],
               fds: list[int], report_r: int) -> tuple[int | None, str]:
    """Ask the template to fork ``argv`` into the sandbox whose init is ``init`` (bwrap's, around
    its holder), passing ``fds`` (the program's stdin, stdout, stderr and report pipe); wait until
    it is ready to run. (Its host pid, "") or (None, why not)."""
    holder = _wait_for(lambda: next(iter(_children(init)), None) if init and bwrap.poll() is None else None, 30)
    if not holder:
        return None, "the sandbox did not come up"
    reply = _ask_template(template, {
        "argv": argv, "env": {**env, "PWD": str(run_dir)},  # PWD: as bwrap's --chdir sets it
        "run_dir": str(run_dir), "uid": slot.uid, "gid": slot.gid, "holder": holder, "cgroups": cgroups,
        "rlimits": dict(zip(("cpu_seconds", "max_file_mb", "max_processes"), rlimits, strict=True))}, fds)
    if "forked" not in reply:
        return None, str(reply.get("refused") or "the template did not fork")[:300]
    pid, ready = None, False  # the first child reports the pid, the program that it is ready: any order
    for message in _json_lines(report_r, deadline=time.monotonic() + 60):
        pid, ready = message.get("pid", pid), ready or bool(message.get("ready"))
        if message.get("error"):
            return None, str(message["error"])[:300]
        if ready and type(pid) is int:
            return pid, ""
        if "status" in message:
            break
    return None, "the forked program did not come up"


def _wait_for(probe, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.003)
    return None


def _ask_template(socket_path: str, request: dict, fds: list[int]) -> dict:
    """The template's answer to ``request``, sent with ``fds``: the program's stdin, stdout,
    stderr and report pipe."""
    import socket

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(30)
            conn.connect(socket_path)
            socket.send_fds(conn, [json.dumps(request).encode() + b"\n"], fds)
            reply = b""
            while not reply.endswith(b"\n") and len(reply) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                reply += chunk
        answer = json.loads(reply or b"{}")
        return answer if isinstance(answer, dict) else {"refused": "an unreadable answer"}
    except (OSError, ValueError) as exc:
        return {"refused": f"the template did not answer ({type(exc).__name__}: {exc})"}


def _json_lines(fd: int, deadline: float | None = None):
    """JSON objects from a pipe, one per line, until EOF (or ``deadline``)."""
    import select

    buffer = b""
    while True:
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            with contextlib.suppress(ValueError):
                message = json.loads(line)
                if isinstance(message, dict):
                    yield message
        if deadline is not None:
            ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
            if not ready:
                return
        try:
            chunk = os.read(fd, 65536)
        except InterruptedError:
            continue
        if not chunk:
            return
        buffer += chunk


def _enter_netns(pid: int) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
    finally:
        os.close(fd)


def _die_with_grader(proc: subprocess.Popen, poll_s: float = 0.5) -> None:
    """If the grader process that started this launcher dies (a killed Dask worker, an OOM-killed
    pool worker), take the sandbox down with it instead of leaving it orphaned."""
    parent = os.getppid()

    def watch() -> None:
        while proc.poll() is None:
            if os.getppid() != parent:
                with contextlib.suppress(OSError):
                    proc.kill()  # bwrap: --die-with-parent takes the sandbox's init, and so everything, down
                return
            time.sleep(poll_s)

    threading.Thread(target=watch, name="autograde-orphan-watch", daemon=True).start()


def _forward_signals(proc: subprocess.Popen, info: SandboxInfo) -> None:
    def interrupt(signum, frame):
        target = info.kernel_pid
        if target is None and info.netns_pid:
            target = next(iter(_children(info.netns_pid)), None)
        if target:
            with contextlib.suppress(OSError):
                os.kill(target, signal.SIGINT)

    def stop(signum, frame):
        with contextlib.suppress(OSError):
            proc.kill()  # bwrap: --die-with-parent takes the sandbox's init, and so everything, down

    signal.signal(signal.SIGINT, interrupt)
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, stop)


# --------------------------------------------------------------------------- one-off probes


class ProbeProcess:
    """A grader probe running over a throwaway copy of a student's run folder, in a fresh
    sandbox of the kernel's kind (or under rlimits only, ``mode`` says which). ``refresh``
    copies the student's folder again, in place (the probe keeps its working directory
    and its binds), for a probe that answers several requests; ``close`` kills everything it
    started and removes the copy."""

    def __init__(self, proc: subprocess.Popen, *, run_dir: Path, copy: Path | None, writable: bool,
                 slot: UidSlot | None, cgroups: dict[str, str], scratch: Path | None, mode: str, reason: str):
        self.proc, self.run_dir, self.copy, self.writable = proc, run_dir, copy, writable
        self.slot, self.cgroups, self.scratch = slot, cgroups, scratch
        self.mode, self.reason = mode, reason
        self.uid = slot.uid if slot is not None else os.getuid()
        self.from_template = isinstance(proc, _ForkedProbe)
        self._closed = False

    def refresh(self) -> None:
        if self.copy is None:  # limits only, read-only: the probe reads the live folder
            return
        _clear_folder(self.copy)
        _copy_tree(self.run_dir, self.copy, exist_ok=True)
        if self.slot is not None and self.writable:
            _chown_tree(self.copy, self.slot.uid, self.slot.gid)
        elif self.slot is not None:
            _make_readable(self.copy)

    def memory_exceeded(self) -> bool:
        return _stats_say_exceeded(_memory_stats(self.cgroups.get("memory")))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self.cgroups:
                kill_cgroups(self.cgroups)
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                self.proc.kill()
            self.proc.wait()
            for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                with contextlib.suppress(OSError, ValueError):
                    stream and stream.close()
        finally:
            if self.slot is not None:
                self.slot.release()
            if self.scratch is not None:
                shutil.rmtree(self.scratch, ignore_errors=True)


PROBE_BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}


def probe_environment(env: dict | None, run_dir: Path, uid: int, roots: list[Path]) -> dict[str, str]:
    """The whole environment of a probe over ``run_dir``."""
    return _sandbox_env({**PROBE_BASE_ENV, **(env or {})}, run_dir, uid, roots)


def start_probe(argv: list[str], *, run_dir: Path, limits: Limits, writable: bool = False,
                ro_binds: list[Path] = (), env: dict | None = None, template: str | None = None) -> ProbeProcess:
    """Start a grader probe over ``run_dir`` with pipes on stdin, stdout and stderr: own PID
    and network namespaces, own uid, cgroup limits; the run folder is a throwaway copy,
    read-only unless ``writable``. With ``template`` (a probe template's socket) the probe is
    forked from it, or started the usual way when it cannot be. The caller owns the result
    and must ``close`` it."""
    run_dir = Path(run_dir).resolve()
    ok, reason = availability() if limits.sandbox else (False, "sandbox not requested")
    if not ok:
        return _start_limits_only(argv, run_dir, limits, writable, env, reason)
    slot = UidSlot.acquire()
    cgroups: dict[str, str] = {}
    scratch = Path(tempfile.mkdtemp(prefix="autograde-probe-"))
    data_fds: dict[str, int] = {}
    try:
        cgroups, problem = create_cgroups(f"{CGROUP_PREFIX}{slot.uid}-{os.getpid()}-{time.monotonic_ns()}",
                                          limits.memory_mb, limits.max_processes)
        copy = scratch / "run"
        _copy_tree(run_dir, copy)
        if writable:
            _chown_tree(copy, slot.uid, slot.gid)
        else:
            _make_readable(copy)
        ro_binds = list(dict.fromkeys(Path(p).resolve() for p in [*ro_binds, *getattr(limits, "ro_paths", ())]
                                      if Path(p).exists()))
        roots = _allowed_roots(run_dir, ro_binds)
        full_env = probe_environment(env, run_dir, slot.uid, roots)
        mode_reason = f"limits by rlimit only ({problem})" if problem else ""
        if template and not problem:
            forked = _probe_from_template(template, argv, run_dir, copy, writable, ro_binds, full_env, slot,
                                          cgroups, limits)
            if forked is not None:
                return ProbeProcess(forked, run_dir=run_dir, copy=copy, writable=writable, slot=slot,
                                    cgroups=cgroups, scratch=scratch, mode="isolated", reason=mode_reason)
        data_fds = _data_pipes(_etc_data(slot.uid, slot.gid, run_dir))
        bwrap = _bwrap_argv(run_dir, slot.uid, slot.gid, run_source=copy, writable=writable,
                            ro_binds=ro_binds, data_fds=data_fds)

        def prepare() -> None:
            _join_cgroups(cgroups)
            _rlimits(limits.cpu_seconds, limits.max_file_mb, limits.max_processes)

        proc = subprocess.Popen([*bwrap, *argv], env=full_env, cwd="/", pass_fds=list(data_fds.values()),
                                preexec_fn=prepare, process_group=0, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except BaseException:
        kill_cgroups(cgroups)
        slot.release()
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    finally:
        for fd in data_fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
    return ProbeProcess(proc, run_dir=run_dir, copy=copy, writable=writable, slot=slot, cgroups=cgroups,
                        scratch=scratch, mode="isolated", reason=mode_reason)


class _ForkedProbe:
    """A probe forked from a template, with what ProbeProcess and its readers use of a Popen:
    its pipes, and wait/poll/kill, which end with the probe (the holder's bwrap is then
    stopped: it would wait for ever)."""

    def __init__(self, holder: subprocess.Popen, stdin, stdout, stderr, report_fd: int):
        self.holder, self.stdin, self.stdout, self.stderr = holder, stdin, stdout, stderr
        self.pid, self.returncode = holder.pid, None
        self._report = report_fd

    def _status(self, timeout: float | None) -> int | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        for message in _json_lines(self._report, deadline=deadline):
            if type(message.get("status")) is int:
                return message["status"]
        return None if deadline is not None and time.monotonic() >= deadline else 1

    def poll(self) -> int | None:
        if self.returncode is None:
            status = self._status(0)
            if status is not None:
                self._ended(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            status = self._status(timeout)
            if status is None:
                raise subprocess.TimeoutExpired("probe", timeout)
            self._ended(status)
        return self.returncode

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.holder.kill()
        if self.returncode is None:
            self._ended(-signal.SIGKILL)

    def _ended(self, status: int) -> None:
        self.returncode = status
        with contextlib.suppress(OSError):
            self.holder.kill()
        self.holder.wait()
        with contextlib.suppress(OSError):
            os.close(self._report)


def _probe_from_template(template: str, argv: list[str], run_dir: Path, copy: Path, writable: bool,
                         ro_binds: list[Path], env: dict[str, str], slot: UidSlot, cgroups: dict[str, str],
                         limits: Limits) -> _ForkedProbe | None:
    """The probe forked from the template into a sandbox like start_probe's, or None (nothing
    of the attempt left running) when the template cannot."""
    data_fds = _data_pipes(_etc_data(slot.uid, slot.gid, run_dir))
    info_r, info_w = os.pipe()
    argv_bwrap = _bwrap_argv(run_dir, HOLDER_UID, HOLDER_UID, run_source=copy, writable=writable, ro_binds=ro_binds,
                             data_fds=data_fds, options=["--info-fd", str(info_w)]) + HOLDER_COMMAND

    def prepare() -> None:
        _join_cgroups(cgroups)
        _rlimits(limits.cpu_seconds, limits.max_file_mb, limits.max_processes)

    try:
        holder_proc = subprocess.Popen(argv_bwrap, env=env, cwd="/", pass_fds=[info_w, *data_fds.values()],
                                       preexec_fn=prepare, process_group=0, stdin=subprocess.DEVNULL)
    finally:
        os.close(info_w)
        for fd in data_fds.values():
            os.close(fd)
    init = int(_read_bwrap_info(info_r).get("child-pid") or 0)
    pipes = [os.pipe() for _ in range(4)]  # stdin, stdout, stderr, report
    child_ends = [pipes[0][0], pipes[1][1], pipes[2][1], pipes[3][1]]
    try:
        probe, _note = _fork_into(template, holder_proc, init, argv, run_dir, env, slot, cgroups,
                                  (limits.cpu_seconds, limits.max_file_mb, limits.max_processes), child_ends,
                                  pipes[3][0])
    finally:
        for fd in child_ends:
            os.close(fd)
    ready = probe is not None
    if not ready:
        for fd in (pipes[0][1], pipes[1][0], pipes[2][0], pipes[3][0]):
            os.close(fd)
        with contextlib.suppress(OSError):
            holder_proc.kill()
        holder_proc.wait()
        _empty_cgroups(cgroups)
        return None
    return _ForkedProbe(holder_proc, os.fdopen(pipes[0][1], "wb"), os.fdopen(pipes[1][0], "rb"),
                        os.fdopen(pipes[2][0], "rb"), pipes[3][0])


def _start_limits_only(argv, run_dir, limits, writable, env, reason) -> ProbeProcess:
    scratch = copy = None
    cwd = run_dir
    if writable:
        scratch = Path(tempfile.mkdtemp(prefix="autograde-probe-"))
        cwd = copy = scratch / "run"
        _copy_tree(run_dir, copy)
    try:
        proc = subprocess.Popen(argv, env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                preexec_fn=lambda: _rlimits(limits.cpu_seconds, limits.max_file_mb, None))
    except BaseException:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
        raise
    return ProbeProcess(proc, run_dir=run_dir, copy=copy, writable=writable, slot=None, cgroups={},
                        scratch=scratch, mode="limits-only", reason=reason)


def run_sandboxed(argv: list[str], *, run_dir: Path, limits: Limits, timeout: float, input: str | None = None,
                  writable: bool = False, ro_binds: list[Path] = (), env: dict | None = None
                  ) -> subprocess.CompletedProcess:
    """Run a grader probe once (see ``start_probe``): feed it ``input``, wait for it to end.
    Everything it starts dies when it ends; on timeout raises ``subprocess.TimeoutExpired``.
    Output is captured as text, capped at 8 MB each. The result carries ``sandbox_mode``,
    ``sandbox_reason``, ``memory_exceeded`` and ``uid``."""
    probe = start_probe(argv, run_dir=run_dir, limits=limits, writable=writable, ro_binds=ro_binds, env=env)
    try:
        out, err = _communicate(probe.proc, input, timeout)
        result = subprocess.CompletedProcess(argv, probe.proc.returncode, out, err)
        result.memory_exceeded = probe.memory_exceeded()
        result.sandbox_mode, result.sandbox_reason, result.uid = probe.mode, probe.reason, probe.uid
        return result
    finally:
        probe.close()


def _communicate(proc: subprocess.Popen, input: str | None, timeout: float) -> tuple[str, str]:
    """Like ``communicate`` but keeping at most OUTPUT_CAP_BYTES of each stream."""
    buffers: dict[str, bytearray] = {"out": bytearray(), "err": bytearray()}

    def drain(stream, key: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            while chunk := stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536):
                room = OUTPUT_CAP_BYTES - len(buffers[key])
                if room > 0:
                    buffers[key] += chunk[:room]

    def feed() -> None:
        with contextlib.suppress(OSError, ValueError):
            if input:
                proc.stdin.write(input.encode())
            proc.stdin.close()

    threads = [threading.Thread(target=drain, args=(proc.stdout, "out"), daemon=True),
               threading.Thread(target=drain, args=(proc.stderr, "err"), daemon=True),
               threading.Thread(target=feed, daemon=True)]
    for thread in threads:
        thread.start()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        exc.output = bytes(buffers["out"]).decode(errors="replace")
        exc.stderr = bytes(buffers["err"]).decode(errors="replace")
        raise
    for thread in threads:
        thread.join(timeout=2)
    return (bytes(buffers["out"]).decode(errors="replace"), bytes(buffers["err"]).decode(errors="replace"))


def _copy_tree(source: Path, target: Path, exist_ok: bool = False) -> None:
    """Copy regular files, folders and symlinks (as links); sockets, fifos and devices are
    skipped (copying a fifo would block)."""
    target.mkdir(mode=0o700, exist_ok=exist_ok)
    for dirpath, dirnames, filenames in os.walk(source):
        rel = Path(dirpath).relative_to(source)
        for name in list(dirnames):
            src = Path(dirpath, name)
            if src.is_symlink():
                dirnames.remove(name)
                os.symlink(os.readlink(src), target / rel / name)
            else:
                (target / rel / name).mkdir(mode=0o700)
        for name in filenames:
            src = Path(dirpath, name)
            with contextlib.suppress(OSError):
                st = src.lstat()
                if src.is_symlink():
                    os.symlink(os.readlink(src), target / rel / name)
                elif (st.st_mode & 0o170000) == 0o100000:
                    shutil.copyfile(src, target / rel / name, follow_symlinks=False)


def _clear_folder(folder: Path) -> None:
    """Remove what is inside ``folder`` but not the folder itself (a bind mount's source)."""
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def _make_readable(root: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, 0o644)


if __name__ == "__main__":
    main()
