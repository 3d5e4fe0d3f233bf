from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

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
