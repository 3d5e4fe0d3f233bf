"""deploy/credit-api/ is generated from notebooks/colab_d_mlops.ipynb by tools/make_deploy.py.

The staleness test executes the source notebook once (through autograde.runner, as the tool
does) and compares the four generated files byte for byte with the committed ones: editing a
file by hand, or changing the notebook without regenerating, fails here.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tools import make_deploy

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def expected() -> dict[str, bytes]:
    return make_deploy.render(make_deploy.notebook_output())


def test_deploy_folder_is_what_the_notebook_writes(expected):
    stale = make_deploy.stale(expected)
    assert not stale, f"deploy/credit-api is stale, run `python tools/make_deploy.py`: {stale}"


def test_every_committed_file_of_the_folder_is_generated_or_the_gitignore():
    listed = subprocess.run(["git", "ls-files", "deploy/credit-api"], cwd=REPO_ROOT, capture_output=True, text=True,
                            check=True).stdout.split()
    names = {Path(p).name for p in listed}
    assert names <= set(make_deploy.GENERATED) | {".gitignore"}, names


def test_each_generated_file_says_so_and_how_to_regenerate(expected):
    for name, data in expected.items():
        assert data.startswith(make_deploy.HEADER), name
        assert (REPO_ROOT / "deploy" / "credit-api" / name).read_bytes().startswith(make_deploy.HEADER), name


def test_render_and_stale_on_a_fake_notebook_output(tmp_path):
    written = {name: f"content of {name}\n".encode() for name in make_deploy.GENERATED}
    rendered = make_deploy.render(written)
    for name, data in rendered.items():
        (tmp_path / name).write_bytes(data)
    assert make_deploy.stale(rendered, tmp_path) == []
    (tmp_path / "Dockerfile").write_bytes(rendered["Dockerfile"] + b"# edited by hand\n")
    (tmp_path / "app.py").unlink()
    assert sorted(make_deploy.stale(rendered, tmp_path)) == ["Dockerfile", "app.py"]
    with pytest.raises(make_deploy.NotebookFailed):
        make_deploy.render({"app.py": b""})


def test_notebook_output_reads_the_build_folder_of_an_executed_run(tmp_path):
    folder = tmp_path / make_deploy.WRITTEN_FOLDER
    folder.mkdir()
    for name in make_deploy.GENERATED:
        (folder / name).write_bytes(name.encode())
    (folder / "credit_model.joblib").write_bytes(b"not shipped")
    assert make_deploy.notebook_output(tmp_path) == {name: name.encode() for name in make_deploy.GENERATED}
