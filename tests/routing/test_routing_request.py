"""What the classifier reads from a request body."""

from __future__ import annotations

from gateway.routing.features import DENSE_NAMES, dense_values, token_ids, tokenize
from gateway.routing.request import MAX_TEXT_CHARS, view_request


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


def test_completions_prompt_and_token_ids() -> None:
    assert view_request({"prompt": ["a", 1, "b"]}).text == "a\nb"
    assert view_request({"prompt": [1, 2, 3]}).text == ""
    assert view_request({"max_tokens": float("nan")}).max_tokens is None


def test_long_text_is_clipped_but_length_counted() -> None:
    text = "word " * 10_000
    view = view_request({"messages": [{"role": "user", "content": text}]})
    assert view.total_chars == len(text)
    assert len(view.text) <= MAX_TEXT_CHARS + 1


def test_tokenizer_splits_cjk_and_punctuation() -> None:
    assert tokenize("Def f(x): 中文") == ["def", "f", "(", "x", ")", ":", "中", "文"]


def test_dense_values_and_unknown_bigrams() -> None:
    view = view_request({"messages": [{"role": "user", "content": "Solve 2x + 3 = 7?"}]})
    tokens = tokenize(view.text)
    values = dense_values(view, tokens)
    assert len(values) == len(DENSE_NAMES)
    unigrams, bigrams = token_ids(["a", "zz", "b"], {"a": 0, "b": 1})
    assert unigrams == {0, 1}
    assert all(k < 0 or k % (1 << 20) == (1 << 20) - 1 for k in bigrams)  # no real pair
