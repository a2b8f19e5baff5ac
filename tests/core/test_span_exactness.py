"""A chain of spans must generate exactly what transformers' own generate() does."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from corolla.core.chain import LocalChain
from corolla.core.generation import Decoder, SamplingParams, decode_in_process
from corolla.core.head import ClientHead
from tests.models import FAMILIES

PROMPT = "The capital of France is"


def _reference(path, prompt_ids, n):
    model = AutoModelForCausalLM.from_pretrained(path)
    out = model.generate(torch.tensor([prompt_ids]), max_new_tokens=n, do_sample=False, eos_token_id=None,
                         pad_token_id=0)
    return out[0, len(prompt_ids):].tolist()


def _chain_tokens(path, tokenizer, spans, n, eos_ids=None):
    prompt_ids = tokenizer(PROMPT).input_ids
    decoder = Decoder(ClientHead.load(path), tokenizer, SamplingParams(max_new_tokens=n, temperature=0),
                      prompt_ids, eos_ids=eos_ids)
    with LocalChain.load(path, spans) as chain:
        chain.open(decoder.max_length)
        decode_in_process(decoder, chain.forward)
    return prompt_ids, decoder


@pytest.mark.parametrize("family", FAMILIES)
def test_chain_of_spans_equals_generate(tiny_models, family):
    path = tiny_models[family]
    tokenizer = AutoTokenizer.from_pretrained(path)
    prompt_ids, decoder = _chain_tokens(path, tokenizer, [(0, 2), (2, 5), (5, 6)], 16, eos_ids=set())
    assert decoder.token_ids == _reference(path, prompt_ids, 16)


@pytest.mark.slow
def test_default_model_in_three_spans_equals_generate(default_model_path):
    tokenizer = AutoTokenizer.from_pretrained(default_model_path)
    prompt_ids, decoder = _chain_tokens(default_model_path, tokenizer, [(0, 10), (10, 20), (20, 30)], 24,
                                        eos_ids=set())
    assert decoder.token_ids == _reference(default_model_path, prompt_ids, 24)
    assert decoder.text.startswith(" Paris")


def test_span_reads_only_its_own_shards(tiny_models, tmp_path):
    """Delete every shard that holds no tensor of blocks 2..3: the span must still load."""
    import json
    import shutil

    source = tiny_models["llama"]
    folder = tmp_path / "partial"
    shutil.copytree(source, folder)
    weight_map = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    needed = {shard for name, shard in weight_map.items() if name.startswith(("model.layers.2.", "model.layers.3."))}
    removed = {shard for shard in weight_map.values()} - needed
    assert removed, "the tiny model should have shards the span does not need"
    for shard in removed:
        (folder / shard).unlink()

    from corolla.core.span import Span

    partial = Span.load(folder, 2, 4)
    full = Span.load(source, 2, 4)
    hidden = torch.randn(1, 5, 64)
    torch.testing.assert_close(partial(hidden), full(hidden), rtol=0, atol=0)


def test_client_head_loads_without_any_block(tiny_models, tmp_path):
    import json
    import shutil

    source = tiny_models["llama"]
    folder = tmp_path / "head-only"
    shutil.copytree(source, folder)
    weight_map = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    head_shards = {weight_map[k] for k in ("model.embed_tokens.weight", "model.norm.weight")}
    for shard in set(weight_map.values()) - head_shards:
        (folder / shard).unlink()
    head = ClientHead.load(folder)
    # tied embeddings: the LM head is the embedding matrix
    assert head.lm_head_weight.data_ptr() == head.embed_weight.data_ptr()
    model = AutoModelForCausalLM.from_pretrained(source)
    ids = torch.tensor([[5, 17, 300]])
    torch.testing.assert_close(head.embed(ids), model.model.embed_tokens(ids))


def test_a_cpu_float32_head_is_column_major_and_computes_the_same(tiny_models):
    """A CPU float32 client head stores its LM head column-major (a faster row of logits); the values
    and shape are the weights', and the logits those of the row-major weight up to rounding. Span
    weights keep the usual layout."""
    from corolla.core.span import Span

    path = tiny_models["llama"]
    assert all(p.is_contiguous() for p in Span.load(path, 0, 3).blocks.parameters())
    head = ClientHead.load(path)
    assert head.lm_head_weight.t().is_contiguous() and not head.lm_head_weight.is_contiguous()
    assert ClientHead.load(path, dtype=torch.bfloat16).lm_head_weight.is_contiguous()
    h = torch.randn(1, 1, head.hidden_size)
    row_major = torch.nn.functional.linear(head.family.final_norm(head.config, h, tuple(head.norm_params)),
                                           head.lm_head_weight.contiguous())
    torch.testing.assert_close(head.logits(h), head.family.finish_logits(head.config, row_major), rtol=1e-5, atol=1e-5)
