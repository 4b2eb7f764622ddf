"""Cheap lexical and structural features of a prompt, shared by training and serving.

Everything here runs on the request hot path, so the text is scanned only by C code:

- tokens come from ``bytes.translate`` + ``split`` (ASCII punctuation becomes a space):
  ~6x faster than ``re.findall`` for the same words. Only text with CJK characters, which
  has no spaces to split on, goes through a regex (each CJK character is a token);
- symbol statistics: one ``translate`` maps every byte to its class mark (digit, maths,
  code, LaTeX), then each class is one ``count``;
- tokens are ``bytes``, so the word weights are a plain ``dict[bytes, float]`` and a
  prompt's lexical score is a set intersection with its keys.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Sequence, Set

from gateway.difficulty.request import RequestView

_CJK_RANGES = (
    (0x3040, 0x30FF),
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),
    (0xAC00, 0xD7AF),
    (0xF900, 0xFAFF),
)
_CJK = "".join(f"{chr(lo)}-{chr(hi)}" for lo, hi in _CJK_RANGES)
_CJK_RE = re.compile(rf"[{_CJK}]")
# CJK characters one by one, other word runs whole; punctuation is dropped.
_CJK_TOKEN_RE = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+")
_WORD_BYTES = frozenset((string.ascii_lowercase + string.digits + "_").encode())
# ASCII punctuation -> space; letters, digits, "_", whitespace and UTF-8 bytes (>= 128,
# parts of non-ASCII words) are kept, so splitting on whitespace yields the words.
_SPLIT_TABLE = bytes(
    b if b in _WORD_BYTES or b >= 128 or chr(b).isspace() else 0x20 for b in range(256)
)
# Starts with a literal newline so ``re`` can skip ahead quickly between lines.
_OPTION_RE = re.compile(rb"\n[ \t]*\(?[A-Ja-j][\).:][ \t]")

# Tokens beyond this many are ignored for lexical features (length is still counted),
# which bounds the per-request cost for very long prompts.
MAX_TOKENS = 2_048

DENSE_NAMES: tuple[str, ...] = (
    "log_chars",
    "log_tokens",
    "log_lines",
    "cjk_share",
    "digit_share",
    "log_numbers",
    "log_math_symbols",
    "log_code_symbols",
    "log_latex",
    "log_questions",
    "option_lines",
    "mean_word_len",
    "log_sentences",
    "distinct_token_share",
    "math_cues",
    "code_cues",
    "reasoning_cues",
    "constraint_cues",
    "creative_cues",
    "chat_cues",
)

# Small hand-made cue lexicons. A word's learned weight only transfers if the word was
# seen in training; a count of cues from a fixed list carries over to task types (chat,
# writing, agents) that the training collections never show.
CUES: tuple[frozenset[bytes], ...] = tuple(
    frozenset(words.encode().split())
    for words in (
        "solve calculate compute find prove derive equation integral probability sum total "
        "how many much percent ratio value digits remainder divisible prime polynomial",
        "python code function implement program class algorithm array string return def "
        "javascript java sql bug compile script regex api complexity recursion",
        "why explain because therefore step reason reasoning analyze analyse compare "
        "evaluate justify deduce infer logic assume suppose consequently implies",
        "must exactly least most only without format json words sentences bullet include "
        "ensure avoid limit maximum minimum each never always",
        "story poem essay creative imagine character dialogue song letter email blog tweet "
        "slogan fictional narrative roleplay",
        "hi hello thanks thank translate summarize summarise rewrite paraphrase grammar "
        "spelling shorten polite friendly",
    )
)

# Character classes: one ``translate`` maps every byte to its class mark (or a space), then
# each class is one ``count``.
_CLASSES = {b"0": b"0123456789", b"+": b"=+^<>*/%", b"{": b"{};", b"$": b"\\$"}
_CLASS_TABLE = bytes(
    next((mark[0] for mark, chars in _CLASSES.items() if b in chars), 0x20) for b in range(256)
)
_CODE_WORDS = re.compile(rb"\(\)|```|def |return|import |=>|\[\]")


def tokenize(text: str) -> list[bytes]:
    """Lower-cased word tokens of ``text`` as UTF-8 bytes (truncated to ``MAX_TOKENS``)."""
    lower = text.lower()
    if lower.isascii() or not _CJK_RE.search(lower):
        tokens = lower.encode().translate(_SPLIT_TABLE).split()
    else:
        tokens = [t.encode() for t in _CJK_TOKEN_RE.findall(lower)]
    if len(tokens) > MAX_TOKENS:
        del tokens[MAX_TOKENS:]
    return tokens


def dense_values(view: RequestView, tokens: Sequence[bytes], distinct: Set[bytes]) -> list[float]:
    """Numeric prompt statistics in ``DENSE_NAMES`` order."""
    text = view.text
    data = text.encode()
    n_chars = max(1, len(text))
    n_tokens = len(tokens)
    lines = data.count(b"\n")
    letters = n_chars - data.count(b" ") - lines
    n_cjk = 0 if text.isascii() else len(_CJK_RE.findall(text))
    numbers = list(filter(bytes.isdigit, tokens))
    marks = data.translate(_CLASS_TABLE)
    code = marks.count(b"{") + len(_CODE_WORDS.findall(data))
    return [
        math.log1p(view.total_chars),
        math.log1p(n_tokens),
        math.log1p(lines),
        n_cjk / n_chars,
        marks.count(b"0") / n_chars,
        math.log1p(len(numbers)),
        math.log1p(marks.count(b"+")),
        math.log1p(code),
        math.log1p(marks.count(b"$")),
        math.log1p(data.count(b"?")),
        float(min(len(_OPTION_RE.findall(b"\n" + data)), 10)),
        min(letters / max(1, n_tokens), 20.0),
        math.log1p(data.count(b". ") + text.count("。")),
        len(distinct) / max(1, n_tokens),
        *(math.log1p(len(cues & distinct)) for cues in CUES),
    ]
