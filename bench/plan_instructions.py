"""Instructions one `planning.make_plan` call costs, counted by callgrind (no server, no noise).

`bench/instructions.py` counts a whole request through a real server, but its count also
takes in background loops that tick by wall time (health checks, housekeeping), so a busy
machine moves it by 10-20%. This counts the planning step alone, in-process: N1 and then
N2 calls in two runs under `valgrind --tool=callgrind`, (I(N2) - I(N1)) / (N2 - N1).

    python bench/plan_instructions.py                                  # this checkout
    python bench/plan_instructions.py --pythonpath ../other-checkout   # another one
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from instructions import callgrind_total  # bench/, this script's own directory

REPO = Path(__file__).resolve().parents[1]
SCRIPT = """
import sys
from pathlib import Path
from gateway.breakers import Breakers
from gateway.planning import make_plan, resolve_model
from gateway.policy import load_policy
policy = load_policy(Path(sys.argv[1])).policy
_, route = resolve_model(policy, "gpt-4o-mini", None)
breakers = Breakers()
for _ in range(int(sys.argv[2])):
    make_plan(policy, "gpt-4o-mini", route, "chat", None, lambda rule: 1.0, breakers)
"""


def count(args: argparse.Namespace, calls: int, workdir: Path) -> int:
    """Total instructions of a process that planned ``calls`` times."""
    out = workdir / f"callgrind.{calls}.out"
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(args.pythonpath).resolve()),
        "PYTHONHASHSEED": "0",
        "UPSTREAM_BASE_URL": "http://127.0.0.1:9/v1",
    }
    command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    command += [sys.executable, "-c", SCRIPT, str(args.policy), str(calls)]
    subprocess.run(command, env=env, check=True, capture_output=True)
    return callgrind_total(out)


def main() -> int:
    """Run both counts and print instructions per plan."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pythonpath", default=str(REPO), help="checkout whose gateway runs")
    parser.add_argument("--policy", default=str(REPO / "policies/examples/passthrough.yaml"))
    parser.add_argument("--n1", type=int, default=100)
    parser.add_argument("--n2", type=int, default=1100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-plan-") as tmp:
        first = count(args, args.n1, Path(tmp))
        second = count(args, args.n2, Path(tmp))
    per_plan = (second - first) / (args.n2 - args.n1)
    print(f"{args.pythonpath}: {per_plan:,.0f} instructions/plan")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
