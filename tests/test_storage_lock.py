"""The writer lock: a second writer is refused naming the holder; a dead holder never blocks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from storage.lake import Lake
from storage.lock import LOCK_NAME, LakeBusyError, WriterLock

REPO = Path(__file__).resolve().parents[1]

HOLD = """
import sys, time
from storage.lake import Lake
with Lake(sys.argv[1], catalog=False).writer(owner="sampler-round-7"):
    print("held", flush=True)
    time.sleep(60)
"""


def hold_lock_in_subprocess(root: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(root)], env=env, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_writer_is_refused_naming_the_holder_then_recovers_after_sigkill(tmp_path):
    holder = hold_lock_in_subprocess(tmp_path)
    try:
        lake = Lake(tmp_path, lock_timeout_s=0.3)
        with pytest.raises(LakeBusyError) as e:
            lake.write_partition("prompts", 0, [], producer="other")
        assert "sampler-round-7" in str(e.value) and f"pid {holder.pid}" in str(e.value)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
    # the record of the dead holder is still in the file, but the kernel dropped its lock
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == holder.pid
    assert Lake(tmp_path, lock_timeout_s=0.3).write_partition("prompts", 0, [], producer="other").rows == 0


def test_same_process_second_lock_is_refused_and_lock_is_reentrant(tmp_path):
    fs = pafs.LocalFileSystem()
    first = WriterLock(fs, str(tmp_path), owner="first", timeout_s=0.2)
    with first:
        with first:  # re-entrant within one lock object
            pass
        with pytest.raises(LakeBusyError, match="'first'"):
            WriterLock(fs, str(tmp_path), owner="second", timeout_s=0.2).acquire()
    with WriterLock(fs, str(tmp_path), owner="second", timeout_s=0.2):
        pass


def test_a_lock_without_flock_needs_conditional_writes(tmp_path):
    """Without flock the lease needs a create-if-absent that only one contender wins: object
    storage's conditional writes (tests/test_storage_s3.py: a live holder refused, a dead pid's
    or an expired lease taken over). A filesystem without them is refused, not half-locked."""
    fs = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())  # not a LocalFileSystem
    with pytest.raises(ValueError, match="conditional writes"):
        WriterLock(fs, "", owner="next", timeout_s=0.5, ttl_s=5)
