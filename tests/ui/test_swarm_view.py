from app.swarm_snapshot import ServerRow, SwarmSnapshot
from ui.swarm_view import SwarmView


def test_coverage_table_and_missing_blocks(qtbot):
    view = SwarmView()
    qtbot.addWidget(view)
    view.show()
    snap = SwarmSnapshot("SmolLM2", 12, [
        ServerRow("12D3KooWAAA", 0, 6, throughput=4.5, sessions=1, latency_ms=3.2),
        ServerRow("12D3KooWBBB", 3, 8, throughput=2.0, sessions=0),
        ServerRow("12D3KooWCCC", 0, 0, state="not answering"),
    ])
    view.show_snapshot(snap)
    assert view.coverage.counts == [1, 1, 1, 2, 2, 2, 1, 1, 0, 0, 0, 0]
    assert "2 servers online" in view.summary.text()
    assert "no server holds blocks 8–11" in view.summary.text()
    assert view.servers.rowCount() == 3
    assert view.servers.item(1, 1).text() == "0–5" and view.servers.item(1, 3).text() == "4.5"
    assert view.grab().width() > 0  # paints without error
    view.show_snapshot(SwarmSnapshot("SmolLM2", 4, [ServerRow("p", 0, 4)]))
    assert "every block is served" in view.summary.text()
