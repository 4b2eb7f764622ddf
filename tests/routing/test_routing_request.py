"""What the classifier reads from a request body."""

from __future__ import annotations

from gateway.difficulty.features import DENSE_NAMES, MAX_TOKENS, dense_values, tokenize
from gateway.difficulty.request import MAX_TEXT_CHARS, view_request


def test_chat_body_view() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Look:"},
                    {"type": "image_url", "image_url": {"url": "x"}},
                ],
            },
            {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]},
            {"role": "tool", "content": "42", "tool_call_id": "1"},
            {"role": "user", "content": "and now?"},
        ],
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "response_format": {"type": "json_schema", "json_schema": {}},
        "max_completion_tokens": 64,
        "max_tokens": 9,
    }
    view = view_request(body)
    assert view.text == "You are terse.\nLook:\nand now?"
    assert (view.n_messages, view.n_user, view.n_assistant, view.n_tool_messages) == (5, 2, 1, 1)
    assert (view.n_images, view.n_tools, view.json_mode, view.max_tokens) == (1, 1, 2, 64)
    assert view.system_chars == len("You are terse.")


def test_completions_prompt_parts() -> None:
    assert view_request({"prompt": ["a", 1, "b"]}).text == "a\nb"
    assert view_request({"prompt": [1, 2, 3]}).text == ""
    assert view_request({"max_tokens": float("nan")}).max_tokens is None


def test_long_text_is_clipped_but_length_counted() -> None:
    text = "word " * 10_000
    view = view_request({"messages": [{"role": "user", "content": text}]})
    assert view.total_chars == len(text)
    assert len(view.text) <= MAX_TEXT_CHARS + 1


def test_tokenizer_lowercases_drops_punctuation_and_splits_cjk() -> None:
    assert tokenize("Def f(x_1): return x**2;") == [b"def", b"f", b"x_1", b"return", b"x", b"2"]
    assert tokenize("Def f(x): 中文") == [b"def", b"f", b"x", "中".encode(), "文".encode()]
    # Non-ASCII words without CJK stay whole (UTF-8 bytes), as the ASCII path splits them.
    assert tokenize("Café — naïve?") == ["café".encode(), "—".encode(), "naïve".encode()]
    assert len(tokenize("w " * (MAX_TOKENS + 10))) == MAX_TOKENS


def test_dense_values() -> None:
    view = view_request({"messages": [{"role": "user", "content": "Solve 2x + 3 = 7?\nA) 1"}]})
    tokens = tokenize(view.text)
    values = dict(zip(DENSE_NAMES, dense_values(view, tokens, set(tokens)), strict=True))
    assert len(values) == len(DENSE_NAMES)
    assert values["option_lines"] == 1.0
    assert values["log_math_symbols"] > 0 and values["log_questions"] > 0
    assert values["math_cues"] > 0  # "solve"
    assert values["cjk_share"] == 0.0
