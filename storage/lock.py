"""The lake's writer lock: one writer at a time per lake, readers never take it.

On a local lake the lock is an `fcntl.flock` on `<lake>/_writer.lock`: the kernel drops it when
the holder dies (even on SIGKILL), so a crashed writer never leaves it stuck. The file also holds
the holder's record (owner, pid, host, start, heartbeat) so a refused writer can say who holds
it. On a remote filesystem (no flock) the record itself is a lease: a heartbeat thread renews it,
and it is stale once its pid is dead on this host or its heartbeat is older than `ttl_s`.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass

import pyarrow.fs as pafs

LOCK_NAME = "_writer.lock"


class LakeBusyError(RuntimeError):
    """Another writer holds the lake's lock."""


@dataclass
class Holder:
    """Who holds (or last held) the writer lock."""

    owner: str
    pid: int
    host: str
    started_at: float
    heartbeat: float

    def describe(self) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started_at))
        return f"{self.owner!r} (pid {self.pid} on {self.host}, since {started})"

    @classmethod
    def parse(cls, text: str) -> Holder | None:
        try:
            return cls(**json.loads(text))
        except (ValueError, TypeError):
            return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WriterLock:
    """Context manager: `with WriterLock(fs, root, owner="sample"):` waits up to `timeout_s`.

    Re-entrant within one object, so a `Lake.write_partition` inside `lake.writer()` works.
    """

    def __init__(
        self,
        fs: pafs.FileSystem,
        root: str,
        owner: str,
        timeout_s: float = 30.0,
        ttl_s: float = 60.0,
    ) -> None:
        self.fs, self.root = fs, root
        self.path = f"{root}/{LOCK_NAME}" if root else LOCK_NAME
        self.owner, self.timeout_s, self.ttl_s = owner, timeout_s, ttl_s
        self._local = isinstance(fs, pafs.LocalFileSystem)
        self._fd: int | None = None
        self._depth = 0
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def holder(self) -> Holder | None:
        """The record currently in the lock file (None when empty or absent)."""
        try:
            with self.fs.open_input_stream(self.path) as f:
                return Holder.parse(f.read().decode())
        except (FileNotFoundError, OSError):
            return None

    def _record(self) -> bytes:
        now = time.time()
        h = Holder(self.owner, os.getpid(), socket.gethostname(), self._started, now)
        return json.dumps(asdict(h)).encode()

    def _try_local(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, self._record(), 0)
        os.fsync(fd)
        self._fd = fd
        return True

    def _stale(self, h: Holder) -> bool:
        if h.host == socket.gethostname() and not _pid_alive(h.pid):
            return True
        return time.time() - h.heartbeat > self.ttl_s

    def _try_remote(self) -> bool:
        h = self.holder()
        if h is not None and not self._stale(h):
            return False
        with self.fs.open_output_stream(self.path) as f:
            f.write(self._record())
        # object stores have no create-if-absent: read back to see whose record won the race
        mine = self.holder()
        return mine is not None and mine.pid == os.getpid() and mine.started_at == self._started

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            with self.fs.open_output_stream(self.path) as f:
                f.write(self._record())

    def acquire(self) -> None:
        if self._depth:
            self._depth += 1
            return
        self._started = time.time()
        if self.root:
            self.fs.create_dir(self.root, recursive=True)
        deadline = time.monotonic() + self.timeout_s
        while not (self._try_local() if self._local else self._try_remote()):
            if time.monotonic() >= deadline:
                h = self.holder()
                who = h.describe() if h else "an unknown writer"
                raise LakeBusyError(
                    f"the lake at {self.root or '/'} is being written by {who}; "
                    f"waited {self.timeout_s:.0f} s. Wait for it to finish or pass a longer timeout."
                )
            time.sleep(0.05)
        if not self._local:
            self._stop.clear()
            self._beat = threading.Thread(target=self._heartbeat, daemon=True)
            self._beat.start()
        self._depth = 1

    def release(self) -> None:
        self._depth -= 1
        if self._depth:
            return
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        if self._beat is not None:
            self._stop.set()
            self._beat.join()
            self._beat = None
            self.fs.delete_file(self.path)

    def __enter__(self) -> WriterLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
