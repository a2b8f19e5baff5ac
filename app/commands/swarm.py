"""`corolla swarm`: the health of a swarm for one model (who serves which blocks, how well)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("swarm", help="show which servers cover which blocks of a model")
    p.add_argument("--model", default="default", help="'default', a model folder or a hub id")
    p.add_argument("--initial-peers", nargs="+", required=True, help="multiaddrs of swarm peers to join")
    p.add_argument("--punch-wait", type=float, default=8.0,
                   help="seconds to give hole punching to servers behind NATs before reporting how each "
                        "is reached (direct, hole-punched, relayed)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from corolla.app.trio_run import run_trio
    from corolla.core.model import ModelInfo, resolve_model

    model = ModelInfo.load(resolve_model(args.model))
    print(run_trio(swarm_report, model.name, model.hash, model.num_blocks, args.initial_peers, args.punch_wait),
          flush=True)
    return 0


async def swarm_report(model_name: str, model_hash: str, num_blocks: int, initial_peers: list[str],
                       punch_wait: float = 0.0) -> str:
    from corolla.p2p.client import SwarmClient, open_client_peer
    from corolla.p2p.names import block_span, format_blocks, short_id
    from corolla.p2p.nat import describe_path, wait_for_punches

    async with open_client_peer(initial_peers) as peer:
        live, dead = await SwarmClient(peer, model_name, model_hash, num_blocks).all_servers()
        await wait_for_punches(peer.host, [s.peer_id for s in live], punch_wait)
        paths = {s.peer_id: describe_path(peer.host, s.peer_id, s.reachability) for s in live}
    lines = [f"model {model_name} (hash {model_hash}), {num_blocks} blocks, "
             f"{len(live)} live server(s)" + (f", {len(dead)} announced but not answering" if dead else "")]
    lines.append("")
    lines.append("block  servers")
    coverage = [sum(1 for s in live if s.start <= b < s.end and s.state == "online") for b in range(num_blocks)]
    for b, n in enumerate(coverage):
        lines.append(f"{b:>5}  {n}")
    lines.append("")
    lines.append(f"{'peer id':<54} {'server':<30} {'blocks':>7} {'state':<8} {'precision':<13} {'tok/s':>8} "
                 f"{'ms/blk':>7} {'free cache':>10} {'sessions':>8} {'rtt ms':>7}  reached")
    for s in live:
        lines.append(f"{s.peer_id:<54} {s.name:<30} {block_span(s.start, s.end):>7} {s.state:<8} "
                     f"{s.precision_text:<13} "
                     f"{s.throughput:>8.1f} {s.block_ms:>7.2f} {s.free_cache_tokens:>10} "
                     f"{s.active_sessions:>3}/{s.max_sessions:<4} {s.rtt_ms:>7.1f}  {paths[s.peer_id]}")
    for pid in dead:
        lines.append(f"{pid:<54} {short_id(pid):<30} {'?':>7} {'no reply':<8}")
    lines.extend(link_lines(live))
    adapters = sorted({name for s in live for name in s.adapters})
    if adapters:  # what `generate --adapter NAME` may pick, and who offers it
        lines.append("")
        lines.append("LoRA adapters: " + "; ".join(
            f"{name} ({', '.join(block_span(s.start, s.end) for s in live if name in s.adapters)})" for name in adapters))
    missing = [b for b, n in enumerate(coverage) if n == 0]
    lines.append("")
    lines.append(f"uncovered blocks: {format_blocks(missing) if missing else 'none'}")
    return "\n".join(lines)


def link_lines(servers) -> list[str]:
    """What each server measured to the servers of the blocks after its span (round trip, and the
    throughput of a prefill-sized transfer when probed): what pushing hidden states along pays."""
    from corolla.p2p.names import peer_name

    names = {s.peer_id: s.name for s in servers}
    measured = [s for s in servers if s.next_rtt_ms]
    if not measured:
        return []
    lines = ["", f"links between servers (as each measured them)  {'rtt ms':>7} {'Mbit/s':>8}"]
    for s in measured:
        for pid, rtt, mbps in s.links():
            link = f"{s.name} -> {names.get(pid) or peer_name(pid, '')}"
            lines.append(f"{link:<47} {rtt:>7.1f} {'?' if mbps is None else f'{mbps:.1f}':>8}")
    return lines
