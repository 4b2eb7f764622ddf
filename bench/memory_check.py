"""RSS of one gateway worker from 10k to 100k requests: is there a leak?

Starts `gateway serve` (one worker, the passthrough policy, classification and metrics on)
against an OpenAI-compatible upstream, drives it with wrk in 2-second batches and prints the
worker's RSS as the request count grows. The upstream must be fast (the nginx fake upstream
of the shared bench harness is: `bench/run.sh` starts it on 127.0.0.1:18080).

    python bench/memory_check.py --upstream http://127.0.0.1:18080/v1 --requests 100000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WRK_SCRIPT = (
    Path(os.environ.get("SHARED_BENCH", REPO.parent / "shared" / "bench")) / "wrk" / "chat.lua"
)


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def main() -> int:
    """Run the check and print a small table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", default="http://127.0.0.1:18080/v1")
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--port", type=int, default=8077)
    parser.add_argument("--policy", default=str(REPO / "policies/examples/passthrough.yaml"))
    args = parser.parse_args()
    env = {**os.environ, "UPSTREAM_BASE_URL": args.upstream}
    command = [sys.executable, "-m", "gateway", "serve", "--policy", args.policy]
    command += ["--port", str(args.port), "--workers", "1"]
    server = subprocess.Popen(command, env=env, cwd=REPO, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{args.port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(url + "/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        done, marks = 0, []
        started = rss_mb(server.pid)
        while done < args.requests:
            out = (
                subprocess.run(
                    [
                        "wrk",
                        "-t1",
                        "-c16",
                        "-d2s",
                        "-s",
                        str(WRK_SCRIPT),
                        url + "/v1/chat/completions",
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            result = json.loads(out)
            if result["err_status"] or result["err_connect"] or result["err_read"]:
                raise RuntimeError(f"errors under load: {result}")
            done += result["requests"]
            marks.append((done, rss_mb(server.pid)))
    finally:
        server.terminate()
        server.wait(10)
    at_10k = next(rss for n, rss in marks if n >= 10_000)
    final_n, final = marks[-1]
    print(
        f"RSS at start {started:.1f} MB; at {10_000:,}+ requests {at_10k:.1f} MB; "
        f"at {final_n:,} requests {final:.1f} MB; growth 10k→end {100 * (final / at_10k - 1):+.2f}%"
    )
    for n, rss in marks[:: max(1, len(marks) // 10)]:
        print(f"  {n:>8,} requests  {rss:7.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
