"""Judging a shadow pair: cheap checks first, then an LLM judge asked both ways round.

The label is how much the open tier's answer fell short of the closed tier's: 1 clearly
worse, 0.5 slightly worse, 0 as good or better (the label-record contract). Cheapest first:

1. identical answers after normalisation → 0 (source `identical`);
2. a `json_schema` response format → schema validity of each (source `schema`): the open
   answer invalid where the closed one is valid → 1, the reverse → 0, both valid → go on;
3. tool calls → same function and arguments → 0, open calls none or another function where
   the closed one calls → 1 (source `tools`);
4. otherwise the LLM judge (source `judge`), asked with the open answer first and then second;
   the two labels are averaged, which cancels a judge's preference for one position.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.shadow.schema_check import conforms


@dataclass(frozen=True, slots=True)
class Verdict:
    """A label in [0, 1] and what decided it."""

    label: float
    source: str


@dataclass(frozen=True, slots=True)
class Reply:
    """The parts of a chat completion a verdict looks at."""

    text: str
    tools: tuple[tuple[str, str], ...]  # (function name, arguments as canonical JSON)


def reply_of(completion: dict[str, Any]) -> Reply:
    """The first choice's text and tool calls."""
    choices = completion.get("choices") or [{}]
    message = choices[0].get("message") if isinstance(choices[0], dict) else None
    message = message if isinstance(message, dict) else {}
    content = message.get("content")
    calls = []
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            calls.append((str(function.get("name")), _canonical(function.get("arguments"))))
    return Reply(content if isinstance(content, str) else "", tuple(calls))


def _canonical(arguments: Any) -> str:
    try:
        parsed = orjson.loads(arguments) if isinstance(arguments, str) else arguments
    except orjson.JSONDecodeError:
        return str(arguments)
    return orjson.dumps(parsed, option=orjson.OPT_SORT_KEYS).decode()


_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Case and whitespace folded, trailing punctuation dropped."""
    return _SPACE.sub(" ", text).strip().lower().rstrip(".!")


def _schema_of(request: dict[str, Any]) -> dict[str, Any] | None:
    fmt = request.get("response_format")
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        return None
    spec = fmt.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    return schema if isinstance(schema, dict) else None


def _valid_json(text: str, schema: dict[str, Any]) -> bool:
    try:
        return conforms(orjson.loads(text), schema)
    except orjson.JSONDecodeError:
        return False


def cheap_verdict(request: dict[str, Any], open_: Reply, closed: Reply) -> Verdict | None:
    """A verdict without a judge call, where one is certain."""
    if open_.tools or closed.tools:
        if open_.tools == closed.tools:
            return Verdict(0.0, "tools")
        if closed.tools and not {name for name, _ in open_.tools} & {n for n, _ in closed.tools}:
            return Verdict(1.0, "tools")
        return None  # same functions, other arguments: a judge decides
    if normalise(open_.text) == normalise(closed.text):
        return Verdict(0.0, "identical")
    schema = _schema_of(request)
    if schema is not None:
        open_ok, closed_ok = _valid_json(open_.text, schema), _valid_json(closed.text, schema)
        if open_ok != closed_ok:
            return Verdict(0.0 if open_ok else 1.0, "schema")
    return None


JUDGE_SYSTEM = (
    "You compare two answers to the same request. Judge correctness first, then "
    "completeness and instruction following; ignore length and style. Reply with JSON only: "
    '{"better": "A" | "B" | "tie", "margin": "slight" | "clear"}.'
)


def judge_messages(request: dict[str, Any], first: Reply, second: Reply) -> list[dict[str, str]]:
    """The pairwise prompt: the conversation, then answer A and answer B."""
    turns = []
    for message in request.get("messages") or ():
        if isinstance(message, dict):
            content = message.get("content")
            text = content if isinstance(content, str) else orjson.dumps(content).decode()
            turns.append(f"[{message.get('role')}] {text}")

    def show(reply: Reply) -> str:
        calls = "".join(f"\n[tool call] {name}({args})" for name, args in reply.tools)
        return reply.text + calls

    prompt = (
        "## Request\n" + "\n".join(turns)
        + "\n\n## Answer A\n" + show(first)
        + "\n\n## Answer B\n" + show(second)
        + "\n\nWhich answer is better?"
    )  # fmt: skip
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": prompt}]


_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


def parse_judgement(text: str) -> tuple[str, str] | None:
    """("A" | "B" | "tie", "slight" | "clear") from a judge's reply, None if unreadable."""
    found = _JSON_OBJECT.search(text)
    if found is None:
        return None
    try:
        parsed = orjson.loads(found.group(0))
    except orjson.JSONDecodeError:
        return None
    if not isinstance(parsed, dict):
        return None
    better, margin = parsed.get("better"), parsed.get("margin", "clear")
    if better not in ("A", "B", "tie") or margin not in ("slight", "clear"):
        return None
    return better, margin


def shortfall(judgement: tuple[str, str], open_is: str) -> float:
    """The open answer's shortfall from one judgement, given the position ("A"/"B") it had."""
    better, margin = judgement
    if better in ("tie", open_is):
        return 0.0
    return 1.0 if margin == "clear" else 0.5


def both_ways(open_first: tuple[str, str], open_second: tuple[str, str]) -> Verdict:
    """The label from the two judgements (open as A, then open as B), averaged."""
    label = (shortfall(open_first, "A") + shortfall(open_second, "B")) / 2
    return Verdict(label, "judge")
