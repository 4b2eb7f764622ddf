"""Shared helpers for the deployment tests: external tools are required in CI."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


def in_ci() -> bool:
    """CI sets CI=true; there a missing tool is a failure, not a skip."""
    return os.environ.get("CI", "").lower() == "true"


def require(what: str, hint: str) -> None:
    """Skip (locally) or fail (in CI) because `what` is unavailable."""
    message = f"{what} is not available ({hint})"
    if in_ci():
        pytest.fail(message + "; CI=true, so this is an error, not a skip")
    pytest.skip(message)


@pytest.fixture(scope="session")
def tool() -> Callable[[str, str], str]:
    """`tool(name, hint)`: the path of an executable, or skip/fail as `require` does."""

    def find(name: str, hint: str) -> str:
        path = shutil.which(name)
        if path is None:
            require(f"`{name}`", hint)
            raise AssertionError("unreachable")  # pragma: no cover
        return path

    return find
