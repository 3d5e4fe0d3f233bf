"""The grader's open counter (inotify, from outside the kernel): every open made before the
counting block ends is counted, exactly, without waiting on a fixed sleep."""

from __future__ import annotations

import subprocess
import sys

from autograde.collect import counting_opens


def _open_from_another_process(path, times: int) -> None:
    code = f"for _ in range({times}):\n    open({str(path)!r}, 'rb').close()"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_opens_by_another_process_just_before_the_end_are_all_counted(tmp_path):
    model = tmp_path / "models" / "model.joblib"
    model.parent.mkdir()
    model.write_bytes(b"x")
    for times in (1, 3, 7):
        with counting_opens(tmp_path) as opened:
            _open_from_another_process(model, times)
        assert opened == {"models/model.joblib": times}


def test_opens_before_the_block_are_not_counted(tmp_path):
    data = tmp_path / "data.csv"
    data.write_text("a\n1\n")
    with counting_opens(tmp_path) as opened:
        pass
    assert opened == {}
    with counting_opens(tmp_path) as opened:
        data.read_text()
        (tmp_path / "listing").mkdir()
    assert opened == {"data.csv": 1}


def test_the_counters_own_marker_stays_out_of_the_students_folder(tmp_path):
    (tmp_path / "app.py").write_text("")
    with counting_opens(tmp_path) as opened:
        (tmp_path / "app.py").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.py"]
    assert opened == {"app.py": 1}
