"""GET /v1/models with a `"*"` route lists what the backends it reaches offer."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.conftest import run_gateway
from tests.support.fake_upstreams import serve_in_thread
from tests.support.model_servers import free_port

POLICY = """
backends:
  listed: {{provider: openai, base_url: "{url}/v1", api_key: sk-upstream, tier: open}}
  fixed: {{provider: openai, base_url: "{url}/v1", model: fixed-model, tier: open}}
  dead: {{provider: openai, base_url: "http://127.0.0.1:{dead}/v1", tier: open}}
models:
  auto: {{to: [fixed]}}
  "*":
    route:
      - when: {{difficulty_at_least: 0.9}}
        to: [fixed]
      - to: [dead, listed]
teams:
  all: {{keys: [sk-all]}}
  aliases-only: {{keys: [sk-aliases], allowed_models: [auto]}}
"""


@pytest.fixture(scope="module")
def wildcard_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    seen: list[str | None] = []

    async def models(request: Request) -> Response:
        seen.append(request.headers.get("authorization"))
        data = [{"id": name, "object": "model"} for name in ("llama-3-8b", "qwen-3-4b")]
        return Response(orjson.dumps({"object": "list", "data": data}))

    app = Starlette(routes=[Route("/v1/models", models)])
    with (
        serve_in_thread(app) as url,
        run_gateway(
            POLICY.format(url=url, dead=free_port()), tmp=tmp_path_factory.mktemp("wildcard")
        ) as gateway,
    ):
        yield gateway
    assert seen and seen[0] == "Bearer sk-upstream"
    assert len(seen) == 1  # cached between listings


def test_wildcard_lists_the_backends_models(wildcard_gateway: str) -> None:
    with openai.OpenAI(base_url=wildcard_gateway + "/v1", api_key="sk-all") as client:
        for _ in range(2):
            names = [m.id for m in client.models.list()]
            assert names == ["auto", "fixed-model", "llama-3-8b", "qwen-3-4b"]


def test_a_key_without_the_wildcard_sees_only_its_models(wildcard_gateway: str) -> None:
    with openai.OpenAI(base_url=wildcard_gateway + "/v1", api_key="sk-aliases") as client:
        assert [m.id for m in client.models.list()] == ["auto"]
