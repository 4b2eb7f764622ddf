"""The shipped classifier: deterministic, bounded and robust to odd request bodies."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.difficulty import DifficultyClassifier
from gateway.difficulty.artifact import DEFAULT_ARTIFACT, Artifact
from gateway.difficulty.features import DENSE_NAMES

REPO = Path(__file__).resolve().parents[2]

PROMPTS = [
    "hi there",
    "Prove that the square root of 2 is irrational, step by step.",
    "Write a Python function that merges k sorted lists in O(n log k) time.",
    "请解释一下量子纠缠的基本原理。",
    "Question: Which gas do plants absorb?\nA) oxygen\nB) carbon dioxide\nAnswer:",
]


@pytest.fixture(scope="module")
def classifier() -> DifficultyClassifier:
    return DifficultyClassifier.load()


def _chat(text: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


def test_load_default_and_explicit_path_agree(classifier: DifficultyClassifier) -> None:
    other = DifficultyClassifier.load(DEFAULT_ARTIFACT)
    assert other.version == classifier.version
    assert classifier.version.startswith("difficulty-v2-")
    for text in PROMPTS:
        assert other.score(_chat(text)) == classifier.score(_chat(text))


def test_scores_are_deterministic_across_processes(classifier: DifficultyClassifier) -> None:
    # str hashing is randomised per process; nothing in scoring may depend on it.
    code = (
        "import sys, json; from gateway.difficulty import DifficultyClassifier as D; c = D.load(); "
        "print(json.dumps([c.score({'messages': [{'role': 'user', 'content': p}]}) "
        "for p in json.loads(sys.argv[1])]))"
    )
    import json

    expected = [classifier.score(_chat(p)) for p in PROMPTS]
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)}
        out = subprocess.run(
            [sys.executable, "-c", code, json.dumps(PROMPTS)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
        )
        assert json.loads(out.stdout) == expected


def test_artifact_round_trips_and_keeps_its_id() -> None:
    artifact = Artifact.from_bytes(DEFAULT_ARTIFACT.read_bytes())
    again = Artifact.from_bytes(artifact.to_bytes())
    assert again.digest() == artifact.digest()
    assert DEFAULT_ARTIFACT.stat().st_size < 5_000_000


def test_harder_prompts_score_higher_than_chitchat(classifier: DifficultyClassifier) -> None:
    easy = classifier.score(_chat("hi, how are you?"))
    hard = classifier.score(
        _chat(
            "Let $f(x) = x^3 - 3x + 1$. Find all real roots and prove that $f$ has exactly three "
            "real roots, then compute $\\sum r_i^4$ over the roots."
        )
    )
    assert hard > easy


def test_structure_priors_raise_the_score(classifier: DifficultyClassifier) -> None:
    body = _chat("Book me a flight to Paris next Tuesday.")
    tools = [{"type": "function", "function": {"name": "book", "parameters": {}}}]
    assert classifier.score({**body, "tools": tools}) > classifier.score(body)
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}
    assert classifier.score({**body, "response_format": schema}) > classifier.score(body)


def test_small_talk_prior_only_for_short_greetings(classifier: DifficultyClassifier) -> None:
    greeting = _chat("Hi there, thanks!")
    assert ("small_talk", -0.6) in classifier.explain(greeting, top=50)
    task = _chat("Hi! Prove that every bounded monotone sequence of real numbers converges.")
    assert all(name != "small_talk" for name, _ in classifier.explain(task, top=50))


def test_completions_prompt_and_parts(classifier: DifficultyClassifier) -> None:
    text = "Explain the proof of the four colour theorem."
    as_parts = _chat([{"type": "text", "text": text}, {"type": "image_url", "image_url": {}}])
    assert classifier.score({"prompt": text}) == classifier.score(_chat(text))
    assert classifier.score({"prompt": [text]}) == classifier.score(_chat(text))
    assert classifier.score(as_parts) > classifier.score(_chat(text))  # image prior


def test_explain_lists_signed_signals(classifier: DifficultyClassifier) -> None:
    signals = classifier.explain(_chat(PROMPTS[2]), top=5)
    assert 0 < len(signals) <= 5
    magnitudes = [abs(v) for _, v in signals]
    assert magnitudes == sorted(magnitudes, reverse=True)
    assert all(isinstance(name, str) and name for name, _ in signals)


json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
contents = (
    st.none()
    | st.text(max_size=300)
    | st.lists(
        st.fixed_dictionaries(
            {"type": st.sampled_from(["text", "image_url", "input_audio", "x"])},
            optional={"text": json_values, "image_url": json_values},
        ),
        max_size=4,
    )
    | json_values
)
messages = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "role": st.sampled_from(["system", "user", "assistant", "tool", "developer", "weird"])
            | json_values,
            "content": contents,
            "tool_calls": json_values,
        },
    )
    | json_values,
    max_size=6,
)
bodies = st.fixed_dictionaries(
    {},
    optional={
        "messages": messages | json_values,
        "prompt": st.text(max_size=200)
        | st.lists(st.text(max_size=50) | st.integers(), max_size=3)
        | json_values,
        "tools": st.lists(json_values, max_size=3) | json_values,
        "response_format": st.fixed_dictionaries(
            {"type": st.sampled_from(["json_schema", "json_object", "text"])}
        )
        | json_values,
        "max_tokens": json_values,
        "max_completion_tokens": json_values,
    },
)


@settings(max_examples=150, deadline=None)
@given(body=bodies)
def test_odd_bodies_score_within_bounds(
    classifier: DifficultyClassifier, body: dict[str, Any]
) -> None:
    score = classifier.score(body)
    assert 0.0 <= score <= 1.0
    # Every signal of the score, largest first: one per prompt statistic at least, each a
    # named finite contribution, and together with the bias they are the score's logit.
    signals = classifier.explain(body, top=10_000)
    assert len(signals) >= len(DENSE_NAMES)
    assert all(isinstance(name, str) and name and math.isfinite(v) for name, v in signals)
    magnitudes = [abs(v) for _, v in signals]
    assert magnitudes == sorted(magnitudes, reverse=True)
    logit = classifier.artifact.bias + math.fsum(v for _, v in signals)
    assert logit == pytest.approx(classifier.logit(body), abs=1e-9)
    assert classifier.explain(body, top=3) == signals[:3]


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=3000))
def test_any_text_scores_within_bounds(classifier: DifficultyClassifier, text: str) -> None:
    assert 0.0 <= classifier.score(_chat(text)) <= 1.0


def test_non_mapping_body_degrades(classifier: DifficultyClassifier) -> None:
    bodies: list[Any] = [None, [], "text", 3]
    for body in bodies:
        assert 0.0 <= classifier.score(body) <= 1.0
