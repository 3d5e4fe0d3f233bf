"""Kernel launcher that confines a submission before any of its code runs.

    python -m autograde.sandbox --run-dir DIR [--hide PATH ...] [limits] -- KERNEL ARGV...

As root on Linux (the grading server, CI), before exec'ing the kernel it:
- enters new mount and network namespaces: only loopback exists (brought up), so student
  servers work on 127.0.0.1 and nothing else is reachable;
- mounts empty tmpfs over every ``--hide`` path (source notebooks, results and gradebook,
  tests) and over /tmp, /var/tmp and /dev/shm, then binds the run folder back: other
  students' work and the grader's files are out of sight;
- applies resource limits (processes, CPU seconds, file size, no core dumps);
- drops to an unprivileged uid/gid (default 65534, "nobody") that owns only the run folder.
Not root, or namespaces refused: limits only, and the launcher says so on stderr (the runner
reports it as the `unsandboxed` flag). Memory is watched from outside by the runner.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_BIND = 0x1000
SANDBOX_UID = 65534
SANDBOX_GID = 65534
MARKER_FILE = ".sandbox.json"  # written in the run folder: how the kernel was confined


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    libc = _libc()
    libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
    _check(
        libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            flags,
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


def confine(run_dir: Path, hide: list[Path], expose: list[Path]) -> None:
    """Namespaces, hidden paths and the few paths the kernel needs brought back into view
    (its run folder, the interpreter, the virtualenv, the verifiers). Raises OSError when
    the kernel refuses."""
    libc = _libc()
    _check(libc.unshare(CLONE_NEWNS | CLONE_NEWNET), "unshare")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    ip = shutil.which("ip") or "/usr/sbin/ip"
    subprocess.run([ip, "link", "set", "lo", "up"], check=True, capture_output=True)

    expose = [p for p in dict.fromkeys([run_dir, *expose]) if p.is_dir()]
    handles = {p: os.open(p, os.O_RDONLY | os.O_DIRECTORY) for p in expose}
    covered = set(hide)
    # A directory the sandbox user cannot traverse (/root holding pyenv, say) is hidden too;
    # what is needed below it is brought back.
    for path in expose:
        covered.update(a for a in path.parents if a != Path("/") and not os.stat(a).st_mode & 0o001)
    scratch = {Path("/tmp"), Path("/var/tmp"), Path("/dev/shm")}
    for path in sorted(covered | scratch, key=lambda p: len(p.parts)):
        if path.is_dir():
            options = "size=256m,mode=1777" if path in scratch else "size=1m,mode=0755"
            _mount("tmpfs", str(path), "tmpfs", 0, options)
    for path in sorted(expose, key=lambda p: len(p.parts)):
        fd = handles[path]
        if not path.is_dir() or not os.path.samestat(os.stat(path), os.fstat(fd)):
            path.mkdir(parents=True, exist_ok=True)
            _mount(f"/proc/self/fd/{fd}", str(path), None, MS_BIND | MS_REC)
    for fd in handles.values():
        os.close(fd)


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, gid)


def _limit(kind: int, value: int) -> None:
    try:
        resource.setrlimit(kind, (value, value))
    except (ValueError, OSError):
        soft, hard = resource.getrlimit(kind)
        resource.setrlimit(kind, (min(value, hard) if hard != resource.RLIM_INFINITY else value, hard))


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        sys.exit("usage: python -m autograde.sandbox [options] -- KERNEL ARGV...")
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="autograde.sandbox")
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--hide", type=Path, action="append", default=[])
    parser.add_argument("--expose", type=Path, action="append", default=[])
    parser.add_argument("--max-processes", type=int, default=256)
    parser.add_argument("--cpu-seconds", type=int, default=1800)
    parser.add_argument("--max-file-mb", type=int, default=1024)
    parser.add_argument("--uid", type=int, default=SANDBOX_UID)
    parser.add_argument("--gid", type=int, default=SANDBOX_GID)
    parser.add_argument("--no-isolation", action="store_true", help="limits only")
    args = parser.parse_args(argv[:split])
    command = argv[split + 1:]
    run_dir = args.run_dir.resolve()

    mode = "limits-only"
    reason = "disabled" if args.no_isolation else ""
    if not args.no_isolation and os.geteuid() == 0:
        try:
            # Copy the connection file first: it may live under a path confine() hides.
            command = _private_connection_file(command, run_dir)
            confine(run_dir, [p.resolve() for p in args.hide], [p.resolve() for p in args.expose])
            _chown_tree(run_dir, args.uid, args.gid)
            mode = "isolated"
        except (OSError, subprocess.CalledProcessError) as exc:
            reason = f"namespaces unavailable: {exc}"
    elif not args.no_isolation:
        reason = "not running as root: cannot switch to an unprivileged user"

    (run_dir / MARKER_FILE).write_text(json.dumps({"mode": mode, "reason": reason}))
    _limit(resource.RLIMIT_CORE, 0)
    _limit(resource.RLIMIT_CPU, args.cpu_seconds)
    _limit(resource.RLIMIT_FSIZE, args.max_file_mb * 1024 * 1024)
    if mode == "isolated":
        os.chown(run_dir / MARKER_FILE, 0, 0)
        os.chmod(run_dir / MARKER_FILE, 0o644)
        _limit(resource.RLIMIT_NPROC, args.max_processes)
        os.setgroups([])
        os.setgid(args.gid)
        os.setuid(args.uid)
        os.environ["HOME"] = str(run_dir)
        os.environ["USER"] = os.environ["LOGNAME"] = "nobody"
    os.chdir(run_dir)
    os.execvp(command[0], command)


def _private_connection_file(command: list[str], run_dir: Path) -> list[str]:
    """The kernel reads its connection file after the privilege drop: give it a copy it owns."""
    command = list(command)
    for i, arg in enumerate(command):
        if arg == "-f" and i + 1 < len(command):
            original = command[i + 1]
        elif arg.startswith("--f="):
            original = arg.split("=", 1)[1]
        else:
            continue
        private = run_dir / ".kernel-connection.json"
        shutil.copyfile(original, private)
        if arg == "-f":
            command[i + 1] = str(private)
        else:
            command[i] = f"--f={private}"
        break
    return command


if __name__ == "__main__":
    main()
