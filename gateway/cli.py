"""The `gateway` command: serve, policy (validate, explain, simulate), decisions, classify."""

from __future__ import annotations

import argparse
import atexit
import ctypes
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from gateway.errors import PolicyError

EMBEDDED_PORT = 8081
DECISION_STREAM = "gateway:decisions"  # gateway.decisions.DEFAULT_STREAM, without the import


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the gateway process dies, however it dies (Linux)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass  # not Linux: the atexit hook still stops it on a clean exit


def _start_embedded(port: int) -> subprocess.Popen[bytes]:
    """Start the embedded llama.cpp server (SmolLM2) and wait until it answers.

    llama.cpp logs several lines per request: they go to a file (named on the console)
    unless `GATEWAY_EMBEDDED_LOG=console`.
    """
    to_console = os.environ.get("GATEWAY_EMBEDDED_LOG", "") == "console"
    log_path = Path(tempfile.gettempdir()) / f"gateway-embedded-{port}.log"
    out = None if to_console else log_path.open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.embedded", "--port", str(port)],
        stdout=out,
        stderr=subprocess.STDOUT if out is not None else None,
        preexec_fn=_die_with_parent,  # noqa: PLW1509 (no threads exist yet: before uvicorn starts)
    )
    if out is not None:
        out.close()
        print(f"gateway: llama.cpp (SmolLM2) on :{port}, its log in {log_path}", file=sys.stderr)
    atexit.register(proc.terminate)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the embedded model server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as resp:
                if resp.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    raise SystemExit("the embedded model server did not become ready in 120 s")


def serve(args: argparse.Namespace) -> int:
    """Run the HTTP server (uvloop + httptools)."""
    import uvicorn

    from gateway.policy import load_policy
    from gateway.settings import Settings

    if args.policy:
        os.environ["GATEWAY_POLICY"] = str(Path(args.policy).resolve())
    for name in ("host", "port", "workers"):
        value = getattr(args, name)
        if value is not None:
            os.environ[f"GATEWAY_{name.upper()}"] = str(value)
    settings = Settings()
    try:
        load_policy(settings.policy)  # fail fast, before any worker starts
    except PolicyError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    if args.embedded:
        port = int(os.environ.get("GATEWAY_EMBEDDED_PORT", EMBEDDED_PORT))
        _start_embedded(port)
        os.environ.setdefault("GATEWAY_LOCAL_BASE_URL", f"http://127.0.0.1:{port}/v1")
    if settings.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Workers write metrics to shared files; /metrics merges them.
        directory = tempfile.mkdtemp(prefix="gateway-metrics-")
        atexit.register(shutil.rmtree, directory, True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    if settings.workers > 1 and settings.breaker_file is None:
        # Workers share breaker state through one mapped file (gateway/breaker_board.py).
        state_dir = tempfile.mkdtemp(prefix="gateway-state-")
        atexit.register(shutil.rmtree, state_dir, True)
        os.environ["GATEWAY_BREAKER_FILE"] = str(Path(state_dir) / "breakers")
    print(
        f"gateway: listening on http://{settings.host}:{settings.port}/v1 "
        f"(policy {settings.policy}, {settings.workers} worker(s))",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(
        "gateway.app:create_app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        http="httptools",
        access_log=False,  # the gateway writes its own, off the request path
        proxy_headers=False,  # nothing reads the client address; skip the middleware
        server_header=False,
        log_level="warning",
        # The app's own drain ends what is left at drain_grace_s (with error events); the
        # server's cancel is a backstop just after.
        timeout_graceful_shutdown=math.ceil(settings.drain_delay_s + settings.drain_grace_s) + 5,
    )
    return 0


def validate_policy(args: argparse.Namespace) -> int:
    """Check policy files; print each problem as `file:line: key: message`, one per line."""
    from gateway.policy import PolicyInvalid, load_policy

    status = 0
    for name in args.files:
        try:
            loaded = load_policy(Path(name))
        except PolicyInvalid as exc:
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            status = 1
            continue
        except PolicyError as exc:
            print(exc, file=sys.stderr)
            status = 1
            continue
        for warning in loaded.warnings:
            print(warning, file=sys.stderr)
        if loaded.warnings and args.strict:
            status = 1
        policy = loaded.policy
        if not args.quiet:
            print(
                f"{name}: ok (version {loaded.version}; {len(policy.backends)} backends, "
                f"{len(policy.models)} models)"
            )
    return status


def _simulate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", required=True, help="the candidate policy file")
    parser.add_argument("--baseline", help="the current policy (default: the log as recorded)")
    parser.add_argument(
        "--log", required=True, help="decision records: JSONL file, log directory or redis:// URL"
    )
    parser.add_argument("--stream", default=DECISION_STREAM, help="Redis stream key")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--report", metavar="DIR", help="write a markdown report and a chart")
    parser.add_argument(
        "--respect-keys",
        action="store_true",
        help="plan backends without an API key here as disabled (default: assume keys are set)",
    )
    parser.add_argument(
        "--labels", metavar="FILE", help="label records (JSONL): project the open tier's shortfall"
    )
    parser.add_argument(
        "--rescore", action="store_true", help="re-score records that have a prompt first"
    )
    parser.add_argument("--artifact", help="classifier artifact for --rescore (default: shipped)")
    parser.add_argument(
        "--prompts",
        metavar="FILE",
        help='{"id","messages"} JSONL for --rescore (default: --labels)',
    )


def _explain_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="policy file")
    given = parser.add_mutually_exclusive_group(required=True)
    given.add_argument("--prompt", help="one user message")
    given.add_argument("--request", metavar="FILE", help="a request body as JSON ('-' for stdin)")
    parser.add_argument("--model", help="the model asked for (default: the request's, or auto)")
    parser.add_argument("--endpoint", choices=["chat", "completions", "embeddings"], default="chat")
    parser.add_argument("--team", help="the caller's team (for allowed_models)")
    parser.add_argument("--artifact", help="a classifier artifact (default: the shipped one)")
    parser.add_argument("--gateway", metavar="URL", help="read live backend state from /readyz")
    parser.add_argument("--top", type=int, default=8, help="how many signals to show")
    parser.add_argument("--json", action="store_true", help="print the explanation as JSON")


def _export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output JSONL file ('-' for stdout)")
    parser.add_argument("--since", help="15m, 2h, 7d, ISO 8601 (with zone) or epoch seconds")
    parser.add_argument(
        "--from",
        dest="source",
        help="log directory, JSONL file or redis:// URL (default: $GATEWAY_DECISION_LOG_DIR)",
    )
    parser.add_argument("--stream", default=DECISION_STREAM, help="Redis stream key")


def _simulate(args: argparse.Namespace) -> int:
    from gateway_tools.simulate_cli import simulate_command

    return simulate_command(args)


def _explain(args: argparse.Namespace) -> int:
    from gateway_tools.explain_cli import explain_command

    return explain_command(args)


def _export(args: argparse.Namespace) -> int:
    from gateway_tools.decisions import export_command

    return export_command(args)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `gateway` console script."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["classify"]:
        from gateway_tools.cli import main as classify_main

        return classify_main(argv[1:])
    if argv[:1] == ["shadow"]:
        from gateway_tools.shadow_cli import main as shadow_main

        return shadow_main(argv[1:])
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="run the gateway")
    p_serve.add_argument("--policy", help="policy YAML file (default: policies/default.yaml)")
    p_serve.add_argument("--host")
    p_serve.add_argument("--port", type=int)
    p_serve.add_argument("--workers", type=int)
    p_serve.add_argument(
        "--embedded",
        action="store_true",
        help="also start the embedded open-weight model (llama.cpp + SmolLM2) on port 8081",
    )
    p_serve.set_defaults(func=serve)
    p_policy = sub.add_parser("policy", help="policy tools")
    policy_sub = p_policy.add_subparsers(dest="policy_command", required=True)
    p_validate = policy_sub.add_parser("validate", help="validate policy files")
    p_validate.add_argument("files", nargs="+")
    p_validate.add_argument("--strict", action="store_true", help="warnings fail too")
    p_validate.add_argument("-q", "--quiet", action="store_true", help="print problems only")
    p_validate.set_defaults(func=validate_policy)
    sub.add_parser("classify", help="difficulty classifier: score, train, eval, explain")
    sub.add_parser("shadow", help="the routing loop's labels: export")
    p_simulate = policy_sub.add_parser(
        "simulate", help="replay decision records through a policy: backends, cost, changes"
    )
    p_simulate.set_defaults(func=_simulate)
    p_explain = policy_sub.add_parser(
        "explain", help="why a request would go where: score, signals, rule, targets"
    )
    p_explain.set_defaults(func=_explain)
    p_decisions = sub.add_parser("decisions", help="decision records")
    decisions_sub = p_decisions.add_subparsers(dest="decisions_command", required=True)
    p_export = decisions_sub.add_parser("export", help="write decision records as JSONL")
    p_export.set_defaults(func=_export)
    _simulate_arguments(p_simulate)
    _explain_arguments(p_explain)
    _export_arguments(p_export)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result
