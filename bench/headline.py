"""The headline on one GPU: a random Llama-2-70B-shaped model, every column measured in one run.

One model is built once on the GPU (random bf16 weights, the full 32000-token vocabulary, --blocks
blocks) and every column uses those same weights:
  (a) one transformers process, all on the GPU (greedy `generate`);
  (b) accelerate `cpu_offload` (weights in host RAM, moved to the GPU for every forward);
  (c) best-case streaming: each block's weights copied from pinned host RAM into one GPU block;
  (d) Corolla's compute path in this process: the client head on the GPU, then the blocks as 1, 2
      or 4 SpanRuntimes (the servers' runtime), hidden states handed over through host memory as
      a server receives and sends them; batched sessions (SpanRuntime.forward_many); speculative
      decoding by prompt lookup.
  (e) Corolla through real servers (bench/headline_net.py: ServerNodes on py-libp2p hosts in this
      process, sharing the span's weights) with 2 and 4 servers at each --rtts RTT (bench/link_delay.py
      delays every TCP write by RTT/2), client-mediated and with server-to-server push, without and
      with speculative decoding; and 1 vs 8 concurrent sessions through one server.
The 80-block figures are extrapolated from the measured per-block costs (network costs as measured).
Writes JSON to --out.

    python bench/headline.py [--blocks 16] [--tokens 64] [--out headline.json] [--small]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from headline_net import concurrent_sessions, rtt_columns  # noqa: E402
from headline_procs import separate_clients  # noqa: E402
from link_delay import delayed_links  # noqa: E402

from corolla.core.chain import LocalChain
from corolla.core.families import family_for
from corolla.core.generation import Decoder, SamplingParams, decode_in_process
from corolla.core.head import ClientHead
from corolla.core.span import Span, SpanRuntime

RTTS_MS = (0, 5, 50, 100)
FULL_BLOCKS = 80


def build(blocks: int, small: bool, device: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    shape = dict(hidden_size=256, intermediate_size=688, num_attention_heads=8, num_key_value_heads=2,
                 vocab_size=1000) if small else dict(hidden_size=8192, intermediate_size=28672,
                                                     num_attention_heads=64, num_key_value_heads=8, vocab_size=32000)
    config = LlamaConfig(**shape, num_hidden_layers=blocks, max_position_embeddings=4096, rms_norm_eps=1e-5,
                         eos_token_id=2, bos_token_id=1, pad_token_id=0, initializer_range=0.02)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(device):
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)
        try:
            model = LlamaForCausalLM(config).to(torch.bfloat16).eval().requires_grad_(False)
        finally:
            torch.set_default_dtype(previous)
    return config, model


def warm_up(model, device: str, seconds: float = 10.0) -> None:
    """The first rounds after a large load run several times slower: keep the GPU busy first."""
    x = torch.tensor([[5]], device=device)
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        model(x)
        sync()


class _Ids:
    """Token ids as text: the timings need no tokenizer, and some tokenizers builds choke on random ids."""

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return " ".join(f"w{i}" for i in ids)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def hf_ms_per_token(model, prompt: torch.Tensor, tokens: int) -> tuple[float, list[int]]:
    """Decoding ms/token of transformers' own generate: (time of T tokens - time of 1) / (T - 1)."""
    def run(n: int) -> tuple[float, torch.Tensor]:
        sync()
        t0 = time.perf_counter()
        out = model.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
        sync()
        return time.perf_counter() - t0, out

    run(4)  # warm up
    one, _ = run(1)
    full, out = run(tokens)
    return 1000 * (full - one) / (tokens - 1), out[0, prompt.shape[1]:].tolist()


def corolla_parts(config, model, device: str):
    family = family_for(config)
    span_config = family.span_config(config, 0, config.num_hidden_layers)
    positional = family.make_positional(span_config).to(device)
    span = Span(span_config, family, 0, config.num_hidden_layers, model.model.layers, positional)
    head = ClientHead(config, model.model.embed_tokens.weight, (model.model.norm.weight,), model.lm_head.weight)
    return span, head


def chain_of(span: Span, parts: int) -> LocalChain:
    n = span.num_blocks
    parts = min(parts, n)
    bounds = [round(i * n / parts) for i in range(parts + 1)]
    return LocalChain([SpanRuntime(span.sub(a, b), max_cache_tokens=65536) for a, b in zip(bounds, bounds[1:])])


def corolla_ms_per_token(span: Span, head: ClientHead, tokenizer, prompt: list[int], tokens: int, parts: int,
                         speculative: int = 0) -> dict:
    """ms per token through `parts` span runtimes, hidden states through host memory between them."""
    chain = chain_of(span, parts)
    host_chain = _HostHandOff(chain)

    def run(n: int) -> tuple[float, Decoder]:
        decoder = Decoder(head, tokenizer, SamplingParams(max_new_tokens=n, temperature=0), prompt, eos_ids=set(),
                          speculative=speculative)
        chain.open(decoder.max_length)
        sync()
        t0 = time.perf_counter()
        decode_in_process(decoder, host_chain.forward)
        sync()
        chain.close()
        return time.perf_counter() - t0, decoder

    run(4)
    one, _ = run(1)
    full, decoder = run(tokens)
    return {"ms_per_token": 1000 * (full - one) / (tokens - 1), "tokens": decoder.token_ids,
            "rounds": decoder.rounds, "tokens_per_round": decoder.tokens_per_round}


class _HostHandOff:
    """What a server sees: hidden states arrive in host memory and leave in host memory."""

    def __init__(self, chain: LocalChain) -> None:
        self.chain = chain

    def forward(self, hidden: torch.Tensor, start: int | None = None) -> torch.Tensor:
        hidden = hidden.to("cpu")
        for rt in self.chain.runtimes:
            hidden = rt.forward(self.chain.session_id, hidden, start)  # SpanRuntime: to the GPU and back
        return hidden


def head_ms(head: ClientHead, hidden_size: int, device: str) -> float:
    x = torch.randn(1, 1, hidden_size, dtype=torch.bfloat16, device=device)
    for _ in range(3):
        head.logits(x)
    sync()
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        int(torch.argmax(head.logits(x)[0, -1]))
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def block_ms(span: Span, steps: int = 30, static_steps: bool | None = None) -> float:
    """One-token step of the whole span with a 128-token cache, host tensors in and out, per block.
    static_steps None: the server's default (CUDA graphs on a GPU); False: the dynamic path."""
    rt = SpanRuntime(span, max_cache_tokens=4096, static_steps=static_steps)
    rt.open_session("b", 1024)
    rt.forward("b", torch.randn(1, 128, span.hidden_size, dtype=torch.bfloat16))
    x = torch.randn(1, 1, span.hidden_size, dtype=torch.bfloat16)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        rt.forward("b", x)
        times.append(time.perf_counter() - t0)
    rt.close_session("b")
    return 1000 * statistics.median(times[5:]) / span.num_blocks


def batched_tokens_per_s(span: Span, sessions: int, steps: int = 16) -> float:
    rt = SpanRuntime(span, max_cache_tokens=1 << 20)
    ids = [f"s{i}" for i in range(sessions)]
    for i, sid in enumerate(ids):
        rt.open_session(sid, 1024)
        # different lengths (66 to 108), all read by the pass of 128 positions through the timed steps:
        # crossing a power of two makes the next length's pass, captured once for the runtime's life
        rt.forward(sid, torch.randn(1, 66 + 6 * i, span.hidden_size, dtype=torch.bfloat16))
    x = torch.randn(1, 1, span.hidden_size, dtype=torch.bfloat16)
    for _ in range(2):
        rt.forward_many([(sid, x, None) for sid in ids])
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        rt.forward_many([(sid, x, None) for sid in ids])
    sync()
    seconds = time.perf_counter() - t0
    for sid in ids:
        rt.close_session(sid)
    return sessions * steps / seconds


def streamed_ms_per_token(model, config, device: str, tokens: int = 3) -> float:
    """(c) Each block's weights copied from pinned host RAM into one resident GPU block, then run."""
    layers = model.model.layers
    staging = layers[0]
    pin = torch.cuda.is_available()
    pinned = [{k: (v.detach().to("cpu").pin_memory() if pin else v.detach().to("cpu").clone())
               for k, v in layer.state_dict().items()} for layer in layers]
    span, _ = corolla_parts(config, model, device)
    x = torch.randn(1, 1, config.hidden_size, dtype=torch.bfloat16, device=device)
    one = Span(span.config, span.family, 0, 1, torch.nn.ModuleList([staging]), span.positional)
    times = []
    for _ in range(tokens):
        sync()
        t0 = time.perf_counter()
        for weights in pinned:
            for k, v in staging.state_dict().items():
                v.copy_(weights[k], non_blocking=True)
            one.run(x)
        sync()
        times.append(time.perf_counter() - t0)
    for k, v in staging.state_dict().items():  # the staging block is block 0: give it its weights back
        v.copy_(pinned[0][k])
    return 1000 * statistics.median(times)


def offload_ms_per_token(model, prompt: torch.Tensor, device: str, tokens: int = 3) -> float | str:
    """(b) accelerate's cpu_offload: weights in host RAM, moved to the GPU at every forward."""
    try:
        from accelerate import cpu_offload
    except ImportError as exc:
        return f"not measured: {exc}"
    model.to("cpu")
    cpu_offload(model, execution_device=torch.device(device))
    return hf_ms_per_token(model, prompt, tokens)[0]


def batching_only(r: dict, config, model, device: str, tokenizer, prompt_ids: list[int], args) -> int:
    """The server block, batched steps in the runtime, and concurrent sessions through one server."""
    span, head = corolla_parts(config, model, device)
    r["block_ms"], r["block_ms_dynamic"] = block_ms(span), block_ms(span, static_steps=False)
    print(f"server block {r['block_ms']:.3f} ms ({r['block_ms_dynamic']:.3f} ms without CUDA graphs)", flush=True)
    r["batched_tokens_per_s"] = {n: batched_tokens_per_s(span, n) for n in (1, 2, 4, 8)}
    print("batched tokens/s:", {n: round(v, 1) for n, v in r["batched_tokens_per_s"].items()}, flush=True)
    print("(e) concurrent sessions through one server:", flush=True)
    r["concurrent"] = trio.run(concurrent_sessions, span, head, tokenizer, prompt_ids,
                               [int(x) for x in args.concurrent.split(",")], args.net_tokens,
                               lambda line: print(line, flush=True))
    Path(args.out).write_text(json.dumps(r, indent=1))
    print("(e) concurrent sessions through one server, each client its own process:", flush=True)
    r["client_processes"] = trio.run(separate_clients, span, [int(x) for x in args.concurrent.split(",")],
                                     args.net_tokens, lambda line: print(line, flush=True))
    Path(args.out).write_text(json.dumps(r, indent=1))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rtts", default=",".join(map(str, RTTS_MS)), help="emulated RTTs, ms")
    parser.add_argument("--servers", default="2,4")
    parser.add_argument("--net-tokens", type=int, default=32, help="tokens per swarm run below 50 ms RTT")
    parser.add_argument("--concurrent", default="1,8", help="concurrent sessions through one server")
    parser.add_argument("--batching-only", action="store_true",
                        help="only the server block, batched steps and concurrent sessions")
    parser.add_argument("--small", action="store_true", help="a tiny model (tries the script on a CPU)")
    parser.add_argument("--skip-offload", action="store_true")
    parser.add_argument("--out", default="headline.json")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    t_build = time.perf_counter()
    config, model = build(args.blocks, args.small, device)
    print(f"built {args.blocks} blocks on {device} in {time.perf_counter() - t_build:.0f} s", flush=True)
    print(f"weights {next(model.parameters()).dtype}", flush=True)
    warm_up(model, device, 2.0 if args.small else 10.0)
    tokenizer = _Ids()
    prompt_ids = [5, 17, 200, 9, 31, 5, 17, 200, 9, 31, 5, 17]
    prompt = torch.tensor([prompt_ids], device=device)
    r: dict = {"model": {"shape": "Llama-2-70B" if not args.small else "small", "blocks": args.blocks,
                         "hidden": config.hidden_size, "vocab": config.vocab_size, "dtype": "bfloat16",
                         "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                         "torch": torch.__version__, "transformers": __import__("transformers").__version__},
               "tokens": args.tokens}
    if args.batching_only:
        return batching_only(r, config, model, device, tokenizer, prompt_ids, args)
    r["a_transformers_ms"], hf_tokens = hf_ms_per_token(model, prompt, args.tokens)
    print(f"(a) transformers: {r['a_transformers_ms']:.2f} ms/token", flush=True)
    span, head = corolla_parts(config, model, device)
    r["head_ms"] = head_ms(head, config.hidden_size, device)
    r["block_ms"] = block_ms(span)
    r["block_ms_dynamic"] = block_ms(span, static_steps=False)
    print(f"head {r['head_ms']:.2f} ms, server block {r['block_ms']:.3f} ms "
          f"({r['block_ms_dynamic']:.3f} ms without CUDA graphs)", flush=True)
    for parts in (1, 2, 4):
        c = corolla_ms_per_token(span, head, tokenizer, prompt_ids, args.tokens, parts)
        r[f"d_corolla_{parts}_ms"] = c["ms_per_token"]
        r[f"d_corolla_{parts}_same_tokens_as_a"] = sum(a == b for a, b in zip(c["tokens"], hf_tokens))
        print(f"(d) corolla {parts} spans: {c['ms_per_token']:.2f} ms/token, "
              f"{r[f'd_corolla_{parts}_same_tokens_as_a']}/{args.tokens} tokens as (a)", flush=True)
    s = corolla_ms_per_token(span, head, tokenizer, prompt_ids, args.tokens, 2, speculative=4)
    r["d_speculative4_2_ms"], r["d_speculative4_tokens_per_round"] = s["ms_per_token"], s["tokens_per_round"]
    print(f"(d) speculative 4, 2 spans: {s['ms_per_token']:.2f} ms/token, {s['tokens_per_round']:.2f} tokens/round",
          flush=True)
    r["batched_tokens_per_s"] = {n: batched_tokens_per_s(span, n) for n in (1, 2, 4, 8)}
    print("batched tokens/s:", {n: round(v, 1) for n, v in r["batched_tokens_per_s"].items()}, flush=True)
    rtts = [float(x) for x in args.rtts.split(",")]
    with delayed_links() as links:
        print("(e) swarm, ms/token:", flush=True)
        r["swarm"] = trio.run(rtt_columns, span, head, tokenizer, prompt_ids, links, rtts,
                              [int(x) for x in args.servers.split(",")],
                              lambda rtt: args.net_tokens if rtt < 50 else max(4, args.net_tokens // 4), 4,
                              lambda line: print(line, flush=True))
        print("(e) concurrent sessions through one server:", flush=True)
        r["concurrent"] = trio.run(concurrent_sessions, span, head, tokenizer, prompt_ids,
                                   [int(x) for x in args.concurrent.split(",")], args.net_tokens,
                                   lambda line: print(line, flush=True))
    Path(args.out).write_text(json.dumps(r, indent=1))  # what is measured so far, should (b) fail
    r["c_streamed_ms"] = streamed_ms_per_token(model, config, device)
    print(f"(c) streamed from pinned RAM: {r['c_streamed_ms']:.1f} ms/token", flush=True)
    r["b_offload_ms"] = "skipped" if args.skip_offload else offload_ms_per_token(model, prompt, device)
    print(f"(b) cpu_offload: {r['b_offload_ms']}", flush=True)
    per_block = {k: r[k] / args.blocks for k in ("a_transformers_ms", "c_streamed_ms")}
    if isinstance(r["b_offload_ms"], float):
        per_block["b_offload_ms"] = r["b_offload_ms"] / args.blocks
    r["extrapolated_80"] = {k: v * FULL_BLOCKS for k, v in per_block.items()}
    # the swarm's measured ms/token (network as measured) plus the server blocks it did not have
    r["extrapolated_80"].update({f"corolla_{key}": v["ms_per_token"] + (FULL_BLOCKS - args.blocks) * r["block_ms"]
                                 for key, v in r["swarm"].items()})
    Path(args.out).write_text(json.dumps(r, indent=1))
    print(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
