from corolla.app.swarm.snapshot import SwarmSnapshot
from corolla.p2p.records import ServerInfo
from corolla.ui.swarm_view import SwarmView


def server(peer: str, start: int, end: int, **fields) -> ServerInfo:
    return ServerInfo(peer, "SmolLM2", "hash", start, end, **fields)


def test_coverage_table_and_missing_blocks(qtbot):
    view = SwarmView()
    qtbot.addWidget(view)
    view.show()
    snap = SwarmSnapshot("SmolLM2", 12, [
        server("12D3KooWAAA", 0, 6, throughput=4.5, active_sessions=1, rtt_ms=3.2),
        server("12D3KooWBBB", 3, 8, throughput=2.0),
    ], left=[server("12D3KooWCCCCCCCCCCC", 8, 9, nickname="carol")])
    view.show_snapshot(snap)
    assert view.coverage.counts == [1, 1, 1, 2, 2, 2, 1, 1, 0, 0, 0, 0]
    assert "2 servers online" in view.summary.text()
    assert "no server holds blocks 8–11" in view.summary.text()
    assert view.servers.rowCount() == 3
    assert view.servers.item(0, 1).text() == "0–5" and view.servers.item(0, 3).text() == "4.5"
    assert view.servers.item(0, 5).text() == "3.2 ms"
    # a server that just left: its last known blocks, greyed, by the same name as elsewhere
    assert [view.servers.item(2, c).text() for c in (0, 1, 2)] == ["carol (…CCCCCCCC)", "8", "left"]
    assert view.servers.peers()[2] == "12D3KooWCCCCCCCCCCC"
    assert view.servers.item(0, 0).text() == "…3KooWAAA" and view.servers.item(0, 0).toolTip() == "12D3KooWAAA"
    assert view.grab().width() > 0  # paints without error
    view.show_snapshot(SwarmSnapshot("SmolLM2", 4, [server("p", 0, 4)]))
    assert "every block is served" in view.summary.text()


def test_a_failed_refresh_keeps_the_last_answer_and_says_so(qtbot):
    view = SwarmView()
    qtbot.addWidget(view)
    view.show_snapshot(SwarmSnapshot("SmolLM2", 4, [server("p", 0, 4)], error="no answer within 30 s"))
    assert view.servers.rowCount() == 1
    assert "last refresh failed (no answer within 30 s)" in view.summary.text()
    view.show_snapshot(SwarmSnapshot("", 0, [], error="not connected to a swarm"))
    assert "not connected to a swarm" in view.summary.text() and view.servers.rowCount() == 0
