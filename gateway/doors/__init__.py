"""Front-door dialects ↔ OpenAI chat completions: pure translation, one module per direction.

`messages_checks` / `messages_request` / `messages_answer`: Anthropic's Messages API checked,
in as chat, and back.
`responses_request` / `responses_answer` / `responses_stream`: OpenAI's Responses API in,
chat out, and back (whole, and as events). Each request module checks its dialect with
`gateway.protocol` tables before translating.
"""

from __future__ import annotations

import random


def new_id(prefix: str) -> str:
    """A fresh object id as the APIs spell them (`resp_…`, `msg_…`, `fc_…`, `toolu_…`)."""
    # Unique, not secret: ids name objects the tenant partition already guards.
    return f"{prefix}_{random.getrandbits(128):032x}"
