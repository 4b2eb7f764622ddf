"""`gateway policy explain`: score and signals, the rule and why, targets with their state."""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.cli import main
from gateway.difficulty import DifficultyClassifier, ShareCalibrator

PROMPT = "Prove that the square root of two is irrational, step by step."
BODY = {"messages": [{"role": "user", "content": PROMPT}]}

POLICY = """\
backends:
  local: {provider: openai, base_url: "http://l/v1", price: {input_per_mtok: 1}}
  spare: {provider: openai, base_url: "http://s/v1", price: {input_per_mtok: 1}}
  gpt:
    provider: openai
    api_key: "${NO_SUCH_KEY_HERE:-}"
    tier: closed
    price: {input_per_mtok: 2}
  claude: {provider: anthropic, api_key: k, tier: closed, price: {input_per_mtok: 3}}
models:
  auto:
    route:
      - when: {difficulty_at_least: AT}
        to: [gpt, claude]
      - to: [local, spare]
  share:
    route:
      - when: {closed_share: 0.3}
        to: [claude]
      - to: [local]
teams:
  t: {keys: [k1], allowed_models: [share]}
"""


@pytest.fixture(scope="module")
def score() -> float:
    return DifficultyClassifier.load().score(BODY)


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def explain(policy: Path, *extra: str) -> dict[str, Any]:
    code, out, err = run(["policy", "explain", str(policy), "--json", *extra])
    assert code == 0, err
    result: dict[str, Any] = orjson.loads(out)
    return result


def policy_file(tmp_path: Path, at: float) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(POLICY.replace("AT", f"{at:.6f}"))
    return path


def test_hard_prompt_takes_the_rule_and_skips_the_keyless_backend(
    tmp_path: Path, score: float
) -> None:
    result = explain(policy_file(tmp_path, score - 0.01), "--prompt", PROMPT)
    classifier = DifficultyClassifier.load()
    assert result["score"] == score and result["entry"] == "auto"
    signals = [(s["signal"], s["logit"]) for s in result["signals"]]
    assert signals == [(name, weight) for name, weight in classifier.explain(BODY)]
    assert result["rule"] == 0 and result["reason"] == "rule"
    first, default = result["rules"]
    assert first["verdict"] == "chosen" and first["why"] == f"score {score:.4f} >= {score - 0.01:g}"
    assert default["verdict"] == "not tried"
    states = [(t["backend"], t["position"], t["state"]) for t in result["targets"]]
    assert states == [
        ("claude", 1, "ready"),
        ("local", 2, "ready"),
        ("spare", 3, "ready"),
        ("gpt", None, "disabled: API key not set"),
    ]


def test_easy_prompt_falls_to_the_default(tmp_path: Path, score: float) -> None:
    result = explain(policy_file(tmp_path, score + 0.01), "--prompt", PROMPT)
    assert result["rule"] == 1 and result["reason"] == "default"
    assert result["rules"][0]["verdict"] == "does not hold"
    assert result["rules"][0]["why"] == f"score {score:.4f} < {score + 0.01:g}"
    assert [t["backend"] for t in result["targets"] if t["position"]] == ["local", "spare"]


def test_request_file_closed_share_and_team(tmp_path: Path, score: float) -> None:
    request = tmp_path / "request.json"
    request.write_bytes(orjson.dumps({"model": "share", **BODY}))
    result = explain(policy_file(tmp_path, 0.5), "--request", str(request), "--team", "t")
    threshold = ShareCalibrator(0.3, prior=DifficultyClassifier.load().score_prior).threshold()
    assert result["model"] == "share" and result["reason"] in ("calibration", "default")
    assert result["rule"] == (0 if score >= threshold else 1)
    assert f"calibrated threshold {threshold:.4f}" in result["rules"][0]["why"]
    assert any("training-score prior" in note for note in result["notes"])
    code, _, err = run(["policy", "explain", str(tmp_path / "p.yaml"), "--prompt", "x"])
    assert code == 0  # the default model is auto
    code, _, err = run(
        ["policy", "explain", str(tmp_path / "p.yaml"), "--prompt", "x", "--team", "t"]
    )
    assert code == 1 and "would fail with 403" in err
    code, _, err = run(
        ["policy", "explain", str(tmp_path / "p.yaml"), "--prompt", "x", "--model", "gpt-9"]
    )
    assert code == 1 and "would fail with 404" in err


def test_embeddings_are_unclassified(tmp_path: Path) -> None:
    path = policy_file(tmp_path, 0.5)
    result = explain(path, "--prompt", PROMPT, "--endpoint", "embeddings")
    assert result["score"] is None and result["signals"] == [] and result["rule"] == 1
    assert result["rules"][1]["why"] == "unclassified endpoint: the default rule"


@pytest.fixture
def readyz() -> Iterator[str]:
    body = orjson.dumps(
        {"backends": {"local": {"state": "circuit open"}, "spare": {"state": "ok"}}}
    )

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/readyz" else 404)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_live_state_from_readyz_puts_open_circuits_last(
    tmp_path: Path, score: float, readyz: str
) -> None:
    path = policy_file(tmp_path, score + 0.01)
    result = explain(path, "--prompt", PROMPT, "--gateway", readyz)
    states = [(t["backend"], t["position"], t["state"]) for t in result["targets"]]
    assert states == [("spare", 1, "ready"), ("local", 2, "circuit open: tried last")]
    assert not any("not known offline" in note for note in result["notes"])


def test_text_output(tmp_path: Path, score: float) -> None:
    code, out, _ = run(
        ["policy", "explain", str(policy_file(tmp_path, score - 0.01)), "--prompt", PROMPT]
    )
    assert code == 0
    assert out.startswith(f"model 'auto' → policy entry 'auto' (chat)\ndifficulty: {score:.4f}\n")
    assert "  → [0] difficulty_at_least:" in out
    assert "  -   gpt (closed): disabled: API key not set" in out


def test_bad_inputs(tmp_path: Path) -> None:
    path = policy_file(tmp_path, 0.5)
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    code, _, err = run(["policy", "explain", str(path), "--request", str(bad)])
    assert code == 1 and "must be a JSON object" in err
    broken = tmp_path / "broken.yaml"
    broken.write_text(POLICY.replace("AT", "0.5").replace("[local, spare]", "[locl]"))
    code, _, err = run(["policy", "explain", str(broken), "--prompt", "x"])
    assert code == 1 and "unknown backend 'locl'" in err
