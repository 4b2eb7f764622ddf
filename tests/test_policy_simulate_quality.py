"""`gateway policy simulate --labels` and `--rescore`, on logs whose answers are hand-computed."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from gateway.cli import main
from gateway.difficulty.artifact import DEFAULT_ARTIFACT, Artifact
from gateway.difficulty.classifier import DifficultyClassifier
from gateway_tools.decisions import SourceError
from gateway_tools.replay_log import read_log
from gateway_tools.simulate_quality import PRIOR, fit, read_labels
from gateway_tools.simulate_rescore import rescore
from tests.test_policy_simulate import policy_text, record, write_log

# `auto` goes to the closed `strong` from 0.5 up, else to `open`.
# Labels: 10 at score 0.05 with label 0, 10 at 0.95 with label 1; overall mean 0.5, so
# (PRIOR = 10) bin 0 estimates (0 + 10 * 0.5) / 20 = 0.25, bin 9 (10 + 5) / 20 = 0.75, the
# other bins (and unscored records) the mean, 0.5.
RECORDS = [
    record("auto", 0.05, "open", request_id="a"),  # open; 0.25
    record("auto", 0.15, "open", request_id="b"),  # open; 0.5
    record("auto", 0.55, "open", request_id="c"),  # → strong; 0.5
    record("auto", 0.95, "strong", request_id="d"),  # strong; 0.75
    record("auto", None, "open", endpoint="embeddings", request_id="e"),  # open; 0.5
    record("nope", None, "-", status=404, request_id="f"),  # refused; neither
]
LABELS = [
    *({"id": f"lo{i}", "messages": [], "label": 0.0, "score": 0.05} for i in range(10)),
    *({"id": f"hi{i}", "messages": [], "label": 1.0, "score": 0.95} for i in range(10)),
    {"id": "fb", "label": 1.0, "score": None},  # feedback without a score: not used
]
TOTAL = 0.25 + 0.5 + 0.5 + 0.75 + 0.5 + 0.5


def jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return str(path)


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    policy = tmp_path / "p.yaml"
    policy.write_text(policy_text())
    return {
        "policy": str(policy),
        "log": str(write_log(tmp_path / "d.jsonl", RECORDS)),
        "labels": jsonl(tmp_path / "labels.jsonl", LABELS),
    }


def simulate(files: dict[str, str], *extra: str) -> dict[str, Any]:
    argv = ["policy", "simulate", "--policy", files["policy"], "--log", files["log"], "--json"]
    code, out, err = run([*argv, *extra])
    assert code == 0, err
    result = orjson.loads(out)
    assert isinstance(result, dict)
    return result


def test_the_curve_shrinks_toward_the_mean() -> None:
    curve = fit(np.array([0.05] * 10 + [0.95] * 10), np.array([0.0] * 10 + [1.0] * 10))
    assert PRIOR == 10
    assert curve.mean == 0.5
    assert curve.estimate.tolist() == [0.25] + [0.5] * 8 + [0.75]
    # One label in a bin barely moves it: (1 + 10 * 0.5) / 11.
    few = fit(np.array([0.35, 0.05, 0.05]), np.array([1.0, 0.25, 0.25]))
    assert few.estimate[3] == pytest.approx((1 + 10 * 0.5) / 11)
    assert curve.at(np.array([np.nan, 1.0, 0.0, 0.1])).tolist() == [0.5, 0.75, 0.25, 0.5]


def test_hand_computed_quality(files: dict[str, str]) -> None:
    result = simulate(files, "--labels", files["labels"])
    cand, base = result["candidate"], result["baseline"]
    # candidate: open a, b, e (0.25 + 0.5 + 0.5); closed c, d (0.5 + 0.75)
    assert cand["projected_open_shortfall"] == pytest.approx(1.25 / 6)
    assert cand["quality_recovered"] == pytest.approx(1.25 / TOTAL)
    # as recorded: open a, b, c, e; closed d
    assert base["projected_open_shortfall"] == pytest.approx(1.75 / 6)
    assert base["quality_recovered"] == pytest.approx(0.75 / TOTAL)
    assert result["labels"]["used"] == 20 and result["labels"]["without_score"] == 1
    # The contract's keys are unchanged; the new ones are added.
    assert {"by_backend", "closed_share", "cost_usd"} < set(cand)
    assert result["candidate"]["closed_share"] == 2 / 6


def test_without_labels_nothing_changes(files: dict[str, str]) -> None:
    result = simulate(files)
    assert set(result) == {"records", "changed", "candidate", "baseline"}
    assert set(result["candidate"]) == {"by_backend", "closed_share", "cost_usd"}


def test_text_and_report_show_quality(files: dict[str, str], tmp_path: Path) -> None:
    argv = ["policy", "simulate", "--policy", files["policy"], "--log", files["log"]]
    argv += ["--labels", files["labels"], "--report", str(tmp_path / "r")]
    code, out, _ = run(argv)
    assert code == 0
    assert "open shortfall" in out and f"{1.25 / 6:.4f}" in out and f"{1.75 / 6:.4f}" in out
    page = (tmp_path / "r" / "simulation.md").read_text()
    assert "projected open shortfall" in page and "quality recovered" in page
    assert f"{100 * 1.25 / TOTAL:.1f} %" in page


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"{not json", "invalid JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"id": "x", "label": 1.5, "score": 0.2}', "label must be a number in [0, 1]"),
        (b'{"id": "x", "score": 0.2}', "label must be a number in [0, 1]"),
        (b'{"id": "x", "label": 0.5, "score": "high"}', "score must be a number"),
    ],
)
def test_a_bad_label_file_names_the_line(
    files: dict[str, str], tmp_path: Path, line: bytes, message: str
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"id": "ok", "label": 0.5, "score": 0.5}\n\n' + line + b"\n")
    with pytest.raises(SourceError, match=re.escape(f"bad.jsonl:3: {message}")):
        read_labels(str(bad))
    argv = ["policy", "simulate", "--policy", files["policy"], "--log", files["log"]]
    code, _, err = run([*argv, "--labels", str(bad)])
    assert code == 1 and f"bad.jsonl:3: {message}" in err


def shifted_artifact(path: Path, by: float) -> Path:
    """The shipped artifact with its bias moved: every logit moves by `by`."""
    artifact = Artifact.from_bytes(DEFAULT_ARTIFACT.read_bytes())
    dataclasses.replace(artifact, bias=artifact.bias + by).save(path)
    return path


def test_rescore_with_an_artifact(files: dict[str, str], tmp_path: Path) -> None:
    hi = [{"role": "user", "content": "hi"}]
    prompts = jsonl(
        tmp_path / "prompts.jsonl",
        [
            {"id": "a", "messages": hi},
            {"id": "b", "messages": hi},
            {"id": "zz", "messages": hi},  # no such record
            {"id": "c"},  # no prompt retained
        ],
    )
    # Shipped artifact: "hi" scores low, so a and b stay open (nothing changes).
    shipped = DifficultyClassifier.load().score({"messages": hi})
    assert shipped < 0.5
    same = simulate(files, "--rescore", "--prompts", prompts)
    assert same["rescored"]["records"] == 2 and same["rescored"]["of"] == 6
    assert same["changed"] == 1  # only c, as without re-scoring
    # An artifact that scores everything near 1 sends a and b to strong as well.
    artifact = shifted_artifact(tmp_path / "hot.npz", 30.0)
    assert DifficultyClassifier.load(artifact).score({"messages": hi}) > 0.99
    hot = simulate(files, "--rescore", "--artifact", str(artifact), "--prompts", prompts)
    assert hot["changed"] == 3
    assert hot["candidate"]["by_backend"] == {"strong": 4, "open": 1, "-": 1}
    assert hot["rescored"]["classifier_version"] == DifficultyClassifier.load(artifact).version
    argv = ["policy", "simulate", "--policy", files["policy"], "--log", files["log"]]
    code, out, _ = run([*argv, "--rescore", "--artifact", str(artifact), "--prompts", prompts])
    assert code == 0 and "re-scored 2 of 6 records" in out


def test_rescore_keeps_records_without_a_prompt(files: dict[str, str]) -> None:
    log = read_log(files["log"], stream="-", ids=True)
    new, count = rescore(log, {"b": 0.9, "e": 0.1, "zz": 0.3})
    assert count == 2
    assert new.score[[1, 4]].tolist() == [0.9, 0.1]
    np.testing.assert_array_equal(np.delete(new.score, [1, 4]), np.delete(log.score, [1, 4]))


def test_rescore_needs_prompts(files: dict[str, str]) -> None:
    argv = ["policy", "simulate", "--policy", files["policy"], "--log", files["log"]]
    code, _, err = run([*argv, "--rescore"])
    assert code == 1 and "--prompts" in err
    code, _, err = run([*argv, "--artifact", "x.npz"])
    assert code == 1 and "only apply with --rescore" in err


def test_rescore_moves_the_labels_into_the_new_score_space(
    files: dict[str, str], tmp_path: Path
) -> None:
    artifact = shifted_artifact(tmp_path / "hot.npz", 30.0)
    # Prompts default to the label file: its ids match no record, but every label with
    # messages is re-scored near 1, so all 20 land in the top bin at the mean, 0.5.
    result = simulate(files, "--labels", files["labels"], "--rescore", "--artifact", str(artifact))
    assert result["rescored"]["records"] == 0
    assert result["labels"]["by_score_bin"] == [0.5] * 10
    assert result["candidate"]["projected_open_shortfall"] == pytest.approx(3 * 0.5 / 6)
    assert result["candidate"]["quality_recovered"] == pytest.approx(2 / 6)
