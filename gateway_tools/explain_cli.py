"""`gateway policy explain`: the score, its top signals, the rule and the ordered targets.

gateway policy explain POLICY.yaml --prompt "..." | --request BODY.json [--model auto]
                       [--endpoint chat] [--team T] [--gateway URL] [--json]
"""

from __future__ import annotations

import argparse
import sys
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from gateway.difficulty import DifficultyClassifier
from gateway.errors import GatewayError, PolicyError
from gateway.policy import PolicyInvalid, load_policy
from gateway_tools.explain import Explanation, explain_request

DEFAULT_MODEL = "auto"


class _Fail(Exception):
    """A one-line error for stderr."""


def _body(args: argparse.Namespace) -> dict[str, Any]:
    if args.prompt is not None:
        body: Any = {"messages": [{"role": "user", "content": args.prompt}]}
    else:
        try:
            raw = (
                sys.stdin.buffer.read() if args.request == "-" else Path(args.request).read_bytes()
            )
            body = orjson.loads(raw)
        except OSError as exc:
            raise _Fail(f"{args.request}: {exc.strerror or exc}") from None
        except orjson.JSONDecodeError as exc:
            raise _Fail(f"{args.request}: invalid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise _Fail(f"{args.request}: a request body must be a JSON object")
    body["model"] = args.model or body.get("model") or DEFAULT_MODEL
    return dict(body)


def _live(url: str) -> dict[str, str]:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/readyz", timeout=5) as resp:
            data = orjson.loads(resp.read())
    except OSError as exc:
        raise _Fail(f"{url}/readyz: {exc}") from None
    except orjson.JSONDecodeError:
        raise _Fail(f"{url}/readyz: not JSON") from None
    backends = data.get("backends") if isinstance(data, dict) else None
    if not isinstance(backends, dict):
        raise _Fail(f"{url}/readyz: no backends listed")
    return {str(k): str(v.get("state", "ok")) for k, v in backends.items() if isinstance(v, dict)}


def render(ex: Explanation) -> str:
    """The explanation as text."""
    lines = [f"model {ex.model!r} → policy entry {ex.entry!r} ({ex.endpoint})"]
    if ex.score is None:
        lines.append("difficulty: not classified (the default rule applies)")
    else:
        lines.append(f"difficulty: {ex.score:.4f}")
        lines.append("top signals (logit contribution):")
        lines += [f"  {weight:+.3f}  {name}" for name, weight in ex.signals]
    lines.append(f"rule: {ex.rule} ({ex.reason})")
    for r in ex.rules:
        mark = "→" if r.verdict == "chosen" else " "
        to = ", ".join(r.to)
        lines.append(f"  {mark} [{r.index}] {r.condition} → [{to}]: {r.verdict} ({r.why})")
    lines.append("targets, in the order they would be tried:")
    for t in ex.targets:
        pos = f"{t.position}." if t.position is not None else "-"
        lines.append(f"  {pos:3} {t.backend} ({t.tier}): {t.state}")
    lines += [f"note: {n}" for n in ex.notes]
    return "\n".join(lines)


def explain_command(args: argparse.Namespace) -> int:
    """Run `gateway policy explain`."""
    try:
        try:
            loaded = load_policy(Path(args.file))
        except PolicyInvalid as exc:
            raise _Fail("\n".join(str(p) for p in exc.problems)) from None
        except PolicyError as exc:
            raise _Fail(str(exc)) from None
        policy = loaded.policy
        body = _body(args)
        artifact = Path(args.artifact) if args.artifact else None
        if artifact is not None and not artifact.is_file():
            raise _Fail(f"classifier artifact not found: {artifact}")
        allowed, closed_allowed = None, True
        if args.team is not None:
            team = policy.teams.get(args.team)
            if team is None:
                raise _Fail(f"unknown team {args.team!r} (known: {', '.join(policy.teams)})")
            allowed = frozenset(team.allowed_models) if team.allowed_models is not None else None
            closed_allowed = team.data_residency != "self_hosted"
        live = _live(args.gateway) if args.gateway else None
        ex = explain_request(
            policy,
            body,
            classifier=DifficultyClassifier.load(artifact),
            model=str(body["model"]),
            endpoint=args.endpoint,
            allowed=allowed,
            live=live,
            top=args.top,
            closed_allowed=closed_allowed,
        )
    except _Fail as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 1
    except GatewayError as exc:  # what the gateway would answer: unknown model, no access
        print(
            f"gateway: the request would fail with {exc.http_status}: {exc.message}",
            file=sys.stderr,
        )
        return 1
    if args.json:
        sys.stdout.write(orjson.dumps(ex.as_json()).decode() + "\n")
    else:
        print(render(ex))
    return 0
