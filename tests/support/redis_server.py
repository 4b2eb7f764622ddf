"""A real `redis-server` that the tests start themselves.

The machine's own Redis may hold someone else's data, so no test ever connects to a server
it did not start. `RedisServer` runs one on a free port of 127.0.0.1, with its files in a
temporary folder and no persistence (`--save "" --appendonly no`). Tests that share one
server take a database of their own with `lease()`, which empties it before and after use.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from tests.support.model_servers import free_port
from tests.support.require import require

# More than the default 16, so that every module and test can have a database of its own.
DATABASES = 64
READY_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


def redis_server_binary() -> str:
    """The path of `redis-server`; skips (or fails in CI) when it is not installed."""
    path = shutil.which("redis-server")
    if path is None:
        require("`redis-server`", "apt-get install redis-server; the Redis tests start their own")
    return path


@dataclass(frozen=True)
class RedisDb:
    """One database of a test-started server."""

    port: int
    db: int

    @property
    def url(self) -> str:
        """The URL the gateway is given (`GATEWAY_REDIS_URL`)."""
        return f"redis://127.0.0.1:{self.port}/{self.db}"

    def client(self) -> redis.Redis:
        """A client for this database; close it (it is a context manager)."""
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            db=self.db,
            socket_connect_timeout=2,
            socket_timeout=5,
            retry=Retry(NoBackoff(), 0),
        )


class RedisServer:
    """A redis-server process on a fixed free port; `kill()` and `start()` again for outages."""

    def __init__(self, workdir: Path, binary: str) -> None:
        self.workdir = workdir
        self.port = free_port()
        self._binary = binary
        self._process: subprocess.Popen[bytes] | None = None
        self._free = list(range(DATABASES))

    @property
    def log(self) -> Path:
        """The server's log file."""
        return self.workdir / "redis.log"

    def start(self) -> None:
        """Start the server (again, on the same port) and wait until it answers PING."""
        if self._process is not None and self._process.poll() is None:
            raise RuntimeError("redis-server is already running")
        command = [self._binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--dir", str(self.workdir), "--logfile", str(self.log)]
        command += ["--save", "", "--appendonly", "no", "--databases", str(DATABASES)]
        self._process = subprocess.Popen(
            command, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )
        self._wait_ready(self._process)

    def kill(self) -> None:
        """Stop the server at once (SIGKILL), as a crash would."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()

    def stop(self) -> None:
        """Stop the server politely (SIGTERM; nothing is saved), then kill it if it lingers."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()

    def db(self, db: int = 0) -> RedisDb:
        """A database of this server."""
        return RedisDb(self.port, db)

    @contextmanager
    def lease(self) -> Iterator[RedisDb]:
        """A database nobody else uses until the block exits; empty at both ends."""
        if not self._free:
            raise RuntimeError(f"all {DATABASES} test Redis databases are in use")
        database = self.db(self._free.pop(0))
        self._flush(database)
        try:
            yield database
        finally:
            with suppress(RedisError):
                self._flush(database)
            self._free.append(database.db)

    @staticmethod
    def _flush(database: RedisDb) -> None:
        with database.client() as client:
            client.flushdb()

    def _wait_ready(self, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"redis-server exited ({process.returncode}):\n{self._tail()}")
            with suppress(RedisError), self.db().client() as client:
                if client.ping():
                    return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer PING in {READY_TIMEOUT:.0f} s")

    def _tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


@contextmanager
def run_redis_server(workdir: Path) -> Iterator[RedisServer]:
    """A started redis-server with its files in `workdir`, stopped when the block exits."""
    server = RedisServer(workdir, redis_server_binary())
    try:
        server.start()
        yield server
    finally:
        server.stop()
