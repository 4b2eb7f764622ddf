"""Fixtures for the deployment tests: external tools are required in CI, optional locally."""

from __future__ import annotations

import shutil
from collections.abc import Callable

import pytest

from tests.deploy.support import require


@pytest.fixture(scope="session")
def tool() -> Callable[[str, str], str]:
    """`tool(name, hint)`: the path of an executable; skips locally, fails in CI if absent."""

    def find(name: str, hint: str) -> str:
        path = shutil.which(name)
        if path is None:
            require(f"`{name}`", hint)
        return path

    return find
