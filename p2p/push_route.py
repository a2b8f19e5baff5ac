"""A step pushed along the route: the client sends it to the first server with the rest of the route;
each server passes its output straight to the next (p2p/steps.py) and gives the client a copy, which
the client keeps for failover replay; the last server's answer is the step's output.

Where a server could not reach its successor, the client sends the step there itself and pushing goes
on from there. After a hop fails, the client replaces it (replay) and carries this step and every
later one itself (InferenceSession.forward), exactly as without push: the text is the same either way.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import torch
from libp2p.peer.id import ID

from corolla.p2p.hop import HopFailure, HopSession
from corolla.p2p.nat import is_circuit


class InferenceSession(Protocol):
    """What a pushed step needs of p2p/session.py's InferenceSession (which imports this module)."""

    client: Any
    hops: list[HopSession]
    history: dict[int, list[torch.Tensor]]
    pushed_steps: int

    async def recover(self, k: int, failure: HopFailure, tokens: int, sent: float) -> tuple[int, torch.Tensor]: ...

    def fresh_step(self) -> int: ...

    def answered(self, hop: HopSession, out: torch.Tensor) -> None: ...

MAX_ADDRS = 8  # addresses of one hop passed along (the server refuses more)


def push_target(session: InferenceSession, hop: HopSession) -> dict[str, Any]:
    """What the server before `hop` needs to push to it: peer, addresses, session and its key."""
    try:
        addrs = session.client.peer.host.get_peerstore().addrs(ID.from_base58(hop.hop.peer_id))
    except Exception:  # noqa: BLE001 - an unknown peer has no addresses; the server may know some
        addrs = []
    direct = [str(a) for a in addrs if not is_circuit(a)][:MAX_ADDRS]
    return {"peer": hop.hop.peer_id, "addrs": direct, "session": hop.session_id, "key": hop.push_key}


async def pushed_forward(session: InferenceSession, hidden: torch.Tensor, start: int, seq: int
                         ) -> tuple[torch.Tensor, int]:
    """Push step `seq` (`hidden` [1, tokens, hidden_size] at position `start`) along the route; return
    the output and len(hops), or, after a failed hop was replaced, the replacement's output and the
    index of the hop the client carries the step on to. Where a server could not reach the next,
    the client sends the step there itself, and pushing goes on from there. Every answer read is
    stored as the next hop's replay input."""
    hops = list(session.hops)
    route = [push_target(session, h) for h in hops[1:]]
    x, pushed, carried = hidden, False, False
    sent = time.perf_counter()
    for i, hop in enumerate(hops):
        session.history[hop.hop.start].append(x)
        try:
            if not pushed:  # the first hop, or the server before could not reach this one
                if i > 0:
                    seq = session.fresh_step()  # should the push have arrived after all, it is void
                    carried = True
                await hop.send(x, start, seq, route[i:] or None)
            x, header = await hop.receive(x, seq)
        except HopFailure as failure:
            replaced, x = await session.recover(i, failure, x.shape[1], sent)
            return x, i + replaced
        session.answered(hop, x)
        pushed = header.get("pushed") is True
    session.pushed_steps += not carried
    return x, len(hops)
