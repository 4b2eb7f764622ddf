"""The judge's label mapping, the position swap, the cheap checks and the schema check."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from gateway.shadow.judge import (
    Reply,
    both_ways,
    cheap_verdict,
    judge_messages,
    parse_judgement,
    reply_of,
    shortfall,
)
from gateway.shadow.schema_check import conforms

judgements = st.tuples(st.sampled_from(["A", "B", "tie"]), st.sampled_from(["slight", "clear"]))


@given(first=judgements, second=judgements)
def test_labels_stay_in_range_and_average_the_two_orders(
    first: tuple[str, str], second: tuple[str, str]
) -> None:
    verdict = both_ways(first, second)
    assert 0.0 <= verdict.label <= 1.0
    assert verdict.label in (0.0, 0.25, 0.5, 0.75, 1.0)
    assert verdict.label == (shortfall(first, "A") + shortfall(second, "B")) / 2


def test_a_judge_that_always_picks_a_position_cancels_out() -> None:
    always_a = ("A", "clear")
    # Open is A in the first ask and B in the second: one win, one loss.
    assert both_ways(always_a, always_a).label == 0.5


def test_consistent_judgements_give_the_extremes() -> None:
    assert both_ways(("B", "clear"), ("A", "clear")).label == 1.0  # closed better both times
    assert both_ways(("A", "clear"), ("B", "slight")).label == 0.0  # open better both times
    assert both_ways(("B", "slight"), ("A", "slight")).label == 0.5
    assert both_ways(("tie", "slight"), ("tie", "clear")).label == 0.0


def test_parse_judgement_reads_json_inside_text() -> None:
    assert parse_judgement('Sure. {"better": "B", "margin": "slight"}') == ("B", "slight")
    assert parse_judgement('{"better": "A"}') == ("A", "clear")
    assert parse_judgement("B is better") is None
    assert parse_judgement('{"better": "C"}') is None


def _reply(text: str = "", tools: tuple[tuple[str, str], ...] = ()) -> Reply:
    return Reply(text, tools)


def test_cheap_checks() -> None:
    request: dict[str, object] = {"messages": [{"role": "user", "content": "q"}]}
    assert cheap_verdict(request, _reply("Paris."), _reply(" paris ")) is not None
    assert cheap_verdict(request, _reply("Paris"), _reply("Lyon")) is None
    call = ("get_weather", '{"city":"Paris"}')
    same = cheap_verdict(request, _reply(tools=(call,)), _reply(tools=(call,)))
    assert same is not None and (same.label, same.source) == (0.0, "tools")
    missing = cheap_verdict(request, _reply("I can't"), _reply(tools=(call,)))
    assert missing is not None and missing.label == 1.0
    other_args = cheap_verdict(
        request, _reply(tools=(("get_weather", "{}"),)), _reply(tools=(call,))
    )
    assert other_args is None


def test_schema_validity_decides_structured_output() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    request = {"response_format": {"type": "json_schema", "json_schema": {"schema": schema}}}
    invalid = cheap_verdict(request, _reply('{"n": "x"}'), _reply('{"n": 3}'))
    assert invalid is not None and (invalid.label, invalid.source) == (1.0, "schema")
    valid = cheap_verdict(request, _reply('{"n": 3}'), _reply("not json"))
    assert valid is not None and valid.label == 0.0
    assert cheap_verdict(request, _reply('{"n": 3}'), _reply('{"n": 4}')) is None


def test_conforms() -> None:
    schema = {
        "type": "object",
        "properties": {"tags": {"type": "array", "items": {"enum": ["a", "b"]}}},
        "additionalProperties": False,
    }
    assert conforms({"tags": ["a"]}, schema)
    assert not conforms({"tags": ["c"]}, schema)
    assert not conforms({"tags": [], "x": 1}, schema)
    assert not conforms(True, {"type": "integer"})
    assert conforms(1, {"type": ["string", "integer"]})


def test_reply_of_reads_text_and_tool_calls() -> None:
    completion = {
        "choices": [
            {
                "message": {
                    "content": None,
                    "tool_calls": [{"function": {"name": "f", "arguments": '{"b":1,"a":2}'}}],
                }
            }
        ]
    }
    assert reply_of(completion) == Reply("", (("f", '{"a":2,"b":1}'),))
    assert reply_of({}) == Reply("", ())


def test_the_judge_prompt_shows_both_answers_in_order() -> None:
    messages = judge_messages(
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]},
        _reply("first"),
        _reply("second"),
    )
    prompt = messages[-1]["content"]
    assert prompt.index("## Answer A\nfirst") < prompt.index("## Answer B\nsecond")
    assert orjson.dumps([{"type": "text", "text": "hi"}]).decode() in prompt
