"""``gateway shadow export``: the label stream as JSON lines (the label-record contract).

Reads Redis (``--redis``, default ``$GATEWAY_REDIS_URL``) or, for a gateway without Redis,
its admin endpoint (``--gateway URL`` with ``--admin-key`` or ``$GATEWAY_ADMIN_KEY``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import urllib.parse
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from gateway.shadow.labels import LabelStore


def _since(value: str) -> float:
    """Epoch seconds, or an ISO-8601 date/time (UTC when no zone is given)."""
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not epoch seconds or ISO-8601: {value!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


async def _from_redis(url: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    import redis.asyncio as aioredis

    client = aioredis.from_url(url)
    try:
        return await LabelStore(client, 30.0, 1).read(args.since, args.team, args.model)
    finally:
        await client.aclose()


def _from_gateway(base: str, key: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    query = {k: v for k in ("since", "team", "model") if (v := getattr(args, k)) is not None}
    url = base.rstrip("/") + "/admin/labels?" + urllib.parse.urlencode(query)
    request = urllib.request.Request(url, headers={"authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return [orjson.loads(line) for line in response.read().splitlines() if line]


def export(args: argparse.Namespace) -> int:
    """Write the selected label records to ``--out``."""
    if args.gateway:
        key = args.admin_key or os.environ.get("GATEWAY_ADMIN_KEY", "")
        records = _from_gateway(args.gateway, key, args)
    else:
        url = args.redis or os.environ.get("GATEWAY_REDIS_URL", "")
        if not url:
            print("gateway shadow export: give --redis URL or --gateway URL", file=sys.stderr)
            return 2
        records = asyncio.run(_from_redis(url, args))
    with Path(args.out).open("wb") as out:
        for record in records:
            out.write(orjson.dumps(record) + b"\n")
    print(f"{args.out}: {len(records)} label records", file=sys.stderr)
    return 0


def main(argv: Sequence[str]) -> int:
    """Entry point of ``gateway shadow ...``."""
    parser = argparse.ArgumentParser(prog="gateway shadow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("export", help="write label records as JSON lines")
    p.add_argument("--out", required=True)
    p.add_argument("--since", type=_since, help="epoch seconds or ISO-8601 (UTC)")
    p.add_argument("--team")
    p.add_argument("--model")
    p.add_argument("--redis", help="Redis URL (default: $GATEWAY_REDIS_URL)")
    p.add_argument("--gateway", help="a gateway's base URL, read through /admin/labels")
    p.add_argument("--admin-key", help="the gateway's admin key (default: $GATEWAY_ADMIN_KEY)")
    p.set_defaults(func=export)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result
