"""promtool: the scrape config and the rule files are valid, and the alert unit tests pass."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import yaml

from tests.deploy.promql import REPO

PROMETHEUS = REPO / "deploy" / "prometheus"
HINT = "apt-get install prometheus"


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def test_check_config(tool: Callable[[str, str], str]) -> None:
    result = _run([tool("promtool", HINT), "check", "config", str(PROMETHEUS / "prometheus.yml")])
    # The rule_files glob must resolve (relative to the config) or nothing gets checked.
    assert "2 rule files found" in result.stdout


def test_check_rules(tool: Callable[[str, str], str]) -> None:
    files = sorted(str(p) for p in (PROMETHEUS / "rules").glob("*.yml"))
    assert len(files) == 2
    _run([tool("promtool", HINT), "check", "rules", *files])


def test_alert_unit_tests(tool: Callable[[str, str], str]) -> None:
    result = _run(
        [tool("promtool", HINT), "test", "rules", str(PROMETHEUS / "tests" / "alerts_test.yml")]
    )
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_unit_test_and_metadata() -> None:
    alerts = [
        rule
        for group in yaml.safe_load((PROMETHEUS / "rules" / "alerts.yml").read_text())["groups"]
        for rule in group["rules"]
    ]
    tests = yaml.safe_load((PROMETHEUS / "tests" / "alerts_test.yml").read_text())["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in tests:
        for check in case.get("alert_rule_test", []):
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    for rule in alerts:
        name = rule["alert"]
        assert rule.get("for"), f"{name}: no `for:`"
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert {"summary", "description"} <= set(rule["annotations"]), name
        assert name in firing, f"{name}: no unit test shows it firing"
        assert name in quiet, f"{name}: no unit test shows it staying quiet"
    names = {rule["alert"] for rule in alerts}
    assert {
        "GatewayHighErrorRatio",
        "GatewayHighLatencyP99",
        "GatewayBudgetBurn",
        "GatewayBackendDown",
        "GatewayCacheBypassStorm",
    } <= names


def test_scrape_config_targets() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in config["scrape_configs"]
    }
    assert targets["gateway"] == ["gateway:8000"]
    assert targets["vllm"] == ["vllm:8000"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["gateway"].get("metrics_path", "/metrics") == "/metrics"
    assert config["rule_files"]
