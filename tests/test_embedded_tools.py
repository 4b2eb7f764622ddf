"""Tools on the embedded default: llama.cpp (gateway/embedded.py) behind `policies/default.yaml`.

The real llama.cpp server with SmolLM2 and the gateway's chat template, the real gateway
process on the shipped default policy, the official SDKs. The model is tiny: assertions are
on the shape (an offered function, arguments that are a JSON object, the finish reason),
never on the values it picks.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import run_gateway
from tests.support.model_servers import run_llamacpp

DEFAULT_POLICY = Path(__file__).resolve().parents[1] / "policies" / "default.yaml"
WEATHER = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
ADD = {
    "name": "add",
    "description": "Add two numbers",
    "parameters": {
        "type": "object",
        "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
        "required": ["a", "b"],
    },
}
TOOLS: list[Any] = [{"type": "function", "function": f} for f in (WEATHER, ADD)]
NAMES = {"get_weather", "add"}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
# Every answer is fresh from the model (the default policy caches temperature-0 answers).
FRESH = {"x-gateway-cache": "bypass"}
# A one-argument call is ~40 tokens; the answer stops after it.
CALL_TOKENS = 64


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(llama.cpp base URL, gateway URL): the gateway on the shipped default policy."""
    # No closed-tier keys: every request goes to the embedded model.
    env = {"GATEWAY_LOCAL_BASE_URL": "", "OPENAI_API_KEY": "", "ANTHROPIC_API_KEY": ""}
    env["GEMINI_API_KEY"] = ""
    with run_llamacpp() as base:
        env["GATEWAY_LOCAL_BASE_URL"] = base
        tmp = tmp_path_factory.mktemp("embedded-tools")
        # The shipped policy as is, but for its deadlines (120 s, 30 s to a stream's first event
        # and between events): on a busy 2-core machine llama.cpp decoded ~1 token/s, with
        # 25 s between two events (measured while other suites ran); a call is ~40 tokens.
        policy = DEFAULT_POLICY.read_text()
        deadline = "\n    timeout_s: 120\n"
        assert deadline in policy
        slow = "\n    timeout_s: 900\n    first_token_timeout_s: 900\n    idle_timeout_s: 900\n"
        policy = policy.replace(deadline, slow)
        with run_gateway(policy, env, tmp=tmp) as gateway:
            yield base, gateway


@pytest.fixture(scope="module")
def client(served: tuple[str, str]) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=served[1] + "/v1", api_key="k", max_retries=0, timeout=900) as sdk:
        yield sdk


def _template(base: str, body: dict[str, Any]) -> str:
    """The prompt llama.cpp renders for a chat body (its /apply-template, no generation)."""
    answer = httpx.post(base.removesuffix("/v1") + "/apply-template", json=body, timeout=30)
    answer.raise_for_status()
    prompt: str = answer.json()["prompt"]
    return prompt


def test_plain_chat_renders_smollm2_chatml(served: tuple[str, str]) -> None:
    base = served[0]
    system = (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    )
    assert _template(base, {"messages": ASK}) == (
        f"{system}<|im_end|>\n<|im_start|>user\nWhat is the weather in Paris?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    turns = [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}],
        },
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "again"},
    ]
    assert _template(base, {"messages": turns}) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\none\ntwo<|im_end|>\n"
        "<|im_start|>assistant\nok<|im_end|>\n<|im_start|>user\nagain<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_tools_and_calls_are_in_the_prompt(served: tuple[str, str]) -> None:
    called = {"id": "c1", "type": "function"}
    called["function"] = {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    turns = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [called]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    prompt = _template(served[0], {"messages": turns, "tools": TOOLS})
    assert prompt.count(json.dumps(WEATHER["name"])) >= 2  # listed, then called
    assert "<tools>" in prompt and '"name": "add"' in prompt
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in (
        prompt
    )
    assert prompt.endswith(
        "<|im_start|>user\n<tool_response>\nsunny\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def _assert_one_call(message: Any, names: set[str]) -> None:
    assert not message.content
    assert message.tool_calls is not None and len(message.tool_calls) == 1
    call = message.tool_calls[0]
    assert call.type == "function" and call.function.name in names and call.id
    assert isinstance(json.loads(call.function.arguments), dict)


def test_required_gives_a_tool_call(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="smollm2",
        messages=ASK,
        tools=TOOLS,
        tool_choice="required",
        max_tokens=CALL_TOKENS,
        temperature=0,
        extra_headers=FRESH,
    )
    completion = raw.parse()
    assert raw.headers["x-gateway-backend"] == "local"
    assert completion.choices[0].finish_reason == "tool_calls"
    _assert_one_call(completion.choices[0].message, NAMES)


def test_named_function_streamed(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(
        model="auto",
        messages=[{"role": "user", "content": "What is 2 plus 3?"}],
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "add"}},
        max_tokens=CALL_TOKENS,
        temperature=0,
        extra_headers=FRESH,
    ) as stream:
        completion = stream.get_final_completion()
    assert completion.choices[0].finish_reason == "tool_calls"
    _assert_one_call(completion.choices[0].message, {"add"})


def test_auto_is_well_formed_either_way(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="smollm2",
        messages=ASK,
        tools=TOOLS,
        tool_choice="auto",
        max_tokens=16,
        temperature=0,
        extra_headers=FRESH,
    )
    choice = completion.choices[0]
    if choice.message.tool_calls:
        assert choice.finish_reason == "tool_calls"
        for call in choice.message.tool_calls:
            assert call.function.name in NAMES
            assert isinstance(json.loads(call.function.arguments), dict)
    else:
        assert choice.finish_reason in ("stop", "length")
        assert isinstance(choice.message.content, str) and choice.message.content


def test_a_function_that_is_not_offered_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="smollm2",
            messages=ASK,
            tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "refund"}},
            max_tokens=8,
        )
    assert "tool_choice" in str(info.value)


def test_messages_door_tool_use(served: tuple[str, str]) -> None:
    tools: list[Any] = [
        {"name": f["name"], "description": f["description"], "input_schema": f["parameters"]}
        for f in (WEATHER, ADD)
    ]
    with anthropic.Anthropic(base_url=served[1], api_key="k", max_retries=0, timeout=900) as claude:
        message = claude.messages.create(
            model="smollm2",
            max_tokens=CALL_TOKENS,
            messages=[{"role": "user", "content": "What is the weather in Paris?"}],
            tools=tools,
            tool_choice={"type": "tool", "name": "get_weather"},
            extra_body={"temperature": 0},
            extra_headers=FRESH,
        )
    assert message.stop_reason == "tool_use"
    uses = [block for block in message.content if block.type == "tool_use"]
    assert len(uses) == 1 and uses[0].name == "get_weather" and uses[0].id
    assert isinstance(uses[0].input, dict)


def test_responses_door_function_call_streamed(client: openai.OpenAI) -> None:
    tools: list[Any] = [{"type": "function", **f} for f in (WEATHER, ADD)]
    with client.responses.stream(
        model="smollm2",
        input="What is the weather in Paris?",
        tools=tools,
        tool_choice="required",
        max_output_tokens=CALL_TOKENS,
        temperature=0,
        store=False,
        extra_headers=FRESH,
    ) as stream:
        response = stream.get_final_response()
    calls = [item for item in response.output if item.type == "function_call"]
    assert response.status == "completed"
    assert len(calls) == 1 and calls[0].name in NAMES and calls[0].call_id
    assert isinstance(json.loads(calls[0].arguments), dict)
