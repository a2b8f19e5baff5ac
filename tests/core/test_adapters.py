"""LoRA adapters on spans: a session with an adapter computes what PEFT computes, a session without
one is untouched by its neighbours' adapters, and bad adapters are refused in plain words."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from corolla.core import int4
from corolla.core.adapters import AdapterError, UnknownAdapterError, load_adapter
from corolla.core.head import ClientHead
from corolla.core.span import Span, SpanRuntime
from tests.adapters import make_lora, peft_model
from tests.core.test_batched_step import close
from tests.family_models import make_family_model
from tests.models import FAMILIES

IDS = torch.tensor([[5, 17, 30, 42, 8, 100, 7]])


@pytest.fixture(scope="module")
def models(tiny_models, tmp_path_factory):
    """The four tiny families and Falcon (its fused query_key_value), each with a LoRA adapter."""
    root = tmp_path_factory.mktemp("lora")
    paths = dict(tiny_models) | {"falcon": make_family_model(root / "falcon", "falcon")}
    return {name: (path, make_lora(path, root / f"{name}-lora", seed=1)) for name, path in paths.items()}


def run_all(path, adapter_dir, ids: torch.Tensor, adapter: str | None) -> torch.Tensor:
    """Logits of the whole model with the blocks as one span, through a session with `adapter`."""
    head = ClientHead.load(path)
    span = Span.load(path, 0, head.config.num_hidden_layers)
    load_adapter(span, adapter_dir, "mine")
    runtime = SpanRuntime(span, max_cache_tokens=64)
    runtime.open_session("s", 32, adapter=adapter)
    return head.logits(runtime.forward("s", head.embed(ids)))


@pytest.mark.parametrize("family", [*FAMILIES, "falcon"])
def test_a_session_with_an_adapter_computes_what_peft_computes(models, family):
    path, adapter_dir = models[family]
    ids = IDS % 200
    with torch.no_grad():
        want = peft_model(path, adapter_dir)(ids).logits
    got = run_all(path, adapter_dir, ids, "mine")
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    base = run_all(path, adapter_dir, ids, None)
    assert (base - got).abs().max() > 1e-2, "the adapter should change the logits"


@pytest.mark.parametrize("family", FAMILIES)
def test_sessions_with_and_without_an_adapter_share_a_batched_step(models, family):
    path, adapter_dir = models[family]
    span = Span.load(path, 1, 5)
    load_adapter(span, adapter_dir, "mine")
    plain = SpanRuntime(Span.load(path, 1, 5), max_cache_tokens=256)  # a server with no adapters at all
    runtime = SpanRuntime(span, max_cache_tokens=256)
    torch.manual_seed(3)
    prompts = {"base": torch.randn(1, 5, 64), "lora": torch.randn(1, 3, 64)}
    steps = [{"base": torch.randn(1, 1, 64), "lora": torch.randn(1, 1, 64)} for _ in range(4)]
    plain.open_session("base", 16)
    alone = [plain.forward("base", prompts["base"])] + [plain.forward("base", s["base"]) for s in steps]
    runtime.open_session("solo-lora", 16, adapter="mine")
    lora_alone = [runtime.forward("solo-lora", prompts["lora"])]
    lora_alone += [runtime.forward("solo-lora", s["lora"]) for s in steps]
    runtime.open_session("base", 16)
    runtime.open_session("lora", 16, adapter="mine")
    together = {sid: [runtime.forward(sid, prompts[sid])] for sid in prompts}
    for s in steps:
        outs = runtime.forward_many([("base", s["base"], None), ("lora", s["lora"], None)])
        together["base"].append(outs[0])
        together["lora"].append(outs[1])
    assert torch.equal(together["base"][0], alone[0])  # the same pass as on a server without adapters
    for got, want in [*zip(together["base"], alone), *zip(together["lora"], lora_alone)]:
        close(got, want)
    assert (together["lora"][-1] - together["base"][-1]).abs().max() > 1e-3


def test_only_the_span_s_blocks_are_loaded_and_unknown_names_are_refused(models):
    path, adapter_dir = models["llama"]
    span = Span.load(path, 2, 4)
    assert load_adapter(span, adapter_dir) == adapter_dir.name
    wrapped = [name for name, _ in span.blocks.named_modules() if name.endswith("q_proj")]
    assert len(wrapped) == 2 and all(hasattr(span.blocks.get_submodule(n), "loras") for n in wrapped)
    runtime = SpanRuntime(span)
    with pytest.raises(UnknownAdapterError, match="no adapter 'other'.*serves: " + adapter_dir.name):
        runtime.open_session("s", 8, adapter="other")
    with pytest.raises(AdapterError, match="two adapters"):
        load_adapter(span, adapter_dir)


def test_adapters_of_another_model_or_of_the_head_are_refused(models, tmp_path):
    llama, llama_lora = models["llama"]
    bloom, bloom_lora = models["bloom"]
    with pytest.raises(AdapterError, match="another model"):
        load_adapter(Span.load(llama, 0, 2), bloom_lora)
    head_lora = make_lora(llama, tmp_path / "head", targets=["q_proj", "lm_head"])
    with pytest.raises(AdapterError, match="LM head"):
        load_adapter(Span.load(llama, 0, 2), head_lora)
    dora = tmp_path / "dora"
    dora.mkdir()
    config = json.loads((llama_lora / "adapter_config.json").read_text()) | {"use_dora": True}
    (dora / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(AdapterError, match="DoRA"):
        load_adapter(Span.load(llama, 0, 2), dora)
    with pytest.raises(AdapterError, match="no adapter_config.json"):
        load_adapter(Span.load(llama, 0, 2), tmp_path)


def test_rslora_and_alpha_pattern_scale_as_peft_does(models, tmp_path):
    path, _ = models["qwen2"]
    adapter_dir = make_lora(path, tmp_path / "scaled", seed=2, use_rslora=True, alpha_pattern={"v_proj": 64.0})
    with torch.no_grad():
        want = peft_model(path, adapter_dir)(IDS).logits
    torch.testing.assert_close(run_all(path, adapter_dir, IDS, "mine"), want, rtol=1e-4, atol=1e-4)
    plain = make_lora(path, tmp_path / "plain", seed=2)  # the same weights, scaled the ordinary way
    assert (run_all(path, plain, IDS, "mine") - want).abs().max() > 1e-2


def quantized_and_float(models, quant: str) -> tuple[Span, tuple[torch.Tensor, ...]]:
    """The tiny Llama's blocks 0:3 with `quant` weights and the LoRA adapter; outputs of one input
    without and with the adapter, on float weights and on `quant` ones."""
    path, adapter_dir = models["llama"]
    torch.manual_seed(4)
    x = torch.randn(1, 6, 64)
    outs = []
    for mode in ("none", quant):
        span = Span.load(path, 0, 3, quant=mode)
        load_adapter(span, adapter_dir, "mine")
        outs += [span.forward(x), span.forward(x, adapter="mine")]
    return span, tuple(outs)


def test_an_int8_span_takes_an_adapter(models):
    pytest.importorskip("bitsandbytes")
    _, (base, lora, base8, lora8) = quantized_and_float(models, "int8")
    delta, delta8 = lora - base, lora8 - base8
    assert (delta.norm() / base.norm()) > 0.05  # the adapter matters at this scale
    assert ((delta8 - delta).norm() / delta.norm()) < 0.1  # and int8 weights keep its effect


@pytest.mark.skipif(not int4.available(), reason="this PyTorch has no CPU int4 kernel")
def test_an_int4_span_takes_an_adapter(models):
    """Each wrapped int4 layer adds exactly scale * B(A(x)) to its int4 output; through the span the
    adapter pushes the output the same way as on float weights (the tiny model's random weights put
    int4 about a third off float after 3 blocks, so the deltas are compared by direction)."""
    from corolla.core.adapters import LoraLinear
    from corolla.core.int4 import Int4Linear

    span, (base, lora, base4, lora4) = quantized_and_float(models, "int4")
    wrapped = [m for m in span.blocks.modules() if isinstance(m, LoraLinear) and "mine" in m.loras]
    assert wrapped and all(isinstance(m.base, Int4Linear) for m in wrapped)
    for layer in wrapped:
        a, b, scale = layer.loras["mine"]
        h = torch.randn(2, 5, layer.base.in_features)
        with span.adapters.use(["mine", None]):
            out = layer(h)
        torch.testing.assert_close(out[0], layer.base(h[0]) + F.linear(F.linear(h[0], a), b) * scale)
        torch.testing.assert_close(out[1], layer.base(h[1]))
    delta, delta4 = (lora - base).flatten(), (lora4 - base4).flatten()
    assert F.cosine_similarity(delta4, delta, dim=0) > 0.8
