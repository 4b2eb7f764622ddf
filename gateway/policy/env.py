"""`${NAME}` and `${NAME:-default}` in policy strings.

A reference that is not closed, is malformed, or names an unset (or empty) variable
without a default is an error: left in place it would become, say, a base URL that every
request fails on. Messages name the variable but never echo the value or the default.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_START = "${"


def interpolate(text: str, env: Mapping[str, str]) -> tuple[str, list[str]]:
    """`text` with every reference replaced, and what was wrong with it (empty if fine).

    A bad reference stays in the text as written, so later checks on the value see it.
    """
    if _START not in text:
        return text, []
    out: list[str] = []
    errors: list[str] = []
    pos = 0
    while (start := text.find(_START, pos)) >= 0:
        out.append(text[pos:start])
        match = _REF.match(text, start)
        if match is None:
            errors.append(_malformed(text, start))
            out.append(_START)
            pos = start + len(_START)
            continue
        name, default = match.group(1), match.group(2)
        value = env.get(name)
        if default is not None and _START in default:
            errors.append(f"${{{name}:-...}}: a default cannot contain another ${{...}}")
        if value:
            out.append(value)
        elif default is not None:
            out.append(default)
        else:
            errors.append(
                f"environment variable {name} is not set "
                f"(write ${{{name}:-default}} to make it optional)"
            )
            out.append(match.group(0))
        pos = match.end()
    out.append(text[pos:])
    return "".join(out), errors


def _malformed(text: str, start: int) -> str:
    name = _NAME.match(text, start + len(_START))
    shown = f"${{{name.group(0)}" if name is not None else "${"
    if "}" not in text[start:]:
        rest = "..." if name is None or name.end() < len(text) else ""
        return f"unclosed {shown}{rest}: missing the closing `}}`"
    return f"malformed {shown}...}}: write ${{NAME}} or ${{NAME:-default}}"
