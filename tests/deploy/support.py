"""Helpers shared by the deployment tests."""

from __future__ import annotations

from tests.support.require import in_ci, require

__all__ = ["in_ci", "require"]
