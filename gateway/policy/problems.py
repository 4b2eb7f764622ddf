"""Policy problems as `file:line: dotted.key: message`, and the error that carries them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from gateway.errors import PolicyError

PathKey = tuple[str | int, ...]
Severity = Literal["error", "warning"]


def dotted(path: PathKey) -> str:
    """`("models", "auto", "route", 0)` → `models.auto.route[0]`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def line_for(loc: PathKey, lines: Mapping[PathKey, int]) -> int:
    """The line of `loc`, or of its nearest ancestor the file has a line for."""
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return 1


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong (or suspicious) in a policy file."""

    source: str
    line: int
    key: str
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        tag = "warning: " if self.severity == "warning" else ""
        return f"{self.source}:{self.line}: {self.key}: {tag}{self.message}"


class Problems:
    """Collects problems for one file; knows the line of every key."""

    def __init__(self, source: str, lines: Mapping[PathKey, int]) -> None:
        self.source = source
        self.lines = lines
        self.found: list[Problem] = []

    def add(
        self, loc: PathKey, message: str, *, line: int | None = None, warning: bool = False
    ) -> None:
        """Record a problem at `loc` (its line looked up unless given)."""
        where = line if line is not None else line_for(loc, self.lines)
        severity: Severity = "warning" if warning else "error"
        self.found.append(Problem(self.source, where, dotted(loc), message, severity))


def ordered(problems: Iterable[Problem]) -> list[Problem]:
    """By line; one problem per key and severity (the first found explains the rest)."""
    seen: set[tuple[int, str, str]] = set()
    out: list[Problem] = []
    for problem in problems:
        mark = (problem.line, problem.key, problem.severity)
        if mark not in seen:
            seen.add(mark)
            out.append(problem)
    return sorted(out, key=lambda p: (p.line, p.severity != "error"))


class PolicyInvalid(PolicyError):
    """A policy file with one or more errors; `problems` lists them in file order.

    `str()` is every problem, one per line; `summary` is one line, fit for `/readyz` and
    logs. Neither ever holds a source line of the file (it may carry a secret).
    """

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        if len(self.problems) == 1:
            text = str(self.problems[0])
        else:
            text = f"invalid policy ({len(self.problems)} problems):\n  " + "\n  ".join(
                str(p) for p in self.problems
            )
        super().__init__(text)

    @property
    def summary(self) -> str:
        """The first problem, and how many more there are."""
        if not self.problems:
            return str(self)
        more = len(self.problems) - 1
        return str(self.problems[0]) + (f" (and {more} more)" if more else "")
