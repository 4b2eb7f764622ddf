"""Policy hot reload: load the file again, build the next state, swap it in.

A file that fails to load leaves the old policy serving; the failure is logged and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from gateway.errors import PolicyError
from gateway.housekeeping import publish_info
from gateway.policy import load_policy
from gateway.services import Services
from gateway.state import PolicyState

log = logging.getLogger("gateway.reload")


def reload(services: Services, path: Path | None = None) -> None:
    """Load the policy again and swap it in; a bad file keeps the old policy serving."""
    path = path or services.settings.policy
    try:
        loaded = load_policy(path)
    except PolicyError as exc:
        services.metrics.policy_reloads.labels("error").inc()
        log.error("policy reload failed; keeping the old policy", extra={"error": str(exc)})
        raise
    prior = services.classifier.artifact.score_prior.tolist()
    services.state = PolicyState.build(loaded, prior, services.state)
    services.metrics.policy_reloads.labels("ok").inc()
    publish_info(services)
    log.info("policy reloaded", extra={"policy_version": loaded.version})


async def watch(services: Services) -> None:
    """Reload when the policy file's mtime changes (a bad file is not retried until then)."""
    path = services.settings.policy
    seen = services.state.loaded.mtime
    while True:
        await asyncio.sleep(services.settings.policy_reload_s)
        try:
            mtime = path.stat().st_mtime
        except OSError:
            continue
        if mtime == seen:
            continue
        seen = mtime
        # A bad file is logged and counted by reload; the old policy keeps serving.
        with contextlib.suppress(PolicyError):
            reload(services, path)
