"""The house's rules, checked: what the server imports, what providers may know, sizes."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GATEWAY = REPO / "gateway"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_providers_never_see_the_policy() -> None:
    for path in (GATEWAY / "providers").glob("*.py"):
        assert not any(n.startswith("gateway.policy") for n in _imports(path)), path.name


def test_the_pipeline_never_sees_asgi() -> None:
    for name in ("pipeline.py", "attempt.py", "caching.py", "call.py", "accounting.py"):
        found = _imports(GATEWAY / name)
        assert not any(n.startswith(("starlette", "fastapi", "gateway.api")) for n in found), name


def test_no_serving_module_is_over_300_lines() -> None:
    long = [p for p in GATEWAY.rglob("*.py") if len(p.read_text().splitlines()) > 300]
    assert long == []


def test_the_server_never_imports_the_offline_tools(tmp_path: Path) -> None:
    # Build the app and run its whole start-up, then look at what is loaded.
    policy = tmp_path / "p.yaml"
    policy.write_text("backends: {o: {provider: openai, base_url: 'http://127.0.0.1:9/v1'}}\n")
    policy.write_text(policy.read_text() + "models: {'*': {to: [o]}}\n")
    script = f"""
import asyncio, sys
from gateway.metrics import Metrics
from gateway.services import Services
from gateway.settings import Settings
from gateway.app import create_app
create_app(Settings(policy={str(policy)!r}))
async def main():
    services = await Services.start(Settings(policy={str(policy)!r}), Metrics())
    await services.close()
asyncio.run(main())
print(sorted(m for m in sys.modules if m.startswith(("gateway_tools", "sklearn", "matplotlib"))))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True, cwd=REPO
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"
