"""A real Prometheus scrapes real gateways: every dashboard and rule query returns data, and
cost and savings match what the traffic sent should cost.

Two gateway processes share one policy: the main one (in-process cache) gets the mixed traffic
below; the second one has an unreachable Redis, so its cache operations fail and the cache
error series exist. Prometheus (the Debian `prometheus` binary) scrapes both every second and
evaluates the repo's recording and alert rules every second.
"""

from __future__ import annotations

import math
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Upstreams, run_gateway
from tests.deploy import promql
from tests.support.fault_upstream import fault_upstream
from tests.support.model_servers import free_port

POLICY = """
version: prometheus-integration
backends:
  open:
    provider: openai
    base_url: {oai}/v1
    model: open-model
    tier: open
    price: {{input_per_mtok: 0.1, output_per_mtok: 0.2}}
  strong:
    provider: openai
    base_url: {oai}/v1
    api_key: test-openai-key
    model: strong-model
    tier: closed
    price: {{input_per_mtok: 2.0, output_per_mtok: 8.0}}
  claude:
    provider: anthropic
    base_url: {anth}/v1
    api_key: test-anthropic-key
    model: claude-test
    tier: closed
    price: {{input_per_mtok: 3.0, output_per_mtok: 15.0}}
  broken:
    provider: openai
    base_url: {oai}/fail500/v1
    tier: open
    price: {{input_per_mtok: 0.1, output_per_mtok: 0.2}}
  probed:
    provider: openai
    base_url: {oai}/fail500/v1
    price: {{input_per_mtok: 0.1, output_per_mtok: 0.2}}
    breaker: {{failures_to_open: 1, open_s: 0.2}}
  small:
    provider: openai
    base_url: {oai}/slow/v1
    price: {{input_per_mtok: 0.1, output_per_mtok: 0.2}}
    max_concurrency: 1
  watched:
    provider: openai
    base_url: {oai}/fail500/v1
    price: {{input_per_mtok: 0.1, output_per_mtok: 0.2}}
    health_check: {{interval_s: 0.5, timeout_s: 0.5}}
  queued:
    provider: openai
    base_url: {queued}
    price: {{input_per_mtok: 0.1, output_per_mtok: 0.2}}
    load: {{max_waiting: 4, interval_s: 0.2}}
  overloaded:
    provider: openai
    base_url: {overloaded}
    price: {{input_per_mtok: 0.1, output_per_mtok: 0.2}}
    load: {{max_waiting: 4, interval_s: 0.2}}
  blind:
    provider: openai
    base_url: {blind}
    price: {{input_per_mtok: 0.1, output_per_mtok: 0.2}}
    load: {{max_waiting: 4, interval_s: 0.2}}
models:
  auto:
    route:
      - when: {{closed_share: 0.5}}
        to: [strong]
      - to: [open]
  hard:
    route:
      - when: {{difficulty_at_least: 0.0}}
        to: [strong]
      - to: [open]
  qwen: {{to: [open]}}
  claude: {{to: [claude]}}
  fallback: {{to: [broken, open]}}
  all-fail: {{to: [broken]}}
  probe: {{to: [probed, open]}}
  spill: {{to: [small, open]}}
  shadowed:
    to: [open]
    shadow: {{sample: 1.0, against: strong, judge: strong, max_usd_per_day: 5}}
teams:
  labelled: {{keys: [sk-labelled], retain_prompts: true}}
  search: {{keys: [sk-search]}}
  support: {{keys: [sk-support]}}
  tiny:
    keys: [sk-tiny]
    limits: {{requests_per_minute: 1}}
  frugal:
    keys: [sk-frugal]
    limits: {{budget_usd_per_day: 0.000001}}
savings_reference: strong
cache: {{enabled: true, ttl_s: 600}}
"""

# USD per million tokens, as in POLICY; the savings reference is `strong`.
PRICES = {"open": (0.1, 0.2), "strong": (2.0, 8.0), "claude": (3.0, 15.0)}
TIERS = {"open": "open", "strong": "closed", "claude": "closed"}
REFERENCE = "strong"
# What the scripted upstreams report (tests/support/fake_upstreams.py).
CHAT, ANTHROPIC, COMPLETIONS, EMBEDDINGS = (11, 7), (21, 9), (5, 3), (4, 0)

SCRAPE_WAIT_S = 30.0


@dataclass(frozen=True)
class Answer:
    """One answered request: who served it, the usage it reported, whether from cache."""

    team: str
    backend: str
    usage: tuple[int, int]
    cache_hit: bool = False


@dataclass
class Stack:
    prometheus: str
    gateway: str
    instance: str
    storm_instance: str
    sent: int = 0
    answers: list[Answer] = field(default_factory=list)
    rate_limited: int = 0


def _price(backend: str, usage: tuple[int, int]) -> float:
    per_in, per_out = PRICES[backend]
    return (usage[0] * per_in + usage[1] * per_out) / 1e6


def expected_totals(answers: list[Answer]) -> dict[str, dict[tuple[str, str], float]]:
    """Cost by (team, tier), savings by (team, tier|cache), baseline by (team, "")."""
    cost: dict[tuple[str, str], float] = {}
    savings: dict[tuple[str, str], float] = {}
    baseline: dict[tuple[str, str], float] = {}
    for a in answers:
        tier = TIERS[a.backend]
        paid = 0.0 if a.cache_hit else _price(a.backend, a.usage)
        reference = _price(REFERENCE, a.usage)
        if not a.cache_hit:
            cost[(a.team, tier)] = cost.get((a.team, tier), 0.0) + paid
        key = (a.team, "cache" if a.cache_hit else tier)
        savings[key] = savings.get(key, 0.0) + max(reference - paid, 0.0)
        baseline[(a.team, "")] = baseline.get((a.team, ""), 0.0) + reference
    return {"cost": cost, "savings": savings, "baseline": baseline}


# ------------------------------------------------------------------------------- traffic


def _drive(stack: Stack, url: str) -> None:
    """Mixed traffic through the official SDK; records what each answer should cost."""
    search = openai.OpenAI(base_url=url + "/v1", api_key="sk-search", max_retries=0)
    support = openai.OpenAI(base_url=url + "/v1", api_key="sk-support", max_retries=0)
    with search, support:

        def chat(client: openai.OpenAI, model: str, text: str) -> tuple[str, str, Any]:
            stack.sent += 1
            raw = client.chat.completions.with_raw_response.create(
                model=model, messages=[{"role": "user", "content": text}], temperature=0
            )
            return raw.headers["x-gateway-backend"], raw.headers["x-gateway-cache"], raw.parse()

        # Closed tier by a difficulty rule that always holds.
        backend, cache, body = chat(search, "hard", "Summarise the plot of Hamlet.")
        assert (backend, cache) == ("strong", "miss")
        assert (body.usage.prompt_tokens, body.usage.completion_tokens) == CHAT
        stack.answers.append(Answer("search", "strong", CHAT))
        # Open tier by an alias, then the same request again: a cache hit.
        assert chat(search, "qwen", "What is 2 + 2?")[:2] == ("open", "miss")
        stack.answers.append(Answer("search", "open", CHAT))
        assert chat(search, "qwen", "What is 2 + 2?")[:2] == ("open", "hit")
        stack.answers.append(Answer("search", "open", CHAT, cache_hit=True))
        # A fallback: the first backend answers 500.
        assert chat(search, "fallback", "Say hi.")[:2] == ("open", "miss")
        stack.answers.append(Answer("search", "open", CHAT))
        # Anthropic, pricier than the reference: no saving.
        assert chat(search, "claude", "Write a haiku.")[:2] == ("claude", "miss")
        stack.answers.append(Answer("search", "claude", ANTHROPIC))

        # Streams with usage: open and closed tier (time to first token for both).
        for model, backend in (("qwen", "open"), ("hard", "strong")):
            stack.sent += 1
            chunks = list(
                search.chat.completions.create(
                    model=model,
                    messages=[{"role": "user", "content": f"Stream a story ({model})."}],
                    temperature=0,
                    stream=True,
                    stream_options={"include_usage": True},
                )
            )
            usage = chunks[-1].usage
            assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == CHAT
            stack.answers.append(Answer("search", backend, CHAT))

        stack.sent += 1
        completion = search.completions.create(model="qwen", prompt="Hello", temperature=0)
        assert completion.usage is not None and completion.usage.prompt_tokens == COMPLETIONS[0]
        stack.answers.append(Answer("search", "open", COMPLETIONS))
        stack.sent += 1
        embedding = search.embeddings.create(model="qwen", input="vector me")
        assert embedding.usage.prompt_tokens == EMBEDDINGS[0]
        stack.answers.append(Answer("search", "open", EMBEDDINGS))

        # Errors: every backend fails (502), unknown model (404), bad key (401), bad body (400).
        with pytest.raises(openai.InternalServerError):
            chat(search, "all-fail", "This will fail.")
        with pytest.raises(openai.NotFoundError):
            chat(search, "no-such-model", "Who am I?")
        stranger = openai.OpenAI(base_url=url + "/v1", api_key="sk-wrong", max_retries=0)
        with stranger, pytest.raises(openai.AuthenticationError):
            chat(stranger, "qwen", "Let me in.")
        stack.sent += 1
        bad = httpx.post(
            url + "/v1/chat/completions",
            json={"model": "qwen"},
            headers={"authorization": "Bearer sk-search"},
            timeout=10,
        )
        assert bad.status_code == 400

        # The calibrated route: team support, easy and hard questions; cost from the headers.
        prompts = [
            "hi",
            "thanks!",
            "What is the capital of France?",
            "Prove that there are infinitely many primes, then generalise the argument to "
            "primes of the form 4k+3 and explain where it fails for 4k+1.",
            "Design a distributed, fault-tolerant consensus protocol for a geo-replicated "
            "database; analyse its liveness under partitions and give a TLA+ sketch.",
            "Translate 'good morning' to Spanish.",
        ]
        for text in prompts:
            backend, cache, _ = chat(support, "auto", text)
            assert cache == "miss"
            stack.answers.append(Answer("support", backend, CHAT))

        # Team limits: one request per minute (the 2nd or, across a minute boundary, the 3rd
        # is refused), and a daily budget smaller than one answer (the 2nd is refused).
        tiny = openai.OpenAI(base_url=url + "/v1", api_key="sk-tiny", max_retries=0)
        frugal = openai.OpenAI(base_url=url + "/v1", api_key="sk-frugal", max_retries=0)
        with tiny, frugal:
            for i in range(3):
                try:
                    chat(tiny, "qwen", f"Limited question {i}")
                except openai.RateLimitError:
                    stack.rate_limited += 1
                else:
                    stack.answers.append(Answer("tiny", "open", CHAT))
            assert chat(frugal, "qwen", "Frugal question")[0] == "open"
            stack.answers.append(Answer("frugal", "open", CHAT))
            with pytest.raises(openai.RateLimitError):
                chat(frugal, "qwen", "One more frugal question")
        assert 1 <= stack.rate_limited <= 2

        # Shadow evaluation: the open answer is compared with `strong` (the same scripted
        # upstream, so the pair is identical and the label 0), off the critical path.
        with openai.OpenAI(base_url=url + "/v1", api_key="sk-labelled", max_retries=0) as labelled:
            for text in ("Shadow me once.", "Shadow me twice."):
                assert chat(labelled, "shadowed", text)[0] == "open"
                stack.answers.append(Answer("labelled", "open", CHAT))

        # A third consecutive failure of `broken` opens its circuit (FAILURES_TO_OPEN = 3).
        with pytest.raises(openai.InternalServerError):
            chat(search, "all-fail", "This will fail too.")
        ready = httpx.get(url + "/readyz", timeout=10).json()
        assert ready["backends"]["broken"]["state"] == "circuit open"
        _drive_faults(stack, url, search, chat)


def _drive_faults(stack: Stack, url: str, search: openai.OpenAI, chat: Any) -> None:
    """A circuit that opens and is probed, a spill-over, a client that leaves."""
    # `probed` opens at its first failure and is probed (and fails) 0.2 s later.
    for text in ("Probe me.", "Probe me again."):
        assert chat(search, "probe", text)[:2] == ("open", "miss")
        stack.answers.append(Answer("search", "open", CHAT))
        time.sleep(0.3)
    # A client gives up on `small` (which answers after 3 s) while it is saturated: the
    # next request spills to `open`, the leaver is counted as gone (499).
    left: list[BaseException] = []

    def leave() -> None:
        body = {"model": "spill", "messages": [{"role": "user", "content": "I will leave."}]}
        try:
            httpx.post(
                url + "/v1/chat/completions",
                json=body,
                headers={"authorization": "Bearer sk-search"},
                timeout=1.0,
            )
        except httpx.TimeoutException as exc:
            left.append(exc)

    stack.sent += 1
    leaver = threading.Thread(target=leave)
    leaver.start()
    time.sleep(0.3)
    assert chat(search, "spill", "Spill me.")[:2] == ("open", "miss")
    stack.answers.append(Answer("search", "open", CHAT))
    leaver.join(5)
    assert left, "the leaving client timed out"


def _drive_storm(url: str) -> None:
    """Two cacheable requests against the gateway whose Redis is unreachable."""
    with openai.OpenAI(base_url=url + "/v1", api_key="sk-search", max_retries=0) as client:
        for _ in range(2):
            raw = client.chat.completions.with_raw_response.create(
                model="qwen", messages=[{"role": "user", "content": "cache me"}], temperature=0
            )
            assert raw.headers["x-gateway-cache"] == "miss"


# ---------------------------------------------------------------------------- prometheus


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    """Run an instant query; raise on a PromQL error."""
    response = httpx.get(prometheus + "/api/v1/query", params={"query": expr}, timeout=10)
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", f"{expr}: {body}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def _value(sample: dict[str, Any]) -> float:
    return float(sample["value"][1])


@contextmanager
def _start_prometheus(
    prometheus_bin: str,
    targets: list[str],
    workdir: Path,
    scrape_configs: list[dict[str, Any]] | None = None,
) -> Iterator[str]:
    port = free_port()
    jobs = scrape_configs or [{"job_name": "gateway", "static_configs": [{"targets": targets}]}]
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in sorted(promql.RULES.glob("*.yml"))],
        "scrape_configs": jobs,
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = workdir / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                prometheus_bin,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--web.enable-lifecycle",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"prometheus exited ({proc.returncode}):\n{log.read_text()}")
            try:
                if httpx.get(url + "/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"prometheus did not become ready:\n{log.read_text()}")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for(
    prometheus: str,
    expr: str,
    ok: Callable[[list[dict[str, Any]]], bool],
    timeout: float = SCRAPE_WAIT_S,
) -> None:
    deadline = time.monotonic() + timeout
    result: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        result = query(prometheus, expr)
        if ok(result):
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {expr}; last result: {result}")


@pytest.fixture(scope="module")
def stack(
    upstreams: Upstreams,
    tool: Callable[[str, str], str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    prometheus_bin = tool("prometheus", "apt-get install prometheus")
    # Nothing listens there: this gateway's Redis calls fail (and never reach a real Redis).
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    workdir = tmp_path_factory.mktemp("prometheus-it")
    with ExitStack() as stack_:
        # vLLM-like `/metrics` for the backend-load panel: a queue under its limit, one over
        # it (saturated), and one whose `/metrics` fails (failed polls).
        faults = stack_.enter_context(fault_upstream())
        faults.queue("queued", waiting=1)
        faults.queue("overloaded", waiting=10)
        policy = POLICY.format(
            oai=upstreams.openai_url,
            anth=upstreams.anthropic_url,
            **{lane: faults.base_url(lane) for lane in ("queued", "overloaded", "blind")},
        )
        gateway = stack_.enter_context(run_gateway(policy, tmp=workdir))
        storm_env = {"GATEWAY_REDIS_URL": dead_redis}
        storm = stack_.enter_context(run_gateway(policy, storm_env, tmp=workdir))
        instance, storm_instance = (u.removeprefix("http://") for u in (gateway, storm))
        prometheus = stack_.enter_context(
            _start_prometheus(prometheus_bin, [instance, storm_instance], workdir)
        )
        state = Stack(prometheus, gateway, instance, storm_instance)
        # Let Prometheus see the gateways idle first, so counters have a starting sample.
        _wait_for(prometheus, 'up{job="gateway"} == 1', lambda r: len(r) == 2)
        _drive(state, gateway)
        _drive_storm(storm)
        sent = f'sum(gateway_requests_total{{instance="{instance}"}})'
        _wait_for(prometheus, sent, lambda r: bool(r) and _value(r[0]) == state.sent)
        yield state


# --------------------------------------------------------------------------------- tests


QUERIES = promql.dashboard_queries() + promql.rule_queries("record")


@pytest.mark.parametrize("q", QUERIES, ids=lambda q: q.where)
def test_query_returns_series(stack: Stack, q: promql.Query) -> None:
    _wait_for(stack.prometheus, promql.substitute(q.expr), bool)


@pytest.mark.parametrize("where_metric_label", promql.variable_queries(), ids=lambda v: v[0])
def test_template_variable_has_values(stack: Stack, where_metric_label: tuple[str, ...]) -> None:
    _, metric, label = where_metric_label
    expr = f"count by ({label}) ({metric})"
    _wait_for(stack.prometheus, expr, lambda r: any(s["metric"].get(label) for s in r))


@pytest.mark.parametrize("q", promql.rule_queries("alert"), ids=lambda q: q.where)
def test_alert_expression_is_valid(stack: Stack, q: promql.Query) -> None:
    query(stack.prometheus, q.expr)  # raises on a PromQL error; firing is not expected


def test_rules_evaluate_without_errors(stack: Stack) -> None:
    _wait_for(stack.prometheus, "job:gateway_requests:rate5m", bool)
    body = httpx.get(stack.prometheus + "/api/v1/rules", timeout=10).json()
    rules = [rule for group in body["data"]["groups"] for rule in group["rules"]]
    expected = len(promql.rule_queries("record")) + len(promql.rule_queries("alert"))
    assert len(rules) == expected
    broken = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert not broken


def test_cache_errors_are_seen(stack: Stack) -> None:
    expr = f'sum by (operation) (gateway_cache_errors_total{{instance="{stack.storm_instance}"}})'
    _wait_for(stack.prometheus, expr, lambda r: {s["metric"]["operation"] for s in r} >= {"get"})


def test_the_hand_computed_example() -> None:
    """The search team's traffic, priced by hand (USD per million tokens: open 0.1/0.2,
    strong 2/8, claude 3/15; chat usage 11/7, anthropic 21/9, completions 5/3, embeddings 4/0).
    """
    answers = [
        Answer("search", "strong", CHAT),  # 22 + 56 = 78
        Answer("search", "open", CHAT),  # 1.1 + 1.4 = 2.5
        Answer("search", "open", CHAT, cache_hit=True),  # 0
        Answer("search", "open", CHAT),  # 2.5 (after the fallback)
        Answer("search", "claude", ANTHROPIC),  # 63 + 135 = 198
        Answer("search", "open", CHAT),  # 2.5 (stream)
        Answer("search", "strong", CHAT),  # 78 (stream)
        Answer("search", "open", COMPLETIONS),  # 0.5 + 0.6 = 1.1
        Answer("search", "open", EMBEDDINGS),  # 0.4
    ]
    totals = expected_totals(answers)
    assert math.isclose(totals["cost"][("search", "closed")], 354e-6)
    assert math.isclose(totals["cost"][("search", "open")], 9.0e-6)
    # Reference (strong) prices: chat 78, anthropic 42 + 72 = 114, completions 34, embeddings 8.
    assert math.isclose(totals["baseline"][("search", "")], 624e-6)
    assert math.isclose(totals["savings"][("search", "open")], 75.5e-6 * 3 + 32.9e-6 + 7.6e-6)
    assert math.isclose(totals["savings"][("search", "cache")], 78e-6)
    assert totals["savings"][("search", "closed")] == 0.0


def _check_totals(
    stack: Stack, read: Callable[[str, tuple[str, ...]], dict[tuple[str, ...], float]]
) -> None:
    totals = expected_totals(stack.answers)
    assert {t for t, _ in totals["cost"]} == {"search", "support", "tiny", "frugal", "labelled"}
    got_cost = read("gateway_cost_usd_total", ("team", "tier"))
    got_savings = read("gateway_savings_usd_total", ("team", "tier"))
    got_baseline = read("gateway_baseline_cost_usd_total", ("team",))
    for key, value in totals["cost"].items():
        assert math.isclose(got_cost.get(key, -1.0), value, rel_tol=1e-9), (key, got_cost)
    assert set(got_cost) == set(totals["cost"])
    for key, value in totals["savings"].items():
        assert math.isclose(got_savings.get(key, -1.0), value, rel_tol=1e-9, abs_tol=1e-15), key
    assert {k for k, v in got_savings.items() if v} == {
        k for k, v in totals["savings"].items() if v
    }
    for (team, _), value in totals["baseline"].items():
        assert math.isclose(got_baseline[(team,)], value, rel_tol=1e-9), team


def test_cost_and_savings_in_prometheus(stack: Stack) -> None:
    def read(metric: str, by: tuple[str, ...]) -> dict[tuple[str, ...], float]:
        expr = f'sum by ({", ".join(by)}) ({metric}{{instance="{stack.instance}"}})'
        return {tuple(s["metric"][k] for k in by): _value(s) for s in query(stack.prometheus, expr)}

    _check_totals(stack, read)


def test_cost_and_savings_on_the_gateway(stack: Stack) -> None:
    text = httpx.get(stack.gateway + "/metrics", timeout=10).text

    def read(metric: str, by: tuple[str, ...]) -> dict[tuple[str, ...], float]:
        out: dict[tuple[str, ...], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == metric:
                    key = tuple(sample.labels[k] for k in by)
                    out[key] = out.get(key, 0.0) + sample.value
        return out

    _check_totals(stack, read)


def test_requests_and_decisions_are_counted(stack: Stack) -> None:
    def by(expr: str, label: str) -> dict[str, float]:
        return {s["metric"].get(label, ""): _value(s) for s in query(stack.prometheus, expr)}

    where = f'instance="{stack.instance}"'
    statuses = by(f"sum by (status) (gateway_requests_total{{{where}}})", "status")
    refused = stack.rate_limited + 1  # and the frugal team's budget
    # 4xx: + the client that left (499)
    assert statuses == {"2xx": len(stack.answers), "4xx": 3 + refused + 1, "5xx": 2}
    reasons = by(f"sum by (reason) (gateway_routing_decisions_total{{{where}}})", "reason")
    # search: hard ×2 (rule); qwen chat, qwen stream, completions, embeddings, claude (alias);
    # the repeated qwen chat (cache); the fallback. support: six `auto` (calibration/default).
    assert reasons.pop("rule") == 2
    # + tiny and frugal, + the two shadowed requests of `labelled`
    assert reasons.pop("alias") == 5 + (3 - stack.rate_limited) + 1 + 2
    assert reasons.pop("cache") == 1
    assert reasons.pop("fallback") == 1 + 2  # + `probe` twice
    assert reasons.pop("spillover") == 1
    assert sum(reasons.values()) == 6 and set(reasons) <= {"calibration", "default"}
    fallbacks = by(f"sum by (to_backend) (gateway_fallbacks_total{{{where}}})", "to_backend")
    assert fallbacks == {"open": 3}  # `all-fail` has nowhere to fall back to
    rejections = by(f"sum by (reason) (gateway_rejections_total{{{where}}})", "reason")
    assert rejections == {"invalid": 2, "auth": 1, "rate_limit": stack.rate_limited, "budget": 1}


def test_backend_up_follows_the_circuit_breaker(stack: Stack) -> None:
    """Three failures in a row opened `broken`'s circuit for 5 s; the gauge showed it."""
    where = f'instance="{stack.instance}"'
    down = f'min_over_time(gateway_backend_up{{{where}, backend="broken"}}[5m])'
    _wait_for(stack.prometheus, down, lambda r: bool(r) and _value(r[0]) == 0)
    up = f'min_over_time(gateway_backend_up{{{where}, backend="open"}}[5m])'
    assert _value(query(stack.prometheus, up)[0]) == 1
