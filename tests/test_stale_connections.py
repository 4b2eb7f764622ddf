"""A pooled connection closed under a request is retried once on a new one; nothing else is."""

from __future__ import annotations

import errno
from typing import Any

import aiohttp
import pytest

from gateway.errors import UpstreamError
from gateway.providers.http import UpstreamClient


class _Session:
    """Raises the given errors in turn, then answers."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def post(self, *_: Any, **__: Any) -> Any:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return object()


def _client(session: _Session) -> UpstreamClient:
    client = UpstreamClient()
    client._session = session  # type: ignore[assignment]
    return client


async def _post(client: UpstreamClient) -> None:
    await client.post(
        "http://x/v1/chat/completions",
        b"{}",
        {},
        backend="b",
        connect_timeout_s=1,
        read_timeout_s=1,
    )


@pytest.mark.parametrize(
    "first",
    [
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientOSError(errno.ECONNRESET, "Connection reset by peer"),
        aiohttp.ClientOSError(errno.EPIPE, "Broken pipe"),
    ],
)
async def test_a_closed_pooled_connection_is_retried_once(first: BaseException) -> None:
    session = _Session(first)
    await _post(_client(session))
    assert session.calls == 2


async def test_a_second_reset_fails_the_target() -> None:
    reset = aiohttp.ClientOSError(errno.ECONNRESET, "Connection reset by peer")
    session = _Session(reset, aiohttp.ClientOSError(errno.ECONNRESET, "again"))
    with pytest.raises(UpstreamError):
        await _post(_client(session))
    assert session.calls == 2


async def test_other_os_errors_are_not_retried() -> None:
    session = _Session(aiohttp.ClientOSError(errno.EHOSTUNREACH, "No route to host"))
    with pytest.raises(UpstreamError):
        await _post(_client(session))
    assert session.calls == 1
