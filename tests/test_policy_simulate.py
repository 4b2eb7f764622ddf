"""`gateway policy simulate` on generated logs whose answers are computed by hand."""

from __future__ import annotations

import contextlib
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.breakers import Breakers
from gateway.cli import main
from gateway.planning import make_plan
from gateway.policy import Condition, ModelRoute, Rule, parse_policy
from gateway.policy.steps import CONDITION_FIELDS, RULE_FIELDS
from gateway_tools.replay_log import read_log
from gateway_tools.simulate import as_recorded, replay, summarise, sweep

# Prices are per million tokens; every record below uses 1000 prompt + 500 completion
# tokens, so a request costs 0.002 on `open`, 0.02 on `strong` and 0.2 on `other`.
POLICY = """\
backends:
  open: {provider: openai, base_url: "http://o/v1", price: {input_per_mtok: 1, output_per_mtok: 2}}
  strong:
    provider: openai
    base_url: http://s/v1
    api_key: "${NO_SUCH_KEY_ANYWHERE:-}"
    tier: closed
    price: {input_per_mtok: 10, output_per_mtok: 20}
  other:
    provider: anthropic
    api_key: k
    tier: closed
    price: {input_per_mtok: 100, output_per_mtok: 200}
models:
  auto:
    route:
      - when: {difficulty_at_least: AUTO_AT}
        to: [strong]
      - to: [open]
  budget:
    route:
      - when: {closed_share: 0.25}
        to: [strong]
      - to: [open]
  claude: {to: [other, open]}
  CATCH_ALL
teams:
  narrow: {keys: [k1], allowed_models: [auto]}
  wide: {keys: [k2]}
"""
OPEN, STRONG, OTHER = 0.002, 0.02, 0.2


def policy_text(auto_at: float = 0.5, catch_all: bool = False) -> str:
    text = POLICY.replace("AUTO_AT", str(auto_at))
    return text.replace("CATCH_ALL", '"*": {to: [open]}' if catch_all else "")


def record(model: str, score: float | None, backend: str, **extra: Any) -> dict[str, Any]:
    tier = {"strong": "closed", "other": "closed"}.get(backend, "open")
    row: dict[str, Any] = {
        "ts": 1.7e9,
        "request_id": "r",
        "team": "wide",
        "model": model,
        "endpoint": "chat",
        "score": score,
        "backend": backend,
        "tier": tier if backend != "-" else "-",
        "reason": "rule",
        "prompt_tokens": 1000,
        "completion_tokens": 500,
        "cost_usd": 0.01,
        "reference_cost_usd": 0.02,
        "cache": "miss",
        "status": 200,
        "latency_ms": 10.0,
        "policy_version": "v1",
        "classifier_version": "c1",
    }
    row.update(extra)
    return row


RECORDS = [
    record("auto", 0.7, "open"),  # → strong (changed)
    record("auto", 0.5, "strong"),  # the threshold itself matches → strong
    record("auto", 0.49, "strong"),  # → open (changed)
    record("auto", 0.9, "open", cache="hit", cost_usd=0.0),  # a hit stays on open, free
    record("auto", None, "open", endpoint="embeddings"),  # unclassified → default → open
    record("claude", 0.1, "other"),
    record("claude", None, "open", endpoint="embeddings"),  # anthropic serves chat only
    *(record("budget", s, "open") for s in (0.1, 0.2, 0.3, 0.4)),  # threshold 0.325
    # Hits are not in the calibration (with them the threshold would be 0.8125).
    record("budget", 0.95, "open", cache="hit", cost_usd=0.0),
    record("budget", 0.96, "open", cache="hit", cost_usd=0.0),
    record("budget", 0.2, "open", team="narrow"),  # not allowed any more → "-" (changed)
    record("nope", None, "-", status=404, prompt_tokens=0, completion_tokens=0),  # refused
    record("retired", 0.3, "open"),  # no such model and no "*" → "-" (changed)
    record("auto", 0.8, "-", status=502, prompt_tokens=0, completion_tokens=0),  # → strong
]


def write_log(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


@pytest.fixture
def log_file(tmp_path: Path) -> Path:
    return write_log(tmp_path / "decisions.jsonl", RECORDS)


def simulate(log_file: Path, **policy: Any) -> dict[str, Any]:
    loaded = parse_policy(policy_text(**policy), "p.yaml", {})
    log = read_log(str(log_file), stream="-")
    return summarise(log, replay(loaded.policy, log), as_recorded(log))


def test_hand_computed_candidate_and_recorded_baseline(log_file: Path) -> None:
    result = simulate(log_file)
    assert result["records"] == 17
    assert result["changed"] == 6
    candidate = result["candidate"]
    assert candidate["by_backend"] == {"open": 9, "strong": 4, "-": 3, "other": 1}
    assert candidate["closed_share"] == 5 / 17
    assert candidate["cost_usd"] == pytest.approx(2 * STRONG + 6 * OPEN + OTHER + STRONG)
    baseline = result["baseline"]
    assert baseline["by_backend"] == {"open": 12, "-": 2, "strong": 2, "other": 1}
    assert baseline["closed_share"] == 3 / 17
    assert baseline["cost_usd"] == pytest.approx(14 * 0.01)  # hits recorded no cost


def test_keys_as_configured_drops_the_backend_without_a_key(log_file: Path) -> None:
    loaded = parse_policy(policy_text(), "p.yaml", {})
    log = read_log(str(log_file), stream="-")
    outcome = replay(loaded.policy, log, keys_as_configured=True)
    result = summarise(log, outcome, as_recorded(log))
    assert outcome.by_backend == {"open": 13, "-": 3, "other": 1}
    assert result["changed"] == 5
    assert outcome.closed_share == 1 / 17
    assert outcome.cost_usd == pytest.approx(9 * OPEN + OTHER)


def test_baseline_policy_is_replayed_the_same_way(tmp_path: Path, log_file: Path) -> None:
    old = tmp_path / "old.yaml"
    old.write_text(policy_text(auto_at=0.8, catch_all=True))
    new = tmp_path / "new.yaml"
    new.write_text(policy_text())
    out = tmp_path / "out.json"
    argv = ["policy", "simulate", "--policy", str(new), "--baseline", str(old)]
    argv += ["--log", str(log_file), "--json"]
    with out.open("w") as handle, contextlib.redirect_stdout(handle):
        assert main(argv) == 0
    result = orjson.loads(out.read_bytes())
    assert set(result) == {"records", "changed", "candidate", "baseline"}
    assert set(result["candidate"]) == {"by_backend", "closed_share", "cost_usd"}
    assert result["changed"] == 6  # always against the recorded backends
    baseline = result["baseline"]
    assert baseline["by_backend"] == {"open": 12, "-": 2, "strong": 2, "other": 1}
    assert baseline["closed_share"] == 3 / 17
    assert baseline["cost_usd"] == pytest.approx(9 * OPEN + STRONG + OTHER)


def test_threshold_sweep_end_points(log_file: Path) -> None:
    loaded = parse_policy(policy_text(), "p.yaml", {})
    log = read_log(str(log_file), stream="-")
    (low, high) = sweep(loaded.policy, log, [0.0, 1.0])
    # 0: every scored auto and budget request goes to strong (hits and "-" stay).
    assert low[:2] == (0.0, 9 / 17) and low[2] == pytest.approx(7 * STRONG + 2 * OPEN + OTHER)
    assert high[:2] == (1.0, 1 / 17) and high[2] == pytest.approx(9 * OPEN + OTHER)


def test_generated_log_with_a_formula_answer(tmp_path: Path) -> None:
    n = 10_000
    rows = [record("auto", i / n, "open", prompt_tokens=i, completion_tokens=0) for i in range(n)]
    log_path = write_log(tmp_path / "gen.jsonl", rows)
    result = simulate(log_path, auto_at=0.75)
    hard = range(int(0.75 * n), n)
    assert result["candidate"]["by_backend"] == {"open": n - len(hard), "strong": len(hard)}
    assert result["changed"] == len(hard)
    expected = (sum(hard) * 10 + sum(range(int(0.75 * n))) * 1) / 1e6
    assert result["candidate"]["cost_usd"] == pytest.approx(expected, rel=1e-12)
    assert result["candidate"]["closed_share"] == len(hard) / n


def test_an_empty_log(tmp_path: Path) -> None:
    result = simulate(write_log(tmp_path / "empty.jsonl", []))
    assert result == {
        "records": 0,
        "changed": 0,
        "candidate": {"by_backend": {}, "closed_share": 0.0, "cost_usd": 0.0},
        "baseline": {"by_backend": {}, "closed_share": 0.0, "cost_usd": 0.0},
    }


def test_report_writes_markdown_and_chart(tmp_path: Path, log_file: Path) -> None:
    new = tmp_path / "new.yaml"
    new.write_text(policy_text())
    report = tmp_path / "report"
    argv = ["policy", "simulate", "--policy", str(new), "--log", str(log_file)]
    assert main([*argv, "--report", str(report)]) == 0
    page = (report / "simulation.md").read_text()
    assert "**17** decision records" in page and "**6** records" in page
    assert "| `open` | `strong` | 2 |" in page  # one of the moves
    assert "| 1.00 | 5.9 % |" in page  # the sweep's end: 1 of 17 on the closed tier
    assert (report / "cost_vs_closed_share.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_without_matplotlib(
    tmp_path: Path, log_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib → ImportError
    new = tmp_path / "new.yaml"
    new.write_text(policy_text())
    report = tmp_path / "report"
    argv = ["policy", "simulate", "--policy", str(new), "--log", str(log_file)]
    assert main([*argv, "--json", "--report", str(report)]) == 0
    assert "Install matplotlib" in (report / "simulation.md").read_text()
    assert not (report / "cost_vs_closed_share.png").exists()


def test_text_output_and_errors(
    tmp_path: Path, log_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new = tmp_path / "new.yaml"
    new.write_text(policy_text())
    assert main(["policy", "simulate", "--policy", str(new), "--log", str(log_file)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("17 records; 6 change backend (35.3 %)")
    bad_log = tmp_path / "bad.jsonl"
    bad_log.write_bytes(orjson.dumps(RECORDS[0]) + b"\n\n{not json\n")
    assert main(["policy", "simulate", "--policy", str(new), "--log", str(bad_log)]) == 1
    assert capsys.readouterr().err == f"gateway: {bad_log}:3: invalid JSON\n"
    bad_log.write_bytes(orjson.dumps({"model": "auto"}) + b"\n")
    assert main(["policy", "simulate", "--policy", str(new), "--log", str(bad_log)]) == 1
    assert "bad.jsonl:1: missing endpoint, backend" in capsys.readouterr().err
    bad_policy = tmp_path / "bad.yaml"
    bad_policy.write_text(policy_text().replace("to: [other, open]", "to: [gone]"))
    assert main(["policy", "simulate", "--policy", str(bad_policy), "--log", str(log_file)]) == 1
    assert "models.claude.to[0]: unknown backend 'gone'" in capsys.readouterr().err


def test_score_cuts_know_every_rule_field() -> None:
    assert set(Rule.model_fields) == RULE_FIELDS
    assert set(Condition.model_fields) == CONDITION_FIELDS


THRESHOLDS = st.sampled_from([0.0, 0.1, 0.25, 0.3, 0.5, 0.7, 1.0])


@settings(max_examples=60, deadline=None)
@given(
    conditions=st.lists(
        st.one_of(
            st.tuples(st.just("at_least"), THRESHOLDS),
            st.tuples(st.just("below"), THRESHOLDS),
            st.tuples(st.just("range"), THRESHOLDS, THRESHOLDS),
            st.tuples(st.just("share"), st.sampled_from([0.1, 0.5, 0.9])),
        ),
        min_size=1,
        max_size=4,
    ),
    scores=st.lists(st.one_of(THRESHOLDS, st.floats(0, 1), st.none()), min_size=1, max_size=40),
)
def test_replay_equals_the_planner_record_by_record(
    tmp_path_factory: pytest.TempPathFactory,
    conditions: list[tuple[Any, ...]],
    scores: list[float | None],
) -> None:
    names = ["a", "b", "c", "d"]
    rules = []
    for i, cond in enumerate(conditions):
        kind = cond[0]
        when = {
            "at_least": lambda c: Condition(difficulty_at_least=c[1]),
            "below": lambda c: Condition(difficulty_below=c[1]),
            "range": lambda c: Condition(difficulty_at_least=c[1], difficulty_below=c[2]),
            "share": lambda c: Condition(closed_share=c[1]),
        }[kind](cond)
        rules.append(Rule(when=when, to=[names[i]]))
    rules.append(Rule(to=["open"]))
    text = policy_text()
    loaded = parse_policy(text, "p.yaml", {})
    policy = loaded.policy
    backends = {**policy.backends}
    for name in names:
        backends[name] = backends["open"].model_copy(update={"name": name})
    route = ModelRoute(route=rules)
    policy = policy.model_copy(update={"backends": backends, "models": {"m": route}})
    rows = [record("m", s, "open") for s in scores]
    log = read_log(str(write_log(tmp_path_factory.mktemp("p") / "l.jsonl", rows)), stream="-")
    outcome = replay(policy, log)
    known = [s for s in scores if s is not None]

    def threshold(rule: int) -> float:
        when = rules[rule].when
        assert when is not None and when.closed_share is not None
        return float(np.quantile(known, 1 - when.closed_share)) if known else 1.0

    for i, (score, code) in enumerate(zip(scores, outcome.backend.tolist(), strict=True)):
        plan = make_plan(policy, "m", route, "chat", score, threshold, Breakers())
        assert outcome.names[code] == plan.targets[0].name, (i, score)
    assert not math.isnan(outcome.cost_usd)


def test_a_split_is_replayed_by_its_weights(tmp_path: Path) -> None:
    policy = tmp_path / "split.yaml"
    policy.write_text(
        "backends:\n"
        '  a: {provider: openai, base_url: "http://a/v1", tier: open}\n'
        '  b: {provider: openai, base_url: "http://b/v1", tier: open}\n'
        "models:\n  ab:\n    route:\n      - split: {a: 75, b: 25}\n"
    )
    log = tmp_path / "log.jsonl"
    record = {
        "ts": 0, "request_id": "r", "team": "t", "model": "ab", "endpoint": "chat",
        "score": 0.5, "backend": "a", "tier": "open", "reason": "split", "prompt_tokens": 10,
        "completion_tokens": 1, "cost_usd": 0.0, "reference_cost_usd": 0.0, "cache": "miss",
        "status": 200, "latency_ms": 1.0, "policy_version": "v", "classifier_version": "c",
    }  # fmt: skip
    lines = (orjson.dumps({**record, "request_id": str(i)}) + b"\n" for i in range(4000))
    log.write_bytes(b"".join(lines))
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "policy", "simulate", "--policy", str(policy),
         "--log", str(log), "--json"],
        check=True, capture_output=True, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    by_backend = orjson.loads(out.stdout)["candidate"]["by_backend"]
    assert by_backend.keys() == {"a", "b"}
    assert 0.22 <= by_backend["b"] / 4000 <= 0.28
