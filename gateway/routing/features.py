"""Cheap lexical and structural features of a prompt, shared by training and serving.

Everything here runs on the request hot path: regexes are compiled once at import, the
text is scanned a handful of times by C code (``re``, ``str.count``) and Python-level
loops only touch the token list once.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from itertools import pairwise

from gateway.routing.request import RequestView

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
# One CJK character is one token (there are no spaces to split on); ASCII words, digit
# runs, runs of other letters and single punctuation marks are the rest. Punctuation is
# kept because braces, operators and LaTeX backslashes are strong code/math cues.
TOKEN_RE = re.compile(rf"[{_CJK}]|[a-z_]+|\d+|[^\W\d_a-z{_CJK}]+|[^\w\s]")
_CJK_RE = re.compile(rf"[{_CJK}]")
_OPTION_RE = re.compile(r"^\s*\(?[A-Ja-j][\).:]\s", re.MULTILINE)
_NUMBER_RE = re.compile(r"\d+(?:[.,]\d+)?")

# Tokens beyond this many are ignored for lexical features (length is still counted),
# which bounds the per-request cost for very long prompts.
MAX_TOKENS = 3_000
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
)

_MATH_CHARS = ("=", "+", "^", "<", ">", "*", "/", "%")
_CODE_MARKS = ("{", "}", ";", "()", "```", "def ", "return", "import ", "=>", "[]")
_LATEX_MARKS = ("\\", "$")
_DIGITS = "0123456789"


def tokenize(text: str) -> list[str]:
    """Lower-cased tokens of ``text`` (truncated to ``MAX_TOKENS``)."""
    tokens = TOKEN_RE.findall(text.lower())
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
    return [
        math.log1p(view.total_chars),
        math.log1p(n_tokens),
        math.log1p(text.count("\n")),
        len(_CJK_RE.findall(text)) / n_chars,
        _count_all(text, _DIGITS) / n_chars,
        math.log1p(len(_NUMBER_RE.findall(text))),
        math.log1p(_count_all(text, _MATH_CHARS)),
        math.log1p(_count_all(text, _CODE_MARKS)),
        math.log1p(_count_all(text, _LATEX_MARKS)),
        math.log1p(text.count("?")),
        float(min(len(_OPTION_RE.findall(text)), 10)),
        min(letters / max(1, n_tokens), 20.0),
        math.log1p(text.count(". ") + text.count("。")),
    ]


def token_ids(tokens: Sequence[str], vocab: dict[str, int]) -> tuple[set[int], set[int]]:
    """Distinct unigram ids and packed bigram keys of in-vocabulary tokens."""
    get = vocab.get
    ids = [get(t, -1) for t in tokens]
    unigrams = set(ids)
    unigrams.discard(-1)
    bigrams = {a * BIGRAM_BASE + b for a, b in pairwise(ids) if a >= 0 and b >= 0}
    return unigrams, bigrams
