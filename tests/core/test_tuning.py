"""Fine-tuning parts in one process: span gradients against transformers' own model, deep prompts
against a hand-written reference, the tuned-prompts file, the training data, and a training step."""

from __future__ import annotations

import json

import pytest
import torch

from corolla.core.errors import ShapeError
from corolla.core.head import ClientHead
from corolla.core.model import ModelInfo
from corolla.core.span import Span
from corolla.core.tuning.data import DataError, load_examples, make_batch
from corolla.core.tuning.prompts import TunedFileError, TunedPrompts
from corolla.core.tuning.span_grad import TooManyTokensError, check_request, run_span, span_backward
from corolla.core.tuning.training import LocalBlocks, PromptTrainer, completion_loss
from tests.models import FAMILIES, make_tiny_model, word_level_tokenizer

TOL = 1e-5  # fp32: gradients of spans against one transformers model, relative to their scale


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tuning-models")
    return {f: make_tiny_model(root / f, f) for f in FAMILIES}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("family", FAMILIES)
def test_span_backward_equals_transformers_autograd(models, family):
    """Gradients through two spans (recomputed per span, as servers do) equal autograd through
    transformers' own model: its first block's input is replaced by a leaf, its last block's output
    is taken by a hook."""
    from transformers import AutoModelForCausalLM

    path = models[family]
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    layers = model.transformer.h if family == "bloom" else model.model.layers
    torch.manual_seed(0)
    leaf = torch.randn(2, 7, 64, requires_grad=True)
    seen = {}

    def feed(module, args, kwargs):
        if args:
            return (leaf, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": leaf}

    def take(module, args, output):
        seen["out"] = output[0] if isinstance(output, tuple) else output

    hooks = [layers[0].register_forward_pre_hook(feed, with_kwargs=True), layers[-1].register_forward_hook(take)]
    model(input_ids=torch.randint(3, 200, (2, 7)), use_cache=False)
    for h in hooks:
        h.remove()
    grad_out = torch.randn_like(seen["out"])
    (want,) = torch.autograd.grad(seen["out"], leaf, grad_out)

    spans = [Span.load(path, 0, 2), Span.load(path, 2, 6)]
    middle = run_span(spans[0], leaf.detach()).detach()
    grad_middle, _ = span_backward(spans[1], middle, grad_out)
    got, _ = span_backward(spans[0], leaf.detach(), grad_middle)
    assert want.abs().max() > 0
    assert rel(got, want) < TOL


@pytest.mark.parametrize("family", FAMILIES)
def test_deep_prompt_gradients_equal_a_reference(models, family):
    span = Span.load(models[family], 0, 6)
    torch.manual_seed(1)
    x = torch.randn(3, 6, 64)
    prompts = torch.randn(6, 2, 64) * 0.1
    grad_out = torch.randn(3, 6, 64)
    got_x, got_p = span_backward(span, x, grad_out, prompts)

    # Reference: add the prompt with an in-place masked add, one block at a time, plain autograd.
    xr, pr = x.clone().requires_grad_(True), prompts.clone().requires_grad_(True)
    h = xr
    for i in range(6):
        pad = torch.zeros(3, 6, 64)
        pad = pad.index_put((torch.arange(3)[:, None], torch.arange(2)[None, :]), pr[i].expand(3, 2, 64))
        h = run_span(span.sub(i, i + 1), h + pad)
    want_x, want_p = torch.autograd.grad(h, [xr, pr], grad_out)
    assert rel(got_x, want_x) < TOL and rel(got_p, want_p) < TOL
    assert got_p.abs().max() > 0
    assert not any(p.requires_grad for p in span.parameters())


def test_bf16_backward_is_close_to_fp32(models):
    path = models["llama"]
    torch.manual_seed(2)
    x, g = torch.randn(1, 5, 64), torch.randn(1, 5, 64)
    want, _ = span_backward(Span.load(path, 0, 3), x, g)
    got, _ = span_backward(Span.load(path, 0, 3, dtype=torch.bfloat16), x.bfloat16(), g.bfloat16())
    assert got.dtype == torch.bfloat16
    # bf16 keeps ~3 significant digits and these random blocks amplify: compare directions
    assert torch.nn.functional.cosine_similarity(got.float().flatten(), want.flatten(), dim=0) > 0.99


def test_requests_that_do_not_fit_are_refused(models):
    span = Span.load(models["llama"], 0, 2)
    with pytest.raises(ShapeError):
        check_request(span, torch.zeros(1, 4, 64), torch.zeros(3, 2, 64))  # 3 prompts for 2 blocks
    with pytest.raises(ShapeError):
        check_request(span, torch.zeros(1, 4, 64), torch.zeros(2, 5, 64))  # prompt longer than the input
    with pytest.raises(TooManyTokensError):
        check_request(span, torch.zeros(2, 4, 64), None, max_tokens=7)
    with pytest.raises(ShapeError):
        span_backward(span, torch.zeros(1, 4, 64), torch.zeros(1, 3, 64))


def test_tuned_prompts_file_round_trip_and_refusal(tmp_path):
    prompts = TunedPrompts(4, 64, 6, "deep-prompt")
    prompts.deep.data.normal_()
    prompts.save(tmp_path / "t.safetensors", "tiny", "abc123")
    back = TunedPrompts.load(tmp_path / "t.safetensors", "abc123")
    assert back.method == "deep-prompt" and torch.equal(back.input, prompts.input)
    assert torch.equal(back.deep, prompts.deep)
    with pytest.raises(TunedFileError, match="tuned for model 'tiny'"):
        TunedPrompts.load(tmp_path / "t.safetensors", "other")
    (tmp_path / "bad.safetensors").write_bytes(b"not a file")
    with pytest.raises(TunedFileError):
        TunedPrompts.load(tmp_path / "bad.safetensors")


def test_training_data_lines_and_errors(tmp_path):
    tok = word_level_tokenizer(64)
    good = tmp_path / "d.jsonl"
    good.write_text(json.dumps({"prompt": "w5 w6", "completion": "w7"}) + "\n\n" + json.dumps({"text": "w3 w4 w9"}))
    a, b = load_examples(good, tok)
    assert a.ids == (5, 6, 7, 2) and a.loss_from == 2
    assert b.ids == (3, 4, 9) and b.loss_from == 1
    ids, mask = make_batch([a, b])
    assert ids.tolist() == [[5, 6, 7, 2], [3, 4, 9, 0]]
    assert mask.tolist() == [[False, False, True, True], [False, True, True, False]]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "w5"}\n')
    with pytest.raises(DataError, match="bad.jsonl:1"):
        load_examples(bad, tok)
    bad.write_text("{nope\n")
    with pytest.raises(DataError, match="not JSON"):
        load_examples(bad, tok)


@pytest.mark.parametrize("method", ["prompt", "deep-prompt"])
def test_training_steps_lower_the_loss_and_leave_weights_alone(models, method):
    path = models["qwen2"]
    tok = word_level_tokenizer(256)
    head = ClientHead.load(path)
    blocks = LocalBlocks([Span.load(path, 0, 3), Span.load(path, 3, 6)])
    before = {k: v.clone() for k, v in blocks.state_dict().items()}
    examples = [e for i in range(4) for e in [_example(tok, f"w{10 + i} w{20 + i}", "w99 w98")]]
    prompts = TunedPrompts(3, 64, ModelInfo.load(path).num_blocks, method)
    trainer = PromptTrainer(head, prompts, blocks, torch.optim.Adam(prompts.parameters(), lr=0.05), pad_id=2)
    first = trainer.evaluate(examples)
    for _ in range(15):
        trainer.step(examples)
    assert trainer.evaluate(examples) < 0.7 * first
    assert all(torch.equal(v, blocks.state_dict()[k]) for k, v in before.items())
    if method == "deep-prompt":
        assert prompts.deep.abs().max() > 0
    loss = completion_loss(head, prompts, blocks, examples, pad_id=2)
    assert loss.requires_grad


def _example(tok, prompt, completion):
    from corolla.core.tuning.data import Example

    p = tok(prompt).input_ids
    c = tok(completion, add_special_tokens=False).input_ids
    return Example(tuple(p + c), len(p))


def test_int8_spans_answer_backward_close_to_fp32(models):
    """Quantized spans run backward too (bitsandbytes layers pass gradients to their inputs); the
    gradients are those of the quantized model, close in direction to fp32's."""
    path = models["llama"]
    torch.manual_seed(4)
    x, g, d = torch.randn(2, 5, 64), torch.randn(2, 5, 64), torch.randn(6, 2, 64) * 0.1
    want_x, want_d = span_backward(Span.load(path, 0, 6), x, g, d)
    got_x, got_d = span_backward(Span.load(path, 0, 6, quant="int8"), x, g, d)
    cos = torch.nn.functional.cosine_similarity
    assert cos(got_x.flatten(), want_x.flatten(), dim=0) > 0.9
    assert cos(got_d.flatten(), want_d.flatten(), dim=0) > 0.9
