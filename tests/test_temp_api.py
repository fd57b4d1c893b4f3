"""The commands' temporary Prefect API (flows/temp_api.py): started before Prefect is imported,
named in PREFECT_API_URL, used by the command's flows, and stopped when the command ends."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest

from flows.api_watch import ApiWatch
from flows.temp_api import TEMPORARY_ENV, start_temporary_api

ROOT = Path(__file__).resolve().parents[1]


def test_no_temporary_api_where_a_server_is_named_switched_off_or_prefect_is_loaded(monkeypatch):
    monkeypatch.delenv(TEMPORARY_ENV, raising=False)
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    assert start_temporary_api() is None
    monkeypatch.delenv("PREFECT_API_URL")
    monkeypatch.setenv("PREFECT_SERVER_EPHEMERAL_ENABLED", "false")
    assert start_temporary_api() is None
    monkeypatch.delenv("PREFECT_SERVER_EPHEMERAL_ENABLED")
    import prefect  # noqa: F401  (its settings are read: Prefect starts its own, as before)

    assert start_temporary_api() is None
    assert "PREFECT_API_URL" not in os.environ and TEMPORARY_ENV not in os.environ


@pytest.mark.timeout(300)
def test_a_fresh_process_runs_its_flow_on_the_temporary_api_and_stops_it_at_exit(tmp_path):
    code = textwrap.dedent(
        """
        from flows.temp_api import start_temporary_api
        api = start_temporary_api()  # before Prefect is imported
        api.wait()
        from prefect import flow, get_client
        from prefect.settings import PREFECT_API_URL

        @flow
        def hello(x: int) -> int:
            return x + 1

        assert PREFECT_API_URL.value() == api.url
        assert hello(1) == 2
        with get_client(sync_client=True) as c:
            runs = c.read_flow_runs()
        print("RUNS", [r.state.type.value for r in runs], "URL", api.url, "PID", api.proc.pid, flush=True)
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", TEMPORARY_ENV)}
    env.update(PYTHONPATH=str(ROOT), PREFECT_HOME=str(tmp_path / "home"))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("RUNS"))
    assert "['COMPLETED']" in line  # the flow ran, and its run is recorded on that server
    url, pid = line.split("URL ")[1].split(" PID ")
    # the server went with the process
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/health", timeout=2)
    assert not Path(f"/proc/{int(pid)}").exists() or "zombie" in Path(f"/proc/{int(pid)}/status").read_text()


def test_losing_the_temporary_api_says_a_new_run_starts_its_own(monkeypatch):
    url = "http://127.0.0.1:9/api"
    monkeypatch.setenv(TEMPORARY_ENV, url)
    msg = ApiWatch("illume round --lake L", api_url=url).describe(60)
    assert msg.startswith(f"the temporary Prefect API this command started at {url}")
    assert "Run `illume round --lake L` again" in msg and "Start the Prefect server" not in msg
    other = ApiWatch("illume round --lake L", api_url="http://10.0.0.1:4200/api").describe(60)
    assert "Start the Prefect server again" in other
