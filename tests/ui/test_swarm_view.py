from corolla.app.swarm.snapshot import SwarmSnapshot
from corolla.p2p.names import peer_name, short_id
from corolla.p2p.records import ServerInfo
from corolla.ui.server_table import COLUMNS
from corolla.ui.swarm_view import SwarmView


def server(peer: str, start: int, end: int, **fields) -> ServerInfo:
    return ServerInfo(peer, "SmolLM2", "hash", start, end, **fields)


def test_coverage_table_and_missing_blocks(qtbot):
    view = SwarmView()
    qtbot.addWidget(view)
    view.show()
    snap = SwarmSnapshot("SmolLM2", 12, [
        server("12D3KooWAAA", 0, 6, throughput=4.5, active_sessions=1, rtt_ms=3.2),
        server("12D3KooWBBB", 3, 8, throughput=2.0, quant="int4"),
    ], left=[server("12D3KooWCCCCCCCCCCC", 8, 9, nickname="carol")])
    view.show_snapshot(snap)
    assert view.coverage.counts == [1, 1, 1, 2, 2, 2, 1, 1, 0, 0, 0, 0]
    assert "2 servers online" in view.summary.text()
    assert "no server holds blocks 8–11" in view.summary.text()
    assert view.servers.rowCount() == 3
    assert view.servers.item(0, 1).text() == "0–5" and view.servers.item(0, 3).text() == "4.5"
    assert view.servers.item(0, 5).text() == "3.2 ms"
    precision = COLUMNS.index("Precision")
    assert [view.servers.item(r, precision).text() for r in range(3)] == ["float32", "float32+int4", "–"]
    # a server that just left: its last known blocks, greyed, by the same name as elsewhere
    assert [view.servers.item(2, c).text() for c in (0, 1, 2)] == ["carol (…CCCCCCCC)", "8", "left"]
    assert view.servers.peers()[2] == "12D3KooWCCCCCCCCCCC"
    assert view.servers.item(0, 0).text() == "…3KooWAAA" and view.servers.item(0, 0).toolTip() == "12D3KooWAAA"
    assert view.grab().width() > 0  # paints without error
    view.show_snapshot(SwarmSnapshot("SmolLM2", 4, [server("p", 0, 4)]))
    assert "every block is served" in view.summary.text()


def test_each_server_shows_its_links_to_the_next_servers(qtbot):
    """What each server measured to the servers of the next blocks: round trip and throughput, the
    nearest first, by the names the table uses; links to servers not listed by their short id."""
    view = SwarmView()
    qtbot.addWidget(view)
    a = server("12D3KooWAAA", 0, 4, nickname="alice",
               next_rtt_ms={"12D3KooWBBB": 75.2, "12D3KooWCCC": 35.4, "12D3KooWDDD": 90.0},
               next_mbps={"12D3KooWCCC": 17.6})
    view.show_snapshot(SwarmSnapshot("SmolLM2", 8, [a, server("12D3KooWBBB", 4, 8, nickname="bob"),
                                                     server("12D3KooWCCC", 4, 8)]))
    column = view.servers.horizontalHeaderItem(7).text()
    cells = {peer: view.servers.item(r, 7) for r, peer in enumerate(view.servers.peers())}
    assert column == "Next servers"
    assert cells["12D3KooWAAA"].text() == f"{peer_name('12D3KooWCCC')}: 35 ms, 18 Mbit/s; bob (…3KooWBBB): 75 ms …"
    assert cells["12D3KooWAAA"].toolTip().splitlines()[1:] == [
        f"{peer_name('12D3KooWCCC')}: 35 ms, 18 Mbit/s", "bob (…3KooWBBB): 75 ms", f"{peer_name('12D3KooWDDD')}: 90 ms"]
    assert cells["12D3KooWBBB"].text() == "–" and cells["12D3KooWBBB"].toolTip() == ""


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
    assert paths == {direct: "direct", punched: "hole-punched", hidden: f"relayed via {short_id(relay)}",
                     away: "not connected"}
    view = SwarmView()
    qtbot.addWidget(view)
    view.show_snapshot(SwarmSnapshot("SmolLM2", 12, servers, paths=paths))
    reached = {peer: view.servers.item(r, 6).text() for r, peer in enumerate(view.servers.peers())}
    assert reached == paths
    assert view.servers.horizontalHeaderItem(6).text() == "Reached"

    panel = RoutePanel()
    qtbot.addWidget(panel)
    panel.show_route([RouteHop(s, s.start, s.end) for s in servers[:3]])
    assert [panel.table.item(r, 3).text() for r in range(3)] == ["–"] * 3  # not known yet
    panel.show_paths(paths)
    assert [panel.table.item(r, 3).text() for r in range(3)] == ["direct", "hole-punched", f"relayed via {short_id(relay)}"]
    assert "another peer" in panel.table.item(2, 3).toolTip()
    panel.show_route([RouteHop(servers[2], 8, 12)])  # a reroute keeps what is known of each server
    assert panel.table.item(0, 3).text() == f"relayed via {short_id(relay)}"


def test_corolla_swarm_lists_the_same_links():
    from corolla.app.commands.swarm import link_lines

    a = server("12D3KooWAAA", 0, 4, nickname="alice", next_rtt_ms={"12D3KooWBBB": 75.2, "12D3KooWCCC": 35.4},
               next_mbps={"12D3KooWCCC": 17.6})
    lines = link_lines([a, server("12D3KooWBBB", 4, 8, nickname="bob")])
    assert [line.split() for line in lines[2:]] == [
        ["alice", "(…3KooWAAA)", "->", "…3KooWCCC", "35.4", "17.6"],
        ["alice", "(…3KooWAAA)", "->", "bob", "(…3KooWBBB)", "75.2", "?"]]
    assert link_lines([server("12D3KooWBBB", 4, 8)]) == []
