"""Running a server node: load a span, join the swarm, announce it, serve until told to stop."""

from __future__ import annotations

import logging
import random
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import trio

from corolla.app.serve.stats import ServedStats, load_stats, save_stats, stats_file
from corolla.app.serve.status import Event, ServerStatus, StatusWriter
from corolla.app.trio_run import run_trio
from corolla.core.dtypes import DTYPES
from corolla.core.errors import CorollaError
from corolla.p2p.discovery import announce
from corolla.p2p.host import Peer, open_peer
from corolla.p2p.identity import EPHEMERAL, claim_identity_path, identity_key
from corolla.p2p.names import blocks_text
from corolla.p2p.records import LEAVING, ONLINE, BlockRange

log = logging.getLogger("corolla.node")

PRUNE_PERIOD = 5.0  # s between sweeps of DHT clients out of the routing table
STATS_PERIOD = 10.0  # s between reports of the contribution stats while nothing else changes


@dataclass
class NodeConfig:
    """Everything `corolla serve` is told. Times in seconds."""

    model: str = "default"
    blocks: BlockRange | None = None
    num_blocks: int | None = None
    initial_peers: list[str] = field(default_factory=list)
    host: str = "0.0.0.0"
    port: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    quant: str = "none"  # none, int8 or nf4 (bitsandbytes), int4 (CPU)
    max_sessions: int = 16
    cache_tokens: int = 8192
    identity: Path | None = None
    announce_period: float = 30.0
    drain_timeout: float = 10.0
    rebalance_period: float = 120.0  # 0: never move (always the case with explicit blocks)
    relay: str = "auto"  # relay circuits for hidden peers: auto (when reachable), on, off
    swarm_key: str | None = None  # a private swarm's key (64 hex digits), None: the open swarm
    nickname: str = ""  # shown to others beside this server's short id
    status_json: bool = False  # status messages on stdout (app/serve/status.py), words for people on stderr
    adapters: list[Path] = field(default_factory=list)  # PEFT LoRA adapter folders, each served under its name
    block_ms: float | None = None  # announced ms per block instead of a measured one (None: measure)


_people = None  # where say() writes (None: stdout); stderr when stdout carries the status channel


def say(text: str) -> None:
    """A line for the person running the node (flushed: people and test harnesses read it as it comes)."""
    print(text, file=_people or sys.stdout, flush=True)


def lan_address() -> str:
    """This machine's address on its default route (no packet is sent), or 127.0.0.1."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))
            return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"


def printable_addrs(peer: Peer, host: str) -> list[str]:
    if host != "0.0.0.0":
        return peer.addrs
    return sorted(set(peer.public_addrs(lan_address()) + peer.public_addrs("127.0.0.1")))


def check_device(device: str, dtype: str) -> torch.dtype:
    if dtype not in DTYPES:
        raise CorollaError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CorollaError("--device cuda was asked for, but this machine has no usable CUDA GPU; use --device cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise CorollaError(f"unknown device {device!r}; use cpu or cuda")
    return DTYPES[dtype]


async def stop_signals(cancel: Callable[[], None], *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Call `cancel` on Ctrl-C, SIGTERM, or Ctrl-Break (how a Windows parent asks a child to stop)."""
    wanted = [getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGBREAK") if hasattr(signal, name)]
    with trio.open_signal_receiver(*wanted) as signals:
        task_status.started()
        async for _ in signals:
            cancel()
            return


async def run_bootstrap(host: str, port: int, identity: Path | None, relay: str = "auto",
                        swarm_key: str | None = None) -> None:
    """A DHT-only peer that helps others find each other (and, unless `relay` is 'off', relays for
    peers behind NATs); prints its address and waits."""
    key = identity_key(identity, "bootstrap")
    async with open_peer(key, host=host, port=port, dht_server=True, relay=relay, swarm_key=swarm_key) as peer:
        for addr in printable_addrs(peer, host):
            say(f"bootstrap peer listening on {addr}")
        say("join with: --initial-peers " + printable_addrs(peer, host)[0])
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(stop_signals, stop.set)
            nursery.start_soon(_prune_clients_forever, peer)
            await stop.wait()
            nursery.cancel_scope.cancel()
        say("bootstrap peer stopped")


async def _prune_clients_forever(peer: Peer, period: float = PRUNE_PERIOD) -> None:
    while True:
        await trio.sleep(period)
        dropped = peer.prune_clients()
        if dropped:
            log.debug("dropped %d DHT clients from the routing table", dropped)


async def run_server(cfg: NodeConfig) -> None:
    """Serve a span until Ctrl-C/SIGTERM; then stop taking sessions, let open ones finish, exit."""
    from corolla.core.model import ModelInfo, resolve_model
    from corolla.p2p.server import ServerNode

    status = StatusWriter(enabled=cfg.status_json)
    dtype = check_device(cfg.device, cfg.dtype)
    path = await trio.to_thread.run_sync(resolve_model, cfg.model)
    model = ModelInfo.load(path)
    identity = cfg.identity
    if identity is None:  # this installation's server key: claimed now, so its stats file is known
        identity = claim_identity_path("server")
    key = identity_key(identity, "server")
    stats_path = None if str(identity) == EPHEMERAL else stats_file(identity)
    async with open_peer(key, host=cfg.host, port=cfg.port, initial_peers=cfg.initial_peers,
                         relay=cfg.relay, check_reachability=True, swarm_key=cfg.swarm_key) as peer:
        say(network_summary(peer))
        blocks = await choose_blocks(cfg, peer, model)
        status.send(ServerStatus(Event.LOADING, blocks.start, blocks.end))
        n = torch.get_num_threads()
        threads = f" with {n} CPU thread{'s' if n != 1 else ''}" if cfg.device == "cpu" else ""
        say(f"loading {blocks_text(blocks.start, blocks.end)} of {model.name} ({model.num_blocks} blocks) on {cfg.device}{threads}")
        span = await trio.to_thread.run_sync(load_span, cfg, path, blocks, dtype)
        node = ServerNode(span, model.name, model.hash, cache_tokens=cfg.cache_tokens,
                          max_sessions=cfg.max_sessions)
        node.declared_block_ms = cfg.block_ms
        await trio.to_thread.run_sync(node.measure_throughput)
        node.attach(peer.host)
        node.reachability = peer.reachability
        node.nickname, node.model_blocks = cfg.nickname, model.num_blocks
        node.relays = [str(a) for a in peer.nat.circuit_addrs] if peer.nat else []
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(stop_signals, stop.set)
            await nursery.start(_announce_forever, peer, node, cfg.announce_period)
            nursery.start_soon(_prune_clients_forever, peer)
            nursery.start_soon(_measure_links_forever, peer, node, model.num_blocks,
                               min(max(2 * cfg.announce_period, 30.0), 60.0))
            if cfg.blocks is None and cfg.rebalance_period > 0:
                nursery.start_soon(_rebalance_forever, cfg, peer, node, model, dtype, status)
            nursery.start_soon(_report_sessions, node, status)
            stats = StatsKeeper(node, status, stats_path)
            nursery.start_soon(stats.run)
            say(f"serving {blocks_text(blocks.start, blocks.end)} of {model.name} (hash {model.hash}) as {peer.peer_id}; "
                f"{node.block_ms:.2f} ms per block per token")
            if span.adapters.names:
                say("LoRA adapters: " + ", ".join(span.adapters.names))
            for addr in printable_addrs(peer, cfg.host):
                say(f"server listening on {addr}")
            join = "" if cfg.initial_peers else printable_addrs(peer, cfg.host)[0]
            if join:
                say("started a new swarm; others join with: --initial-peers " + join)
            status.send(ServerStatus(Event.SERVING, blocks.start, blocks.end, sessions=node.active_sessions,
                                     peer_id=str(peer.peer_id), join_address=join))
            await stop.wait()
            status.send(ServerStatus(Event.STOPPING, sessions=node.active_sessions))
            say(f"leaving the swarm: no new sessions; waiting up to {cfg.drain_timeout:.0f} s "
                f"for {node.active_sessions} open session(s)")
            await node.leave(cfg.drain_timeout)
            stats.report()
            nursery.cancel_scope.cancel()
    say("server stopped")
    status.send(ServerStatus(Event.STOPPED))


def load_span(cfg: NodeConfig, path: Path, blocks: BlockRange, dtype: torch.dtype):
    """Blocks `blocks` of the model at `path` as the config says, with its LoRA adapters attached."""
    from corolla.core.adapters import load_adapter
    from corolla.core.span import Span

    span = Span.load(path, blocks.start, blocks.end, device=cfg.device, dtype=dtype, quant=cfg.quant)
    for folder in cfg.adapters:
        load_adapter(span, folder)
    return span


async def _report_sessions(node, status: StatusWriter) -> None:
    """Tell the status channel each time the number of open sessions changes."""
    last = node.active_sessions
    while True:
        await node.sessions_changed.wait()
        if node.active_sessions != last:
            last = node.active_sessions
            status.send(ServerStatus(Event.SESSIONS, sessions=last))


class StatsKeeper:
    """This identity's totals (app/serve/stats.py): earlier runs' plus this one's, reported on the
    status channel and saved when sessions open or close, and every STATS_PERIOD s while serving."""

    def __init__(self, node, status: StatusWriter, path: Path | None) -> None:
        self.node, self.status, self.path = node, status, path
        self.before = load_stats(path) if path is not None else ServedStats()
        self.since = time.monotonic()

    def totals(self) -> ServedStats:
        return self.before.plus(ServedStats(self.node.tokens_served, self.node.sessions_served,
                                            time.monotonic() - self.since))

    def report(self) -> ServedStats:
        now = self.totals()
        if self.path is not None:
            try:
                save_stats(self.path, now)
            except OSError as exc:  # the counts go on; only keeping them failed
                log.warning("cannot save contribution stats to %s: %s", self.path, exc)
        self.status.send(ServerStatus(Event.STATS, tokens_served=now.tokens, sessions_served=now.sessions,
                                      seconds_online=int(now.seconds_online)))
        return now

    async def run(self) -> None:
        while True:
            self.report()
            with trio.move_on_after(STATS_PERIOD):
                await self.node.sessions_changed.wait()


async def _rebalance_forever(cfg: NodeConfig, peer: Peer, node, model, dtype: torch.dtype,
                             status: StatusWriter | None = None) -> None:
    """Now and then, move to where the swarm needs blocks most, if that is a large gain (see
    better_span); drain first: the server says it is leaving and clients move off between steps."""
    from corolla.p2p.client import SwarmClient
    from corolla.p2p.placement import better_span

    client = SwarmClient(peer, model.name, model.hash, model.num_blocks)
    status = status or StatusWriter(enabled=False)
    while True:
        await trio.sleep(cfg.rebalance_period * random.uniform(0.8, 1.2))  # jitter: servers don't move as a herd
        servers, _ = await client.all_servers()
        me = node.info()
        target = better_span([s for s in servers if s.peer_id != me.peer_id] + [me], me, model.num_blocks)
        if target is None:
            continue
        say(f"moving to {blocks_text(target.start, target.end)}: waiting for {node.active_sessions} open session(s) to move off")
        status.send(ServerStatus(Event.MOVING, target.start, target.end))
        node.state = LEAVING
        with trio.move_on_after(cfg.drain_timeout * 6):
            while node.active_sessions:
                await node.sessions_changed.wait()
        if node.active_sessions:
            node.state = ONLINE
            say("move cancelled: sessions are still open here")
            continue
        span = await trio.to_thread.run_sync(load_span, cfg, model.path, target, dtype)
        node.replace_span(span)
        await trio.to_thread.run_sync(node.measure_throughput)
        node.state = ONLINE
        await announce(peer, model.name, model.hash, node.blocks)
        status.send(ServerStatus(Event.SERVING, target.start, target.end, sessions=node.active_sessions,
                                 peer_id=str(peer.peer_id)))
        say(f"serving {blocks_text(target.start, target.end)} of {model.name} (hash {model.hash}) as {peer.peer_id}; "
            f"{node.block_ms:.2f} ms per block per token")


async def _announce_forever(peer: Peer, node, period: float, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Announce the span now and every `period` s (DHT records cannot be withdrawn or expire
    soon, so clients confirm liveness themselves; re-announcing keeps records on new DHT peers)."""
    first = True
    while True:
        if node.state == ONLINE:
            accepted = await announce(peer, node.model_name, node.model_hash, node.blocks)
            log.debug("announced %d blocks (%d accepted)", len(node.blocks), accepted)
        if first:
            task_status.started()
            first = False
        await trio.sleep(period)


async def _measure_links_forever(peer: Peer, node, num_blocks: int, period: float) -> None:
    """Keep node.next_rtt_ms (ms to the servers of the next blocks) and node.next_mbps (Mbit/s to
    them, probed far less often) fresh, every `period` s after three quicker first looks: servers come
    and go, and routing trusts old round trips only as far as the client's own round trips allow
    (p2p/routing.py:link_rtt_ms). Each look is a DHT lookup: not more often than every 30 s after those."""
    from corolla.p2p.links import LinkMeter

    meter = LinkMeter()
    first = [5.0, 10.0, 20.0]  # s: servers started together see each other within seconds
    while True:
        await trio.sleep(min(first.pop(0) if first else period, period) * random.uniform(0.8, 1.2))
        await meter.look(peer, node.model_name, node.model_hash, node.span.end, num_blocks)
        node.next_rtt_ms, node.next_mbps = dict(meter.rtt_ms), dict(meter.mbps)
        log.debug("links to the next servers: %s ms, %s Mbit/s", node.next_rtt_ms, node.next_mbps)


async def choose_blocks(cfg: NodeConfig, peer: Peer, model) -> BlockRange:
    if cfg.blocks is not None:
        if cfg.blocks.end > model.num_blocks:
            raise CorollaError(f"blocks {cfg.blocks} are outside {model.name}, which has {model.num_blocks} blocks")
        return cfg.blocks
    from corolla.p2p.client import SwarmClient
    from corolla.p2p.placement import choose_span

    n = min(cfg.num_blocks or model.num_blocks, model.num_blocks)
    servers, _ = await SwarmClient(peer, model.name, model.hash, model.num_blocks).all_servers()
    return choose_span(servers, model.num_blocks, n)


def network_summary(peer: Peer) -> str:
    """One line for the operator: can others dial this server, and through which relays if not."""
    relays = [str(a) for a in peer.nat.circuit_addrs] if peer.nat else []
    relaying = " and relays for peers behind NATs" if peer.nat and peer.nat.hop else ""
    if relays:
        return f"reachability: {peer.reachability}; reachable through " + ", ".join(relays) + relaying
    return f"reachability: {peer.reachability}{relaying}"


def main_bootstrap(host: str, port: int, identity: Path | None, relay: str = "auto",
                   swarm_key: str | None = None) -> int:
    run_trio(run_bootstrap, host, port, identity, relay, swarm_key)
    return 0


def main_server(cfg: NodeConfig) -> int:
    global _people
    if cfg.status_json:
        _people = sys.stderr
    try:
        run_trio(run_server, cfg)
    except Exception as exc:  # the app learns why on the status channel, then the CLI reports it as usual
        why = str(exc) if isinstance(exc, CorollaError) else f"{type(exc).__name__}: {exc}"
        StatusWriter(enabled=cfg.status_json).send(ServerStatus(Event.ERROR, message=why))
        raise
    sys.stdout.flush()
    return 0
