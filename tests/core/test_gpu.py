"""CUDA spans: the same results as the CPU, bf16 and nf4 close to fp32. Skipped without a GPU."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from corolla.core.chain import LocalChain
from corolla.core.generation import Decoder, SamplingParams, decode_in_process
from corolla.core.head import ClientHead
from corolla.core.span import Span, SpanRuntime
from tests.models import make_tiny_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("gpu") / "llama", "llama")


def test_cuda_chain_generates_what_generate_does_on_cpu(tiny_llama):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    prompt = tokenizer("w5 w17 w200 w9").input_ids
    decoder = Decoder(ClientHead.load(tiny_llama), tokenizer, SamplingParams(max_new_tokens=12, temperature=0),
                      prompt, eos_ids=set())
    runtimes = [SpanRuntime(Span.load(tiny_llama, a, b, device="cuda")) for a, b in [(0, 3), (3, 6)]]
    with LocalChain(runtimes) as chain:
        chain.open(decoder.max_length)
        decode_in_process(decoder, chain.forward)
    reference = AutoModelForCausalLM.from_pretrained(tiny_llama).generate(
        torch.tensor([prompt]), max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert decoder.token_ids == reference[0, len(prompt):].tolist()


@pytest.mark.parametrize(("dtype", "max_error"), [(torch.bfloat16, 0.05), (torch.float16, 0.01)])
def test_half_precision_cuda_span_close_to_cpu_fp32(tiny_llama, dtype, max_error):
    torch.manual_seed(0)
    hidden = torch.randn(1, 9, 64)
    want = Span.load(tiny_llama, 1, 5)(hidden)
    got = Span.load(tiny_llama, 1, 5, device="cuda", dtype=dtype)(hidden.to("cuda", dtype)).float().cpu()
    error = ((got - want).norm() / want.norm()).item()
    print(f"{dtype}: relative error over 4 blocks {error:.4f}")
    assert error < max_error


@pytest.mark.parametrize(("quant", "max_weight_ratio"), [("int8", 0.55), ("nf4", 0.3)])
def test_quantized_cuda_block_as_accurate_as_on_cpu(tiny_llama, quant, max_weight_ratio):
    """One block, quantized vs not: the GPU's error is the CPU's (random weights make both large)."""
    pytest.importorskip("bitsandbytes")
    torch.manual_seed(0)
    hidden = torch.randn(1, 9, 64)

    def error(device: str, dtype: torch.dtype) -> tuple[float, float]:
        plain = Span.load(tiny_llama, 2, 3, device=device, dtype=dtype)
        quantized = Span.load(tiny_llama, 2, 3, device=device, dtype=dtype, quant=quant)
        x = hidden.to(device, dtype)
        want, got = plain(x).float(), quantized(x).float()
        return ((got - want).norm() / want.norm()).item(), quantized.weight_bytes() / plain.weight_bytes()

    cpu_error, _ = error("cpu", torch.float32)
    gpu_error, ratio = error("cuda", torch.bfloat16)
    print(f"{quant}: relative error of one block, GPU bf16 {gpu_error:.4f}, CPU fp32 {cpu_error:.4f}; "
          f"weights {ratio:.3f} of bf16")
    assert gpu_error < 1.5 * cpu_error + 0.01
    assert ratio < max_weight_ratio


def test_client_head_on_cuda_is_close_to_the_cpu_float32_head(tiny_llama):
    cpu = ClientHead.load(tiny_llama)
    gpu = ClientHead.load(tiny_llama, device="auto")
    assert gpu.device.type == "cuda" and gpu.embed_weight.dtype == torch.bfloat16
    ids = torch.tensor([[5, 17, 200, 9]])
    torch.testing.assert_close(gpu.embed(ids).float().cpu(), cpu.embed(ids), rtol=0.01, atol=0.01)
    torch.manual_seed(0)
    hidden = torch.randn(1, 6, 64)
    want = cpu.logits(hidden)
    got = gpu.logits(hidden.to("cuda", torch.bfloat16))
    assert got.dtype == torch.float32
    error = ((got.cpu() - want).norm() / want.norm()).item()
    print(f"bf16 head on the GPU: relative logits error {error:.4f}")
    assert error < 0.02


def test_captured_one_token_steps_equal_the_dynamic_path(tiny_llama):
    """CUDA-graph steps (the default on a GPU) against the same span without them, through a rollback."""
    span = Span.load(tiny_llama, 0, 6, device="cuda")
    graphs, plain = SpanRuntime(span, 256), SpanRuntime(span, 256, static_steps=False)
    torch.manual_seed(1)
    xs = [torch.randn(1, 7, 64)] + [torch.randn(1, 1, 64) for _ in range(8)]
    for rt in (graphs, plain):
        rt.open_session("s", 64)
    for k, x in enumerate(xs):
        start = None
        if k == 5:  # rejected guesses, then a step that starts before them
            for rt in (graphs, plain):
                rt.forward("s", torch.ones(1, 2, 64))
            start = graphs.session_length("s") - 2
        got, want = graphs.forward("s", x, start=start), plain.forward("s", x, start=start)
        assert got.device.type == "cpu" and got.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3 * want.abs().max().item())
    assert graphs._sessions["s"].pooled and graphs._passes.captures == 1


def test_captured_batched_steps_equal_the_dynamic_path(tiny_llama):
    """Two sessions of different lengths decoding together: the captured batched step against the dynamic one."""
    span = Span.load(tiny_llama, 0, 6, device="cuda")
    graphs, plain = SpanRuntime(span, 512), SpanRuntime(span, 512, static_steps=False)
    torch.manual_seed(2)
    prompts = {"a": torch.randn(1, 3, 64), "b": torch.randn(1, 9, 64)}
    for rt in (graphs, plain):
        for sid, x in prompts.items():
            rt.open_session(sid, 64)
            rt.forward(sid, x)
    for _ in range(5):
        xs = {sid: torch.randn(1, 1, 64) for sid in prompts}
        got = graphs.forward_many([(sid, x, None) for sid, x in xs.items()])
        want = plain.forward_many([(sid, x, None) for sid, x in xs.items()])
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-3, atol=1e-3 * w.abs().max().item())
    assert graphs._passes._passes[(2, 64)][1].graph is not None


def test_changing_sets_of_sessions_replay_the_captured_passes(tiny_llama):
    """Sessions come, go and decode in changing sets: after one capture per padded size, none more,
    and every session's output is what it is without neighbours (the dynamic path, one at a time)."""
    span = Span.load(tiny_llama, 0, 6, device="cuda", dtype=torch.bfloat16)
    graphs, plain = SpanRuntime(span, 4096), SpanRuntime(span, 4096, static_steps=False)
    torch.manual_seed(3)

    def open_(sid: str, prompt: int) -> None:
        x = torch.randn(1, prompt, 64, dtype=torch.bfloat16)
        for rt in (graphs, plain):
            rt.open_session(sid, 48)
            rt.forward(sid, x)

    def step(ids: str) -> None:
        xs = [(sid, torch.randn(1, 1, 64, dtype=torch.bfloat16), None) for sid in ids]
        got = graphs.forward_many(xs)
        for (sid, x, _), g in zip(xs, got):  # each alone through the dynamic path
            w = plain.forward(sid, x)
            torch.testing.assert_close(g.float(), w.float(), rtol=0.02, atol=0.02 * w.float().abs().max().item())

    for i, sid in enumerate("abcdefgh"):
        open_(sid, 2 + 3 * i)
    for ids in ("abcdefgh", "abcdefgh", "ab", "cd", "abcd", "efgh", "a", "b"):  # 8, 2, 4, 1 captured
        step(ids)
    captured = graphs._passes.captures
    assert captured == 4
    for rt in (graphs, plain):
        rt.close_session("c")
    open_("z", 4)
    for ids in ("zabdefgh", "hgz", "ez", "zd", "bdfh", "z", "azbdefgh"):
        step(ids)
    assert graphs._passes.captures == captured
