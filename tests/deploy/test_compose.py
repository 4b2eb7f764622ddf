"""docker-compose.yml resolves with every profile, and the image is built the way we promise.

No Docker engine is needed: `docker-compose config` only parses and interpolates the file.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from gateway.policy import parse_policy
from tests.deploy.promql import REPO

COMPOSE = REPO / "docker-compose.yml"
HINT = "apt-get install docker-compose"
HOST_KEYS = {
    "OPENAI_API_KEY": "sk-openai-from-host",
    "ANTHROPIC_API_KEY": "sk-ant-from-host",
    "GEMINI_API_KEY": "gemini-from-host",
}


def _config(binary: str, *profiles: str, quiet: bool = False) -> str:
    args = [binary, "-f", str(COMPOSE)]
    for profile in profiles:
        args += ["--profile", profile]
    args += ["config", "-q"] if quiet else ["config"]
    env = {k: v for k, v in os.environ.items() if k not in HOST_KEYS}
    env.update(HOST_KEYS)
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=60, check=False, env=env, cwd=REPO
    )
    assert result.returncode == 0, f"{' '.join(args)}:\n{result.stderr}"
    return result.stdout


@pytest.mark.parametrize("profiles", [(), ("gpu",), ("cpu",)], ids=["none", "gpu", "cpu"])
def test_config_is_valid(tool: Callable[[str, str], str], profiles: tuple[str, ...]) -> None:
    _config(tool("docker-compose", HINT), *profiles, quiet=True)


def mounts(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """target → (source, read-only), from either the short or the long volume syntax."""
    out = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            out[volume["target"]] = (str(volume.get("source", "")), bool(volume.get("read_only")))
        else:
            source, target, *mode = str(volume).split(":")
            out[target] = (source, bool(mode) and "ro" in mode[0].split(","))
    return out


@pytest.fixture(scope="module")
def resolved(tool: Callable[[str, str], str]) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(_config(tool("docker-compose", HINT), "gpu", "cpu"))
    return config


def test_gateway_service(resolved: dict[str, Any]) -> None:
    gateway = resolved["services"]["gateway"]
    env = gateway["environment"]
    assert env["GATEWAY_REDIS_URL"] == "redis://redis:6379/0"
    assert env["GATEWAY_LOCAL_BASE_URL"] == "http://vllm:8000/v1"
    for key, value in HOST_KEYS.items():
        assert env[key] == value, f"{key} is not taken from the host environment"
    assert mounts(gateway)["/etc/gateway/policies"] == (str(REPO / "policies"), True)
    assert env["GATEWAY_POLICY"].startswith("/etc/gateway/policies/")
    assert "8000" in str(gateway["ports"])


def test_vllm_profiles(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    gpu, cpu = services["vllm"], services["vllm-cpu"]
    assert gpu["profiles"] == ["gpu"] and cpu["profiles"] == ["cpu"]
    assert gpu["image"].startswith("vllm/vllm-openai:")
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    # The CPU variant answers to the same host name.
    assert "vllm" in cpu["networks"]["default"]["aliases"]
    for service in (gpu, cpu):
        command = service["command"]
        served = command[command.index("--served-model-name") + 1 :]
        assert "local" in served, "the gateway asks vLLM for the model `local`"
        assert command[command.index("--port") + 1] == "8000"
    # Services outside a profile must not depend on one that may not run.
    for name, service in services.items():
        if not service.get("profiles"):
            assert not {"vllm", "vllm-cpu"} & set(service.get("depends_on") or {}), name


def test_prometheus_and_grafana_mounts(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    deploy = REPO / "deploy"
    assert mounts(services["prometheus"])["/etc/prometheus"] == (str(deploy / "prometheus"), True)
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    grafana = mounts(services["grafana"])
    provisioning = deploy / "grafana" / "provisioning"
    assert grafana["/etc/grafana/provisioning"] == (str(provisioning), True)
    dashboards = yaml.safe_load((provisioning / "dashboards" / "dashboards.yml").read_text())
    path = dashboards["providers"][0]["options"]["path"]
    assert grafana[path] == (str(deploy / "grafana" / "dashboards"), True)
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    assert datasources["datasources"][0]["url"] == "http://prometheus:9090"
    assert "redis" in services


def test_mounted_paths_exist() -> None:
    raw = yaml.safe_load(COMPOSE.read_text())
    for name, service in raw["services"].items():
        for volume in service.get("volumes") or []:
            source = str(volume).split(":", 1)[0]
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name}: {source} does not exist"


def test_default_policy_loads_with_compose_environment(resolved: dict[str, Any]) -> None:
    env = resolved["services"]["gateway"]["environment"]
    name = env["GATEWAY_POLICY"].removeprefix("/etc/gateway/policies/")
    path = REPO / "policies" / name
    loaded = parse_policy(path.read_text(), str(path), env)
    local = [b for b in loaded.policy.backends.values() if b.tier == "open"]
    assert any(b.base_url == "http://vllm:8000/v1" for b in local)
    assert all(b.enabled for b in loaded.policy.backends.values())  # every key came through


# ------------------------------------------------------------------------------ Dockerfile


def _stages() -> list[list[str]]:
    """Dockerfile instructions (continuations joined, comments dropped) grouped by stage."""
    text = (REPO / "Dockerfile").read_text()
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    stages: list[list[str]] = []
    for line in joined.splitlines():
        if not line.strip():
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line.strip())
    return stages


def test_dockerfile_is_multi_stage_and_slim() -> None:
    builder, final = _stages()
    assert re.match(r"FROM python:\$\{PYTHON_VERSION\}-slim AS builder", builder[0])
    assert final[0] == "FROM python:${PYTHON_VERSION}-slim"
    text = (REPO / "Dockerfile").read_text()
    assert "ARG PYTHON_VERSION=3.11" in text
    assert any("pip wheel" in i and ".[embedded]" in i for i in builder)
    final_text = "\n".join(final)
    for compiler in ("build-essential", "gcc", "apt-get install"):
        assert compiler not in final_text, f"the final stage must not install {compiler}"
    assert "curl" not in final_text and "wget" not in final_text


def test_dockerfile_runtime_contract() -> None:
    final = _stages()[-1]
    user = [i for i in final if i.startswith("USER ")]
    assert user and user[-1].split()[1].split(":")[0] not in ("root", "0")
    assert "EXPOSE 8000" in final
    (health,) = [i for i in final if i.startswith("HEALTHCHECK ")]
    assert "urllib.request" in health and "/healthz" in health
    assert final[-1] == 'CMD ["gateway", "serve", "--host", "0.0.0.0", "--port", "8000"]'
    env = " ".join(i for i in final if i.startswith("ENV "))
    assert "GATEWAY_POLICY=" in env


def test_dockerignore_keeps_what_the_build_copies() -> None:
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "tests"} <= ignored
    copied = set()
    for instruction in (i for stage in _stages() for i in stage):
        if instruction.startswith("COPY ") and "--from=" not in instruction:
            copied |= {p for p in instruction.split()[1:-1] if not p.startswith("--")}
    assert copied == {"pyproject.toml", "README.md", "gateway", "policies"}
    assert not copied & ignored
