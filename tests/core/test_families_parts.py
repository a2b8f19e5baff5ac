"""Family details the token tests cannot see: memory per block, expert stacking, rope scaling,
and layer calls under either transformers 5.x spelling of the cache argument."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig

from corolla.core.errors import UnsupportedModelError
from corolla.core.families import family_for
from corolla.core.families.base import cache_keyword
from corolla.core.families.moe import stack_experts
from corolla.core.span import Span, SpanRuntime
from tests.family_models import LAYERS, make_family_model


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("family-parts")
    return {name: make_family_model(root / name, name) for name in ("llama3", "qwen3", "qwen2-moe", "mixtral")}


@pytest.mark.parametrize("name", ["qwen2-moe", "mixtral", "qwen3"])
def test_block_bytes_count_what_a_loaded_block_holds(models, name):
    path = models[name]
    family = family_for(AutoConfig.from_pretrained(path))
    for i in range(LAYERS):
        assert family.block_bytes(path, i) == Span.load(path, i, i + 1).weight_bytes()
        assert family.block_bytes(path, i, torch.bfloat16) == family.block_bytes(path, i) // 2


def test_a_moe_block_counts_all_its_experts(models):
    """qwen2-moe's block 1 is dense (mlp_only_layers=[1]); the others hold 4 experts and a shared one."""
    path = models["qwen2-moe"]
    config = AutoConfig.from_pretrained(path)
    family = family_for(config)
    sizes = [family.block_bytes(path, i) for i in range(LAYERS)]
    h, inner, shared = config.hidden_size, config.moe_intermediate_size, config.shared_expert_intermediate_size
    experts = config.num_experts * 3 * h * inner * 4
    dense_mlp = 3 * h * config.intermediate_size * 4
    sparse_mlp = experts + 3 * h * shared * 4 + h * 4 + config.num_experts * h * 4  # + shared gate, router
    assert sizes[0] - sizes[1] == sparse_mlp - dense_mlp
    assert sizes[0] == sizes[2] == sizes[3]
    span = Span.load(path, 0, LAYERS)
    assert span.blocks[0].mlp.experts.gate_up_proj.shape == (4, 2 * inner, h)
    assert not hasattr(span.blocks[1].mlp, "experts")  # a span starting later still knows block 1 is dense
    assert not hasattr(Span.load(path, 1, 3).blocks[0].mlp, "experts")


def test_incomplete_experts_are_refused():
    state = {f"mlp.experts.{e}.{p}.weight": torch.zeros(2, 2) for e in range(2) for p in ("gate_proj", "up_proj")}
    state["mlp.experts.0.down_proj.weight"] = torch.zeros(2, 2)
    with pytest.raises(UnsupportedModelError, match="incomplete"):
        stack_experts(state)


def test_stacked_experts_keep_each_expert_in_its_place():
    state = {}
    for e in range(3):
        state[f"mlp.experts.{e}.w1.weight"] = torch.full((2, 4), float(e))
        state[f"mlp.experts.{e}.w3.weight"] = torch.full((2, 4), 10.0 + e)
        state[f"mlp.experts.{e}.w2.weight"] = torch.full((4, 2), 20.0 + e)
    state["mlp.gate.weight"] = torch.ones(3, 4)
    out = stack_experts(state)
    assert set(out) == {"mlp.experts.gate_up_proj", "mlp.experts.down_proj", "mlp.gate.weight"}
    assert out["mlp.experts.gate_up_proj"].shape == (3, 4, 4)
    assert out["mlp.experts.gate_up_proj"][2, :2].eq(2).all() and out["mlp.experts.gate_up_proj"][2, 2:].eq(12).all()
    assert out["mlp.experts.down_proj"][1].eq(21).all()


def test_llama3_rope_scaling_is_applied(models):
    """The rotary module is built from the config, so Llama 3.x's frequency scaling is in it."""
    span = Span.load(models["llama3"], 0, 2)
    config = span.config
    dim = config.hidden_size // config.num_attention_heads
    plain = 1.0 / (config.rope_parameters["rope_theta"] ** (torch.arange(0, dim, 2).float() / dim))
    scaled = span.positional.inv_freq
    assert span.positional.rope_type == "llama3"
    assert not torch.allclose(scaled, plain)  # low frequencies divided by the factor
    torch.testing.assert_close(scaled[0], plain[0])  # the highest frequency is kept


def test_cache_keyword_follows_the_signature():
    def new_style(hidden, cache=None): ...
    def old_style(hidden, past_key_values=None, **kwargs): ...

    assert cache_keyword(new_style) == "cache"
    assert cache_keyword(old_style) == "past_key_values"


def test_layers_that_take_past_key_values_get_the_cache(models):
    """transformers 5.17 names the layer's cache argument `past_key_values`: a layer with that
    signature must receive the session cache and give the same outputs."""
    path = models["qwen3"]
    base_cls = type(Span.load(path, 0, 1).blocks[0])
    received = []

    class OldSignatureLayer(base_cls):
        def forward(self, hidden_states, attention_mask=None, position_ids=None, past_key_values=None,
                    use_cache=False, position_embeddings=None, **kwargs):
            received.append(past_key_values)
            return super().forward(hidden_states, attention_mask=attention_mask, position_ids=position_ids,
                                   use_cache=use_cache, position_embeddings=position_embeddings,
                                   **{cache_keyword(base_cls.forward): past_key_values}, **kwargs)

    new, old = Span.load(path, 0, LAYERS), Span.load(path, 0, LAYERS)
    for block in old.blocks:
        block.__class__ = OldSignatureLayer
    torch.manual_seed(4)
    turns = [torch.randn(1, 5, 64), torch.randn(1, 1, 64), torch.randn(1, 2, 64)]
    outs = []
    for span in (new, old):
        rt = SpanRuntime(span, 64)
        rt.open_session("s", 16)
        outs.append([rt.forward("s", x) for x in turns])
    assert len(received) == LAYERS * len(turns) and all(c is not None for c in received)
    for got, want in zip(outs[1], outs[0]):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
