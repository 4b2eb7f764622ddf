"""The loop, live: re-adapt the classifier from the label stream and swap it on every replica.

Adaptation itself is offline code (`gateway classify adapt`, in `gateway_tools`), so the
server runs it as a child process (`python -m gateway classify adapt ...`): the server
never imports the training code, and a fit that takes seconds of CPU never blocks the
event loop. What the child writes goes live only if it loads, scores a probe request
within [0, 1], and is not the base returned by the guard; then it is published through
Redis and every replica's housekeeping swaps to it (`follow`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from gateway.difficulty import DifficultyClassifier
from gateway.difficulty.artifact import Artifact
from gateway.shadow.artifacts import ArtifactStore

if TYPE_CHECKING:
    from gateway.services import Services

log = logging.getLogger("gateway.adapting")
ADAPT_TIMEOUT_S = 600.0
_PROBE = {"messages": [{"role": "user", "content": "Prove that there are infinitely many primes."}]}


def _load(data: bytes) -> DifficultyClassifier:
    """A classifier from artifact bytes; raises if they are not a working artifact."""
    classifier = DifficultyClassifier(Artifact.from_bytes(data))
    score = classifier.score(_PROBE)
    if not (math.isfinite(score) and 0.0 <= score <= 1.0):
        raise ValueError(f"the artifact scores a probe request {score!r}")
    return classifier


class Adapter:
    """Runs the adaptation loop and keeps this replica on the live artifact."""

    def __init__(self, services: Services, timeout_s: float) -> None:
        self._services = services
        self.store = ArtifactStore(services.background_redis, timeout_s)
        self._holder = f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._previous: DifficultyClassifier | None = None  # rollback without Redis

    def swap(self, classifier: DifficultyClassifier) -> None:
        """Serve ``classifier`` from the next request on."""
        from gateway.housekeeping import publish_info

        services = self._services
        if classifier.version == services.classifier.version:
            return
        self._previous = services.classifier
        services.classifier = classifier
        publish_info(services)
        log.info("classifier swapped", extra={"classifier_version": classifier.version})

    async def follow(self) -> None:
        """Swap to the artifact the replicas share, if it is not the one served here."""
        version = await self.store.current()
        if version is None or version == self._services.classifier.version:
            return
        data = await self.store.fetch(version)
        if data is None:
            log.error("live artifact missing from Redis", extra={"classifier_version": version})
            return
        self.swap(await asyncio.to_thread(_load, data))

    async def run(self) -> None:
        """Every `router.every_s` (policy), adapt if `router.adapt` is `auto`."""
        last = time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            router = self._services.state.loaded.policy.router
            if router.adapt != "auto" or time.monotonic() - last < router.every_s:
                continue
            last = time.monotonic()
            result = await self.adapt_once(router.min_labels)
            self._services.metrics.adaptations.labels(result).inc()

    async def adapt_once(self, min_labels: int) -> str:
        """One round: adapted | recalibrated (the base's ranking, rescaled scores) | kept
        (the guard kept the base) | too_few | busy | failed."""
        try:
            labels = await self._services.shadower.labels.read()
        except Exception:
            return "failed"
        if len(labels) < min_labels:
            return "too_few"
        if not await self.store.lock(self._holder, ADAPT_TIMEOUT_S):
            return "busy"
        base = self._services.classifier
        try:
            data = await self._fit(labels, base)
            candidate = await asyncio.to_thread(_load, data)
        except Exception as exc:  # a bad fit never goes live
            log.error("adaptation failed", extra={"error": str(exc)[:500]})
            return "failed"
        if candidate.version == base.version:
            return "kept"
        await self.store.keep(base.version, base.artifact.to_bytes())
        await self.store.publish(candidate.version, data, base.version)
        self.swap(candidate)
        return "recalibrated" if "+recalibrated" in candidate.version else "adapted"

    async def _fit(self, labels: list[dict[str, object]], base: DifficultyClassifier) -> bytes:
        with tempfile.TemporaryDirectory(prefix="gateway-adapt-") as tmp:
            folder = Path(tmp)
            (folder / "labels.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in labels))
            (folder / "base.npz").write_bytes(base.artifact.to_bytes())
            command = [sys.executable, "-m", "gateway", "classify", "adapt"]
            command += [
                "--labels",
                str(folder / "labels.jsonl"),
                "--base",
                str(folder / "base.npz"),
            ]
            command += ["--out", str(folder / "adapted.npz")]
            child = await asyncio.create_subprocess_exec(
                *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
            try:
                out, err = await asyncio.wait_for(child.communicate(), ADAPT_TIMEOUT_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    child.kill()
                await child.wait()
                raise
            if child.returncode != 0:
                raise RuntimeError(
                    err.decode(errors="replace").strip() or f"exit {child.returncode}"
                )
            log.info("adaptation ran", extra={"report": out.decode(errors="replace")[-2000:]})
            return (folder / "adapted.npz").read_bytes()

    async def rollback(self) -> str | None:
        """Back to the artifact before the live one; the version now served, or None."""
        if self.store.shared:
            version = await self.store.rollback()
            if version is None:
                return None
            await self.follow()
            return version
        if self._previous is None:
            return None
        self.swap(self._previous)
        return self._services.classifier.version
