"""A redis-server a test starts, stops and restarts itself (outages mid-test): a free port,
a temp dir, no persistence unless `aof=True`. For a shared server with a database per test,
see redis_server.py.

`running_redis(dir)` yields its URL; `RedisServer` can also be stopped and started again on
the same port (a Redis outage in the middle of a test).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.model_servers import free_port


def require_redis_server() -> str:
    """The redis-server binary, or skip the test saying why."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    return binary


class RedisServer:
    """One redis-server process owned by a test."""

    def __init__(self, directory: Path, port: int | None = None, *, aof: bool = False) -> None:
        self.directory = directory
        self.aof = aof  # append-only file, fsync on every write: survives SIGKILL
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it accepts connections."""
        binary = require_redis_server()
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--dir", str(self.directory)]
        command += (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.aof
            else ["--appendonly", "no"]
        )
        log = (self.directory / "redis.log").open("ab")
        self._proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited: {(self.directory / 'redis.log').read_text()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): it accepts nothing and answers nothing, like a hung one."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Undo `pause`."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Kill the server at once (an outage, not a clean shutdown)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGCONT)
            self._proc.kill()
            self._proc.wait(10)
        self._proc = None


@contextmanager
def running_redis(directory: Path) -> Iterator[str]:
    """Start a redis-server with its files under `directory`; yield its URL."""
    server = RedisServer(directory)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()
