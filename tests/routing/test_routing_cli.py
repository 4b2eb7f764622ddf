"""``gateway classify`` in-process: round trip, clear errors, train/eval/explain."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from gateway.difficulty import DifficultyClassifier
from gateway_tools.cli import main


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_round_trip_uses_the_shipped_classifier(tmp_path: Path) -> None:
    rows: list[dict[str, Any]] = [
        {"id": "a", "messages": [{"role": "user", "content": "hello"}]},
        {
            "id": 7,
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "sum 1..100"}]},
            ],
        },
        {"id": None, "messages": [{"role": "user", "content": None}]},
    ]
    src = _write_lines(tmp_path / "in.jsonl", [json.dumps(r) for r in rows])
    out = tmp_path / "out.jsonl"
    assert main(["--input", str(src), "--output", str(out)]) == 0
    results = [json.loads(line) for line in out.read_text().splitlines()]
    classifier = DifficultyClassifier.load()
    assert [r["id"] for r in results] == ["a", 7, None]
    for row, result in zip(rows, results, strict=True):
        assert set(result) == {"id", "score"}
        assert 0.0 <= result["score"] <= 1.0
        assert result["score"] == classifier.score(row)


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("{not json", "invalid JSON"),
        ('{"id": 1}', "'messages'"),
        ('{"id": 1, "messages": []}', "'messages'"),
        ('{"id": 1, "messages": "hi"}', "'messages'"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_bad_line_is_reported_with_its_number(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, fragment: str
) -> None:
    good = json.dumps({"id": 1, "messages": [{"role": "user", "content": "hi"}]})
    src = _write_lines(tmp_path / "in.jsonl", [good, "", line, good])
    out = tmp_path / "out.jsonl"
    assert main(["--input", str(src), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "in.jsonl, line 3: " in err and fragment in err
    assert "Traceback" not in err
    assert not out.exists()  # no partial output


def test_missing_input_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.jsonl"
    assert main(["--input", str(missing), "--output", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "nope.jsonl" in err and "Traceback" not in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--input", "x.jsonl"]) == 2
    assert "--output" in capsys.readouterr().err
    assert main(["--help"]) == 0


def test_explain_prints_score_and_signals(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "Prove", "that", "sqrt(2)", "is", "irrational", "--top", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("score ")
    assert 0.0 <= float(lines[0].split()[1]) <= 1.0
    assert len(lines) == 4


def _synthetic_data(path: Path, n: int = 240) -> Path:
    """Two collections where maths prompts open a gap and chit-chat does not."""
    rng = random.Random(0)
    rows = []
    for i in range(n):
        hard = i % 2 == 0
        text = (
            f"Solve for x: {rng.randint(2, 99)} x + {rng.randint(1, 9)} = {rng.randint(1, 99)}, "
            "show the algebra step by step"
            if hard
            else f"Say hello to my friend number {rng.randint(1, 99)} please"
        )
        collection = "alpha" if i % 3 else "beta"
        strong = 1.0 if hard or rng.random() < 0.9 else 0.0
        weak = 0.0 if hard and rng.random() < 0.8 else strong
        rows.append(
            json.dumps(
                {
                    "id": f"{collection}/t/{i}",
                    "source": f"{collection}/{'math' if hard else 'chat'}",
                    "messages": [{"role": "user", "content": text}],
                    "outcomes": {"big": strong, "small": weak},
                }
            )
        )
    return _write_lines(path, rows)


def test_train_is_reproducible_and_eval_reports_apgr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _synthetic_data(tmp_path / "train.jsonl")
    first, second = tmp_path / "a.npz", tmp_path / "b.npz"
    assert main(["train", "--data", str(data), "--out", str(first), "--seed", "0"]) == 0
    assert main(["train", "--data", str(data), "--out", str(second), "--seed", "0"]) == 0
    a, b = DifficultyClassifier.load(first), DifficultyClassifier.load(second)
    assert a.version == b.version
    capsys.readouterr()
    assert (
        main(
            ["eval", "--data", str(data), "--model", str(first), "--by", "collection", "--no-plot"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "| alpha |" in out and "| beta |" in out and "macro mean" in out
    assert "model 90% CI" in out and "Clearly (90% interval) above random on" in out
    args = ["eval", "--data", str(data), "--model", str(first), "--no-plot", "--bootstrap", "0"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "macro mean" in out and "90% CI" not in out and "Clearly" not in out
    hard = a.score({"messages": [{"role": "user", "content": "Solve for x: 3 x + 1 = 10"}]})
    easy = a.score({"messages": [{"role": "user", "content": "Say hello to my friend"}]})
    assert hard > easy


def test_eval_holdout_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _synthetic_data(tmp_path / "train.jsonl")
    assert main(["eval", "--data", str(data), "--holdout", "collection", "--no-plot"]) == 0
    assert "leave-one-collection-out" in capsys.readouterr().out


def test_eval_rejects_a_negative_bootstrap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _synthetic_data(tmp_path / "train.jsonl")
    assert main(["eval", "--data", str(data), "--bootstrap", "-5", "--no-plot"]) == 2
    assert "--bootstrap: must be 0 or more: -5" in capsys.readouterr().err


def test_train_with_missing_data_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["train", "--data", str(tmp_path / "x.jsonl"), "--out", str(tmp_path / "a.npz")]) == 2
    )
    assert "data file not found" in capsys.readouterr().err


def test_eval_writes_a_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    data = _synthetic_data(tmp_path / "train.jsonl")
    plot = tmp_path / "plot.png"
    assert main(["eval", "--data", str(data), "--by", "source", "--plot", str(plot)]) == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert "| alpha/math |" in out and "### By weak-tier accuracy" in out


def test_eval_source_holdout_writes_the_plot_by_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("matplotlib")
    data = _synthetic_data(tmp_path / "train.jsonl")
    monkeypatch.chdir(tmp_path)
    assert main(["eval", "--data", str(data), "--holdout", "source"]) == 0
    out = capsys.readouterr().out
    assert "source-grouped 5-fold hold-out, grouped by fold" in out
    assert (tmp_path / "routing-eval-fold.png").read_bytes()[:4] == b"\x89PNG"


def test_train_collections_and_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _synthetic_data(tmp_path / "train.jsonl")
    only, weighted = tmp_path / "only.npz", tmp_path / "weighted.npz"
    assert main(["train", "--data", str(data), "--out", str(only), "--collections", "alpha"]) == 0
    assert "from 160 records" in capsys.readouterr().out
    args = ["train", "--data", str(data), "--out", str(weighted), "--weights", "beta=0.2"]
    assert main(args) == 0
    assert DifficultyClassifier.load(only).version != DifficultyClassifier.load(weighted).version
    assert main([*args[:-1], "beta"]) == 2
    assert "not collection=weight" in capsys.readouterr().err
    held = ["eval", "--data", str(data), "--holdout", "collection", "--no-plot"]
    assert main([*held, "--train-collections", "alpha"]) == 2
    assert "nothing left to train on when holding out collection=alpha" in capsys.readouterr().err
    held[4] = "source"
    assert main([*held, "--train-collections", "alpha"]) == 0
    assert "source-grouped 5-fold hold-out" in capsys.readouterr().out
    assert main(["eval", "--data", str(data), "--artifact", str(only), "--no-plot"]) == 0
    assert "difficulty-v2-" in capsys.readouterr().out
