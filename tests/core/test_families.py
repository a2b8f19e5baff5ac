"""Every newer family, on a tiny random checkpoint: spans equal transformers' generate() token for
token, a replacement server rebuilt by replay continues exactly, and a sub-span continues a
conversation exactly as a span loaded for its blocks."""

from __future__ import annotations

import functools

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

from corolla.core.families import family_for
from corolla.core.generation import Decoder, SamplingParams, decode_in_process
from corolla.core.head import ClientHead
from corolla.core.span import Span, SpanRuntime
from tests.family_models import LAYERS, NEW_FAMILIES, make_family_model

PROMPT = "w5 w17 w30 w42 w8 w100"  # 6 tokens; with 16 more, past every sliding window (5) of the tests
SPANS = [(0, 1), (1, 3), (3, LAYERS)]
NEW_TOKENS = 16


@pytest.fixture(scope="module")
def family_models(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("family-models")
    return {name: make_family_model(root / name, name) for name in NEW_FAMILIES}


def _tokenizer(path):
    # The word-level test tokenizer as saved; AutoTokenizer would swap in a family's own class.
    return PreTrainedTokenizerFast.from_pretrained(path)


def _transformers_model(path):
    """The whole model in transformers, on the attention kernel the family runs: Gemma 2's soft-capped
    attention needs eager, which transformers 5.24 picks by itself and 5.17 does not."""
    config = AutoConfig.from_pretrained(path)
    kernel = family_for(config).span_config(config, 0, 1)._attn_implementation
    return AutoModelForCausalLM.from_pretrained(path, attn_implementation=kernel)


@functools.cache
def _generated(path, prompt_ids: tuple[int, ...]) -> tuple[int, ...]:
    model = _transformers_model(path)
    out = model.generate(torch.tensor([prompt_ids]), max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=None,
                         pad_token_id=0)
    return tuple(out[0, len(prompt_ids):].tolist())


def _reference(path, prompt_ids: list[int]) -> list[int]:
    return list(_generated(path, tuple(prompt_ids)))


def _decoder(path) -> Decoder:
    tokenizer = _tokenizer(path)
    return Decoder(ClientHead.load(path), tokenizer, SamplingParams(max_new_tokens=NEW_TOKENS, temperature=0),
                   tokenizer(PROMPT).input_ids, eos_ids=set())


class Chain:
    """Runtimes of SPANS, one session each; remembers what each span was sent (as a client does)."""

    def __init__(self, path, max_length: int):
        self.path = path
        self.max_length = max_length
        self.runtimes = [SpanRuntime(Span.load(path, a, b), 256) for a, b in SPANS]
        self.sent: list[list[torch.Tensor]] = [[] for _ in SPANS]
        for rt in self.runtimes:
            rt.open_session("s", max_length)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        for i, rt in enumerate(self.runtimes):
            self.sent[i].append(hidden)
            hidden = rt.forward("s", hidden)
        return hidden

    def replace_by_replay(self, i: int) -> torch.Tensor:
        """A fresh server for span i, its cache rebuilt from the stored inputs in one prefill."""
        rt = SpanRuntime(Span.load(self.path, *SPANS[i]), 256)
        rt.open_session("s", self.max_length)
        out = rt.replay("s", self.sent[i])
        self.runtimes[i] = rt
        return out


@pytest.mark.parametrize("name", NEW_FAMILIES)
def test_chain_of_spans_equals_generate(family_models, name):
    path = family_models[name]
    decoder = _decoder(path)
    chain = Chain(path, decoder.max_length)
    decode_in_process(decoder, chain.forward)
    assert decoder.token_ids == _reference(path, decoder.prompt_ids)


@pytest.mark.parametrize("name", NEW_FAMILIES)
def test_head_and_spans_give_transformers_logits(family_models, name):
    """Greedy tokens cannot see a monotonic change of the logits (Gemma's soft-capping): compare them."""
    path = family_models[name]
    ids = torch.tensor([_tokenizer(path)(PROMPT).input_ids])
    head = ClientHead.load(path)
    hidden = head.embed(ids)
    for a, b in SPANS:
        hidden = Span.load(path, a, b)(hidden)
    want = _transformers_model(path)(ids).logits
    torch.testing.assert_close(head.logits(hidden), want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


@pytest.mark.parametrize("name", NEW_FAMILIES)
def test_replayed_server_continues_exactly(family_models, name):
    """After 6 tokens the middle server is replaced; the new one replays what the client stored."""
    path = family_models[name]
    decoder = _decoder(path)
    chain = Chain(path, decoder.max_length)
    steps = 0

    def forward(hidden: torch.Tensor) -> torch.Tensor:
        nonlocal steps
        steps += 1
        if steps == 7:
            chain.replace_by_replay(1)
        return chain.forward(hidden)

    decode_in_process(decoder, forward)
    assert steps > 7
    assert decoder.token_ids == _reference(path, decoder.prompt_ids)


@pytest.mark.parametrize("name", NEW_FAMILIES)
def test_sub_span_continues_a_conversation_like_its_own_span(family_models, name):
    path = family_models[name]
    part = Span.load(path, 0, LAYERS).sub(1, 3)
    own = Span.load(path, 1, 3)
    torch.manual_seed(3)
    turns = [torch.randn(1, 6, 64), torch.randn(1, 3, 64), torch.randn(1, 1, 64), torch.randn(1, 4, 64)]
    outs = []
    for span in (part, own):
        rt = SpanRuntime(span, max_cache_tokens=64)
        rt.open_session("chat", 32)
        outs.append([rt.forward("chat", x) for x in turns])
    for got, want in zip(*outs):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    whole = own(torch.cat(turns, dim=1))
    torch.testing.assert_close(torch.cat(outs[1], dim=1), whole, rtol=1e-4, atol=1e-5 * whole.abs().max().item())


@pytest.mark.parametrize("name", NEW_FAMILIES)
def test_cache_bytes_per_token_are_what_the_cache_holds(family_models, name):
    """Admission control reserves kv_bytes_per_token() per token: it must be the real size (four
    tokens stay inside every sliding window, so no layer has dropped any yet)."""
    span = Span.load(family_models[name], 0, LAYERS)
    cache = span.new_cache()
    span.run(torch.randn(1, 4, 64), cache, 0)
    held = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    assert held == 4 * span.kv_bytes_per_token()
