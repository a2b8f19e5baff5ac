"""The memory and thread caps in Settings reach a real contributed server: the memory cap sets how
many blocks it loads, the thread cap how many CPU threads it computes with."""

import pytest
import torch

from corolla.app.contribute.state import Phase
from corolla.app.settings import Settings
from corolla.core.memory import blocks_that_fit
from corolla.core.model import ModelInfo
from corolla.ui.bridge.contribution import ContributionController


@pytest.mark.slow
def test_the_memory_cap_sets_the_blocks_and_the_thread_cap_the_threads(qtbot, default_model_path):
    config = ModelInfo.load(default_model_path).config
    cap_gib = 1.2
    expected = blocks_that_fit(config, int(cap_gib * 2**30), torch.float32, "none", 8192)
    assert 1 <= expected < config.num_hidden_layers  # the cap, not the model, decides here
    c = ContributionController()
    lines: list[str] = []
    c.output.connect(lines.append)
    try:
        c.start(Settings(device="cpu", max_gpu_memory=cap_gib, cpu_threads=1, num_blocks=1))
        qtbot.waitUntil(lambda: c.state.start is not None or c.state.phase is Phase.ERROR, timeout=180_000)
        assert c.state.phase is Phase.STARTING, c.state.error
        assert (c.state.start, c.state.end) == (0, expected)  # the number of blocks was ignored: the cap sets it
        qtbot.waitUntil(lambda: any("loading blocks" in line for line in lines), timeout=30_000)
        assert any("with 1 CPU thread" in line for line in lines), lines
    finally:
        c.shutdown()
    assert c.state.phase is Phase.OFF
