"""The gateway in front of real open-weight servers: vLLM and llama.cpp serving SmolLM2.

The model is tiny: assertions are on shape, usage and finish reasons, never on wording.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import run_gateway
from tests.support.model_servers import run_llamacpp, run_vllm

POLICY = """
backends:
  local: {{provider: openai, base_url: "{base}", model: smollm2, tier: open,
          price: {{input_per_mtok: 0.02, output_per_mtok: 0.06}}, timeout_s: 120}}
models:
  auto:
    route:
      - when: {{closed_share: 0.2}}
        to: [local]
      - to: [local]
  smollm2: {{to: [local]}}
"""


@pytest.fixture(scope="module", params=["vllm", "llamacpp"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str, str]]:
    """(kind, model server base URL, gateway base URL)."""
    runner = run_vllm if request.param == "vllm" else run_llamacpp
    tmp = tmp_path_factory.mktemp(f"gateway-{request.param}")
    with runner() as base, run_gateway(POLICY.format(base=base), tmp=tmp) as gateway:
        yield request.param, base, gateway


@pytest.fixture(scope="module")
def gateway_client(served: tuple[str, str, str]) -> Iterator[openai.OpenAI]:
    """The official client, pointed at the gateway in front of the server."""
    base_url = served[2] + "/v1"
    with openai.OpenAI(base_url=base_url, api_key="k", max_retries=0, timeout=120) as client:
        yield client


@pytest.mark.parametrize("model", ["smollm2", "auto"])
def test_chat(gateway_client: openai.OpenAI, model: str) -> None:
    raw = gateway_client.chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=8,
        temperature=0,
    )
    completion = raw.parse()
    assert raw.headers["x-gateway-backend"] == "local"
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert isinstance(completion.choices[0].message.content, str)
    assert completion.usage is not None
    assert completion.usage.prompt_tokens > 0 and 0 < completion.usage.completion_tokens <= 8


def test_chat_stream_with_usage(gateway_client: openai.OpenAI) -> None:
    chunks = list(
        gateway_client.chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": "Count to five."}],
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes and finishes[-1] in ("stop", "length")
    assert any(c.choices[0].delta.content for c in chunks if c.choices)


def test_stream_without_usage_hides_it(
    served: tuple[str, str, str], gateway_client: openai.OpenAI
) -> None:
    _, _, gateway = served
    chunks = list(
        gateway_client.chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": "Hi"}],
            max_tokens=4,
            stream=True,
        )
    )
    assert chunks and all(c.usage is None for c in chunks)
    # ... but the gateway still counted the tokens for accounting.
    metrics = httpx.get(gateway + "/metrics").text.splitlines()
    counted = [
        float(line.rsplit(" ", 1)[1])
        for line in metrics
        if line.startswith("gateway_tokens_total{") and 'kind="completion"' in line
    ]
    assert counted and sum(counted) > 0


def test_completions(gateway_client: openai.OpenAI) -> None:
    completion = gateway_client.completions.create(
        model="smollm2", prompt="The capital of France is", max_tokens=4, temperature=0
    )
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage is not None and completion.usage.completion_tokens > 0


def test_embeddings_through_gateway(
    served: tuple[str, str, str], gateway_client: openai.OpenAI
) -> None:
    kind = served[0]
    if kind == "vllm":
        pytest.skip("this vLLM serves SmolLM2 for generation only; llama.cpp covers embeddings")
    result = gateway_client.embeddings.create(model="smollm2", input=["hello", "world"])
    assert [d.index for d in result.data] == [0, 1]
    assert len(result.data[0].embedding) > 0


def test_messages_door(served: tuple[str, str, str]) -> None:
    import anthropic

    _, _, gateway = served
    with anthropic.Anthropic(base_url=gateway, api_key="k", max_retries=0, timeout=120) as claude:
        message = claude.messages.create(
            model="smollm2", max_tokens=8, messages=[{"role": "user", "content": "Say hello."}]
        )
        assert message.stop_reason in ("end_turn", "max_tokens")
        assert message.content[0].type == "text" and message.content[0].text
        assert message.usage.input_tokens > 0 and 0 < message.usage.output_tokens <= 8
        ask: Any = [{"role": "user", "content": "Count to five."}]
        with claude.messages.stream(model="smollm2", max_tokens=8, messages=ask) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
    assert text and final.usage.output_tokens > 0


def test_responses_door(gateway_client: openai.OpenAI) -> None:
    client = gateway_client
    first = client.responses.create(model="smollm2", input="Say hello.", max_output_tokens=8)
    assert first.status in ("completed", "incomplete") and first.output_text
    assert first.usage is not None and first.usage.input_tokens > 0
    events = list(
        client.responses.create(
            model="smollm2",
            previous_response_id=first.id,
            input="Again.",
            max_output_tokens=8,
            stream=True,
        )
    )
    assert events[0].type == "response.created"
    assert events[-1].type in ("response.completed", "response.incomplete")
