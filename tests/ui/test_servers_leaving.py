"""A server that leaves the swarm is shown as left for a short grace period, in the swarm view and the
chat's route panel, then disappears (the DHT keeps listing it for a day; the views must not)."""

import pytest

from corolla.app.swarm.connection import SwarmConnection
from corolla.p2p.routing import RouteHop
from corolla.ui.bridge.swarm_monitor import SwarmMonitor
from corolla.ui.bridge.trio_thread import TrioThread
from corolla.ui.route_panel import RoutePanel
from corolla.ui.swarm_view import SwarmView
from tests.models import make_tiny_model
from tests.ui.swarm_thread import ThreadSwarm

GRACE_S = 4.0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama", "llama")


def test_a_server_that_left_fades_then_disappears(qtbot, tiny):
    swarm = ThreadSwarm()
    app_thread = TrioThread().start()
    try:
        stays = swarm.add("stays", tiny, 0, 6)
        leaves = swarm.add("leaves", tiny, 0, 6, nickname="bob")
        connection = SwarmConnection([swarm.bootstrap], lambda: tiny, lambda: app_thread.nursery)
        monitor = SwarmMonitor(app_thread, connection, grace_s=GRACE_S, refresh_ms=500)
        view, route = SwarmView(), RoutePanel()
        qtbot.addWidget(view)
        qtbot.addWidget(route)
        monitor.snapshot.connect(view.show_snapshot)
        monitor.snapshot.connect(route.show_snapshot)
        monitor.watch(view)

        qtbot.waitUntil(lambda: {stays, leaves} <= set(view.servers.peers()), timeout=60_000)
        info = next(s for s in view.snapshot.servers if s.peer_id == leaves)
        assert info.nickname == "bob" and info.model_blocks == 6  # the info protocol carried them
        row = view.servers.peers().index(leaves)
        assert view.servers.item(row, 0).text() == f"bob (…{leaves[-8:]})"
        route.show_route([RouteHop(info, 0, 6)])
        assert route.peers() == [leaves]

        swarm.kill("leaves")
        qtbot.waitUntil(lambda: view.servers.state_of(leaves) == "left", timeout=30_000)
        row = view.servers.peers().index(leaves)
        assert view.servers.item(row, 1).text() == "0–5"  # its last known blocks, not "?"
        assert route.peers() == [leaves] and route.table.item(0, 2).text() == "left"
        assert view.coverage.counts == [1] * 6  # only the one that answers counts

        qtbot.waitUntil(lambda: leaves not in view.servers.peers(), timeout=int(GRACE_S * 1000) + 30_000)
        assert view.servers.peers() == [stays]
        assert route.peers() == [] and route.table.rowCount() == 0
        monitor.unwatch(view)
        assert not monitor._timer.isActive()  # nobody looks: no more lookups
    finally:
        app_thread.stop()
        swarm.close()
