"""`gateway policy validate`: every semantic error kind, each with its file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main
from gateway.errors import PolicyError
from gateway.policy import PolicyInvalid, load_policy, parse_policy

# Line 1 is `backends:`; tests append models and more after it.
BACKENDS = """\
backends:
  local:
    provider: openai
    base_url: http://vllm:8000/v1
    price: {input_per_mtok: 0.1, output_per_mtok: 0.2}
  gpt:
    provider: openai
    api_key: k
    tier: closed
    price: {input_per_mtok: 1.0, output_per_mtok: 2.0}
"""  # 10 lines


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(PolicyInvalid) as info:
        parse_policy(text, "p.yaml", env or {})
    assert str(info.value).count("\n") + 1 >= len(info.value.problems)
    return [str(p) for p in info.value.problems]


def test_unknown_backend_in_a_route_and_an_alias() -> None:
    text = BACKENDS + (
        "models:\n"  # 11
        "  auto:\n"
        "    route:\n"
        "      - when: {difficulty_at_least: 0.5}\n"  # 14
        "        to: [gpt, claude]\n"  # 15
        "      - to: [local]\n"
        "  alias: {to: [local, nope]}\n"  # 17
    )
    assert problems(text) == [
        "p.yaml:15: models.auto.route[0].to[1]: unknown backend 'claude' (known: gpt, local)",
        "p.yaml:17: models.alias.to[1]: unknown backend 'nope' (known: gpt, local)",
    ]


def test_rules_that_can_never_match() -> None:
    text = BACKENDS + (
        "models:\n"  # 11
        "  a:\n"
        "    route:\n"
        "      - to: [gpt]\n"  # 14: a catch-all first
        "      - when: {difficulty_at_least: 0.5}\n"  # 15
        "        to: [gpt]\n"
        "      - to: [local]\n"
        "  b:\n"  # 18
        "    route:\n"
        "      - when: {difficulty_at_least: 0.7, difficulty_below: 0.3}\n"  # 20
        "        to: [gpt]\n"
        "      - when: {difficulty_at_least: 0.3}\n"  # 22
        "        to: [gpt]\n"
        "      - when: {difficulty_at_least: 0.5}\n"  # 24: inside the rule before
        "        to: [local]\n"
        "      - when: {difficulty_below: 0.3}\n"  # 26: fine, [0, 0.3) is still free
        "        to: [local]\n"
        "      - when: {closed_share: 0.2}\n"  # 28: every score is taken by now
        "        to: [gpt]\n"
        "      - to: [local]\n"  # 30: the default stays (it is every request's fallback)
    )
    assert problems(text) == [
        "p.yaml:15: models.a.route[1]: rule can never match: rule 0 before it has no `when` "
        "and takes every request",
        "p.yaml:20: models.b.route[0]: rule can never match: difficulty_at_least 0.7 is not "
        "below difficulty_below 0.3",
        "p.yaml:24: models.b.route[2]: rule can never match: the rules before it take every "
        "score it would",
        "p.yaml:28: models.b.route[4]: rule can never match: the rules before it take every "
        "score it would",
    ]


def test_adjacent_ranges_are_not_dead() -> None:
    text = BACKENDS + (
        "models:\n"
        "  a:\n"
        "    route:\n"
        "      - when: {difficulty_at_least: 0.6}\n"
        "        to: [gpt]\n"
        "      - when: {difficulty_at_least: 0.3, difficulty_below: 0.6}\n"
        "        to: [gpt]\n"
        "      - when: {closed_share: 0.1}\n"
        "        to: [gpt]\n"
        "      - to: [local]\n"
    )
    assert parse_policy(text, "p.yaml", {}).policy.models["a"].route


def test_missing_prices_where_cost_is_used() -> None:
    text = (
        "backends:\n"
        "  free: {provider: openai, base_url: 'http://h/v1'}\n"  # 2: no price, budgeted team
        "  zero: {provider: openai, base_url: 'http://h/v1', price: {}}\n"  # 3: explicit: fine
        "  ref: {provider: openai, api_key: k, tier: closed}\n"  # 4: reference without price
        "models:\n"
        "  m: {to: [free, zero]}\n"
        "teams:\n"
        "  t: {keys: [k1], limits: {budget_usd_per_day: 5}}\n"
        "savings_reference: ref\n"
    )
    assert problems(text) == [
        "p.yaml:2: backends.free: no price, but team 't' has a daily budget and can reach it "
        "through model 'm': set price (0 for free is fine)",
        "p.yaml:4: backends.ref.price: the savings reference needs a price (it defines savings)",
    ]


def test_savings_reference_must_be_a_closed_backend() -> None:
    assert problems(BACKENDS + "models:\n  m: {to: [local]}\nsavings_reference: local\n") == [
        "p.yaml:13: savings_reference: backend 'local' is open-tier; the savings reference "
        "must be closed",
    ]
    assert problems(BACKENDS + "models:\n  m: {to: [local]}\nsavings_reference: gtp\n") == [
        "p.yaml:13: savings_reference: unknown backend 'gtp' (known: gpt, local)",
    ]


def test_unclosed_and_unset_environment_references() -> None:
    text = (
        "backends:\n"
        "  local:\n"
        "    provider: openai\n"
        "    base_url: ${GATEWAY_LOCAL_BASE_URL:-http://127.0.0.1:8081/v1\n"  # 4: unclosed
        "    api_key: ${LOCAL_KEY}\n"  # 5: unset, no default
        "    model: ${LOCAL_MODEL:-smollm2}\n"  # 6: unset with a default: fine
        "    headers: {x-a: 'a ${A:-x} b ${B'}\n"  # 7: second one unclosed
        "    timeout_s: ${TIMEOUT}\n"  # 8: unset in a number field (reported once)
        "models:\n"
        "  m: {to: [local]}\n"
    )
    assert problems(text) == [
        "p.yaml:4: backends.local.base_url: unclosed ${GATEWAY_LOCAL_BASE_URL...: missing the "
        "closing `}`",
        "p.yaml:5: backends.local.api_key: environment variable LOCAL_KEY is not set "
        "(write ${LOCAL_KEY:-default} to make it optional)",
        "p.yaml:7: backends.local.headers.x-a: unclosed ${B: missing the closing `}`",
        "p.yaml:8: backends.local.timeout_s: environment variable TIMEOUT is not set "
        "(write ${TIMEOUT:-default} to make it optional)",
    ]
    env = {"LOCAL_KEY": "secret", "TIMEOUT": "7", "GATEWAY_LOCAL_BASE_URL": "http://x/v1"}
    fixed = text.replace("8081/v1\n", "8081/v1}\n").replace("${B'", "${B:-y}'")
    backend = parse_policy(fixed, "p.yaml", env).policy.backends["local"]
    assert backend.base_url == "http://x/v1" and backend.timeout_s == 7.0
    assert backend.headers == {"x-a": "a x b y"} and backend.model == "smollm2"


def test_base_url_must_be_a_url_and_is_not_echoed() -> None:
    text = "backends:\n  a: {provider: openai, base_url: 'user:s3cret@host'}\n"
    text += "models:\n  m: {to: [a]}\n"
    found = problems(text)
    assert found[0] == "p.yaml:2: backends.a.base_url: must be an http:// or https:// URL"
    assert not any("s3cret" in p for p in found)


def test_tool_call_prefill_needs_tools_and_an_openai_backend() -> None:
    text = "backends:\n"
    text += (
        "  a: {provider: openai, base_url: 'http://a/v1', tools: false, tool_call_prefill: '<c>'}\n"
    )
    text += "  b: {provider: anthropic, api_key: k, tool_call_prefill: '<c>'}\n"
    text += "models:\n  m: {to: [a, b]}\n"
    assert problems(text) == [
        "p.yaml:2: backends.a.tool_call_prefill: is set, but `tools` is false",
        "p.yaml:3: backends.b.tool_call_prefill: applies to provider: openai only",
    ]


def test_overlapping_model_names() -> None:
    text = BACKENDS + (
        "models:\n"  # 11
        "  gpt-5-mini: {to: [gpt]}\n"
        "  GPT-5-Mini: {to: [local]}\n"  # 13
        "  'gpt-*': {to: [gpt]}\n"  # 14
    )
    assert problems(text) == [
        "p.yaml:13: models.GPT-5-Mini: overlaps model 'gpt-5-mini': the names differ only in "
        "case or spacing",
        "p.yaml:14: models.gpt-*: only `*` alone is a wildcard; this name matches only itself, "
        "literally",
    ]


def test_duplicate_keys_are_reported_with_everything_else() -> None:
    text = BACKENDS + "models:\n  m: {to: [local]}\n  m: {to: [gpt]}\n  n: {to: [x]}\n"
    assert problems(text) == [
        "p.yaml:13: models.m: duplicate key",
        "p.yaml:14: models.n.to[0]: unknown backend 'x' (known: gpt, local)",
    ]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('backends:\n  a: {provider: openai, api_key: "sk-live-abcdef\nmodels: {}\n', 2),
        ("backends:\n  a: {provider: openai, api_key: *sk-live-abcdef}\n", 2),
        ("backends:\n  a:\n    api_key: sk-live-abcdef\n   provider: openai\n", 4),
        ("backends: [\n", 2),
    ],
)
def test_yaml_syntax_error_is_one_line_without_the_source(text: str, line: int) -> None:
    (problem,) = problems(text)
    assert problem.startswith(f"p.yaml:{line}: invalid YAML: ")
    assert "sk-live" not in problem and "abcdef" not in problem


def test_warnings_are_listed_and_do_not_fail() -> None:
    text = BACKENDS.replace("    price: {input_per_mtok: 1.0, output_per_mtok: 2.0}\n", "")
    loaded = parse_policy(text + "models:\n  m: {to: [gpt]}\n", "p.yaml", {})
    assert [str(w) for w in loaded.warnings] == [
        "p.yaml:2: backends.local: warning: no model routes to this backend",
        "p.yaml:6: backends.gpt: warning: closed-tier backend without a price: costs 0",
    ]


def test_shipped_policies_have_no_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    repo = Path(__file__).resolve().parents[1]
    files = [*(repo / "policies").rglob("*.yaml"), *(repo / "bench" / "policies").glob("*.yaml")]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("UPSTREAM_BASE_URL", "http://127.0.0.1:1/v1")
        assert main(["policy", "validate", "--strict", "--quiet", *map(str, files)]) == 0
    assert capsys.readouterr() == ("", "")


def test_load_policy_runs_the_same_checks(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(BACKENDS + "models:\n  m: {to: [local]}\nsavings_reference: local\n")
    with pytest.raises(PolicyError) as info:  # what startup and hot reload catch
        load_policy(path, {})
    assert isinstance(info.value, PolicyInvalid)
    assert info.value.summary == f"{path}:13: savings_reference: " + (
        "backend 'local' is open-tier; the savings reference must be closed"
    )


def test_validate_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(BACKENDS + "models:\n  m: {to: [local, gpt]}\n")
    warn = tmp_path / "warn.yaml"
    warn.write_text(BACKENDS + "models:\n  m: {to: [local]}\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text(BACKENDS + "models:\n  m: {to: [nope]}\n  M: {to: [local]}\n")
    assert main(["policy", "validate", str(good), str(warn)]) == 0
    out, err = capsys.readouterr()
    assert f"{good}: ok" in out and f"{warn}: ok" in out
    assert err == f"{warn}:6: backends.gpt: warning: no model routes to this backend\n"
    assert main(["policy", "validate", "--strict", "-q", str(warn)]) == 1
    assert capsys.readouterr().out == ""
    assert main(["policy", "validate", str(good), str(bad)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"{bad}:12: models.m.to[0]: unknown backend 'nope' (known: gpt, local)",
        f"{bad}:13: models.M: overlaps model 'm': the names differ only in case or spacing",
    ]
    assert main(["policy", "validate", str(tmp_path / "missing.yaml")]) == 1
    assert "cannot read policy file" in capsys.readouterr().err


def test_native_responses_need_an_openai_compatible_backend() -> None:
    text = BACKENDS + (
        "  claude: {provider: anthropic, api_key: k, responses: native}\n"  # 11
        "models:\n"
        "  m: {to: [gpt, claude]}\n"
    )
    assert problems(text) == ["p.yaml:11: backends.claude.responses: native needs provider: openai"]
    native = BACKENDS.replace("    tier: closed\n", "    tier: closed\n    responses: native\n")
    loaded = parse_policy(native + "models:\n  m: {to: [gpt, local]}\n", "p.yaml", {})
    backends = loaded.policy.backends
    assert backends["gpt"].upstream.dialects == frozenset({"responses"})
    assert backends["local"].upstream.dialects == frozenset()
