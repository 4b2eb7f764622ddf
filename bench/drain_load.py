"""SIGTERM with long streams in flight: do they finish within the drain, and when is it over?

    PYTHONPATH=. .venv/bin/python bench/drain_load.py [--streams 10] [--stream-s 20] [--grace 30]

A real `gateway serve --workers 2` relays `--streams` streams of about `--stream-s` seconds
(one event a second from a scripted upstream); two seconds in, the server gets SIGTERM. It
reports how each stream ended (`[DONE]`, or the gateway's error event), when the last one
ended and when the process exited. Nothing is asserted; the figures go to docs/reliability.md.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import GATEWAY_PROCS, run_gateway
from tests.support.fault_upstream import fault_upstream

POLICY = """
backends:
  long: {{provider: openai, base_url: "{long}", tier: open}}
models:
  "*": {{to: [long]}}
"""


def _stream(url: str, out: list[tuple[str, float]]) -> None:
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    last = ""
    try:
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=120) as r:
            for line in r.iter_lines():
                if line.startswith("data:"):
                    last = line[5:].strip()
    except httpx.HTTPError as exc:
        last = f"transport error: {exc!r}"
    ended = "done" if last == "[DONE]" else "error event" if '"error"' in last else last
    out.append((ended, time.monotonic()))


def main() -> int:
    """Run the scenario and print what happened."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--stream-s", type=int, default=20)
    parser.add_argument("--grace", type=float, default=30.0)
    args = parser.parse_args()
    with fault_upstream() as faults:
        faults.script("long", mode="ok", chunks=args.stream_s, gap_s=1.0)
        env = {"GATEWAY_WORKERS": "2", "GATEWAY_DRAIN_GRACE_S": str(args.grace)}
        tmp = Path(tempfile.mkdtemp(prefix="drain-load-"))
        with run_gateway(POLICY.format(long=faults.base_url("long")), env, tmp=tmp) as url:
            out: list[tuple[str, float]] = []
            threads = [
                threading.Thread(target=_stream, args=(url, out)) for _ in range(args.streams)
            ]
            for thread in threads:
                thread.start()
            time.sleep(2)
            term = time.monotonic()
            GATEWAY_PROCS[url].send_signal(signal.SIGTERM)
            GATEWAY_PROCS[url].wait(args.grace + 30)
            exited = time.monotonic() - term
            for thread in threads:
                thread.join(5)
    done = sum(1 for ended, _ in out if ended == "done")
    last = max(t for _, t in out) - term
    print(
        f"{args.streams} streams of ~{args.stream_s} s, SIGTERM 2 s in, grace {args.grace:g} s, "
        f"2 workers: {done} ended with [DONE], {len(out) - done} otherwise "
        f"({sorted({e for e, _ in out})}); last stream ended {last:.1f} s after SIGTERM, "
        f"process exited after {exited:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
