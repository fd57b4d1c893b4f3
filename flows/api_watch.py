"""A flow run that loses its Prefect API ends in bounded time instead of hanging.

Without the API, Prefect keeps running tasks (their states travel as events), then retries the
flow's own state changes with backoff, and at exit waits for its event and log workers to drain
to a server that is gone: measured with Prefect 3.9, a flow whose server was killed logged
connection errors for minutes and never ended (docs/RELIABILITY.md). `ApiWatch` bounds that:

- a daemon thread asks `<api>/health` every `every_s` (a 2 s timeout per request);
- once the API has not answered for `lost_s` seconds (`ILLUME_API_LOST_S`, default 60), it says
  so (naming the server and how to resume) and raises `PrefectApiLost` in the flow's main thread,
  so the flow unwinds: the lake's writer lock is released on the way out, and Prefect records a
  crash (it cannot reach the server, so that is local only);
- `grace_s` later (`ILLUME_API_GRACE_S`, default 15) the process ends with exit code 75 whatever
  Prefect's clients are still retrying. Lake commits are atomic (one manifest write), so ending
  there leaves every table at its old or new state, as a SIGKILL would; a local lake's lock is
  an flock, dropped by the kernel with the process.

Re-running the same command when the server answers again finishes the round from the task
caches in the lake (`tests/test_api_lost.py` kills a real server mid-round and checks that).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable

LOST_ENV = "ILLUME_API_LOST_S"
GRACE_ENV = "ILLUME_API_GRACE_S"
EXIT_CODE = 75  # EX_TEMPFAIL: try again later
_SIGNAL = signal.SIGUSR1


class PrefectApiLost(BaseException):  # noqa: N818  (a BaseException: Prefect must not retry tasks on it)
    """The Prefect API stopped answering; the flow run stops (raised in the flow's main thread)."""


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    try:
        return float(raw) if raw else default
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number of seconds") from None


def current_api_url() -> str | None:
    """The API this process talks to (a flow run's client, else the settings); None when unknown."""
    try:
        from prefect.context import FlowRunContext

        ctx = FlowRunContext.get()
        if ctx is not None and getattr(ctx, "client", None) is not None:
            return str(ctx.client.api_url).rstrip("/")
    except Exception:
        pass
    try:
        from prefect.settings import PREFECT_API_URL

        url = PREFECT_API_URL.value()
        return url.rstrip("/") if url else None
    except Exception:
        return None


def healthy(api_url: str, timeout_s: float = 2.0) -> bool:
    """Whether `<api_url>/health` answers 200 within the timeout (no retries: this is the probe)."""
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout_s) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


class ApiWatch:
    """Context manager around a flow's body: `with ApiWatch(resume="illume round --lake L"):`."""

    def __init__(
        self,
        resume: str,
        also: str = "",
        api_url: str | None = None,
        lost_s: float | None = None,
        grace_s: float | None = None,
        every_s: float | None = None,
        exit: Callable[[int], None] = os._exit,
    ) -> None:
        self.resume, self.also = resume, also
        self.api_url = api_url
        self.lost_s = _env_float(LOST_ENV, 60.0) if lost_s is None else lost_s
        self.grace_s = _env_float(GRACE_ENV, 15.0) if grace_s is None else grace_s
        self.every_s = every_s if every_s is not None else max(0.2, min(5.0, self.lost_s / 4))
        self._exit = exit
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._old_handler = None
        self._main = False
        self.lost_at: float | None = None  # monotonic time the loss was declared
        self.message = ""

    # ------------------------------------------------------------------ the message
    def describe(self, silent_s: float) -> str:
        # this command's own temporary server (flows/temp_api.py): nothing to start, a new run starts its own
        temporary = os.environ.get("ILLUME_TEMPORARY_API", "").rstrip("/") == (self.api_url or "")
        what = "the temporary Prefect API this command started" if temporary else "the Prefect API"
        restart = (
            "Run"
            if temporary
            else "Start the Prefect server again (or unset PREFECT_API_URL for a temporary one), then run"
        )
        return (
            f"{what} at {self.api_url} has not answered for {silent_s:.0f} s "
            f"({LOST_ENV}={self.lost_s:g}); this flow run stops here. The lake keeps every committed "
            f"partition (commits are atomic) and its writer lock is released. {restart} "
            f"`{self.resume}` again{self.also}: "
            "the tasks that finished come from the caches in the lake."
        )

    def _say(self, text: str) -> None:
        try:
            sys.stderr.write(f"illume: {text}\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass

    # ------------------------------------------------------------------ the watch
    def _run(self) -> None:
        last_ok = time.monotonic()
        while not self._stop.wait(self.every_s):
            # a loaded server answers slowly: each probe waits up to 5 s, and the loss is declared
            # only after lost_s without a single answer
            if healthy(self.api_url, timeout_s=min(5.0, max(2.0, self.every_s))):
                last_ok = time.monotonic()
                continue
            silent = time.monotonic() - last_ok
            if silent < self.lost_s:
                continue
            self.lost_at = time.monotonic()
            self.message = self.describe(silent)
            self._say(self.message)
            if self._main:
                # the flow's main thread unwinds (lock released), Prefect records a crash
                signal.pthread_kill(threading.main_thread().ident, _SIGNAL)
            # whatever Prefect's clients still retry, the process ends grace_s from now
            time.sleep(self.grace_s)
            self._say(self.message)
            self._exit(EXIT_CODE)
            return

    def _on_signal(self, signum, frame) -> None:
        raise PrefectApiLost(self.message)

    def __enter__(self) -> ApiWatch:
        self.api_url = self.api_url or current_api_url()
        if not self.api_url or self.lost_s <= 0:
            return self  # no API to watch (or watching turned off with ILLUME_API_LOST_S=0)
        self._main = threading.current_thread() is threading.main_thread()
        if self._main:
            self._old_handler = signal.signal(_SIGNAL, self._on_signal)
        self._thread = threading.Thread(target=self._run, name="illume-api-watch", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.lost_at is not None:
            return None  # lost: the thread's deadline stays armed (Prefect's exit would wait on the server)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._main and self._old_handler is not None:
            signal.signal(_SIGNAL, self._old_handler)
        return None
