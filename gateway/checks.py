"""Typed checks of request bodies, from one table per object.

A `Rule` says what one field must be (a test on its non-null value, the words for the
error, whether it is required); a `Table` holds one object's rules (``strict``: a field it
does not name is refused, for the doors that translate); `check` applies a table to an
object and raises `InvalidRequest` naming the field. The OpenAI tables are in
`gateway.protocol`; the Messages and Responses doors keep theirs next to their translation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import repeat
from typing import Any

from gateway.errors import InvalidRequest

Test = Callable[[Any], bool]


@dataclass(frozen=True, slots=True)
class Rule:
    """What one field must be: a test on its (non-null) value, and the words for the error."""

    test: Test
    expected: str
    required: bool = False


class Table(dict[str, Rule]):
    """The rules of one object's fields; ``strict``: a field it does not name is refused."""

    def __init__(self, rules: Mapping[str, Rule], strict: bool = False) -> None:
        super().__init__(rules)
        self.strict = strict
        self.required = tuple(name for name, rule in rules.items() if rule.required)


def check(obj: Mapping[str, Any], table: Table, where: str = "") -> None:
    """Apply a table to an object; ``where`` prefixes the field names in errors.

    The object's own fields are walked (usually far fewer than the table's rules), then the
    required ones looked up.
    """
    for name, value in obj.items():
        rule = table.get(name)
        if rule is None:
            if table.strict:
                param = where + name
                raise InvalidRequest(
                    f"Unknown parameter: '{param}'.", param=param, code="unknown_parameter"
                )
        elif value is not None and not rule.test(value):
            param = where + name
            raise InvalidRequest(
                f"Invalid value for '{param}': expected {rule.expected}.",
                param=param,
                code="invalid_value",
            )
    for name in table.required:
        if obj.get(name) is None:
            param = where + name
            raise InvalidRequest(
                f"Missing required parameter: '{param}' ({table[name].expected}).",
                param=param,
                code="missing_required_parameter",
            )


# The tests rules are made of.


def as_object(value: Any) -> dict[str, Any]:
    """The value if it is a JSON object, else an empty one (for reading untrusted answers)."""
    return value if isinstance(value, dict) else {}


def is_str(value: Any) -> bool:
    """A string."""
    return isinstance(value, str)


def is_nonempty_str(value: Any) -> bool:
    """A string with at least one character."""
    return isinstance(value, str) and bool(value)


def is_bool(value: Any) -> bool:
    """true or false."""
    return isinstance(value, bool)


def is_object(value: Any) -> bool:
    """A JSON object."""
    return isinstance(value, dict)


def is_objects(value: Any) -> bool:
    """A list of JSON objects."""
    # map + repeat keep the loop in C: this runs once per message and content list.
    return isinstance(value, list) and all(map(isinstance, value, repeat(dict)))


def is_strs(value: Any) -> bool:
    """A list of strings."""
    return isinstance(value, list) and all(map(isinstance, value, repeat(str)))


def is_number(value: Any) -> bool:
    """An integer or a float (not a boolean)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def number(low: float, high: float) -> Rule:
    """A number in [low, high]."""
    return Rule(lambda v: is_number(v) and low <= v <= high, f"a number from {low:g} to {high:g}")


def integer(low: int, high: int | None = None, required: bool = False) -> Rule:
    """An integer of at least ``low`` (and at most ``high``)."""
    expected = f"an integer from {low} to {high}" if high else f"an integer of at least {low}"
    return Rule(
        lambda v: (
            isinstance(v, int)
            and not isinstance(v, bool)
            and v >= low
            and (high is None or v <= high)
        ),
        expected,
        required,
    )


def same_rule(test: Test, expected: str, *names: str) -> dict[str, Rule]:
    """One rule for several fields."""
    rule = Rule(test, expected)
    return dict.fromkeys(names, rule)


def one_of(*values: str, required: bool = False) -> Rule:
    """One of the given strings."""
    allowed = frozenset(values)
    return Rule(lambda v: isinstance(v, str) and v in allowed, _names(values), required)


def _names(values: tuple[str, ...] | frozenset[str]) -> str:
    return "one of " + ", ".join(sorted(values))


MODEL = Rule(is_nonempty_str, "a model name", required=True)
