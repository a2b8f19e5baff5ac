"""Training through real libp2p hosts on 127.0.0.1 (servers in this process): gradients through a
route of remote spans equal local autograd, failed requests are retried elsewhere, bad requests get
clear errors, and servers' weights never change."""

from __future__ import annotations

import pytest
import torch
import trio

from corolla.core.span import Span
from corolla.core.tuning.training import LocalBlocks
from corolla.p2p.client import open_stream
from corolla.p2p.errors import SwarmError
from corolla.p2p.records import BACKWARD_PROTOCOL
from corolla.p2p.remote_blocks import RemoteBlocks, RemoteSequential
from corolla.p2p.wire import encode, read_message, write_message
from tests.models import FAMILIES, make_tiny_model
from tests.p2p.test_swarm_inprocess import TinySwarm, run_with_swarm

# fp32. Servers recompute each span on its own, with the same operations as local autograd; what
# differs is only float rounding, relative to the largest gradient.
GRAD_TOL = 1e-5


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("backward-models")
    return {f: make_tiny_model(root / f, f) for f in FAMILIES}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def local_grads(path, x, deep, grad_out):
    blocks = LocalBlocks([Span.load(path, 0, 6)])
    xl, dl = x.clone().requires_grad_(True), deep.clone().requires_grad_(True)
    out = blocks(xl, dl)
    gx, gd = torch.autograd.grad(out, [xl, dl], grad_out)
    return out.detach(), gx, gd


def data(batch: int = 3, tokens: int = 7, prompt: int = 2):
    torch.manual_seed(3)
    return torch.randn(batch, tokens, 64), torch.randn(6, prompt, 64) * 0.1, torch.randn(batch, tokens, 64)


@pytest.mark.parametrize("family", FAMILIES)
def test_gradients_through_remote_spans_equal_local_autograd(models, family):
    """Three servers, a batch of 3, deep prompts; the module used the way a training loop uses it:
    autograd in a worker thread, requests in the trio loop."""
    path = models[family]
    x, deep, grad_out = data()

    async def body(swarm: TinySwarm):
        for name, (a, b) in {"a": (0, 2), "b": (2, 4), "c": (4, 6)}.items():
            await swarm.add(name, a, b)
        async with swarm.client() as client:
            module = RemoteSequential(RemoteBlocks(client), trio.lowlevel.current_trio_token())

            def train_side():
                xr, dr = x.clone().requires_grad_(True), deep.clone().requires_grad_(True)
                out = module(xr, dr)
                out.backward(grad_out)
                return out.detach(), xr.grad, dr.grad

            result = await trio.to_thread.run_sync(train_side)
            return result, module.blocks.calls

    (out, gx, gd), calls = run_with_swarm(path, body)
    want_out, want_gx, want_gd = local_grads(path, x, deep, grad_out)
    assert calls == 6  # three forwards, three backwards
    assert rel(out, want_out) < GRAD_TOL
    assert rel(gx, want_gx) < GRAD_TOL
    assert rel(gd, want_gd) < GRAD_TOL
    assert gd.abs().max() > 0 and gx.abs().max() > 0


def test_a_server_gone_before_backward_is_replaced_and_weights_stay(models):
    """The forward ran on one server that then dies: the backward runs on two others, rebuilding
    the input at their boundary with a forward first."""
    path = models["llama"]
    x, deep, grad_out = data()

    async def body(swarm: TinySwarm):
        whole = await swarm.add("whole", 0, 6)
        await swarm.add("front", 0, 3)
        await swarm.add("back", 3, 6)
        before = {k: v.clone() for k, v in whole.span.state_dict().items()}
        async with swarm.client() as client:
            blocks = RemoteBlocks(client)
            out, segments = await blocks.forward(x, deep)
            weights_kept = all(torch.equal(v, whole.span.state_dict()[k]) for k, v in before.items())
            swarm.kill("whole")
            await trio.sleep(0.2)
            calls = blocks.calls
            gx, gd = await blocks.backward(segments, grad_out, deep)
            return gx, gd, [(s.start, s.end) for s in segments], weights_kept, blocks.calls - calls

    gx, gd, segments, weights_kept, calls_after = run_with_swarm(path, body)
    _, want_gx, want_gd = local_grads(path, x, deep, grad_out)
    assert segments == [(0, 6)] and weights_kept
    assert calls_after == 3  # forward on 0:3, backward on 3:6, backward on 0:3
    assert rel(gx, want_gx) < GRAD_TOL and rel(gd, want_gd) < GRAD_TOL


def test_a_lying_server_is_skipped_and_the_request_retried(models):
    """A server whose answers are NaN (a broken or hostile peer) is banned; the others answer."""
    path = models["llama"]
    x, deep, grad_out = data()
    retries: list = []

    async def body(swarm: TinySwarm):
        liar = await swarm.add("liar", 0, 6)
        await swarm.add("front", 0, 3)
        await swarm.add("back", 3, 6)
        liar.span.blocks[0].mlp.down_proj.weight.data.fill_(float("nan"))
        async with swarm.client() as client:
            blocks = RemoteBlocks(client, on_retry=retries.append)
            out, segments = await blocks.forward(x, deep)
            gx, gd = await blocks.backward(segments, grad_out, deep)
            return gx, gd, [(s.start, s.end) for s in segments], liar.peer_id

    gx, gd, segments, liar_id = run_with_swarm(path, body)
    _, want_gx, want_gd = local_grads(path, x, deep, grad_out)
    assert [(r.start, r.end, r.peer_id) for r in retries] == [(0, 6, liar_id)]
    assert "NaN" in retries[0].reason
    assert segments == [(0, 3), (3, 6)]
    assert rel(gx, want_gx) < GRAD_TOL and rel(gd, want_gd) < GRAD_TOL


def test_bf16_servers_give_close_gradients(models):
    path = models["llama"]
    x, deep, grad_out = data()

    async def body(swarm: TinySwarm):
        node = await swarm.add("a", 0, 6)
        node.span = Span.load(path, 0, 6, dtype=torch.bfloat16)
        async with swarm.client() as client:
            await client.servers(fresh=True)
            blocks = RemoteBlocks(client)
            # the server's info now says bfloat16, so the client sends bf16 and converts the answer back
            out, segments = await blocks.forward(x, deep)
            return await blocks.backward(segments, grad_out, deep)

    gx, gd = run_with_swarm(path, body)
    _, want_gx, want_gd = local_grads(path, x, deep, grad_out)
    cos = torch.nn.functional.cosine_similarity
    assert cos(gx.flatten(), want_gx.flatten(), dim=0) > 0.99
    assert cos(gd.flatten(), want_gd.flatten(), dim=0) > 0.99


async def raw_request(client, peer_id: str, header: dict, tensors: list[torch.Tensor]):
    stream = await open_stream(client.peer, peer_id, BACKWARD_PROTOCOL, 5)
    await write_message(stream, encode(header, tensors), timeout=5)
    return await read_message(stream, idle_timeout=10, body_timeout=10)


def test_bad_requests_get_clear_errors_and_the_server_goes_on(models):
    path = models["llama"]
    x, deep, grad_out = data()

    async def body(swarm: TinySwarm):
        node = await swarm.add("a", 0, 6)
        async with swarm.client() as client:
            await client.servers()
            pid = node.peer_id
            replies = [
                await raw_request(client, pid, {"type": "backward", "start": 0, "end": 6}, [x, grad_out[:, :3]]),
                await raw_request(client, pid, {"type": "backward", "start": 4, "end": 9}, [x, grad_out]),
                await raw_request(client, pid, {"type": "forward", "start": 0, "end": 6}, [x, deep[:2]]),
                await raw_request(client, pid, {"type": "forward"}, [torch.zeros(3, 3000, 64)]),
                await raw_request(client, pid, {"type": "step"}, [x]),
            ]
            good = await raw_request(client, pid, {"type": "backward", "start": 0, "end": 6}, [x, grad_out, deep])
            with pytest.raises(SwarmError, match="TooManyTokensError"):
                await RemoteBlocks(client).forward(torch.zeros(3, 3000, 64))
            return replies, good

    replies, good = run_with_swarm(path, body)
    codes = [h.get("code") for h, _ in replies]
    assert codes == ["ShapeError", "BlockRangeError", "ShapeError", "TooManyTokensError", "ProtocolError"]
    assert all(h["type"] == "error" and h["message"] for h, _ in replies)
    header, tensors = good
    _, want_gx, want_gd = local_grads(path, x, deep, grad_out)
    assert header["type"] == "result" and rel(tensors[0], want_gx) < GRAD_TOL and rel(tensors[1], want_gd) < GRAD_TOL
