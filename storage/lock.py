"""The lake's writer lock: one writer at a time per lake, readers never take it.

On a local lake the lock is an `fcntl.flock` on `<lake>/_writer.lock`: the kernel drops it when
the holder dies (even on SIGKILL), so a crashed writer never leaves it stuck. The file also holds
the holder's record (owner, pid, host, start, heartbeat) so a refused writer can say who holds
it. On object storage (an s3:// lake: no flock) the record itself is a lease object, created with
a conditional write that only one contender wins (`If-None-Match: *`), renewed by a heartbeat
thread that replaces exactly its own version (`If-Match`), and taken over, again by a conditional
replace of the version read, once it is stale: its pid dead on this host, or its heartbeat older
than `ttl_s`. A holder whose renewal fails has lost the lease (`lost`), and the lake refuses its
next commit.
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

from storage.objstore import ConditionalStore, WriteConflict

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
        store: ConditionalStore | None = None,
    ) -> None:
        self.fs, self.root, self.store = fs, root, store
        self.path = f"{root}/{LOCK_NAME}" if root else LOCK_NAME
        self.owner, self.timeout_s, self.ttl_s = owner, timeout_s, ttl_s
        self._local = isinstance(fs, pafs.LocalFileSystem)
        if not self._local and store is None:
            raise ValueError("a writer lock on object storage needs conditional writes (a ConditionalStore)")
        self._fd: int | None = None
        self._etag: str | None = None  # the lease version this holder wrote last
        self._etag_lock = threading.Lock()
        self.lost = False  # the lease was taken over (or could not be renewed) while held
        self.recovered: Holder | None = None  # the stale holder this lease was taken from
        self._depth = 0
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def holder(self) -> Holder | None:
        """The record currently in the lock file (None when empty or absent)."""
        try:
            if self.store is not None:
                body, _ = self.store.get(self.path)
                return Holder.parse(body.decode()) if body is not None else None
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
        try:
            self._etag = self.store.put(self.path, self._record(), None)  # only if no lease exists
            return True
        except WriteConflict:
            pass
        body, etag = self.store.get(self.path)
        if body is None:
            return False  # released meanwhile: try again
        h = Holder.parse(body.decode())
        if h is not None and not self._stale(h):
            return False
        try:  # a stale (or unreadable) lease: take it over, replacing exactly the version read
            self._etag = self.store.put(self.path, self._record(), etag)
        except WriteConflict:
            return False  # another contender took it first
        self.recovered = h
        return True

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            with self._etag_lock:
                try:
                    self._etag = self.store.put(self.path, self._record(), self._etag)
                except WriteConflict:
                    self.lost = True  # someone took the lease over: this holder must stop writing
                    return
                except Exception:
                    continue  # a network blip: the lease stays valid until ttl_s after the last beat

    def check(self) -> None:
        """Raise LakeBusyError if this holder lost its lease (the lake calls it before each commit)."""
        if self.lost:
            h = self.holder()
            who = h.describe() if h else "another writer"
            raise LakeBusyError(
                f"this writer's lease on {self.root} was taken over by {who} (its heartbeat could not "
                f"be renewed within {self.ttl_s:.0f} s); nothing more is committed. Run the write again."
            )

    def acquire(self) -> None:
        if self._depth:
            self._depth += 1
            return
        self._started = time.time()
        self.lost, self.recovered = False, None
        if self.root and self._local:
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
            time.sleep(0.05 if self._local else 0.5)
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
            with self._etag_lock:
                if not self.lost:
                    self.store.delete(self.path, self._etag)  # only this holder's own version
                self._etag = None

    def __enter__(self) -> WriterLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
