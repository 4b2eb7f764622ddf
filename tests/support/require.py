"""Missing external tools: a skip on a developer's machine, a failure in CI."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    """CI sets CI=true; there a missing tool is a failure, not a skip."""
    return os.environ.get("CI", "").lower() == "true"


def require(what: str, hint: str) -> NoReturn:
    """Skip (locally) or fail (in CI) because `what` is unavailable."""
    message = f"{what} is not available ({hint})"
    if in_ci():
        pytest.fail(message + "; CI=true, so this is an error, not a skip", pytrace=False)
    pytest.skip(message)
