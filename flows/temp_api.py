"""The temporary Prefect API of a command on the embedded default, started without importing
Prefect's server into the command's own process.

Prefect starts a temporary API itself when no PREFECT_API_URL is set (`SubprocessASGIServer`: a
uvicorn subprocess serving `prefect.server.api.server:create_app`, UI off). To do so, the calling
process first imports Prefect's whole server application (FastAPI, SQLAlchemy, every router:
about 3 s of CPU here) only to run it in another process, and that import holds the GIL while the
command imports and starts Ray. Here the same subprocess, with the same command line and the same
server settings, is started from the standard library alone, before Prefect is imported, and the
command's Prefect settings name it (PREFECT_API_URL, read when Prefect is first imported). The
command waits for it to answer only just before its flow starts, so Ray, the flow's imports and
the server's start overlap. It is stopped when the command ends, as Prefect stops its own.

`ILLUME_TEMPORARY_API` is set to the URL, so `flows.api_watch` can say, if it dies mid-run, that
it was this command's own temporary server. Figures: benchmarks/startup.py, docs/PIPELINE.md.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from flows.api_watch import healthy  # the standard library only, like this module

TEMPORARY_ENV = "ILLUME_TEMPORARY_API"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ephemeral_allowed() -> bool:
    """PREFECT_SERVER_EPHEMERAL_ENABLED unless switched off in the environment (Prefect's default)."""
    raw = os.environ.get("PREFECT_SERVER_EPHEMERAL_ENABLED", "true").strip().lower()
    return raw not in ("0", "false", "no", "off")


class TemporaryApi:
    """One temporary Prefect API server subprocess: `start()` returns at once, `wait()` until it answers."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0

    def start(self) -> TemporaryApi:
        spec = importlib.util.find_spec("prefect")  # where Prefect is, without importing it
        if spec is None or spec.origin is None:
            raise RuntimeError("prefect is not installed in this environment")
        env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
        # the settings Prefect's own temporary server runs with (prefect.server.api.server)
        env.update(
            {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
        )
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "uvicorn",
                "--app-dir", str(Path(spec.origin).parent.parent),
                "--factory", "prefect.server.api.server:create_app",
                "--host", "127.0.0.1", "--port", str(self.port),
                "--log-level", "error", "--lifespan", "on",
            ],
            env=env,
        )  # fmt: skip
        atexit.register(self.stop)
        return self

    def wait(self, timeout_s: float = 120.0) -> None:
        """Until `<url>/health` answers; a server that exits or never answers is a clear error."""
        assert self.proc is not None, "start() first"
        deadline = time.monotonic() + timeout_s
        while not healthy(self.url):
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the temporary Prefect API ({self.url}) exited with code {self.proc.returncode} "
                    "before it answered; its output is above. Set PREFECT_API_URL to a running server "
                    "(`prefect server start`) to use that one instead"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"the temporary Prefect API ({self.url}) did not answer within {timeout_s:.0f} s; "
                    "set PREFECT_API_URL to a running server (`prefect server start`) to use that one"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def start_temporary_api() -> TemporaryApi | None:
    """Start this command's temporary API and name it in PREFECT_API_URL, or None where Prefect
    would not start one: a server is named already, temporary servers are switched off, or
    Prefect is already imported in this process (its settings were read then: Prefect starts its
    own at the flow's first call, as before)."""
    if os.environ.get("PREFECT_API_URL") or not _ephemeral_allowed() or "prefect" in sys.modules:
        return None
    api = TemporaryApi().start()
    os.environ["PREFECT_API_URL"] = api.url
    os.environ[TEMPORARY_ENV] = api.url
    return api
