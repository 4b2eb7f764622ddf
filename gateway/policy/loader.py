"""Read a policy file: `${ENV}` interpolation, schema validation, errors with file:line and key."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from gateway.errors import PolicyError
from gateway.policy.schema import Policy

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

PathKey = tuple[str | int, ...]


@dataclass(frozen=True)
class LoadedPolicy:
    """A validated policy plus where it came from."""

    policy: Policy
    source: str
    version: str
    mtime: float = 0.0
    lines: Mapping[PathKey, int] = field(default_factory=dict)


def _interpolate(text: str, source: str, line: int, path: PathKey, env: Mapping[str, str]) -> str:
    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = env.get(name)
        if value:
            return value
        if default is not None:
            return default
        raise PolicyError(
            f"{source}:{line}: {_dotted(path)}: environment variable {name} is not set "
            f"(write ${{{name}:-default}} to make it optional)"
        )

    return _ENV_REF.sub(sub, text)


def _dotted(path: PathKey) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _build(
    node: yaml.Node, path: PathKey, source: str, env: Mapping[str, str], lines: dict[PathKey, int]
) -> Any:
    """Turn a YAML node into Python data, recording the line of every key and item."""
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in out:
                line = key_node.start_mark.line + 1
                raise PolicyError(f"{source}:{line}: {_dotted((*path, key))}: duplicate key")
            out[key] = _build(value_node, (*path, key), source, env, lines)
            lines[(*path, key)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*path, i), source, env, lines) for i, item in enumerate(node.value)]
    assert isinstance(node, yaml.ScalarNode)
    value = yaml.SafeLoader.construct_scalar(yaml.SafeLoader(""), node)
    if node.tag == "tag:yaml.org,2002:str" or node.style in ("'", '"'):
        return _interpolate(str(value), source, lines[path], path, env)
    # Let YAML resolve plain scalars (numbers, booleans, null) after interpolation.
    text = _interpolate(str(node.value), source, lines[path], path, env)
    return yaml.safe_load(text) if text else None


def _line_for(loc: PathKey, lines: Mapping[PathKey, int]) -> int:
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return 1


def _check_references(policy: Policy, source: str, lines: Mapping[PathKey, int]) -> None:
    def fail(loc: PathKey, message: str) -> None:
        raise PolicyError(f"{source}:{_line_for(loc, lines)}: {_dotted(loc)}: {message}")

    for name, route in policy.models.items():
        form = "route" if route.route is not None else "to"
        for i, rule in enumerate(route.rules):
            for j, target in enumerate(rule.to):
                if target not in policy.backends:
                    loc: PathKey = (
                        ("models", name, "route", i, "to", j)
                        if form == "route"
                        else ("models", name, "to", j)
                    )
                    known = ", ".join(sorted(policy.backends))
                    fail(loc, f"unknown backend {target!r} (known: {known})")
    if policy.savings_reference is not None and policy.savings_reference not in policy.backends:
        fail(("savings_reference",), f"unknown backend {policy.savings_reference!r}")
    seen: dict[str, str] = {}
    for team, spec in policy.teams.items():
        for i, key in enumerate(spec.keys):
            if key in seen:
                fail(("teams", team, "keys", i), f"key already belongs to team {seen[key]!r}")
            seen[key] = team
        for i, model in enumerate(spec.allowed_models or []):
            if model not in policy.models:
                fail(("teams", team, "allowed_models", i), f"unknown model {model!r}")


def parse_policy(text: str, source: str, env: Mapping[str, str] | None = None) -> LoadedPolicy:
    """Validate policy text; raise PolicyError naming file, line and key on any problem."""
    env = os.environ if env is None else env
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        column = f" (column {mark.column + 1})" if mark is not None else ""
        # Only what is wrong and where: PyYAML's message quotes the line, which may hold a key.
        problem = getattr(exc, "problem", None) or type(exc).__name__
        context = getattr(exc, "context", None)
        start = getattr(exc, "context_mark", None)
        if context and start is not None and start.line + 1 != line:
            context += f" started on line {start.line + 1}"
        what = f"{context}, {problem}" if context else problem
        raise PolicyError(f"{source}:{line}: invalid YAML: {what}{column}") from None
    if node is None:
        raise PolicyError(f"{source}:1: the policy file is empty")
    lines: dict[PathKey, int] = {}
    data = _build(node, (), source, env, lines)
    if not isinstance(data, dict):
        raise PolicyError(f"{source}:1: a policy must be a mapping with backends and models")
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
            problems.append(f"{source}:{_line_for(loc, lines)}: {_dotted(loc)}: {err['msg']}")
        raise PolicyError("invalid policy:\n  " + "\n  ".join(problems)) from exc
    _check_references(policy, source, lines)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return LoadedPolicy(policy, source, policy.version or digest, lines=lines)


def load_policy(path: Path, env: Mapping[str, str] | None = None) -> LoadedPolicy:
    """Read and validate a policy file."""
    try:
        text = path.read_text(encoding="utf-8")
        mtime = path.stat().st_mtime
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read policy file: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise PolicyError(f"{path}: policy file is not UTF-8") from exc
    loaded = parse_policy(text, str(path), env)
    return LoadedPolicy(loaded.policy, loaded.source, loaded.version, mtime, loaded.lines)
