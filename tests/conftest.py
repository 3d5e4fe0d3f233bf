from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

from toy import write_toy_source  # noqa: E402


@pytest.fixture(scope="session")
def toy_sources(tmp_path_factory) -> list[Path]:
    return [write_toy_source(tmp_path_factory.mktemp("toy_source"))]


@pytest.fixture(scope="session")
def toy_release(tmp_path_factory, toy_sources) -> Path:
    from autograde.release import release

    out = tmp_path_factory.mktemp("toy_release")
    (path,) = release(out, toy_sources)
    return path


def stray_processes(before: set[int]) -> list[list[str]]:
    """Processes a notebook execution started (they carry AUTOGRADE_RUN_DIR) that are still
    alive: children of this test process, or orphans adopted by init. Other sessions' kernels
    on the same machine are neither."""
    import psutil

    mine = {p.pid for p in psutil.Process().children(recursive=True)}
    stray = []
    for proc in psutil.process_iter(["cmdline", "status", "ppid"]):
        if proc.pid in before or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if proc.pid not in mine and proc.info["ppid"] != 1:
            continue
        try:
            if "AUTOGRADE_RUN_DIR" in proc.environ():
                stray.append(proc.info["cmdline"])
        except psutil.Error:
            continue
    return stray
