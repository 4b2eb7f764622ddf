"""Cheap lexical and structural features of a prompt, shared by training and serving.

Everything here runs on the request hot path: regexes are compiled once at import, the
text is scanned a handful of times by C code (``re``, ``str.count``) and Python-level
loops only touch the token list once.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from itertools import repeat
from operator import add, mul

from gateway.routing.request import RequestView

_CJK_RANGES = (
    (0x3040, 0x30FF),
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),
    (0xAC00, 0xD7AF),
    (0xF900, 0xFAFF),
)
_CJK = "".join(f"{chr(lo)}-{chr(hi)}" for lo, hi in _CJK_RANGES)
# Words and single punctuation marks; punctuation is kept because braces, operators and
# LaTeX backslashes are strong code/math cues. A simple pattern keeps ``re`` fast.
TOKEN_RE = re.compile(r"\w+|[^\w\s]")
# CJK has no spaces, so each CJK character is its own token. This pattern is slower than
# the plain one, so only non-ASCII text uses it.
_CJK_TOKEN_RE = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+|[^\w\s]")
_CJK_RE = re.compile(rf"[{_CJK}]")
# Starts with a literal newline so ``re`` can skip ahead quickly between lines.
_OPTION_RE = re.compile(r"\n[ \t]*\(?[A-Ja-j][\).:][ \t]")

# Tokens beyond this many are ignored for lexical features (length is still counted),
# which bounds the per-request cost for very long prompts.
MAX_TOKENS = 2_048
# Word pairs come from the first tokens only: the task statement is usually there, and
# pair keys are the costliest part of a long prompt.
MAX_BIGRAM_TOKENS = 1_024
# Bigram keys pack two token ids into one int; ids stay below this.
BIGRAM_BASE = 1 << 20

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
_CUES: tuple[frozenset[str], ...] = tuple(
    frozenset(words.split())
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

_MATH_CHARS = ("=", "+", "^", "<", ">", "*", "/", "%")
_CODE_MARKS = ("{", "}", ";", "()", "```", "def ", "return", "import ", "=>", "[]")
_LATEX_MARKS = ("\\", "$")


def tokenize(text: str) -> list[str]:
    """Lower-cased tokens of ``text`` (truncated to ``MAX_TOKENS``)."""
    text = text.lower()
    tokens = (TOKEN_RE if text.isascii() else _CJK_TOKEN_RE).findall(text)
    if len(tokens) > MAX_TOKENS:
        del tokens[MAX_TOKENS:]
    return tokens


def _count_all(text: str, marks: Sequence[str]) -> int:
    return sum(text.count(m) for m in marks)


def dense_values(view: RequestView, tokens: Sequence[str]) -> list[float]:
    """Numeric prompt statistics in ``DENSE_NAMES`` order."""
    text = view.text
    n_chars = max(1, len(text))
    n_tokens = len(tokens)
    letters = n_chars - text.count(" ") - text.count("\n")
    n_cjk = 0 if text.isascii() else len(_CJK_RE.findall(text))
    distinct = set(tokens)
    numbers = list(filter(str.isdigit, tokens))
    return [
        math.log1p(view.total_chars),
        math.log1p(n_tokens),
        math.log1p(text.count("\n")),
        n_cjk / n_chars,
        sum(map(len, numbers)) / n_chars,
        math.log1p(len(numbers)),
        math.log1p(_count_all(text, _MATH_CHARS)),
        math.log1p(_count_all(text, _CODE_MARKS)),
        math.log1p(_count_all(text, _LATEX_MARKS)),
        math.log1p(text.count("?")),
        float(min(len(_OPTION_RE.findall("\n" + text)), 10)),
        min(letters / max(1, n_tokens), 20.0),
        math.log1p(text.count(". ") + text.count("。")),
        len(distinct) / max(1, n_tokens),
        *(math.log1p(len(cues & distinct)) for cues in _CUES),
    ]


def token_ids(tokens: Sequence[str], vocab: dict[str, int]) -> tuple[set[int], set[int]]:
    """Distinct in-vocabulary unigram ids, and packed keys of all adjacent id pairs.

    Pairs with an unknown side get keys no real bigram has (negative, or with the second
    id ``BIGRAM_BASE - 1``), so callers simply intersect with their bigram table; the
    loops stay inside C (``map``) which matters for 2,000-token prompts.
    """
    ids = list(map(vocab.get, tokens, repeat(-1, len(tokens))))
    unigrams = set(ids)
    unigrams.discard(-1)
    head = ids[:MAX_BIGRAM_TOKENS]
    bigrams = set(map(add, map(mul, head, repeat(BIGRAM_BASE)), head[1:]))
    return unigrams, bigrams


def is_bigram_key(key: int) -> bool:
    """Whether a packed key comes from two in-vocabulary tokens."""
    return key >= 0 and key % BIGRAM_BASE != BIGRAM_BASE - 1
