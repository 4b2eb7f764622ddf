"""The scripted upstream of `fault_upstream` in a process of its own, so that it can be killed.

    python -m tests.support.fault_process PORT

It serves the same lanes (`/<lane>/v1/chat/completions`, `/<lane>/v1/models`) and, for the
process that started it, a control API: `POST /_control/script` gives a lane a new script
(the keywords of `FaultUpstream.script`), `GET /_control/lanes` returns each lane's counters
and (with `?visits=1`) every chat request the server received, as `[lane, arrived, left, status]` on
the monotonic clock (one clock for every process of a machine, so the caller can compare it
with its own).

`FaultProcess` starts it on a port chosen once, so that after `kill()` (SIGKILL: the kernel
resets every connection, nothing is answered) `start()` brings it back at the same URL.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tests.support.fault_upstream import FaultUpstream, fault_app
from tests.support.model_servers import free_port

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0


def _recording(app: ASGIApp, visits: list[list[Any]]) -> ASGIApp:
    """``app``, noting when each chat request arrived and when its handling ended."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not path.endswith("/chat/completions"):
            await app(scope, receive, send)
            return
        visit: list[Any] = [path.strip("/").split("/", 1)[0], time.monotonic(), None, None]
        visits.append(visit)

        async def noting(message: Message) -> None:
            if message["type"] == "http.response.start":
                visit[3] = message["status"]
            await send(message)

        try:
            await app(scope, receive, noting)
        finally:
            visit[2] = time.monotonic()

    return wrapped


def control_app() -> ASGIApp:
    """The lanes of a `FaultUpstream` and the control API, recording every chat request."""
    upstream = FaultUpstream()
    visits: list[list[Any]] = []

    async def script(request: Request) -> Response:
        given = orjson.loads(await request.body())
        upstream.script(given.pop("lane"), **given)
        return Response(b"{}", media_type="application/json")

    async def lanes(request: Request) -> Response:
        state = {
            name: {
                "requests": lane.requests,
                "in_flight": lane.in_flight,
                "peak": lane.peak,
                "completed": lane.completed,
                "cancelled": lane.cancelled,
            }
            for name, lane in upstream.lanes.items()
        }
        body: dict[str, Any] = {"lanes": state, "now": time.monotonic()}
        if request.query_params.get("visits") == "1":
            body["visits"] = visits
        return Response(orjson.dumps(body), media_type="application/json")

    control = [
        Route("/_control/script", script, methods=["POST"]),
        Route("/_control/lanes", lanes, methods=["GET"]),
    ]
    return _recording(Starlette(routes=[*control, *fault_app(upstream).routes]), visits)


@dataclass
class Visit:
    """One chat request as the scripted server saw it (monotonic times; `left` None: open).

    `status` is the one it answered with (a hung request is answered 504 once its client
    has left; None: nothing was sent)."""

    lane: str
    arrived: float
    left: float | None
    status: int | None


class FaultProcess:
    """A killable scripted upstream: start, kill, start again on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=self.url, timeout=10)

    def base_url(self, lane: str) -> str:
        """The `base_url` a policy gives a backend on this lane."""
        return f"{self.url}/{lane}/v1"

    def start(self) -> None:
        """Start the server (again) and wait until it answers."""
        command = [sys.executable, "-m", "tests.support.fault_process", str(self.port)]
        self.proc = subprocess.Popen(command, cwd=REPO, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"scripted upstream exited ({self.proc.returncode})")
            try:
                if self.http.get("/_control/lanes").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("scripted upstream did not start")
            time.sleep(0.05)

    def kill(self) -> float:
        """SIGKILL the server; the monotonic time it was sent."""
        assert self.proc is not None
        at = time.monotonic()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        # The pooled connections to the dead server are useless now.
        self.http.close()
        self.http = httpx.Client(base_url=self.url, timeout=10)
        return at

    def script(self, lane: str, **script: Any) -> None:
        """Give a lane a new script (and reset its counters)."""
        self.http.post("/_control/script", json={"lane": lane, **script}).raise_for_status()

    def lanes(self) -> dict[str, dict[str, Any]]:
        """Each lane's counters (since its last script)."""
        lanes: dict[str, dict[str, Any]] = self.http.get("/_control/lanes").json()["lanes"]
        return lanes

    def visits(self) -> list[Visit]:
        """Every chat request since the server (re)started."""
        body = self.http.get("/_control/lanes", params={"visits": "1"}).json()
        return [Visit(*v) for v in body["visits"]]

    def stop(self) -> None:
        """Stop the server for good."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.http.close()


@contextmanager
def fault_process() -> Iterator[FaultProcess]:
    """A started `FaultProcess`, stopped when the block ends."""
    upstream = FaultProcess()
    try:
        upstream.start()
        yield upstream
    finally:
        upstream.stop()


def main() -> None:
    """Serve on the port given as the only argument, until killed."""
    import uvicorn

    port = int(sys.argv[1])
    uvicorn.run(control_app(), host="127.0.0.1", port=port, log_level="error", lifespan="off")


if __name__ == "__main__":
    main()
