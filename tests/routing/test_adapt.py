"""``gateway classify adapt``: input checks, the guard, and adapted artifacts end to end."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.difficulty import DifficultyClassifier
from gateway.difficulty.artifact import DEFAULT_ARTIFACT, Artifact
from gateway_tools.adapt import AdaptConfig, adapt, featurize, group_of, residual_logit
from gateway_tools.cli import main

SUBJECTS = [
    "river",
    "castle",
    "engine",
    "garden",
    "violin",
    "glacier",
    "market",
    "harbor",
    "orchard",
    "comet",
]
ASKS = [
    "Tell me something interesting about the {s} near {n} old towns.",
    "Write two lines on a {s} and {n} friends.",
    "What is the history of the {s} in region {n}?",
    "Describe a {s} for a child aged {n}.",
    "List {n} facts about a {s}.",
]
TAUGHT = "Reconcile the quarterly ledger for account {n} against the {s} invoices."


def _chat(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


def _label_rows(n: int, signal: bool, seed: int = 0) -> list[dict[str, Any]]:
    """Label records; with ``signal``, ledger prompts are hard (label ~1), the rest easy."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        taught = i % 3 == 0
        template = TAUGHT if taught else rng.choice(ASKS)
        text = template.format(s=rng.choice(SUBJECTS), n=rng.randint(2, 999))
        text += f" (ref {rng.choice(SUBJECTS)}-{i})"
        if signal:
            label = 1.0 if (taught and rng.random() < 0.9) or rng.random() < 0.05 else 0.0
        else:
            label = float(rng.random() < 0.3)
        rows.append({"id": f"r{i}", "messages": _chat(text)["messages"], "label": label, "t": 1})
    return rows


def _write(path: Path, rows: list[Any]) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


GOOD = json.dumps({"id": "a", "messages": [{"role": "user", "content": "hi"}], "label": 0.5})


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("{oops", "invalid JSON"),
        ('{"id": "x", "label": 0.2}', "'messages'"),
        ('{"id": "x", "messages": [], "label": 0.2}', "'messages'"),
        ('{"id": "x", "messages": [{"role": "user", "content": "q"}]}', "'label'"),
        ('{"id": "x", "messages": [{"role": "user", "content": "q"}], "label": 1.5}', "[0, 1]"),
        ('{"id": "x", "messages": [{"role": "user", "content": "q"}], "label": -0.1}', "[0, 1]"),
        ('{"id": "x", "messages": [{"role": "user", "content": "q"}], "label": "1"}', "'label'"),
        ('{"id": "x", "messages": [{"role": "user", "content": "q"}], "label": true}', "'label'"),
        ("[1]", "expected a JSON object"),
    ],
)
def test_bad_label_lines_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, fragment: str
) -> None:
    labels = _write(tmp_path / "labels.jsonl", [GOOD, "", GOOD, line, GOOD])
    out = tmp_path / "out.npz"
    assert main(["adapt", "--labels", str(labels), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "labels.jsonl, line 4: " in err and fragment in err, err
    assert "Traceback" not in err
    assert not out.exists()


def test_missing_labels_file_and_missing_base(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "out.npz")
    assert main(["adapt", "--labels", str(tmp_path / "none.jsonl"), "--out", out]) == 2
    assert "labels file not found" in capsys.readouterr().err
    labels = _write(tmp_path / "labels.jsonl", [GOOD])
    args = ["adapt", "--labels", str(labels), "--base", str(tmp_path / "b.npz"), "--out", out]
    assert main(args) == 2
    assert "base artifact not found" in capsys.readouterr().err


def _adapt_cli(
    tmp_path: Path, rows: list[dict[str, Any]], capsys: Any, *extra: str
) -> tuple[Path, str]:
    labels = _write(tmp_path / "labels.jsonl", rows)
    out = tmp_path / "adapted.npz"
    assert main(["adapt", "--labels", str(labels), "--out", str(out), *extra]) == 0
    return out, capsys.readouterr().out


def test_few_labels_keep_the_base(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, report = _adapt_cli(tmp_path, _label_rows(30, signal=True), capsys)
    assert "kept the base" in report and "only 30 labels" in report
    assert DifficultyClassifier.load(out).version == DifficultyClassifier.load().version


def test_noisy_labels_keep_the_base(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, report = _adapt_cli(tmp_path, _label_rows(400, signal=False), capsys, "--no-recalibrate")
    assert "kept the base" in report and "held-out APGR on the labels" in report
    assert "(the base, unchanged)" in report
    assert out.read_bytes() == Artifact.from_bytes(DEFAULT_ARTIFACT.read_bytes()).to_bytes()


def _noise_rows(n: int, rate: float, seed: int = 0) -> list[dict[str, Any]]:
    """Labels that say nothing about which prompt is harder, at a base rate of ``rate``."""
    rng = random.Random(seed)
    rows = _label_rows(n, signal=False, seed=seed)
    for row in rows:
        row["label"] = float(rng.random() < rate)
    return rows


def test_a_miscalibrated_base_is_rescaled_with_its_ranking_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The open tier falls short on 70% of this deployment's requests; the base says far less.
    rows = _noise_rows(400, 0.7)
    out, report = _adapt_cli(tmp_path, rows, capsys)
    assert "kept the base's ranking" in report and "recalibrated: scores rescaled" in report
    base = DifficultyClassifier.load()
    rescaled = DifficultyClassifier.load(out)
    assert rescaled.version != base.version and "+recalibrated" in rescaled.version
    bodies = [{"messages": r["messages"]} for r in _label_rows(200, signal=True, seed=7)]
    before = [base.score(b) for b in bodies]
    after = [rescaled.score(b) for b in bodies]
    # Same order (a rescale is monotone), and on the labels' scale now.
    assert np.argsort(before, kind="stable").tolist() == np.argsort(after, kind="stable").tolist()
    mean_label = float(np.mean([r["label"] for r in rows]))
    assert abs(float(np.mean(after)) - mean_label) < abs(float(np.mean(before)) - mean_label) / 2


def test_a_calibrated_base_is_not_rescaled(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Labels drawn at the base's own probabilities: nothing to correct.
    base = DifficultyClassifier.load()
    rng = random.Random(3)
    rows = _label_rows(400, signal=False, seed=3)
    for row in rows:
        row["label"] = float(rng.random() < base.score({"messages": row["messages"]}))
    _, report = _adapt_cli(tmp_path, rows, capsys)
    assert "(the base, unchanged)" in report, report


def test_a_learnable_signal_is_adapted_and_served(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, report = _adapt_cli(tmp_path, _label_rows(450, signal=True), capsys)
    assert "adapted: better on the held-out labels" in report, report
    base, adapted = DifficultyClassifier.load(), DifficultyClassifier.load(out)
    assert adapted.version != base.version and "+adapted-" in adapted.version
    taught = _chat(TAUGHT.format(s="harbor", n=4242))
    other = _chat(ASKS[0].format(s="harbor", n=7))
    assert adapted.score(taught) > base.score(taught)
    assert adapted.score(taught) - adapted.score(other) > base.score(taught) - base.score(other)
    assert len(adapted.score_prior) == len(base.score_prior)
    assert any(name == "adapted:residual" for name, _ in adapted.explain(taught, top=100))

    # The scoring CLI with --artifact gives exactly the server's scores.
    rows = [{"id": i, **body} for i, body in enumerate([taught, other])]
    src = _write(tmp_path / "in.jsonl", rows)
    scored = tmp_path / "scores.jsonl"
    assert main(["--artifact", str(out), "--input", str(src), "--output", str(scored)]) == 0
    got = [json.loads(line) for line in scored.read_text().splitlines()]
    assert [g["score"] for g in got] == [adapted.score(taught), adapted.score(other)]


def test_adapted_logits_match_the_serving_path() -> None:
    base = Artifact.from_bytes(DEFAULT_ARTIFACT.read_bytes())
    rows = _label_rows(300, signal=True, seed=3)
    bodies = [{"messages": r["messages"]} for r in rows]
    ls = featurize(base, bodies, [r["label"] for r in rows])
    outcome = adapt(base, ls, AdaptConfig())
    assert outcome.adapted and outcome.artifact.residual is not None
    served = DifficultyClassifier(outcome.artifact)
    idx = np.arange(len(rows))
    fast = residual_logit(outcome.artifact, outcome.artifact.residual, ls, idx)
    assert np.allclose(fast, [served.logit(b) for b in bodies], atol=1e-9)
    # adapting an adapted artifact refits over the trained model, compared with the given one
    again = adapt(
        outcome.artifact, featurize(outcome.artifact, bodies, ls.labels.tolist()), AdaptConfig()
    )
    assert again.artifact.residual is not None or again.artifact is outcome.artifact


def test_artifact_round_trip_keeps_the_residual(tmp_path: Path) -> None:
    base = Artifact.from_bytes(DEFAULT_ARTIFACT.read_bytes())
    rows = _label_rows(300, signal=True, seed=5)
    bodies = [{"messages": r["messages"]} for r in rows]
    outcome = adapt(base, featurize(base, bodies, [r["label"] for r in rows]), AdaptConfig())
    path = tmp_path / "a.npz"
    digest = outcome.artifact.save(path)
    loaded = Artifact.from_bytes(path.read_bytes())
    assert loaded.digest() == digest != base.digest()
    assert loaded.residual is not None and outcome.artifact.residual is not None
    assert loaded.residual.vocab == outcome.artifact.residual.vocab
    assert loaded.residual.meta["validation"]["labels"] == 300


def test_near_duplicates_share_a_group() -> None:
    a = [{"role": "user", "content": "What is 12 + 7?"}]
    b = [{"role": "system", "content": "x"}, {"role": "user", "content": "what is 3+  95 ?"}]
    c = [{"role": "user", "content": "What is the capital of France?"}]
    assert group_of(a) == group_of(b) != group_of(c)


def test_simulate_adapt_reports_every_share(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(1)
    rows = []
    for i, r in enumerate(_label_rows(600, signal=True, seed=2)):
        strong = 1.0 if rng.random() < 0.9 else 0.0
        weak = strong * (1.0 - r["label"])
        rows.append(
            {
                "id": f"demo/t/{i}",
                "source": f"demo/{'ledger' if i % 3 == 0 else 'chat'}",
                "messages": r["messages"],
                "outcomes": {"big": strong, "small": weak},
            }
        )
    data = _write(tmp_path / "train.jsonl", rows)
    args = ["simulate-adapt", "--data", str(data), "--by", "collection", "--share", "0.05,0.3"]
    assert main([*args, "--bootstrap", "50"]) == 0
    out = capsys.readouterr().out
    assert "**5% of each deployment labelled**" in out and "**30% of" in out
    assert "| demo |" in out and "macro mean (1)" in out and "## Summary (seed 0)" in out
    assert main(["simulate-adapt", "--data", str(data), "--share", "2"]) == 2
