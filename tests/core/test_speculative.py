"""Speculative decoding by prompt lookup: the same tokens as plain decoding, in fewer round trips."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from corolla.core.chain import LocalChain
from corolla.core.drafts import lookup_draft
from corolla.core.generation import Decoder, Sampler, SamplingError, SamplingParams, decode_in_process
from corolla.core.head import ClientHead
from tests.models import FAMILIES

PROMPT = "the cat sat on the mat and the cat sat on the"


def test_lookup_draft_continues_the_latest_match():
    assert lookup_draft([1, 2, 3, 9, 1, 2, 3, 7, 1, 2], 3) == [3, 7, 1]  # latest match of [1, 2]
    assert lookup_draft([5, 6, 7, 5], 2) == [6, 7]
    assert lookup_draft([1, 2, 3, 4], 2) == []  # the tail never occurred before
    assert lookup_draft([1, 2, 1], 0) == []


def _run(path, tokenizer, head, chain, params, speculative, draft=lookup_draft, prompt=PROMPT):
    decoder = Decoder(head, tokenizer, params, tokenizer(prompt).input_ids, eos_ids=set(), speculative=speculative,
                      draft=draft)
    chain.open(decoder.max_length)
    try:
        decode_in_process(decoder, chain.forward)
    finally:
        chain.close()
    return decoder


def _half_right(truth: list[int], prompt_length: int):
    """A drafter that knows the plain run's tokens and spoils every third guess: random tiny models
    never repeat their context, so prompt lookup alone would guess nothing they agree with."""
    calls = []

    def draft(context: list[int], k: int) -> list[int]:
        done = len(context) - prompt_length
        guess = list(truth[done:done + k])
        calls.append(len(calls))
        for i in range(len(guess)):
            if (i + len(calls)) % 3 == 0:
                guess[i] = (guess[i] + 1) % 256
        return guess

    return draft


@pytest.mark.parametrize("family", FAMILIES)
def test_speculative_greedy_equals_plain_greedy(tiny_models, family):
    path = tiny_models[family]
    tokenizer, head = AutoTokenizer.from_pretrained(path), ClientHead.load(path)
    params = SamplingParams(max_new_tokens=40, temperature=0)
    with LocalChain.load(path, [(0, 2), (2, 6)]) as chain:
        plain = _run(path, tokenizer, head, chain, params, 0)
        lookup = _run(path, tokenizer, head, chain, params, 4)
        guessed = _run(path, tokenizer, head, chain, params, 4,
                       draft=_half_right(plain.token_ids, len(plain.prompt_ids)))
    assert lookup.token_ids == plain.token_ids
    assert guessed.token_ids == plain.token_ids
    assert len(plain.token_ids) == 40 and plain.rounds == 40
    # guesses were kept and rejected (the caches rolled back), in fewer round trips than tokens
    assert 0 < guessed.accepted < guessed.drafted
    assert guessed.rounds == 40 - guessed.accepted
    assert guessed.tokens_per_round > 1.0


def test_prompt_lookup_pays_off_on_a_real_model(default_model_path):
    # the default model continues a pattern from its prompt: lookup guesses it
    path = default_model_path
    tokenizer, head = AutoTokenizer.from_pretrained(path), ClientHead.load(path)
    params = SamplingParams(max_new_tokens=24, temperature=0)
    prompt = "Monday, Tuesday, Wednesday, Thursday, Friday. Monday, Tuesday, Wednesday, Thursday, Friday. Monday,"
    with LocalChain.load(path, [(0, 30)]) as chain:
        plain = _run(path, tokenizer, head, chain, params, 0, prompt=prompt)
        fast = _run(path, tokenizer, head, chain, params, 5, prompt=prompt)
    assert fast.token_ids == plain.token_ids
    assert fast.tokens_per_round > 2.0, (fast.accepted, fast.drafted, fast.rounds)


def test_speculative_greedy_with_repetition_penalty(tiny_models):
    path = tiny_models["llama"]
    tokenizer, head = AutoTokenizer.from_pretrained(path), ClientHead.load(path)
    params = SamplingParams(max_new_tokens=30, temperature=0, repetition_penalty=1.05)
    with LocalChain.load(path, [(0, 6)]) as chain:
        plain = _run(path, tokenizer, head, chain, params, 0)
        fast = _run(path, tokenizer, head, chain, params, 3)
    assert fast.token_ids == plain.token_ids


def test_checked_drafts_keep_the_sampling_distribution():
    # a guess is kept with the model's probability for it, else another token is drawn: over many
    # draws the tokens follow the model's distribution whatever the guess was
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0])
    want = torch.softmax(logits, dim=-1)
    sampler = Sampler(SamplingParams(temperature=1.0, seed=3))
    for draft in (0, 3):
        counts = torch.zeros(5)
        for _ in range(6000):
            token, _ = sampler.check_draft(logits, [], draft)
            counts[token] += 1
        torch.testing.assert_close(counts / counts.sum(), want, atol=0.02, rtol=0)


def test_speculative_setting_is_checked(tiny_models):
    path = tiny_models["llama"]
    tokenizer, head = AutoTokenizer.from_pretrained(path), ClientHead.load(path)
    with pytest.raises(SamplingError, match="speculative"):
        Decoder(head, tokenizer, SamplingParams(), [1, 2], speculative=-1)
