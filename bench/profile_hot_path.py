#!/usr/bin/env python3
"""Profile the gateway's request hot path under load with py-spy, for everyday work.

Starts the shared harness's fake upstream (nginx + Lua, rendered from
$SHARED_BENCH/upstream/nginx.conf.tmpl) pinned to CPU 0, the gateway (one worker) pinned to
CPU 1, drives it with wrk at a fixed concurrency (the harness's wrk/chat.lua, ~1 KB chat
request) and samples it with `py-spy record` for --duration seconds. Prints the top
functions by self and total time, self time per package, and RPS / CPU ms per request during
the sampled window. Everything is written to --out (raw collapsed stacks: feed them to
https://www.speedscope.app or flamegraph.pl).

    bench/profile_hot_path.py                                 # passthrough, c=16, 10 s
    bench/profile_hot_path.py --policy bench/policies/cached-hit.yaml     # cache hits
    bench/profile_hot_path.py --stream --concurrency 16
    bench/profile_hot_path.py --env GATEWAY_REDIS_URL=redis://127.0.0.1:$YOUR_REDIS_PORT/0 \
        --policy bench/policies/cached-hit.yaml

Needs: nginx + lua module and wrk (run $SHARED_BENCH/setup.sh), and py-spy
(`python3 -m venv /tmp/pyspy-venv && /tmp/pyspy-venv/bin/pip install py-spy`; pass its path
with --py-spy or put it on PATH). Runs as root or with ptrace permission.
Ports default away from the shared harness (18080 / 8000) so both can run at once, though
two benchmarks on the same two cores disturb each other.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
FRAME_RE = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
PACKAGES = (
    "gateway",
    "starlette",
    "fastapi",
    "uvicorn",
    "httpx_aiohttp",
    "httpx",
    "httpcore",
    "aiohttp",
    "anyio",
    "prometheus_client",
    "redis",
    "pydantic",
    "orjson",
    "multidict",
    "yarl",
    "asyncio",
    "logging",
    "uvloop",
    "h11",
    "httptools",
)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--policy", default=str(REPO / "policies/examples/passthrough.yaml"))
    p.add_argument("--gateway", default=str(REPO / ".venv/bin/gateway"), help="gateway executable")
    p.add_argument("--env", action="append", default=[], help="K=V for the gateway (repeatable)")
    p.add_argument("--concurrency", "-c", type=int, default=16)
    p.add_argument("--duration", "-d", type=float, default=10.0, help="seconds sampled")
    p.add_argument("--stream", action="store_true", help='requests with "stream": true')
    p.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    p.add_argument(
        "--nonblocking",
        action="store_true",
        help="don't pause the process per sample (less overhead, truncated stacks)",
    )
    p.add_argument("--blocking", action="store_true", help="the default; kept for old commands")
    p.add_argument("--native", action="store_true", help="py-spy --native (C frames too)")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--port", type=int, default=18010, help="gateway port")
    p.add_argument("--upstream-port", type=int, default=18090)
    p.add_argument("--sut-cpu", default="1")
    p.add_argument("--load-cpu", default="0")
    p.add_argument(
        "--shared-bench", default=os.environ.get("SHARED_BENCH", str(REPO.parent / "shared/bench"))
    )
    p.add_argument("--py-spy", default=shutil.which("py-spy") or "py-spy")
    p.add_argument("--out", default="", help="output dir (default: a new /tmp/gateway-profile-*)")
    p.add_argument(
        "--summarise",
        metavar="RAW",
        help="only print the tables of an existing profile.collapsed.txt",
    )
    return p.parse_args()


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process and its reaped children, in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15])


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited with code {proc.returncode} during startup")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except Exception:
            time.sleep(0.2)
    sys.exit(f"{what} did not answer {url} within {timeout:.0f} s")


def wrk(args: argparse.Namespace, url: str, conns: int, seconds: float) -> subprocess.Popen[bytes]:
    env = {**os.environ, "BENCH_MODEL": "gpt-4o-mini", "BENCH_AUTH": "sk-bench"}
    if args.stream:
        env["BENCH_STREAM"] = "1"
    cmd = [
        "taskset",
        "-c",
        args.load_cpu,
        "wrk",
        "-t1",
        f"-c{conns}",
        f"-d{seconds:.0f}s",
        "--timeout",
        "30s",
        "-s",
        f"{args.shared_bench}/wrk/chat.lua",
        url,
    ]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


STDLIB_DIRS = (
    "asyncio/",
    "concurrent/",
    "logging/",
    "json/",
    "email/",
    "http/",
    "urllib/",
    "importlib/",
    "collections/",
)


def package_of(path: str) -> str:
    parts = Path(path).parts
    for name in PACKAGES:
        if name in parts or path.startswith(f"{name}/") or f"/{name}/" in path:
            return name
    if "/" not in path or path.startswith(STDLIB_DIRS) or "/lib/python3" in path:
        return "stdlib"  # py-spy shortens stdlib paths to `uuid.py`, `asyncio/tasks.py`, ...
    return "other"


def summarise(raw: Path, top: int) -> str:
    """Tables over the event-loop (main) thread's samples; background threads counted apart."""
    self_t: collections.Counter[str] = collections.Counter()
    total_t: collections.Counter[str] = collections.Counter()
    own_total: collections.Counter[str] = collections.Counter()
    pkg_self: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit() or not stack:
            continue
        n = int(count)
        frames = []
        for fr in stack.split(";"):
            m = FRAME_RE.match(fr)
            if m is None:
                frames.append((fr, "other"))
                continue
            short = re.sub(r".*/(site-packages|lib/python3\.\d+)/", "", m["file"])
            short = re.sub(rf"^{re.escape(str(REPO))}/", "", short)
            frames.append((f"{m['func']} ({short})", package_of(m["file"])))
        if not frames:
            continue
        if frames[0][0].startswith("Thread._bootstrap"):
            # access-log writer, logging QueueListener, thread-pool worker: mostly waiting,
            # but py-spy counts part of those waits as active, so keep them out of the tables.
            threads[frames[-1][0] if len(frames) < 4 else frames[3][0]] += n
            continue
        samples += n
        leaf, pkg = frames[-1]
        self_t[leaf] += n
        pkg_self[pkg] += n
        for name in {f for f, _ in frames}:
            total_t[name] += n
        for name in {f for f, p in frames if p == "gateway" and "cli.py" not in f}:
            own_total[name] += n
    if not samples:
        return "no samples (is the gateway busy? py-spy permitted?)\n"
    every = samples + sum(threads.values())
    out = [
        f"{every} samples (non-idle): event-loop thread {100 * samples / every:.1f}%, "
        f"background threads {100 * (every - samples) / every:.1f}%"
    ]
    out += [f"   background: {n} in {name}" for name, n in threads.most_common(5)]
    out += [
        "",
        "Percentages below are of the event-loop thread's samples.",
        "",
        "## self time by package",
    ]
    out += [f"{100 * n / samples:6.1f}%  {pkg}" for pkg, n in pkg_self.most_common()]
    out += ["", f"## top {top} functions by self time"]
    out += [f"{100 * n / samples:6.1f}%  {name}" for name, n in self_t.most_common(top)]
    out += ["", f"## top {top} functions by total (inclusive) time"]
    out += [f"{100 * n / samples:6.1f}%  {name}" for name, n in total_t.most_common(top)]
    out += ["", f"## top {top} gateway functions by total (inclusive) time"]
    out += [f"{100 * n / samples:6.1f}%  {name}" for name, n in own_total.most_common(top)]
    return "\n".join(out) + "\n"


def main() -> int:
    args = parse_args()
    if args.summarise:
        print(summarise(Path(args.summarise), args.top))
        return 0
    if not Path(args.py_spy).exists():
        sys.exit(f"py-spy not found ({args.py_spy}); see --help")
    out = Path(args.out or tempfile.mkdtemp(prefix="gateway-profile-"))
    (out / "nginx").mkdir(parents=True, exist_ok=True)
    tmpl = Path(args.shared_bench, "upstream/nginx.conf.tmpl").read_text()
    conf = (
        tmpl.replace("@RUN_DIR@", str(out / "nginx"))
        .replace("@UPSTREAM_DIR@", f"{args.shared_bench}/upstream")
        .replace("@PORT@", str(args.upstream_port))
    )
    (out / "nginx/nginx.conf").write_text(conf)
    procs: list[subprocess.Popen[bytes]] = []
    logs = contextlib.ExitStack()
    try:
        nginx = subprocess.Popen(
            [
                "taskset",
                "-c",
                args.load_cpu,
                "nginx",
                "-c",
                str(out / "nginx/nginx.conf"),
                "-p",
                str(out / "nginx"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=logs.enter_context((out / "nginx.log").open("wb")),
        )
        procs.append(nginx)
        env = {
            **os.environ,
            "UPSTREAM_BASE_URL": f"http://127.0.0.1:{args.upstream_port}/v1",
            "GATEWAY_REDIS_URL": "",
        }
        env.update(kv.split("=", 1) for kv in args.env)
        gw = subprocess.Popen(
            [
                "taskset",
                "-c",
                args.sut_cpu,
                args.gateway,
                "serve",
                "--policy",
                args.policy,
                "--port",
                str(args.port),
                "--workers",
                "1",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=logs.enter_context((out / "gateway.log").open("wb")),
        )
        procs.append(gw)
        wait_http(f"http://127.0.0.1:{args.upstream_port}/health", 10, nginx, "nginx")
        wait_http(f"http://127.0.0.1:{args.port}/healthz", 60, gw, "gateway")
        url = f"http://127.0.0.1:{args.port}/v1/chat/completions"
        warm = wrk(args, url, 64, 2)
        warm.wait()

        load = wrk(args, url, args.concurrency, args.duration + 3)
        time.sleep(1.0)
        t0, c0 = time.monotonic(), cpu_ticks(gw.pid)
        raw = out / "profile.collapsed.txt"
        cmd = [
            args.py_spy,
            "record",
            "--pid",
            str(gw.pid),
            "--duration",
            f"{args.duration:.0f}",
            "--rate",
            str(args.rate),
            "--format",
            "raw",
            "--output",
            str(raw),
        ]
        if args.nonblocking:
            cmd.append("--nonblocking")
        if args.native:
            cmd.append("--native")
        spy = subprocess.run(cmd, check=False, capture_output=True, text=True)
        t1, c1 = time.monotonic(), cpu_ticks(gw.pid)
        wrk_out = load.communicate()[0].decode()
        (out / "wrk.json").write_text(wrk_out)
        if spy.returncode != 0:
            print(spy.stdout + spy.stderr, file=sys.stderr)
            return 1
        result = json.loads(wrk_out.strip().splitlines()[-1])
        sampled_s = t1 - t0
        cpu_s = (c1 - c0) / CLK_TCK
        req_in_window = result["rps"] * sampled_s
        header = (
            f"# gateway profile: policy={args.policy} c={args.concurrency} "
            f"stream={args.stream} duration={args.duration:.0f}s rate={args.rate}Hz "
            f"{'nonblocking' if args.nonblocking else 'blocking'}\n"
            f"wrk: {result['rps']:.0f} req/s, p50 {result['p50_ms']:.2f} ms, "
            f"p99 {result['p99_ms']:.2f} ms, non-2xx {result['err_status']}\n"
            f"gateway CPU while sampled: {100 * cpu_s / sampled_s:.0f}% of a core, "
            f"{1000 * cpu_s / max(req_in_window, 1):.2f} ms/req (py-spy sampling adds some)\n"
            f"loadavg: {Path('/proc/loadavg').read_text().strip()}\n\n"
        )
        report = header + summarise(raw, args.top)
        (out / "summary.txt").write_text(report)
        print(report)
        print(f"files: {out}")
        return 0
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        logs.close()


if __name__ == "__main__":
    sys.exit(main())
