"""Tiny random models of every supported family, saved as real sharded safetensors folders."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

FAMILIES = ("llama", "mistral", "qwen2", "bloom")


def _config(family: str, vocab: int):
    from transformers import BloomConfig, LlamaConfig, MistralConfig, Qwen2Config

    common = {"vocab_size": vocab, "hidden_size": 64, "num_hidden_layers": 6, "num_attention_heads": 4,
              "initializer_range": 0.3, "eos_token_id": 2, "bos_token_id": 1, "pad_token_id": 2}
    if family == "bloom":
        return BloomConfig(**common)
    llama_like = dict(common, intermediate_size=128, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=family != "mistral")
    if family == "llama":
        return LlamaConfig(**llama_like)
    if family == "mistral":
        return MistralConfig(**llama_like, sliding_window=None)
    return Qwen2Config(**llama_like)


def make_tiny_model(folder: Path, family: str, tokenizer_dir: Path | None = None, seed: int = 0) -> Path:
    """A random `family` model with 6 blocks, hidden 64, written as several safetensors shards."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    vocab = 49152 if tokenizer_dir is not None else 256
    model = AutoModelForCausalLM.from_config(_config(family, vocab))
    model.save_pretrained(folder, max_shard_size="200KB")
    if tokenizer_dir is not None:
        for item in tokenizer_dir.iterdir():
            if item.name.startswith(("tokenizer", "special_tokens", "chat_template")):
                shutil.copy(item, folder / item.name)
    else:
        word_level_tokenizer(vocab).save_pretrained(folder)
    return folder


def word_level_tokenizer(vocab: int):
    """A real (if simple) fast tokenizer: <unk> <s> </s>, then words w3..w{vocab-1}, split on spaces."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {"<unk>": 0, "<s>": 1, "</s>": 2} | {f"w{i}": i for i in range(3, vocab)}
    tokenizer = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>")


