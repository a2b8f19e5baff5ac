"""`corolla api` as a real process on a local 3-server swarm, driven by the real `openai` client."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from corolla.app.demo.processes import ChildProcess, LocalSwarm

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.slow

QUESTION = "What is the capital of France?"
TOKENS = 12


@pytest.fixture(scope="module")
def api(tmp_path_factory, default_model_path):
    work = tmp_path_factory.mktemp("api")
    with LocalSwarm(work, announce_period=3.0) as swarm:
        for blocks in ("0:10", "10:20", "20:30"):
            swarm.start_server("--blocks", blocks)
        for server in swarm.servers:
            server.wait_for("serving block")
        proc = ChildProcess("api", ["api", "--initial-peers", swarm.bootstrap_addr, "--port", "0",
                                    "--api-key", "sesame"], work)
        try:
            url = proc.wait_for(r"on (http://\S+)/v1").group(1)
            yield swarm, openai.OpenAI(base_url=url + "/v1", api_key="sesame", max_retries=0, timeout=300), url
        finally:
            proc.stop()


def generate_chat(swarm, question: str) -> str:
    out = subprocess.run([sys.executable, "-m", "corolla.app", "generate", "--chat", "--prompt", question, "--greedy",
                          "--max-new-tokens", str(TOKENS), "--no-stream", "--initial-peers", swarm.bootstrap_addr],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.rstrip("\n")


def test_chat_completions_equal_generate_chat_streamed_or_not(api):
    swarm, client, _ = api
    assert [m.id for m in client.models.list().data] == ["SmolLM2-135M-Instruct"]
    messages = [{"role": "user", "content": QUESTION}]
    whole = client.chat.completions.create(model="SmolLM2-135M-Instruct", messages=messages, temperature=0,
                                           max_tokens=TOKENS)
    streamed = client.chat.completions.create(model="default", messages=messages, temperature=0,
                                              max_tokens=TOKENS, stream=True)
    pieces = list(streamed)
    expected = generate_chat(swarm, QUESTION)
    assert whole.choices[0].message.content == expected
    assert "".join(c.choices[0].delta.content or "" for c in pieces) == expected
    assert pieces[-1].choices[0].finish_reason in ("stop", "length")
    assert whole.usage.completion_tokens <= TOKENS and whole.usage.prompt_tokens > 0


def test_eight_concurrent_requests_all_complete(api):
    _, client, _ = api

    def ask(i: int) -> str:
        reply = client.chat.completions.create(model="default", temperature=0, max_tokens=6,
                                               messages=[{"role": "user", "content": f"Say the number {i}."}])
        return reply.choices[0].message.content

    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(ask, range(8)))
    assert len(replies) == 8 and all(isinstance(r, str) and r for r in replies)


def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(api):
    _, client, url = api
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(model="default", messages=[{"role": "user", "content": "hi"}], temperature=9)
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model="default", messages=[])
    with pytest.raises(openai.AuthenticationError, match="API key"):
        openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()
    import httpx

    raw = httpx.post(url + "/v1/chat/completions", content=b"{not json", headers={"Authorization": "Bearer sesame"})
    assert raw.status_code == 400 and raw.json()["error"]["type"] == "invalid_request_error"
    text = client.completions.create(model="default", prompt="The capital of France is", temperature=0, max_tokens=4)
    assert text.choices[0].text.strip()  # still serving
