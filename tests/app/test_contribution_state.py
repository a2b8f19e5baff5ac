"""The status channel between a server and the app, and the toggle's state it drives."""

import pytest

from corolla.app.contribute.state import (
    ContributionState,
    Phase,
    apply_status,
    ended_words,
    lent_hardware,
    server_arguments,
    serving_device,
)
from corolla.app.errors import SettingsError
from corolla.app.serve.status import Event, ServerStatus, StatusError
from corolla.app.settings import Settings

PEER = "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBdmqXbZzXdKMvH"
BOOT = "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWEjqq2Jvhq87y75M4jHXoztEX7846jLQEdMf6MXnm8zWG"


def through_the_wire(status: ServerStatus) -> ServerStatus:
    line = status.to_line()
    assert "\n" not in line
    return ServerStatus.from_line(line)


def test_status_messages_become_state():
    s = ContributionState(Phase.STARTING)
    s = apply_status(s, through_the_wire(ServerStatus(Event.LOADING, 0, 10)))
    assert s.describe() == "starting (loading blocks 0–9)…"
    s = apply_status(s, through_the_wire(ServerStatus(Event.SERVING, 0, 10, sessions=0, peer_id=PEER,
                                                      join_address=BOOT)))
    assert (s.phase, s.start, s.end, s.peer_id, s.join_address) == (Phase.SERVING, 0, 10, PEER, BOOT)
    assert s.describe() == "serving blocks 0–9, 0 sessions"
    s = apply_status(s, through_the_wire(ServerStatus(Event.SESSIONS, sessions=2)))
    assert s.describe() == "serving blocks 0–9, 2 sessions"
    s = apply_status(s, through_the_wire(ServerStatus(Event.SESSIONS, sessions=1)))
    assert s.describe() == "serving blocks 0–9, 1 session"
    s = apply_status(s, through_the_wire(ServerStatus(Event.MOVING, 20, 30)))
    assert s.describe() == "starting (loading blocks 20–29)…"
    s = apply_status(s, through_the_wire(ServerStatus(Event.ERROR, message="out of memory")))
    assert s.error == "out of memory"


@pytest.mark.parametrize("line", [
    "serving blocks 0–9 of SmolLM2 as 12D3KooW…",  # words for people are not status
    '{"event": "serving"}',  # no version
    '{"status": 2, "event": "serving"}',  # another version
    '{"status": 1, "event": "dancing"}',
    '{"status": 1, "event": "sessions", "sessions": "2"}',
    '{"status": 1, "event": "sessions", "sessions": -1}',
    '{"status": 1, "event": "serving", "peer_id": 7}',
    '[1, 2]',
    "x" * 70000,
])
def test_anything_else_is_refused(line):
    with pytest.raises(StatusError):
        ServerStatus.from_line(line)


def test_settings_become_serve_arguments(tmp_path):
    key = tmp_path / "k"
    args = server_arguments(Settings(initial_peers=(BOOT,), blocks="5:9", port=31337, device="cuda"), key)
    assert args == ["serve", "--model", "default", "--port", "31337", "--identity", str(key),
                    "--blocks", "5:9", "--device", "cuda", "--initial-peers", BOOT]
    assert "--num-blocks" in server_arguments(Settings(num_blocks=4), key)


def test_memory_and_thread_caps_reach_the_server(tmp_path):
    key = tmp_path / "k"
    args = server_arguments(Settings(num_blocks=30, max_gpu_memory=1.5, cpu_threads=2, device="cpu"), key)
    assert args[args.index("--identity") + 2:] == ["--max-gpu-memory", "1.5", "--device", "cpu", "--threads", "2"]
    plain = server_arguments(Settings(device="cpu"), key)
    assert "--max-gpu-memory" not in plain and "--threads" not in plain
    with pytest.raises(SettingsError, match="leave Blocks empty"):
        Settings(blocks="0:10", max_gpu_memory=4).validated()
    with pytest.raises(SettingsError, match="CPU threads"):
        Settings(cpu_threads=-1).validated()


def test_the_tray_names_what_is_lent():
    import torch

    if torch.cuda.is_available():
        assert lent_hardware(Settings()) == f"GPU ({torch.cuda.get_device_name(0)})"
    else:  # "auto" on a machine without a GPU lends the CPU
        assert serving_device("auto") == "cpu"
        assert lent_hardware(Settings(cpu_threads=3)) == "CPU (3 threads)"
    assert lent_hardware(Settings(device="cpu", cpu_threads=1)) == "CPU (1 thread)"


@pytest.mark.parametrize("message, words", [
    ("RuntimeError: CUDA out of memory", "The server stopped: CUDA out of memory. Details are in the server log."),
    ("torch.OutOfMemoryError: no room", "The server stopped: No room. Details are in the server log."),
    ("model 'x' was not found.", "The server stopped: Model 'x' was not found. Details are in the server log."),
])
def test_why_the_server_stopped_is_a_sentence(message, words):
    assert ended_words(crashed=False, message=message) == words


def test_an_unexplained_end_names_no_code():
    killed, failed = ended_words(crashed=True), ended_words(crashed=False)
    assert killed.startswith("The server was stopped from outside or crashed.")
    assert failed.startswith("The server stopped unexpectedly.")
    assert not any(word in killed + failed for word in ("code", "Error", "exit"))
