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
                       push: bool, speculative: int = 0, marks: list | None = None) -> tuple[float, Decoder]:
    """Seconds to decode `tokens` greedy tokens (prefill included) on a new session, and the decoder.
    `marks` gets (time, tokens so far) after every step."""
    decoder = Decoder(head, tokenizer, SamplingParams(max_new_tokens=tokens, temperature=0), prompt,
                      eos_ids=set(), speculative=speculative)
    on_step = None if marks is None else (lambda d: marks.append((time.perf_counter(), len(d.token_ids))))
    async with InferenceSession(client, decoder.max_length, push=push) as session:
        t0 = time.perf_counter()
        await decode(decoder, session.forward, on_step=on_step)
        return time.perf_counter() - t0, decoder


def steady_ms(marks: list[tuple[float, int]]) -> float:
    """ms per token from the third step on: no prefill, no first-step set-up (route, graph capture)."""
    (t0, n0), (t1, n1) = marks[min(2, len(marks) - 2)], marks[-1]
    return 1000 * (t1 - t0) / max(1, n1 - n0)


async def ms_per_token(client, head, tokenizer, prompt, tokens, push, speculative=0) -> dict:
    """Steady decoding ms/token of one session (after a warm-up session on the same route)."""
    await timed_decode(client, head, tokenizer, prompt, 3, push, speculative)
    marks: list = []
    _, decoder = await timed_decode(client, head, tokenizer, prompt, tokens, push, speculative, marks)
    return {"ms_per_token": steady_ms(marks), "tokens_per_round": decoder.tokens_per_round,
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
            marks: list[list] = [[] for _ in range(n)]
            steps0, batches0 = nodes[0].batcher.steps, nodes[0].batcher.batches
            async with trio.open_nursery() as nursery:
                for i in range(n):
                    nursery.start_soon(timed_decode, client, head, tokenizer, prompt, tokens, False, 0, marks[i])
            # the window in which every session decodes: all past their third step, none finished
            start = max(m[min(2, len(m) - 2)][0] for m in marks)
            end = min(m[-1][0] for m in marks)
            made = sum(sum(1 for t, _ in m if start < t <= end) for m in marks)
            steps = nodes[0].batcher.steps - steps0
            batches = max(1, nodes[0].batcher.batches - batches0)
            out[n] = {"tokens_per_s": made / max(end - start, 1e-9), "mean_batch": steps / batches}
            log(f"  {n} sessions: {out[n]['tokens_per_s']:.1f} tokens/s, mean batch {steps / batches:.2f}")
    return out
