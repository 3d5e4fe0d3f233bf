"""A kernel template: a process that has imported a course's libraries once and forks a fresh
kernel into each submission's sandbox, so no kernel pays for interpreter start and imports.

The grader starts one per worker process (``autograde/templates.py``); the template never runs
student code and never receives anything of a student but the request below. It runs as root,
like the sandbox launcher, and serves requests only from root on a Unix socket in a root-only
folder. A request, sent by the launcher (``autograde/sandbox.py``) once bwrap has built the
submission's sandbox around a holder process, carries the kernel's argv and environment, the
sandbox's uid/gid, cgroups, rlimits and the holder's pid, with the kernel's stdin, stdout,
stderr and a report pipe as file descriptors. For each request:

- the template forks a first child that enters only the sandbox's PID namespace (for its
  children) and forks the kernel; it stays outside the sandbox, invisible to it, waits for the
  kernel and writes ``{"pid": HOST_PID}`` then ``{"status": EXIT_CODE}`` on the report pipe;
- the kernel joins the sandbox's cgroups, IPC, UTS, network, cgroup and mount namespaces and
  its root (as ``nsenter`` does), starts a new session, takes the rlimits, keeps only its
  three standard streams, swaps in the request's environment, drops to the sandbox's uid with
  no groups, an empty capability bounding set and no_new_privs (checked before going on), and
  runs ``ipykernel_launcher`` as ``python -m`` would.

The template refuses (and the launcher then starts the kernel the usual way) when it is not
single-threaded, when the request's interpreter or module is not its own, or when the
request's environment differs from the template's in any variable but the declared
per-run ones. Those were replaced by marker values while the template imported; every module
that kept a marker in its globals is reported as tainted at start, so the caller can start a
template without it.

Standard library only: it runs in the kernels' interpreter, where the repository is not
importable.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import json
import os
import pathlib
import resource
import select
import socket
import struct
import sys
import threading
import types

MAX_REQUEST_BYTES = 1 << 20
NAMESPACES = ("ipc", "uts", "net", "cgroup", "mnt")  # the PID namespace is entered by the first child
CLONE_NEWPID = 0x20000000
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_SET_DUMPABLE, PR_SET_PDEATHSIG = 24, 38, 4, 1
CAP_LAST_CAP = 63
KERNEL_MODULE = "ipykernel_launcher"

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


# --------------------------------------------------------------------------- at start


# What ipykernel puts in the environment as it starts, before any cell runs: a library that
# reads one of them at import must see it, as it would when a cell imports it.
KERNEL_START_ENV = {"TERM": "xterm-color", "CLICOLOR": "1", "FORCE_COLOR": "1", "CLICOLOR_FORCE": "1",
                    "PAGER": "cat", "GIT_PAGER": "cat", "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
# Never preloaded: matplotlib picks its backend when imported, before the kernel has chosen one.
NEVER_PRELOADED = ("matplotlib",)


def preload(modules: list[str]) -> dict[str, list[str]]:
    """Import each module; return, for each one that imported, the modules it added."""
    saved = dict(os.environ)
    os.environ.update({k: v for k, v in KERNEL_START_ENV.items() if k not in os.environ})
    added: dict[str, list[str]] = {}
    try:
        for name in modules:
            before = set(sys.modules)
            try:
                importlib.import_module(name)
            except BaseException:  # a module that cannot be imported here is simply not preloaded
                continue
            added[name] = sorted(set(sys.modules) - before)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return added


def _holds_marker(value, marker: str, depth: int = 2) -> bool:
    # Exact types only: a subclass's methods or a property may run library code (lazy loading).
    kind = type(value)
    if kind is str:
        return marker in value
    if kind is bytes:
        return marker.encode() in value
    if issubclass(kind, pathlib.PurePath):
        return marker in str(value)
    if depth <= 0:
        return False
    if kind in (list, tuple, set, frozenset):
        return any(_holds_marker(v, marker, depth - 1) for v in list(value)[:1000])
    if kind is dict:
        return any(_holds_marker(k, marker, depth - 1) or _holds_marker(v, marker, depth - 1)
                   for k, v in list(value.items())[:1000])
    if issubclass(kind, (types.ModuleType, type, types.FunctionType, types.BuiltinFunctionType)):
        return False
    try:
        attributes = object.__getattribute__(value, "__dict__")
    except Exception:
        return False
    return type(attributes) is dict and _holds_marker(attributes, marker, depth - 1)


# Modules whose captured per-run values the kernel recomputes after the fork (see _rebase_site).
_RECOMPUTED = {"sys", "os", "posix", "site", "sysconfig", "__main__", "__mp_main__", "fsspec.config",
               "huggingface_hub.constants"}


def tainted_modules(marker: str) -> list[str]:
    """Modules whose globals hold a per-run value seen while importing (a marker), and
    modules that must not be preloaded at all."""
    hits = [name for name in sys.modules if name.split(".")[0] in NEVER_PRELOADED]
    for name, module in list(sys.modules.items()):
        if module is None or name in _RECOMPUTED or name in hits:
            continue
        try:
            items = list(vars(module).items())
        except TypeError:
            continue
        if any(_holds_marker(value, marker) for _key, value in items):
            hits.append(name)
    return sorted(hits)


def thread_count() -> int:
    """Threads of this process, native ones included (OpenBLAS keeps a pool from numpy's import;
    it shuts it down around a fork, as jemalloc does its background thread)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


# --------------------------------------------------------------------------- serving


def serve(socket_path: str, run_keys: list[str], interpreter: str, report, scripts_dir: str = "") -> None:
    """Accept requests until the parent goes away."""
    parent = os.getppid()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    os.chmod(socket_path, 0o600)
    listener.listen(16)
    report.write(json.dumps({"ready": True}) + "\n")
    report.flush()
    base_env = {k: v for k, v in os.environ.items() if k not in run_keys}
    while os.getppid() == parent:
        _reap()
        readable, _, _ = select.select([listener], [], [], 1.0)
        if not readable:
            continue
        conn, _ = listener.accept()
        with conn:
            try:
                _handle(conn, base_env, set(run_keys), interpreter, scripts_dir)
            except Exception as exc:  # a bad request never stops the template
                _reply(conn, {"refused": f"{type(exc).__name__}: {exc}"[:300]})


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _reply(conn: socket.socket, message: dict) -> None:
    try:
        conn.sendall(json.dumps(message).encode() + b"\n")
    except OSError:
        pass


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    data, fds = b"", []
    conn.settimeout(10)
    try:
        while not data.endswith(b"\n"):
            chunk, new_fds, _flags, _addr = socket.recv_fds(conn, 65536, 8)
            fds += new_fds
            if not chunk:
                break
            data += chunk
            if len(data) > MAX_REQUEST_BYTES:
                raise ValueError("request too large")
        request = json.loads(data)
        if not isinstance(request, dict):
            raise ValueError("a request is a JSON object")
        return request, fds
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def program(argv: list, scripts_dir: str) -> str | None:
    """What ``argv`` runs, if this template can: ``KERNEL_MODULE`` (a kernel template, started
    as a kernel is), or the path of a grader script in ``scripts_dir`` (a probe template,
    started with ``-I`` as a probe is)."""
    if not sys.flags.isolated and len(argv) >= 3 and argv[1:3] == ["-m", KERNEL_MODULE]:
        return KERNEL_MODULE
    if sys.flags.isolated and scripts_dir and len(argv) == 3 and argv[1] == "-I" and isinstance(argv[2], str):
        script = os.path.realpath(argv[2])
        if os.path.dirname(script) == os.path.realpath(scripts_dir) and os.path.isfile(script):
            return script
    return None


def refusal(request: dict, base_env: dict, run_keys: set, interpreter: str, python_threads: int | None = None,
            scripts_dir: str = "") -> str | None:
    """Why this template cannot start the requested program, or None."""
    argv = request.get("argv") or []
    if program(argv, scripts_dir) is None:
        return "not a program this template starts"
    if os.path.realpath(argv[0]) != os.path.realpath(interpreter):
        return "another interpreter"
    env = request.get("env") or {}
    differing = sorted(k for k in set(env) | set(base_env)
                       if k not in run_keys and env.get(k) != base_env.get(k))
    if differing:
        return "environment differs in " + ", ".join(differing[:5])
    if (threading.active_count() if python_threads is None else python_threads) != 1:
        return "a Python thread runs in the template"
    return None


def _handle(conn: socket.socket, base_env: dict, run_keys: set, interpreter: str, scripts_dir: str) -> None:
    uid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))[1]
    if uid != os.getuid():
        return
    request, fds = _receive(conn)
    try:
        if len(fds) != 4:
            _reply(conn, {"refused": "expected stdin, stdout, stderr and a report pipe"})
            return
        reason = refusal(request, base_env, run_keys, interpreter, scripts_dir=scripts_dir)
        request["program"] = program(request["argv"], scripts_dir)
        if reason:
            _reply(conn, {"refused": reason})
            return
        pid = os.fork()
        if pid == 0:
            try:
                _close_all_but(fds)
                _first_child(request, fds)
                os._exit(0)
            except BaseException as exc:
                with contextlib.suppress(OSError):
                    os.write(fds[3], json.dumps({"error": f"{type(exc).__name__}: {exc}"[:300]}).encode() + b"\n")
                os._exit(70)
        _reply(conn, {"forked": pid})
    finally:
        for fd in fds:
            os.close(fd)


def _close_all_but(keep: list[int]) -> None:
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def _first_child(request: dict, fds: list[int]) -> None:
    """Outside the sandbox: put the kernel in its PID namespace, then report on it."""
    report = fds[3]
    os.setsid()  # a session of its own, which the kernel joins without leading it (as under bwrap)
    pidns = os.open(f"/proc/{int(request['holder'])}/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    _check(_libc.setns(pidns, CLONE_NEWPID), "setns pid")
    os.close(pidns)
    kernel = os.fork()
    if kernel == 0:
        try:
            become_kernel(request, fds)
        except BaseException as exc:  # before the kernel ran: the launcher starts it the usual way
            with contextlib.suppress(OSError):
                os.write(report, json.dumps({"error": f"{type(exc).__name__}: {exc}"[:300]}).encode() + b"\n")
        os._exit(71)
    for fd in fds[:3]:
        os.close(fd)
    os.write(report, json.dumps({"pid": kernel}).encode() + b"\n")
    _, status = os.waitpid(kernel, 0)
    os.write(report, json.dumps({"status": os.waitstatus_to_exitcode(status)}).encode() + b"\n")


def become_kernel(request: dict, fds: list[int]) -> None:
    holder, run_dir = int(request["holder"]), request["run_dir"]
    uid, gid = int(request["uid"]), int(request["gid"])
    for path in (request.get("cgroups") or {}).values():
        with open(os.path.join(path, "cgroup.procs"), "w") as fh:
            fh.write("0")
    namespaces = [os.open(f"/proc/{holder}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC) for name in NAMESPACES]
    root = os.open(f"/proc/{holder}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    for name, fd in zip(NAMESPACES, namespaces, strict=True):
        _check(_libc.setns(fd, 0), f"setns {name}")
    os.fchdir(root)
    os.chroot(".")
    os.chdir(run_dir)
    limits = request.get("rlimits") or {}
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    for kind, key, scale in ((resource.RLIMIT_CPU, "cpu_seconds", 1), (resource.RLIMIT_FSIZE, "max_file_mb", 1 << 20),
                             (resource.RLIMIT_NPROC, "max_processes", 1)):
        if limits.get(key):
            value = int(limits[key]) * scale
            resource.setrlimit(kind, (value, value))
    for target, fd in enumerate(fds[:3]):
        os.dup2(fd, target)
    report = os.dup(fds[3])
    _close_all_but([report])  # /proc is the sandbox's now, and this process is in it
    os.environ.clear()
    os.environ.update(request["env"])
    _show_as_exec(request["argv"], request["env"])
    _drop_privileges(uid, gid)
    kernel = request["program"] == KERNEL_MODULE
    _rebase_interpreter(request["argv"], run_dir, kernel)
    import runpy

    os.write(report, b'{"ready": true}\n')
    os.close(report)

    try:
        if kernel:
            runpy.run_module(KERNEL_MODULE, run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(request["program"], run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


_shown: list = []  # the buffers /proc/self/cmdline and environ now point at: alive as long as the process


class _MemoryMap(ctypes.Structure):  # struct prctl_mm_map (linux/prctl.h)
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "start_code", "end_code", "start_data", "end_data", "start_brk", "brk", "start_stack",
        "arg_start", "arg_end", "env_start", "env_end", "auxv")] + [("auxv_size", ctypes.c_uint32),
                                                                    ("exe_fd", ctypes.c_uint32)]


def _show_as_exec(argv: list[str], env: dict[str, str]) -> None:
    """Point /proc/self/cmdline and /proc/self/environ at the kernel's own argv and
    environment, as an exec would have (they still showed the template's)."""
    PR_SET_MM, PR_SET_MM_MAP = 35, 14
    fields = open("/proc/self/stat").read().rsplit(")", 1)[1].split()

    def stat(number: int) -> int:  # proc(5) numbers the fields from 1, pid and comm first
        return int(fields[number - 3])

    _libc.sbrk.restype = ctypes.c_void_p
    layout = _MemoryMap(start_code=stat(26), end_code=stat(27), start_stack=stat(28), start_data=stat(45),
                        end_data=stat(46), start_brk=stat(47), brk=_libc.sbrk(0) or stat(47),
                        auxv=0, auxv_size=0, exe_fd=0xFFFFFFFF)  # no auxv, same executable: left as they are
    for (start, end), items in ((("arg_start", "arg_end"), argv),
                                (("env_start", "env_end"), [f"{k}={v}" for k, v in env.items()])):
        data = b"".join(item.encode(errors="surrogateescape") + b"\0" for item in items)
        buffer = ctypes.create_string_buffer(data, len(data))
        _shown.append(buffer)
        setattr(layout, start, ctypes.addressof(buffer))
        setattr(layout, end, ctypes.addressof(buffer) + len(data))
    _check(_libc.prctl(PR_SET_MM, PR_SET_MM_MAP, ctypes.byref(layout), ctypes.sizeof(layout), 0), "set cmdline")


def _drop_privileges(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    for cap in range(CAP_LAST_CAP + 1):
        if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() != 22:  # EINVAL: no such cap
            _check(-1, f"drop capability {cap}")
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    os.setresuid(uid, uid, uid)
    _libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)  # as after an exec: the student's own processes may inspect it
    status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
    for field in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        if int(status.get(field, "1").strip(), 16) != 0:
            raise PermissionError(f"{field} is not empty")
    if status.get("NoNewPrivs", "0").strip() != "1" or os.getuid() != uid or os.getgroups():
        raise PermissionError("privileges were not dropped")


def _rebase_interpreter(argv: list[str], run_dir: str, kernel: bool) -> None:
    """What a fresh ``python -m ipykernel_launcher`` in ``run_dir`` (or ``python -I SCRIPT``,
    whose folder -I keeps off sys.path) would have computed at start."""
    if kernel:
        sys.argv = [argv[0], *argv[3:]]  # run_module puts the module's path in argv[0]
        if sys.path and sys.path[0] in ("", os.curdir):
            sys.path[0] = run_dir
        else:
            sys.path.insert(0, run_dir)
    else:
        sys.argv = [argv[2]]
    _rebase_site()
    if "numpy" in sys.modules:  # its global generator was seeded once, in the template
        sys.modules["numpy"].random.seed()


def _rebase_site() -> None:
    """What was computed from HOME (per run) while the template started, computed again."""
    import site
    import sysconfig

    site.USER_BASE = site.USER_SITE = None
    sysconfig._CONFIG_VARS = None  # recomputed on first use, with this HOME
    if site.ENABLE_USER_SITE and os.path.isdir(site.getusersitepackages()):
        site.addsitedir(site.getusersitepackages())
    hub = sys.modules.get("huggingface_hub.constants")
    if hub is not None:  # only a fallback for HF_HOME, which the kernel's environment sets
        hub.default_home = os.path.join(os.path.expanduser("~"), ".cache")
    fsspec_config = sys.modules.get("fsspec.config")
    if fsspec_config is not None:  # fsspec reads its configuration files from ~ at import
        fsspec_config.conf.clear()
        fsspec_config.default_conf_dir = os.path.join(os.path.expanduser("~"), ".config/fsspec")
        fsspec_config.conf_dir = os.environ.get("FSSPEC_CONFIG_DIR", fsspec_config.default_conf_dir)
        fsspec_config.set_conf_files(fsspec_config.conf_dir, fsspec_config.conf)
        fsspec_config.set_conf_env(fsspec_config.conf)


def main() -> None:
    """Entry (see templates.py): argv = [-c, this file, socket path, JSON configuration]."""
    socket_path, config = sys.argv[2], json.loads(sys.argv[3])
    sys.argv = sys.argv[:1]  # the configuration holds the marker
    _libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)
    report = os.fdopen(int(config["report_fd"]), "w")
    added = preload(config.get("modules") or [])
    report.write(json.dumps({"preloaded": added, "tainted": tainted_modules(config["marker"]),
                             "python_threads": threading.active_count(), "threads": thread_count()}) + "\n")
    report.flush()
    serve(socket_path, config.get("run_keys") or [], config["interpreter"], report, config.get("scripts_dir") or "")
