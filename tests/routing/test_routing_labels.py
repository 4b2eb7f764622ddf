"""Strong/weak pairing per collection, and the APGR/CPT arithmetic."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gateway_tools.evaluate import GroupResult, evaluate_group, format_bands
from gateway_tools.labels import family_of, load_records


def _row(source: str, outcomes: dict[str, float], i: int = 0) -> str:
    msg = [{"role": "user", "content": f"q{i}"}]
    return json.dumps(
        {"id": f"{source}/{i}", "source": source, "messages": msg, "outcomes": outcomes}
    )


def test_known_and_inferred_pairings(tmp_path: Path) -> None:
    lines = [
        _row(
            "mmlu/anatomy", {"gpt-4-1106-preview": 1.0, "mistralai/Mixtral-8x7B-Instruct-v0.1": 0.0}
        ),
        _row("mmlu/anatomy", {"gpt-4-1106-preview": 1.0}, 1),  # no weak model: dropped
        _row("newbench/chat", {"big": 1.0, "small": 0.0, "tiny": 0.5}, 2),
        _row("newbench/chat", {"big": 1.0, "small": 1.0, "tiny": 0.0}, 3),
    ]
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(lines) + "\n")
    records = {r.id: r for r in load_records(path)}
    assert set(records) == {"mmlu/anatomy/0", "newbench/chat/2", "newbench/chat/3"}
    assert (records["mmlu/anatomy/0"].strong, records["mmlu/anatomy/0"].weak) == (1.0, 0.0)
    # Unknown collection: its best model on average against the mean of the others.
    assert records["newbench/chat/2"].strong == 1.0
    assert records["newbench/chat/2"].weak == pytest.approx(0.25)


def test_families() -> None:
    assert family_of("routerdc/gsm8k") == "math"
    assert family_of("llmrouter/human_eval") == "code"
    assert family_of("routerdc/cmmlu") == "chinese"
    assert family_of("mmlu/prehistory") == "knowledge"


def test_apgr_of_random_oracle_and_perfect_routers() -> None:
    rng = np.random.default_rng(0)
    strong = (rng.random(2_000) < 0.8).astype(float)
    weak = strong * (rng.random(2_000) < 0.7)  # weak never beats strong here
    gap = strong - weak
    result = evaluate_group("g", {"perfect": gap, "inverse": -gap}, strong, weak)
    assert result.apgr["random"] == pytest.approx(0.5, abs=1e-3)
    assert result.apgr["perfect"] == pytest.approx(result.apgr["oracle"])
    assert result.apgr["inverse"] < 0.5 < result.apgr["perfect"]
    share = gap.mean()  # everything is recovered once all gap items are routed
    assert result.cpt80["perfect"] == pytest.approx(0.8 * share, abs=2e-3)
    assert result.cpt50["random"] == pytest.approx(0.5, abs=2e-3)


def test_bootstrap_intervals_separate_a_real_router_from_noise() -> None:
    rng = np.random.default_rng(1)
    n = 3_000
    strong = (rng.random(n) < 0.85).astype(float)
    weak = strong * (rng.random(n) < 0.7)
    gap = strong - weak
    routers = {"model": gap + rng.random(n), "length": rng.random(n)}  # informative vs noise
    result = evaluate_group("g", routers, strong, weak, bootstrap=100, seed=3)
    model, length, diff = result.ci("model"), result.ci("length"), result.ci("model-length")
    assert model is not None and length is not None and diff is not None
    assert model[0] <= result.apgr["model"] <= model[1]
    assert model[0] > 0.5  # clearly above random
    assert length[0] < 0.5 < length[1]  # random scores: the interval straddles 0.5
    assert diff[0] > 0.0
    again = evaluate_group("g", routers, strong, weak, bootstrap=100, seed=3)
    assert again.ci("model") == model  # seeded: the same interval every run
    assert evaluate_group("g", routers, strong, weak).ci("model") is None  # no bootstrap


def test_no_interval_for_a_group_without_a_gap() -> None:
    same = np.ones(50)
    result = evaluate_group("flat", {"model": np.arange(50.0)}, same, same, bootstrap=20)
    assert not result.valid and result.ci("model") is None


def test_no_interval_when_the_gap_itself_comes_and_goes() -> None:
    # Three items of 200 carry the whole gap (0.015, above MIN_GAP): about one resample in
    # five has fewer than two of them, so no gap to recover, and the APGR has no interval.
    strong = np.zeros(200)
    strong[:3] = 1.0
    weak = np.zeros(200)
    result = evaluate_group("thin", {"model": strong.copy()}, strong, weak, bootstrap=200)
    assert result.valid and result.apgr["model"] > 0.9
    assert np.isnan(result.boot["model"]).any()
    assert result.ci("model") is None


def test_bands_group_sources_by_weak_accuracy() -> None:
    def group(name: str, weak: float, model: float, n: int = 100) -> GroupResult:
        apgr = {"model": model, "length": 0.5}
        return GroupResult(name, n, weak, weak + 0.1, apgr, {}, {}, {})

    table = format_bands(
        [group("a", 0.2, 0.4), group("b", 0.3, 0.6), group("c", 0.8, 0.7), group("d", 0.9, 0.9, 10)]
    )
    assert "| 0%–45% | 2 | 0.500 | 0.500 | 1 of 2 | 1 of 2 |" in table
    assert "| 70%–100% | 1 | 0.700 | 0.500 | 1 of 1 | 1 of 1 |" in table  # d: under 50 prompts
    assert "45%–70%" not in table  # no group in that band
    assert format_bands([group("d", 0.9, 0.9, 10)]).startswith("No group has at least 50")
