"""One name per peer (short id plus the server's nickname) and one block notation, in the helper, at
the border (ServerInfo.from_wire, Settings, `corolla serve`) and where people read them."""

import pytest

from corolla.app.chat.terminal import _route_text
from corolla.app.contribute.state import server_arguments
from corolla.app.errors import SettingsError
from corolla.app.settings import Settings
from corolla.app.swarm.events import describe_event, plain_event
from corolla.p2p.errors import PeerUnavailableError, ProtocolError
from corolla.p2p.names import (
    NICKNAME_MAX,
    NicknameError,
    block_span,
    blocks_text,
    check_nickname,
    format_blocks,
    peer_name,
    short_id,
)
from corolla.p2p.records import ServerInfo
from corolla.p2p.routing import RouteHop
from corolla.p2p.session import FailoverEvent
from corolla.ui.route_panel import RoutePanel

ALICE = "12D3KooWQ1CsAbCdEfGhXuRRFrVM"
BOB = "12D3KooWZZZZZZZZZZZZZZZ9876543"


def info(peer: str, start: int, end: int, **fields) -> ServerInfo:
    return ServerInfo(peer, "SmolLM2", "hash", start, end, **fields)


def test_the_helper():
    assert short_id(ALICE) == "…XuRRFrVM"
    assert peer_name(ALICE) == "…XuRRFrVM"
    assert peer_name(ALICE, "alice-3090") == "alice-3090 (…XuRRFrVM)"
    assert block_span(10, 20) == "10–19" and block_span(5, 6) == "5"
    assert blocks_text(10, 20) == "blocks 10–19" and blocks_text(5, 6) == "block 5"
    assert format_blocks([0, 1, 2, 5, 7, 8]) == "0–2, 5, 7–8"
    assert check_nickname("Ünïcode rig 🚀") == "Ünïcode rig 🚀"
    for bad in ("x" * (NICKNAME_MAX + 1), "evil\u202eesrever", "two\nlines", "bell\x07", " padded", 42):
        with pytest.raises(NicknameError):
            check_nickname(bad)


def test_a_nickname_is_bounded_at_the_border():
    wire = info(ALICE, 0, 10, nickname="alice", model_blocks=30).to_wire()
    parsed = ServerInfo.from_wire(wire)
    assert (parsed.nickname, parsed.model_blocks, parsed.name) == ("alice", 30, "alice (…XuRRFrVM)")
    assert ServerInfo.from_wire({k: v for k, v in wire.items() if k != "nickname"}).name == "…XuRRFrVM"
    for bad in ("x" * 200, "\u202eadmin", "a\x1b[31mred", 7):
        with pytest.raises(ProtocolError, match="nickname"):
            ServerInfo.from_wire({**wire, "nickname": bad})
    with pytest.raises(ProtocolError, match="past the model"):
        ServerInfo.from_wire({**wire, "end": 31, "model_blocks": 30})


def test_settings_and_the_server_arguments_carry_the_nickname():
    s = Settings(nickname="alice-3090", blocks="0:10").validated()
    args = server_arguments(s)
    assert args[args.index("--nickname") + 1] == "alice-3090"
    assert "--nickname" not in server_arguments(Settings())
    with pytest.raises(SettingsError, match="nickname"):
        Settings(nickname="tab\there").validated()


def test_the_same_name_in_the_route_panel_the_terminal_and_the_notices(qtbot):
    hops = [RouteHop(info(ALICE, 0, 15, nickname="alice", rtt_ms=2.5), 0, 15), RouteHop(info(BOB, 15, 30), 15, 30)]
    panel = RoutePanel()
    qtbot.addWidget(panel)
    panel.show_route(hops)
    cells = [[panel.table.item(r, c).text() for c in range(3)] for r in range(2)]
    assert cells == [["alice (…XuRRFrVM)", "0–14", "2.5 ms"], ["…Z9876543", "15–29", "–"]]
    assert panel.table.item(0, 0).toolTip() == ALICE
    assert _route_text(hops) == "blocks 0–14 on alice (…XuRRFrVM) -> blocks 15–29 on …Z9876543"

    event = FailoverEvent(10, 20, ALICE, [BOB], 12, 0.31, "stream ended", nicknames={ALICE: "alice"})
    assert plain_event(event) == ("Server alice (…XuRRFrVM) stopped answering; blocks 10–19 moved to another "
                                  "(…Z9876543) and the reply continued (0.3 s).")
    assert describe_event(event).startswith("blocks 10–19 moved from alice (…XuRRFrVM) to …Z9876543 (stream ended)")
    assert str(PeerUnavailableError(BOB, "timed out")) == "peer …Z9876543 unavailable: timed out"


def test_settings_dialog_takes_a_nickname_and_refuses_a_bad_one(qtbot):
    from corolla.ui.settings_dialog import SettingsDialog

    dialog = SettingsDialog(Settings())
    qtbot.addWidget(dialog)
    dialog.nickname.setText("x" * (NICKNAME_MAX + 5))
    assert "nickname" in dialog.problems()[dialog.nickname]
    dialog.nickname.setText("  alice-3090 ")
    assert dialog.nickname not in dialog.problems()
    assert dialog.settings().nickname == "alice-3090"
