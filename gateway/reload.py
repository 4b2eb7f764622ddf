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
from gateway.policy.problems import PolicyInvalid
from gateway.services import Services
from gateway.state import PolicyState

log = logging.getLogger("gateway.reload")


def reload(services: Services, path: Path | None = None) -> None:
    """Load the policy again and swap it in; a bad file keeps the old policy serving.

    The failure is kept on `services.reload_error` (one line, never a source line of the
    file) for `/readyz` until a later reload succeeds.
    """
    path = path or services.settings.policy
    try:
        loaded = load_policy(path)
    except PolicyError as exc:
        summary = exc.summary if isinstance(exc, PolicyInvalid) else str(exc).splitlines()[0]
        services.reload_error = summary
        services.metrics.policy_reloads.labels("error").inc()
        log.error("policy reload failed; keeping the old policy", extra={"error": summary})
        raise
    for warning in loaded.warnings:
        log.warning("policy warning", extra={"warning": str(warning)})
    prior = services.classifier.artifact.score_prior.tolist()
    services.previous_state = services.state
    services.state = PolicyState.build(loaded, prior, services.state)
    services.reload_error = None
    services.metrics.policy_reloads.labels("ok").inc()
    publish_info(services)
    log.info("policy reloaded", extra={"policy_version": loaded.version})


def rollback(services: Services) -> bool:
    """Serve the policy that was active before the last reload; False when there is none."""
    previous = services.previous_state
    if previous is None:
        return False
    services.previous_state, services.state = services.state, previous
    services.metrics.policy_reloads.labels("rollback").inc()
    publish_info(services)
    log.warning("policy rolled back", extra={"policy_version": previous.loaded.version})
    return True


def on_sighup(services: Services) -> None:
    """SIGHUP: reload now (a bad file is logged and kept off, as on any reload)."""
    with contextlib.suppress(PolicyError):
        reload(services)


async def watch(services: Services) -> None:
    """Reload when the policy file's mtime changes (a bad file is not retried until then)."""
    path = services.settings.policy
    seen: float | None = services.state.loaded.mtime
    while True:
        await asyncio.sleep(services.settings.policy_reload_s)
        try:
            mtime = path.stat().st_mtime
        except OSError:
            if seen is not None:  # say it once, not every poll
                services.reload_error = f"{path}: the policy file is gone; serving the last one"
                log.error("policy file missing; keeping the old policy", extra={"path": str(path)})
                seen = None
            continue
        if mtime == seen:
            continue
        seen = mtime
        # A bad file is logged and counted by reload; the old policy keeps serving.
        with contextlib.suppress(PolicyError):
            reload(services, path)
