"""Tiny random models of the newer families (4 blocks, hidden 64, vocab 256), saved as sharded
safetensors with a word-level tokenizer and a chat template. Nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.models import word_level_tokenizer

VOCAB = 256
LAYERS = 4
CHAT_TEMPLATE = "{% for m in messages %}<s> {{ m['content'] }} </s> {% endfor %}"

_COMMON = {"vocab_size": VOCAB, "hidden_size": 64, "num_hidden_layers": LAYERS, "num_attention_heads": 4,
           "num_key_value_heads": 2, "intermediate_size": 128, "max_position_embeddings": 512,
           "initializer_range": 0.3, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2}
# Small windows, so the 20-odd tokens of a test run past them and sliding layers really slide.
_MIXED = ["sliding_attention", "full_attention", "sliding_attention", "full_attention"]


def _config(name: str):
    import transformers as tf

    c = dict(_COMMON)
    if name == "llama3":  # Llama 3.x: large rope base and the llama3 frequency scaling
        return tf.LlamaConfig(**c, tie_word_embeddings=False, rope_parameters={
            "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64})
    if name == "mistral-sliding":
        return tf.MistralConfig(**c, sliding_window=5, tie_word_embeddings=False)
    if name == "qwen2.5":
        return tf.Qwen2Config(**c, tie_word_embeddings=False)
    if name == "qwen3":
        return tf.Qwen3Config(**c, head_dim=16, tie_word_embeddings=True)
    if name == "qwen3-sliding":
        return tf.Qwen3Config(**c, head_dim=16, use_sliding_window=True, sliding_window=5, max_window_layers=2,
                              layer_types=["full_attention", "full_attention", "sliding_attention", "sliding_attention"])
    if name == "gemma":
        return tf.GemmaConfig(**c, head_dim=16, tie_word_embeddings=False)
    if name == "gemma2":
        return tf.Gemma2Config(**c, head_dim=16, sliding_window=5, layer_types=_MIXED, final_logit_softcapping=3.0,
                               attn_logit_softcapping=5.0, query_pre_attn_scalar=16, tie_word_embeddings=False)
    if name == "gemma3":
        return tf.Gemma3TextConfig(**c, head_dim=16, sliding_window=5, layer_types=_MIXED,
                                   final_logit_softcapping=3.0, query_pre_attn_scalar=16, tie_word_embeddings=False)
    if name == "gemma3-image-text":  # Gemma 3 4B+ checkpoints: a text decoder beside a vision tower
        text = dict(c, head_dim=16, sliding_window=5, layer_types=_MIXED, query_pre_attn_scalar=16,
                    final_logit_softcapping=3.0)
        vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                  "image_size": 28, "patch_size": 14}
        return tf.Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4,
                               tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    if name == "phi3":
        return tf.Phi3Config(**c, tie_word_embeddings=False)
    if name == "phi4-mini":  # partial rotary and longrope scaling, as Phi-4-mini / Phi-3.5 long-context
        return tf.Phi3Config(**c, tie_word_embeddings=True, partial_rotary_factor=0.75, original_max_position_embeddings=64,
                             rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                                              "short_factor": [1.0] * 6, "long_factor": [1.5] * 6,
                                              "original_max_position_embeddings": 64})
    if name == "falcon":
        return tf.FalconConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=LAYERS, num_attention_heads=4,
                               new_decoder_architecture=True, num_kv_heads=2, initializer_range=0.3,
                               bos_token_id=1, eos_token_id=2, pad_token_id=2)
    if name == "falcon-7b":  # one key/value head shared by all (multi-query), attention beside the MLP
        return tf.FalconConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=LAYERS, num_attention_heads=4,
                               new_decoder_architecture=False, multi_query=True, parallel_attn=True,
                               initializer_range=0.3, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    if name == "falcon-rw":  # the ALiBi variant
        return tf.FalconConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=LAYERS, num_attention_heads=4,
                               alibi=True, parallel_attn=False, bias=True, multi_query=False,
                               initializer_range=0.3, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    if name == "mixtral":
        return tf.MixtralConfig(**c, num_local_experts=4, num_experts_per_tok=2, sliding_window=None)
    if name == "qwen2-moe":  # a shared expert, and one dense layer among the sparse ones
        return tf.Qwen2MoeConfig(**c, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                                 shared_expert_intermediate_size=64, mlp_only_layers=[1])
    if name == "qwen3-moe":
        return tf.Qwen3MoeConfig(**c, head_dim=16, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                                 decoder_sparse_step=2)
    if name == "olmoe":
        return tf.OlmoeConfig(**c, num_experts=4, num_experts_per_tok=2)
    if name == "deepseek-v3":  # latent attention, one dense layer first, routed + shared experts
        return tf.DeepseekV3Config(**{**c, "num_key_value_heads": 4}, moe_intermediate_size=32, n_routed_experts=4,
                                   num_experts_per_tok=2, n_group=1, topk_group=1, first_k_dense_replace=1,
                                   q_lora_rank=32, kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8,
                                   v_head_dim=16, rope_interleave=False)
    raise ValueError(f"no tiny config named {name!r}")


NEW_FAMILIES = ("llama3", "mistral-sliding", "qwen2.5", "qwen3", "qwen3-sliding", "gemma", "gemma2", "gemma3-image-text", "gemma3", "phi3", "phi4-mini", "falcon", "falcon-7b",
                "falcon-rw", "mixtral", "qwen2-moe", "qwen3-moe", "olmoe", "deepseek-v3")
MOE_FAMILIES = ("mixtral", "qwen2-moe", "qwen3-moe", "olmoe", "deepseek-v3")


def make_family_model(folder: Path, name: str, seed: int = 0) -> Path:
    """A random model of tiny config `name`, written as several safetensors shards, with a tokenizer."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = _config(name)
    if config.model_type == "gemma3":
        from transformers import Gemma3ForConditionalGeneration as image_text_model

        model = image_text_model(config)
    else:
        model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder, max_shard_size="100KB")
    tokenizer = word_level_tokenizer(VOCAB)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    return folder
