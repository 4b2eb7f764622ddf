"""Policy loading: every shipped file validates; errors name file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main
from gateway.errors import PolicyError
from gateway.policy import load_policy, parse_policy

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(
    [*(REPO / "policies").rglob("*.yaml"), *(REPO / "bench" / "policies").glob("*.yaml")]
)
ENV = {"UPSTREAM_BASE_URL": "http://127.0.0.1:1/v1"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_policies_validate(path: Path) -> None:
    loaded = load_policy(path, ENV)
    assert loaded.policy.models


def test_env_interpolation_and_defaults() -> None:
    text = """
backends:
  a: {provider: openai, base_url: "${BASE}", api_key: "${KEY:-}", tier: closed, model: "${M:-m1}"}
models:
  x: {to: [a]}
"""
    policy = parse_policy(text, "p.yaml", {"BASE": "http://h/v1/"}).policy
    backend = policy.backends["a"]
    assert backend.base_url == "http://h/v1" and backend.model == "m1"
    assert not backend.enabled  # closed tier without its key


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("backends: {}\nmodels: {}\n", "p.yaml:1: backends"),
        (
            "backends:\n  a: {provider: openai}\nmodels:\n  x: {to: [b]}\n",
            "p.yaml:4: models.x.to[0]: unknown backend 'b'",
        ),
        (
            "backends:\n  a: {provider: openai, colour: red}\nmodels:\n  x: {to: [a]}\n",
            "p.yaml:2: backends.a.colour: Extra inputs are not permitted",
        ),
        (
            "backends:\n  a: {provider: openai}\nmodels:\n  x:\n    route:\n"
            "      - when: {difficulty_at_least: 0.5}\n        to: [a]\n",
            "p.yaml:4: models.x: Value error, the last rule of a route must have no `when`",
        ),
        (
            "backends:\n  a:\n    provider: openai\n    base_url: ${NOT_SET_ANYWHERE}\n"
            "models:\n  x: {to: [a]}\n",
            "p.yaml:4: backends.a.base_url: environment variable NOT_SET_ANYWHERE is not set",
        ),
        ("backends: [\n", "p.yaml:2: invalid YAML"),
        (
            "backends:\n  a: {provider: openai}\n  a: {provider: openai}\n"
            "models:\n  x: {to: [a]}\n",
            "p.yaml:3: backends.a: duplicate key",
        ),
    ],
)
def test_errors_name_file_line_and_key(text: str, expected: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "p.yaml", {})
    assert expected in str(info.value)


def test_validate_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("backends:\n  a: {provider: openai}\nmodels:\n  x: {to: [a]}\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("backends:\n  a: {provider: openai}\nmodels:\n  x: {to: [nope]}\n")
    assert main(["policy", "validate", str(good)]) == 0
    assert "ok" in capsys.readouterr().out
    assert main(["policy", "validate", str(good), str(bad)]) == 1
    assert f"{bad}:4: models.x.to[0]" in capsys.readouterr().err
