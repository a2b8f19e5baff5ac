import threading

import pytest
import trio

from corolla.ui.bridge.trio_thread import TrioThread, TrioThreadError


@pytest.fixture
def loop(qapp):
    t = TrioThread().start()
    yield t
    t.stop()


def test_results_come_back_in_the_gui_thread(qtbot, loop):
    seen = {}

    async def work(x):
        seen["worker"] = threading.current_thread()
        await trio.sleep(0.01)
        return x * 2

    def done(result):
        seen["result"] = result
        seen["callback"] = threading.current_thread()

    loop.spawn(work, 21, on_done=done)
    qtbot.waitUntil(lambda: "result" in seen, timeout=5000)
    assert seen["result"] == 42
    assert seen["callback"] is threading.main_thread()
    assert seen["worker"] is not threading.main_thread()


def test_errors_and_cancellation_are_reported(qtbot, loop):
    got = []

    async def fails():
        raise ValueError("bad input")

    loop.spawn(fails, on_error=lambda exc: got.append(("error", str(exc))))
    job = loop.spawn(trio.sleep_forever, on_cancelled=lambda: got.append(("cancelled", "")))
    job.cancel()
    qtbot.waitUntil(lambda: len(got) == 2, timeout=5000)
    assert sorted(got) == [("cancelled", ""), ("error", "bad input")]
    assert job.done.wait(1)


def test_stop_ends_running_tasks_and_the_thread(qapp):
    t = TrioThread().start()
    job = t.spawn(trio.sleep_forever)
    t.stop(timeout=5)
    assert job.done.is_set()
    assert not t.running
    with pytest.raises(TrioThreadError):
        t.spawn(trio.sleep, 0)
