"""Instructions one gateway request costs, counted by callgrind: an A/B that noise cannot move.

Wall-clock and CPU-time benchmarks swing with whatever else the machine runs; instruction
counts do not. This starts a small OpenAI-compatible upstream (its own process, not
counted), runs `gateway serve` under `valgrind --tool=callgrind`, sends N1 and then N2
sequential requests in two runs, and reports (I(N2) - I(N1)) / (N2 - N1): the instructions
per request, start-up excluded. Compare two checkouts with ``--pythonpath``.

    python bench/instructions.py                                  # this checkout
    python bench/instructions.py --pythonpath ../other-checkout   # another one
    python bench/instructions.py --policy bench/policies/features.yaml --key sk-bench
    python bench/instructions.py --system starlette-aio   # a bare proxy of the shared harness

``--system`` counts one of the shared harness's minimal proxies (``../shared/bench/proxies``,
run with its own venv, ``/tmp/bench/py-venv`` after its ``setup.sh``) under the same
callgrind, the same upstream and the same requests, so "the gateway costs X times a bare
Starlette proxy" is a ratio of instruction counts rather than of two noisy throughputs.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "bench"
SYSTEMS = {  # the shared harness's proxies: module under proxies/
    "starlette": "starlette_proxy",
    "starlette-aio": "starlette_aio_proxy",
    "fastapi": "fastapi_proxy",
    "asgi": "asgi_proxy",
    "asgi-aiohttp": "asgi_aiohttp_proxy",
    "litellm": "",  # the harness's LiteLLM proxy (its venv, its config)
}
LITELLM_VENV = Path("/tmp/bench/litellm-venv")
BODY = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "You are a concise assistant. " * 8},
        {"role": "user", "content": "Explain why the sky is blue in two sentences. " * 6},
    ],
    "temperature": 0.2,
}
UPSTREAM = """
import orjson, uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route
ANSWER = orjson.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Rayleigh."},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 60, "completion_tokens": 5, "total_tokens": 65}})
async def chat(request):
    await request.body()
    return Response(ANSWER, media_type="application/json")
app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
uvicorn.run(app, host="127.0.0.1", port=int(__import__("sys").argv[1]), log_level="error")
"""


def free_port() -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_http(url: str, timeout_s: float = 2400.0) -> None:
    """Poll until ``url`` answers (a gateway under callgrind starts slowly)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer")


def count(args: argparse.Namespace, upstream: str, requests: int, workdir: Path) -> int:
    """Total instructions of a gateway process that served ``requests`` requests."""
    port = free_port()
    out = workdir / f"callgrind.{requests}.out"
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(args.pythonpath).resolve()),
        "PYTHONMALLOC": "malloc",
        "PYTHONHASHSEED": "0",
        "UPSTREAM_BASE_URL": upstream,
        "GATEWAY_REDIS_URL": "",
        "GATEWAY_POLICY_RELOAD_S": "0",
        "GATEWAY_CACHE_MAX_ENTRIES": "0",
        "BENCH_TEAM_KEY": args.key,
    }
    command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    health = "/healthz"
    if args.system == "litellm":
        # As the shared harness runs it: its config, a master key (sent as the bearer key).
        env.update(
            BENCH_UPSTREAM_BASE=upstream,
            BENCH_UPSTREAM_KEY="sk-upstream",
            LITELLM_MASTER_KEY=args.key,
            LITELLM_LOCAL_MODEL_COST_MAP="True",
            LITELLM_TELEMETRY_DISABLED="true",
            LITELLM_LOG="ERROR",
            LITELLM_MODE="PRODUCTION",
        )
        command += [str(LITELLM_VENV / "bin/python"), str(LITELLM_VENV / "bin/litellm")]
        command += ["--config", str(SHARED / "litellm/config.yaml"), "--host", "127.0.0.1"]
        command += ["--port", str(port), "--num_workers", "1"]
        health = "/health/liveliness"
    elif args.system:
        env["UPSTREAM_BASE"] = upstream
        command += [str(Path(args.bench_python)), "-m", "uvicorn", f"{SYSTEMS[args.system]}:app"]
        command += ["--app-dir", str(SHARED / "proxies"), "--loop", "uvloop"]
        command += ["--http", "httptools", "--no-access-log", "--port", str(port)]
        health = "/"  # any answer (a 404) means it is up
    else:
        command += [sys.executable, "-m", "gateway", "serve", "--policy", str(args.policy)]
        command += ["--port", str(port), "--workers", "1"]
    log = (workdir / f"gateway.{requests}.log").open("wb")
    proc = subprocess.Popen(command, env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(base + health)
        headers = {"authorization": f"Bearer {args.key}"}
        with httpx.Client(base_url=base, headers=headers, timeout=120) as client:
            for _ in range(requests):
                response = client.post("/v1/chat/completions", json=BODY)
                response.raise_for_status()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(300)
        log.close()
    return callgrind_total(out)


def callgrind_total(out: Path) -> int:
    """The instruction total of a callgrind output file (its `summary:` line)."""
    found = re.search(rb"^summary: (\d+)", out.read_bytes(), re.MULTILINE)
    if found is None:
        raise RuntimeError(f"no callgrind summary in {out}")
    return int(found.group(1))


def main() -> int:
    """Run both counts and print instructions per request."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pythonpath", default=str(REPO), help="checkout whose gateway runs")
    parser.add_argument("--policy", default=str(REPO / "policies/examples/passthrough.yaml"))
    parser.add_argument("--key", default="sk-bench", help="bearer key (features policy)")
    parser.add_argument("--system", choices=sorted(SYSTEMS), help="count a bare proxy instead")
    parser.add_argument("--bench-python", default="/tmp/bench/py-venv/bin/python")
    parser.add_argument("--n1", type=int, default=20)
    parser.add_argument("--n2", type=int, default=120)
    args = parser.parse_args()
    up_port = free_port()
    upstream = subprocess.Popen([sys.executable, "-c", UPSTREAM, str(up_port)])
    try:
        wait_http(f"http://127.0.0.1:{up_port}/")
        with tempfile.TemporaryDirectory(prefix="bench-instructions-") as tmp:
            first = count(args, f"http://127.0.0.1:{up_port}/v1", args.n1, Path(tmp))
            second = count(args, f"http://127.0.0.1:{up_port}/v1", args.n2, Path(tmp))
    finally:
        upstream.terminate()
        upstream.wait(10)
    per_request = (second - first) / (args.n2 - args.n1)
    name = args.system or args.pythonpath
    print(f"{name}: {per_request / 1e6:.2f} M instructions/request "
          f"({args.n1}: {first:,}, {args.n2}: {second:,})")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
