"""A flow run whose Prefect API disappears ends in bounded time (flows/api_watch.py).

The unit tests drive `ApiWatch` against a tiny health server that the test stops. The
end-to-end test starts a real `prefect server start` on loopback, runs a smoke round in a
subprocess against it, SIGKILLs the server mid-round, and checks: the round process ends within
the configured bound with exit code 75 and a message naming the server and how to resume; the
lake is intact (every listed file present, nothing half-visible) and its writer lock free; and
the same round re-run in this process finishes from the caches, equal to an undisturbed round.
"""

from __future__ import annotations

import http.server
import shutil
import threading
import time

import pytest

from flows.api_watch import EXIT_CODE, ApiWatch, PrefectApiLost
from tests.conftest import SMOKE_ROUND

# conftest.SMOKE_ROUND as the flat parameters fm.round_cmd takes (knobs beside workers, lock_timeout_s)
FAST = {"n_prompts": 4, "images_per_prompt": 2, "workers": 2, "lock_timeout_s": 2.0}


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.send_response(200 if self.path.endswith("/health") else 404)
        self.end_headers()
        self.wfile.write(b"true")

    def log_message(self, *args):
        pass


def _health_server() -> tuple[http.server.HTTPServer, str]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}/api"


def test_a_lost_api_stops_the_main_thread_then_ends_the_process(capsys):
    srv, api = _health_server()
    exits: list[int] = []
    watch = ApiWatch(
        "illume round --lake L", api_url=api, lost_s=0.6, grace_s=0.5, every_s=0.1, exit=exits.append
    )
    t0 = time.monotonic()
    with pytest.raises(PrefectApiLost) as err:
        with watch:
            time.sleep(0.5)  # the API answers: nothing happens
            assert watch.lost_at is None
            srv.shutdown()
            srv.server_close()
            stopped = time.monotonic()
            while time.monotonic() - t0 < 10:
                time.sleep(0.05)  # the flow's work; the watch interrupts it
    lost_after = time.monotonic() - stopped
    assert 0.6 - 0.1 <= lost_after < 3  # lost_s after the last answer (probed every 0.1 s)
    msg = str(err.value)
    assert api in msg and "illume round --lake L" in msg and "writer lock is released" in msg
    # the deadline stays armed after the flow unwound: the process ends grace_s later
    deadline = time.monotonic() + 5
    while not exits and time.monotonic() < deadline:
        time.sleep(0.05)
    assert exits == [EXIT_CODE]
    assert capsys.readouterr().err.count(api) == 2  # said when lost, and again as the last line


def test_a_live_api_is_left_alone_and_the_watch_stops_with_the_flow():
    srv, api = _health_server()
    exits: list[int] = []
    try:
        with ApiWatch("x", api_url=api, lost_s=0.3, grace_s=0.1, every_s=0.05, exit=exits.append) as w:
            time.sleep(0.8)
        assert w.lost_at is None and not w._thread.is_alive()
    finally:
        srv.shutdown()
        srv.server_close()
    time.sleep(0.5)
    assert exits == []


def test_the_bound_is_configurable_and_zero_turns_it_off(monkeypatch):
    monkeypatch.setenv("ILLUME_API_LOST_S", "7")
    monkeypatch.setenv("ILLUME_API_GRACE_S", "3")
    w = ApiWatch("x", api_url="http://127.0.0.1:9/api")
    assert (w.lost_s, w.grace_s) == (7.0, 3.0)
    monkeypatch.setenv("ILLUME_API_LOST_S", "0")
    with ApiWatch("x", api_url="http://127.0.0.1:9/api") as w:
        assert w._thread is None
    monkeypatch.setenv("ILLUME_API_LOST_S", "soon")
    with pytest.raises(ValueError, match="ILLUME_API_LOST_S='soon'"):
        ApiWatch("x")


@pytest.mark.timeout(900)  # the first test to ask trains the session's base lake and round
def test_server_killed_mid_round_fails_in_bounded_time_and_the_rerun_finishes(
    smoke_lake, smoke_round_lake, tmp_path
):
    from flows.pipeline import self_enhancement_round
    from storage.lake import Lake
    from tests.test_fault_matrix import fm

    ref = smoke_round_lake[0]
    lake = tmp_path / "lake"
    shutil.copytree(smoke_lake, lake)
    port = fm.free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **fm.base_env(tmp_path),
        "PREFECT_HOME": str(tmp_path / "server-home"),
        "PREFECT_API_URL": api,
        # the machine is loaded (a server that starts Ray beside training answers /health late):
        # a loss is declared after 15 s without a single answer
        "ILLUME_API_LOST_S": "15",
        "ILLUME_API_GRACE_S": "5",
    }
    server = fm.Proc(
        [str(fm.BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env,
        tmp_path / "server.log",
    )
    p = None
    try:
        assert fm._healthy(api, 300), server.text[-2000:]  # 120 s was too short at load 60
        p = fm.Proc(fm.round_cmd(lake, {**FAST, "finetune_steps": None}), env, tmp_path / "round.log")
        prompts = lake / "prompts" / "round=1" / "part=self"
        assert p.wait_for(lambda: prompts.is_dir() and any(prompts.iterdir()), 240), p.text[-3000:]
        server.stop()  # SIGKILL, mid-round (select-prompts committed; sample running)
        killed = time.monotonic()
        rc = p.wait(60)
        took = time.monotonic() - killed
    finally:
        server.stop()
        if p is not None:
            p.stop()
    assert rc == EXIT_CODE, p.text[-3000:]
    assert took < 15 + 5 + 15  # lost_s + grace_s + probe and unwind slack
    last = [ln for ln in p.lines if ln.strip()][-1]
    assert api in last and "has not answered" in last and f"run `illume round --lake {lake}` again" in last
    assert "ROUND-RESULT" not in p.text

    # the lake: intact, the round still `running`, the writer lock free at once
    assert fm.integrity(lake) == []
    lk = Lake(lake, catalog=False)
    assert [r["status"] for r in lk.read("rounds", 1).to_pylist()] == ["running"]
    assert lk.read("evaluations", 1).num_rows == 0
    with lk.writer(owner="after", timeout_s=0.5):
        pass
    selected_at = lk.read("task_runs", 1, "select-prompts").to_pylist()[0]["ended_at"]

    # the server is back (here: the session's API; the caches live in the lake): the same
    # round finishes from its caches and equals an undisturbed round
    self_enhancement_round(lake=str(lake), **SMOKE_ROUND)
    assert (
        Lake(lake, catalog=False).read("task_runs", 1, "select-prompts").to_pylist()[0]["ended_at"]
        == selected_at
    )
    n, rows, diffs = fm.compare(fm.lake_state(ref), lake)
    assert diffs == [] and n > 40 and rows > 100
    assert fm.integrity(lake) == []
    assert fm.round1_current(lake) == fm.round1_current(ref)
