import os
import subprocess
import sys

from tasks.faults import fault_point


def test_fault_point_kills_once(tmp_path):
    marker = tmp_path / "m"
    code = "from tasks.faults import fault_point; fault_point('end:sample'); print('survived')"
    env = {**os.environ, "ILLUME_FAULT_KILL": f"end:sample:{marker}"}
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert first.returncode == -9 and "survived" not in first.stdout and marker.read_text() == "end:sample"
    second = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert second.returncode == 0 and "survived" in second.stdout


def test_other_points_pass(monkeypatch, tmp_path):
    monkeypatch.setenv("ILLUME_FAULT_KILL", f"start:assess:{tmp_path / 'm'}")
    fault_point("start:sample")
    fault_point("end:assess")
    assert not (tmp_path / "m").exists()
