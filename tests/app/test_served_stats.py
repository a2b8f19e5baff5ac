"""A volunteer's stats (tokens served, sessions, time online) are counted by a real server process,
reported on its status channel, and kept across a restart of that process with the same identity."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

import pytest

from corolla.app.serve.stats import ServedStats, load_stats, save_stats, stats_file
from corolla.app.serve.status import Event, ServerStatus, StatusError

pytestmark = pytest.mark.slow


class Server:
    """`corolla serve --status-json` as a process; its status messages collected as they come."""

    def __init__(self, model, identity, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "corolla.app", "serve", "--model", str(model), "--blocks", "0:6",
             "--identity", str(identity), "--host", "127.0.0.1", "--status-json", "--rebalance-period", "0",
             "--drain-timeout", "2", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.statuses: list[ServerStatus] = []
        self.log: list[str] = []
        self.changed = threading.Condition()
        threading.Thread(target=self._read_status, daemon=True).start()
        threading.Thread(target=lambda: self.log.extend(self.proc.stderr), daemon=True).start()

    def _read_status(self) -> None:
        for line in self.proc.stdout:
            try:
                status = ServerStatus.from_line(line)
            except StatusError:
                continue
            with self.changed:
                self.statuses.append(status)
                self.changed.notify_all()

    def wait_for(self, check, timeout: float = 120) -> ServerStatus:
        with self.changed:
            ok = self.changed.wait_for(lambda: any(check(s) for s in self.statuses) or self.proc.poll() is not None,
                                       timeout)
            found = [s for s in self.statuses if check(s)]
        assert ok and found, "".join(self.log[-30:])
        return found[-1]

    def stop(self) -> ServedStats:
        """Stop as Ctrl-C does; the last totals it reported."""
        self.proc.send_signal(signal.SIGINT)
        assert self.proc.wait(60) == 0, "".join(self.log[-30:])
        last = [s for s in self.statuses if s.event is Event.STATS][-1]
        return ServedStats(last.tokens_served, last.sessions_served, float(last.seconds_online))


def generate(model, address: str) -> str:
    result = subprocess.run([sys.executable, "-m", "corolla.app", "generate", "--model", str(model), "--prompt",
                             "The capital of France is", "--max-new-tokens", "6", "--greedy",
                             "--initial-peers", address], capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_stats_are_counted_by_the_server_and_survive_its_restart(tiny_models, tmp_path):
    model, identity = tiny_models["llama"], tmp_path / "identity" / "server.key"
    first = Server(model, identity, "--threads", "1")
    serving = first.wait_for(lambda s: s.event is Event.SERVING)
    assert any("with 1 CPU thread" in line for line in first.log)  # --threads reached torch in the server
    text = generate(model, serving.join_address)
    first.wait_for(lambda s: s.event is Event.STATS and (s.sessions_served or 0) >= 1)
    one_run = first.stop()
    assert one_run.sessions == 1 and one_run.tokens > 6  # the prompt's tokens and each new one
    saved = load_stats(stats_file(identity))
    assert (saved.tokens, saved.sessions) == (one_run.tokens, 1) and saved.seconds_online >= one_run.seconds_online

    second = Server(model, identity)
    again = second.wait_for(lambda s: s.event is Event.SERVING)
    assert again.peer_id == serving.peer_id  # the same identity: its stats continue
    resumed = second.wait_for(lambda s: s.event is Event.STATS)
    assert (resumed.tokens_served, resumed.sessions_served) == (one_run.tokens, 1)
    assert resumed.seconds_online >= int(one_run.seconds_online)
    assert generate(model, again.join_address) == text  # the same greedy reply: the same tokens served
    second.wait_for(lambda s: s.event is Event.STATS and (s.sessions_served or 0) >= 2)
    both = second.stop()
    assert (both.tokens, both.sessions) == (2 * one_run.tokens, 2)
    assert load_stats(stats_file(identity)).tokens == both.tokens


def test_a_damaged_stats_file_counts_from_zero(tmp_path):
    path = stats_file(tmp_path / "server.key")
    assert path.name == "server.stats.json"
    assert load_stats(path) == ServedStats()  # none yet
    save_stats(path, ServedStats(5, 1, 3.5))
    assert load_stats(path) == ServedStats(5, 1, 3.5)
    for bad in ("{", '{"tokens": "x"}', '{"tokens": -1, "sessions": 0, "seconds_online": 0}', "[]"):
        path.write_text(bad)
        assert load_stats(path) == ServedStats()


def test_stats_travel_on_the_status_channel():
    line = ServerStatus(Event.STATS, tokens_served=1234, sessions_served=5, seconds_online=9000).to_line()
    status = ServerStatus.from_line(line)
    assert (status.tokens_served, status.sessions_served, status.seconds_online) == (1234, 5, 9000)
    with pytest.raises(StatusError, match="tokens_served"):
        ServerStatus.from_line('{"status": 1, "event": "stats", "tokens_served": -3}')
    assert ServedStats(1234, 5, 9000).describe() == "1,234 tokens · 5 sessions · 2.5 h online"
    assert ServedStats(1, 1, 120).describe() == "1 token · 1 session · 2 min online"
