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
    ], silent=["12D3KooWCCC"])
    view.show_snapshot(snap)
    assert view.coverage.counts == [1, 1, 1, 2, 2, 2, 1, 1, 0, 0, 0, 0]
    assert "2 servers online" in view.summary.text()
    assert "no server holds blocks 8–11" in view.summary.text()
    assert view.servers.rowCount() == 3
    assert view.servers.item(0, 1).text() == "0–5" and view.servers.item(0, 3).text() == "4.5"
    assert view.servers.item(0, 5).text() == "3.2 ms"
    assert [view.servers.item(2, c).text() for c in (0, 1, 2)] == ["12D3KooWCCC", "?", "not answering"]
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


def real_paths() -> tuple[dict[str, str], list[ServerInfo], str]:
    """Real peers on 127.0.0.1: a relay, a server the client dials directly, one that says it is behind a
    NAT (dialled directly too: what a hole punch leaves), one reached through the relay's circuit, and
    one the client never dials. Returns reached_by's answer, the servers and the relay's peer id."""
    import multiaddr
    import trio
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.id import ID
    from libp2p.relay.circuit_v2.dcutr import MAX_HOLE_PUNCH_ATTEMPTS

    from corolla.app.swarm.snapshot import reached_by
    from corolla.p2p.host import open_peer, parse_peer_addr

    async def main():
        async with open_peer(create_new_key_pair(), host="127.0.0.1", relay="on") as relay, \
                open_peer(create_new_key_pair(), host="127.0.0.1", initial_peers=relay.addrs[:1]) as direct, \
                open_peer(create_new_key_pair(), host="127.0.0.1", initial_peers=relay.addrs[:1]) as punched, \
                open_peer(create_new_key_pair(), host="127.0.0.1", dht_server=False) as hidden, \
                open_peer(create_new_key_pair(), host="127.0.0.1") as away, \
                open_peer(create_new_key_pair(), host="127.0.0.1", dht_server=False,
                          initial_peers=relay.addrs[:1]) as client:
            for p in (direct, punched):
                await client.host.connect(parse_peer_addr(p.addrs[0]))
            await hidden.connect(parse_peer_addr(relay.addrs[0]))  # no DHT walk: it dials nobody else
            assert await hidden.nat.reserve(relay.host.get_id(), multiaddr.Multiaddr(relay.addrs[0]))
            circuit = next(a for a in hidden.addrs if "/p2p-circuit" in a)
            # On one machine DCUtR replaces a relayed connection within milliseconds: no punching here
            for a, b in ((client, hidden), (hidden, client)):
                a.nat.dcutr._hole_punch_attempts[b.host.get_id()] = MAX_HOLE_PUNCH_ATTEMPTS
            client.host.get_peerstore().add_addrs(hidden.host.get_id(), [multiaddr.Multiaddr(circuit)], 600)
            assert not client.host.get_network().get_connections(hidden.host.get_id())
            await client.host.get_network().dial_peer(hidden.host.get_id())
            servers = [server(direct.peer_id, 0, 4, reachability="public"),
                       server(punched.peer_id, 4, 8, reachability="private"),
                       server(hidden.peer_id, 8, 12, reachability="private"),
                       server(away.peer_id, 0, 12, reachability="public")]
            paths = reached_by(client, servers)  # at once: DCUtR would soon replace the relayed connection
            assert ID.from_base58(hidden.peer_id) in client.host.get_network().connections
            return paths, servers, relay.peer_id

    return trio.run(main)


def test_the_swarm_view_and_route_panel_say_how_each_server_is_reached(qtbot):
    from corolla.p2p.routing import RouteHop
    from corolla.ui.route_panel import RoutePanel

    paths, servers, relay = real_paths()
    direct, punched, hidden, away = (s.peer_id for s in servers)
    assert paths == {direct: "direct", punched: "hole-punched", hidden: f"relayed via {relay[-8:]}",
                     away: "not connected"}
    view = SwarmView()
    qtbot.addWidget(view)
    view.show_snapshot(SwarmSnapshot("SmolLM2", 12, servers, paths=paths))
    reached = {view.servers.item(r, 0).text(): view.servers.item(r, 6).text() for r in range(view.servers.rowCount())}
    assert reached == paths
    assert view.servers.horizontalHeaderItem(6).text() == "Reached"

    panel = RoutePanel()
    qtbot.addWidget(panel)
    panel.show_route([RouteHop(s, s.start, s.end) for s in servers[:3]])
    assert [panel.table.item(r, 3).text() for r in range(3)] == ["–"] * 3  # not known yet
    panel.show_paths(paths)
    assert [panel.table.item(r, 3).text() for r in range(3)] == ["direct", "hole-punched", f"relayed via {relay[-8:]}"]
    assert "another peer" in panel.table.item(2, 3).toolTip()
    panel.show_route([RouteHop(servers[2], 8, 12)])  # a reroute keeps what is known of each server
    assert panel.table.item(0, 3).text() == f"relayed via {relay[-8:]}"
