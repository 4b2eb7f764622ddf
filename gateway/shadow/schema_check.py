"""A small JSON Schema check for judging structured output: the keywords answers are held to.

Covers `type`, `properties`, `required`, `additionalProperties: false`, `items`, `enum` and
`const`; other keywords are not checked (an answer is never failed for them).
"""

from __future__ import annotations

from typing import Any

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}
MAX_DEPTH = 32


def _is(value: Any, kind: str) -> bool:
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, _TYPES.get(kind, (object,)))


def conforms(value: Any, schema: Any, depth: int = 0) -> bool:
    """Whether ``value`` satisfies ``schema`` for the keywords above."""
    if not isinstance(schema, dict) or depth > MAX_DEPTH:
        return True
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if isinstance(kind, str) else []
    if kinds and not any(_is(value, k) for k in kinds):
        return False
    if "enum" in schema and isinstance(schema["enum"], list) and value not in schema["enum"]:
        return False
    if "const" in schema and value != schema["const"]:
        return False
    if isinstance(value, dict):
        properties = schema.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        required = schema.get("required")
        if isinstance(required, list) and any(key not in value for key in required):
            return False
        if schema.get("additionalProperties") is False and any(k not in properties for k in value):
            return False
        return all(
            conforms(value[k], sub, depth + 1) for k, sub in properties.items() if k in value
        )
    if isinstance(value, list):
        items = schema.get("items")
        return all(conforms(item, items, depth + 1) for item in value)
    return True
