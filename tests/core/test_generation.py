"""Sampling and the decoder loop on the default model's tokenizer and real logits."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from corolla.core.chain import LocalChain
from corolla.core.errors import CorollaError
from corolla.core.generation import Decoder, Sampler, SamplingParams, chat_prompt_ids, decode_in_process
from corolla.core.head import ClientHead


@pytest.fixture(scope="module")
def llama(tiny_models):
    path = tiny_models["llama"]
    return path, AutoTokenizer.from_pretrained(path), ClientHead.load(path)


def _run(llama, params, prompt="Once upon a time", eos_ids=None, on_text=None):
    path, tokenizer, head = llama
    decoder = Decoder(head, tokenizer, params, tokenizer(prompt).input_ids, on_text=on_text, eos_ids=eos_ids)
    with LocalChain.load(path, [(0, 3), (3, 6)]) as chain:
        chain.open(decoder.max_length)
        decode_in_process(decoder, chain.forward)
    return decoder


def test_seeded_sampling_is_reproducible_and_seeds_differ(llama):
    runs = [_run(llama, SamplingParams(max_new_tokens=12, temperature=1.5, top_p=0.95, seed=s), eos_ids=set())
            for s in (7, 7, 8)]
    assert runs[0].token_ids == runs[1].token_ids
    assert runs[0].token_ids != runs[2].token_ids


def test_top_k_one_is_greedy(llama):
    greedy = _run(llama, SamplingParams(max_new_tokens=10, temperature=0), eos_ids=set())
    top1 = _run(llama, SamplingParams(max_new_tokens=10, temperature=3.0, top_k=1, seed=1), eos_ids=set())
    assert top1.token_ids == greedy.token_ids


def test_top_p_keeps_the_nucleus_only():
    logits = torch.tensor([5.0, 4.0, 0.0, -1.0, -2.0])
    sampler = Sampler(SamplingParams(temperature=1.0, top_p=0.5, seed=0))
    assert {sampler.choose(logits, []) for _ in range(50)} == {0}  # token 0 alone holds > 50%
    sampler = Sampler(SamplingParams(temperature=1.0, top_p=0.9, seed=0))
    assert {sampler.choose(logits, []) for _ in range(200)} == {0, 1}


def test_repetition_penalty_discourages_seen_tokens():
    logits = torch.tensor([2.0, 1.9, -1.0])
    plain = Sampler(SamplingParams(temperature=0))
    penalized = Sampler(SamplingParams(temperature=0, repetition_penalty=1.3))
    assert plain.choose(logits, [0]) == 0
    assert penalized.choose(logits, [0]) == 1


def test_max_new_tokens_eos_and_stop_strings(llama):
    d = _run(llama, SamplingParams(max_new_tokens=5, temperature=0), eos_ids=set())
    assert len(d.token_ids) == 5 and d.finish_reason == "length"
    # make the 3rd greedy token the EOS: generation ends before it, and it is not part of the text
    third = d.token_ids[2]
    e = _run(llama, SamplingParams(max_new_tokens=5, temperature=0), eos_ids={third})
    assert e.token_ids == d.token_ids[:2] and e.finish_reason == "eos"
    stop = d.text[len(d.text) // 2:][:3]
    assert stop.strip(), "need a non-blank stop string"
    s = _run(llama, SamplingParams(max_new_tokens=5, temperature=0, stop=(stop,)), eos_ids=set())
    assert s.finish_reason == "stop" and stop not in s.text and d.text.startswith(s.text)


def test_streamed_text_adds_up_to_the_final_text(llama):
    pieces: list[str] = []
    d = _run(llama, SamplingParams(max_new_tokens=12, temperature=0), eos_ids=set(), on_text=pieces.append)
    assert "".join(pieces) == d.text and len(pieces) > 1


def test_bad_sampling_settings_are_refused():
    for bad in ({"max_new_tokens": 0}, {"temperature": -1.0}, {"top_p": 0.0}, {"top_k": -1},
                {"repetition_penalty": 0.0}):
        with pytest.raises(CorollaError):
            Sampler(SamplingParams(**bad))


def test_chat_template_is_applied(default_model_path):
    tokenizer = AutoTokenizer.from_pretrained(default_model_path)
    ids = chat_prompt_ids(tokenizer, [{"role": "user", "content": "Hi there"}])
    text = tokenizer.decode(ids)
    assert "<|im_start|>user\nHi there<|im_end|>" in text and text.rstrip().endswith("<|im_start|>assistant")


@pytest.mark.parametrize("speculative", [0, 3])
def test_a_rollback_regenerates_from_the_first_wrong_output_and_shows_only_checked_text(llama, speculative):
    """Blocks whose outputs from position `bad` on are wrong until a check says so (at the end): the
    loop goes back there; the text equals an honest run's, and what was shown was never taken back."""
    import trio

    from corolla.core.generation import Rollback, decode

    path, tokenizer, head = llama
    params = SamplingParams(max_new_tokens=16, temperature=0)
    honest_run = _run(llama, params, eos_ids=set())
    honest = honest_run.text
    ids = tokenizer("Once upon a time").input_ids
    bad = len(ids) + 4  # the output deciding the 6th new token is the first wrong one
    shown: list[str] = []
    decoder = Decoder(head, tokenizer, params, ids, on_text=shown.append, eos_ids=set(), speculative=speculative)
    lying, end, before = [True], [0], []
    with LocalChain.load(path, [(0, 6)]) as chain:
        chain.open(decoder.max_length)

        async def forward(hidden, start=None):
            first = end[0] if start is None else start
            out, end[0] = chain.forward(hidden, start), first + hidden.shape[1]
            positions = torch.arange(first, end[0])
            if lying[0]:
                out = torch.where((positions >= bad).view(1, -1, 1), out * 1.5 + 3, out)
            return out

        async def checked(final: bool) -> int:
            if final and lying[0]:
                lying[0] = False
                before.append(decoder.text)
                raise Rollback(bad)
            return bad if lying[0] else 10**6  # nothing from `bad` on passed a check yet

        text = trio.run(lambda: decode(decoder, forward, checked=checked))
    assert text == honest and "".join(shown) == text
    # until the check, only the 5 tokens decided by outputs before `bad` were shown
    assert before == [tokenizer.decode(honest_run.token_ids[:5], skip_special_tokens=True)]
