"""Read a policy file: YAML, `${ENV}` interpolation, schema, semantic checks.

Every problem found is reported, each as `file:line: dotted.key: message` (see
`problems.py`); a file with any error raises `PolicyInvalid` and nothing is loaded.
A YAML syntax error stops at once and is reported on one line, without the source line
the parser would quote (it may hold a secret).
"""

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
from gateway.policy.env import interpolate
from gateway.policy.problems import PathKey, PolicyInvalid, Problem, Problems, ordered
from gateway.policy.schema import Policy
from gateway.policy.validate import check_policy

_STR = "tag:yaml.org,2002:str"
# Quoted text in a parser message longer than a character or two is source text: drop it.
_QUOTED = re.compile(r"'(?!<)[^']{3,}'")


@dataclass(frozen=True)
class LoadedPolicy:
    """A validated policy plus where it came from."""

    policy: Policy
    source: str
    version: str
    mtime: float = 0.0
    lines: Mapping[PathKey, int] = field(default_factory=dict)
    # Suspicious but loadable (a closed backend without a price, an unused backend, ...).
    warnings: tuple[Problem, ...] = ()


class _Builder:
    """Turns a YAML node tree into Python data, recording the line of every key and item."""

    def __init__(self, problems: Problems, lines: dict[PathKey, int], env: Mapping[str, str]):
        self.problems = problems
        self.lines = lines
        self.env = env
        self.loader = yaml.SafeLoader("")

    def build(self, node: yaml.Node, path: PathKey) -> Any:
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = str(key_node.value)
                line = key_node.start_mark.line + 1
                if key in out:
                    self.problems.add((*path, key), "duplicate key", line=line)
                    continue
                out[key] = self.build(value_node, (*path, key))
                self.lines[(*path, key)] = line
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        assert isinstance(node, yaml.ScalarNode)
        text, errors = interpolate(str(node.value), self.env)
        for message in errors:
            self.problems.add(path, message)
        if node.tag == _STR or node.style in ("'", '"'):
            return text
        # Plain scalars resolve (number, boolean, null, string) after interpolation.
        tag = self.loader.resolve(yaml.ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
        return self.loader.construct_object(yaml.ScalarNode(tag, text))


def _syntax_error(exc: yaml.YAMLError, source: str) -> PolicyInvalid:
    problem, context = getattr(exc, "problem", None), getattr(exc, "context", None)
    mark = getattr(exc, "problem_mark", None)
    started = getattr(exc, "context_mark", None)
    if started is not None and (mark is None or "end of stream" in (problem or "")):
        mark = started  # an unclosed quote or bracket: where it was opened, not the file's end
    line = mark.line + 1 if mark is not None else 1
    parts = [context, problem]
    text = ": ".join(p for p in parts if p) or type(exc).__name__
    text = _QUOTED.sub("'...'", " ".join(text.split()))
    return PolicyInvalid([Problem(source, line, "invalid YAML", text)])


def _schema_problems(exc: ValidationError, problems: Problems) -> None:
    for err in exc.errors():
        # pydantic adds tagged-union and function names ("function-after[...]") to loc.
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
        problems.add(loc, err["msg"])


def parse_policy(text: str, source: str, env: Mapping[str, str] | None = None) -> LoadedPolicy:
    """Validate policy text; raise `PolicyInvalid` listing every problem, with file and line."""
    env = os.environ if env is None else env
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise _syntax_error(exc, source) from None
    if node is None:
        raise PolicyInvalid([Problem(source, 1, "(top level)", "the policy file is empty")])
    lines: dict[PathKey, int] = {}
    problems = Problems(source, lines)
    data = _Builder(problems, lines, env).build(node, ())
    if not isinstance(data, dict):
        raise PolicyInvalid(
            [Problem(source, 1, "(top level)", "a policy must be a mapping with backends, models")]
        )
    policy: Policy | None = None
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        _schema_problems(exc, problems)
    if policy is not None:
        check_policy(policy, problems)
    found = ordered(problems.found)
    errors = [p for p in found if p.severity == "error"]
    if errors or policy is None:
        raise PolicyInvalid(errors)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    warnings = tuple(p for p in found if p.severity == "warning")
    return LoadedPolicy(policy, source, policy.version or digest, lines=lines, warnings=warnings)


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
    return LoadedPolicy(
        loaded.policy, loaded.source, loaded.version, mtime, loaded.lines, loaded.warnings
    )
