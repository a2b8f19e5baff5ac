"""The headline's swarm columns: real Corolla servers (ServerNode on py-libp2p hosts, 127.0.0.1) in
this process over the span that bench/headline.py built, with an emulated RTT on every connection.

Servers share the GPU and this process's trio loop (each computes inline, as a server process
does); the client runs the project's own decoding loop (`decode`) through `InferenceSession`, with
the head on the GPU. The delay is bench/link_delay.py: RTT/2 on every TCP write of every peer.
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager

import trio
from libp2p.crypto.ed25519 import create_new_key_pair

from corolla.core.generation import Decoder, SamplingParams, decode
from corolla.core.head import ClientHead
from corolla.core.span import Span
from corolla.p2p.client import SwarmClient, open_client_peer
from corolla.p2p.discovery import announce
from corolla.p2p.fairness import PeerQuota
from corolla.p2p.host import open_peer
from corolla.p2p.server import ServerNode
from corolla.p2p.session import InferenceSession

HOST = "127.0.0.1"
NAME, HASH = "headline", "0" * 64


@asynccontextmanager
async def swarm(span: Span, servers: int):
    """A bootstrap peer and `servers` ServerNodes splitting `span` evenly; yields a SwarmClient."""
    n = span.num_blocks
    bounds = [round(i * n / servers) for i in range(servers + 1)]
    async with open_peer(create_new_key_pair(), host=HOST) as boot, trio.open_nursery() as nursery:
        boot_addr = boot.addrs[0]
        nodes = []
        for a, b in zip(bounds, bounds[1:]):
            node = ServerNode(span.sub(a, b), NAME, HASH, cache_tokens=1 << 16, max_sessions=64,
                              peer_quota=PeerQuota(sessions=64, cache_tokens=1 << 16))
            node.measure_throughput(steps=4)
            nodes.append(node)
            await nursery.start(_serve, node, boot_addr)
        async with open_client_peer([boot_addr], host=HOST) as peer:
            client = SwarmClient(peer, NAME, HASH, n)
            await client.servers(fresh=True)
            yield client, nodes
        nursery.cancel_scope.cancel()


async def _serve(node: ServerNode, boot_addr: str, task_status=trio.TASK_STATUS_IGNORED) -> None:
    async with open_peer(create_new_key_pair(), host=HOST, initial_peers=[boot_addr]) as peer:
        node.attach(peer.host)
        await announce(peer, node.model_name, node.model_hash, node.blocks)
        task_status.started()
        await trio.sleep_forever()


async def timed_decode(client: SwarmClient, head: ClientHead, tokenizer, prompt: list[int], tokens: int,
                       push: bool, speculative: int = 0) -> tuple[float, Decoder]:
    """Seconds to decode `tokens` greedy tokens (prefill included) on an open session, and the decoder."""
    decoder = Decoder(head, tokenizer, SamplingParams(max_new_tokens=tokens, temperature=0), prompt,
                      eos_ids=set(), speculative=speculative)
    async with InferenceSession(client, decoder.max_length, push=push) as session:
        t0 = time.perf_counter()
        await decode(decoder, session.forward)
        return time.perf_counter() - t0, decoder


async def ms_per_token(client, head, tokenizer, prompt, tokens, push, speculative=0) -> dict:
    """(time of `tokens` - time of 1) / (tokens - 1): decoding without the prefill, ms."""
    await timed_decode(client, head, tokenizer, prompt, 2, push, speculative)  # warm the route up
    one, _ = await timed_decode(client, head, tokenizer, prompt, 1, push, speculative)
    full, decoder = await timed_decode(client, head, tokenizer, prompt, tokens, push, speculative)
    return {"ms_per_token": 1000 * (full - one) / (tokens - 1), "tokens_per_round": decoder.tokens_per_round,
            "tokens": decoder.token_ids}


async def rtt_columns(span: Span, head: ClientHead, tokenizer, prompt: list[int], links, rtts, servers_list,
                      tokens_at, speculative: int, log) -> dict:
    """ms/token for each (servers, RTT, push, speculative) on one swarm per server count."""
    out: dict = {}
    for servers in servers_list:
        links.rtt_ms = 0
        async with swarm(span, servers) as (client, _):
            for rtt in rtts:
                links.rtt_ms = rtt
                for push in (False, True):
                    for k in (0, speculative):
                        r = await ms_per_token(client, head, tokenizer, prompt, tokens_at(rtt), push, k)
                        key = f"{servers}_servers_{rtt:g}ms_{'push' if push else 'client'}_spec{k}"
                        out[key] = {"ms_per_token": r["ms_per_token"], "tokens_per_round": r["tokens_per_round"]}
                        log(f"  {key}: {r['ms_per_token']:.1f} ms/token, {r['tokens_per_round']:.2f} tokens/round")
        links.rtt_ms = 0
    return out


async def concurrent_sessions(span: Span, head: ClientHead, tokenizer, prompt: list[int], counts, tokens: int,
                              log) -> dict:
    """Total tokens/s of n sessions decoding at once through one server holding every block."""
    out: dict = {}
    async with swarm(span, 1) as (client, nodes):
        await timed_decode(client, head, tokenizer, prompt, 4, False)
        for n in counts:
            done: list[float] = []
            steps0, batches0 = nodes[0].batcher.steps, nodes[0].batcher.batches
            t0 = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for _ in range(n):
                    async def one() -> None:
                        seconds, decoder = await timed_decode(client, head, tokenizer, prompt, tokens, False)
                        done.append(len(decoder.token_ids))
                    nursery.start_soon(one)
            seconds = time.perf_counter() - t0
            steps = nodes[0].batcher.steps - steps0
            batches = max(1, nodes[0].batcher.batches - batches0)
            out[n] = {"tokens_per_s": sum(done) / seconds, "mean_batch": steps / batches}
            log(f"  {n} sessions: {out[n]['tokens_per_s']:.1f} tokens/s, mean batch {steps / batches:.2f}")
    return out
