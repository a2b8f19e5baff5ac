from corolla.app.swarm.snapshot import SwarmSnapshot
from corolla.p2p.names import peer_name
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


def test_this_pcs_server_is_marked_with_its_stats(qtbot):
    from corolla.app.serve.stats import ServedStats

    view = SwarmView()
    qtbot.addWidget(view)
    view.show_snapshot(SwarmSnapshot("SmolLM2", 8, [server("12D3KooWAAA", 0, 4), server("12D3KooWMINE", 4, 8)]))
    assert view.servers.own_rows() == [] and not view.own.isVisible()
    view.show_own("12D3KooWMINE", ServedStats(1234, 5, 9000))
    assert view.servers.own_rows() == [1]
    assert view.servers.item(1, 0).text() == peer_name("12D3KooWMINE") + " (this PC)" and view.servers.item(1, 0).font().bold()
    assert not view.servers.item(0, 0).font().bold()
    assert view.servers.peers() == ["12D3KooWAAA", "12D3KooWMINE"]  # the ids themselves, unmarked
    assert "1,234 tokens · 5 sessions · 2.5 h online" in view.own.text()
    view.show_snapshot(SwarmSnapshot("SmolLM2", 8, [server("12D3KooWMINE", 0, 8)]))  # a refresh keeps the mark
    assert view.servers.own_rows() == [0]
    view.show_own("", ServedStats(1234, 5, 9000))  # stopped serving: nothing marked, the totals stay
    assert view.servers.own_rows() == [] and "not serving now" in view.own.text()
