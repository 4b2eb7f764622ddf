"""Target-share calibration: histogram maths, convergence on synthetic streams, priors."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from gateway.difficulty import DifficultyClassifier, ShareCalibrator, quantile_of


class FakeClock:
    """Advances a fixed step per read, like a steady stream of requests."""

    def __init__(self, step: float) -> None:
        self.now = 1_000_000.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_quantiles_of_uniform_counts() -> None:
    counts = [50.0] * 200
    for q in (0.1, 0.5, 0.8, 0.99):
        assert quantile_of(counts, q) == pytest.approx(q, abs=0.006)


def test_quantile_of_an_empty_histogram_is_the_share_itself() -> None:
    assert quantile_of([0.0] * 10, 0.3) == pytest.approx(0.3)
    assert quantile_of([0.0] * 10, 2.0) == 1.0


def test_quantile_interpolates_within_a_bin() -> None:
    counts = [0.0] * 10
    counts[4] = 10.0  # all mass in [0.4, 0.5)
    assert quantile_of(counts, 0.5) == pytest.approx(0.45)


def test_a_prior_of_another_size_is_refused() -> None:
    with pytest.raises(ValueError, match="bins"):
        ShareCalibrator(0.2, prior=[1.0] * 10)


Sampler = Callable[[random.Random], float]
DISTRIBUTIONS: dict[str, Sampler] = {
    "uniform": lambda r: r.random(),
    "beta_low": lambda r: r.betavariate(2, 8),
    "beta_high": lambda r: r.betavariate(6, 2),
    "narrow": lambda r: min(1.0, max(0.0, r.gauss(0.3, 0.03))),
    "bimodal": lambda r: r.betavariate(2, 20) if r.random() < 0.7 else r.betavariate(20, 3),
}


def _stream_share(
    calibrator: ShareCalibrator,
    rng: random.Random,
    samplers: list[tuple[Sampler, int]],
    measure_last: int,
) -> float:
    """Route a stream with the live threshold; closed share over the last ``measure_last``."""
    decisions: list[bool] = []
    for sampler, count in samplers:
        for _ in range(count):
            score = sampler(rng)
            closed = score >= calibrator.threshold()
            calibrator.observe(score)
            calibrator.record(closed)
            decisions.append(closed)
    tail = decisions[-measure_last:]
    return sum(tail) / len(tail)


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
@pytest.mark.parametrize("target", [0.1, 0.2, 0.5])
def test_converges_to_target_share(name: str, target: float) -> None:
    calibrator = ShareCalibrator(target, clock=FakeClock(0.05))
    share = _stream_share(calibrator, random.Random(7), [(DISTRIBUTIONS[name], 12_000)], 6_000)
    assert share == pytest.approx(target, abs=0.02)
    assert calibrator.realised_share() == pytest.approx(target, abs=0.02)


@pytest.mark.parametrize(("before", "after"), [("beta_low", "beta_high"), ("bimodal", "narrow")])
def test_tracks_a_shift_mid_stream(before: str, after: str) -> None:
    # Window: 30 buckets of 10 s at 20 requests/s = 6,000 requests; measure once it has turned over.
    calibrator = ShareCalibrator(0.2, clock=FakeClock(0.05))
    stream = [(DISTRIBUTIONS[before], 10_000), (DISTRIBUTIONS[after], 14_000)]
    share = _stream_share(calibrator, random.Random(11), stream, 7_000)
    assert share == pytest.approx(0.2, abs=0.02)


def test_prior_sets_the_threshold_before_traffic() -> None:
    uniform = ShareCalibrator(0.25, clock=FakeClock(0.0))
    assert uniform.threshold() == pytest.approx(0.75, abs=0.01)
    skewed = [0.0] * 200
    skewed[40:60] = [1.0] * 20  # all prior mass in [0.2, 0.3)
    calibrator = ShareCalibrator(0.5, prior=skewed, clock=FakeClock(0.0))
    assert calibrator.threshold() == pytest.approx(0.25, abs=0.01)


def test_shipped_prior_gives_roughly_the_target_share_on_training_like_traffic() -> None:
    classifier = DifficultyClassifier.load()
    calibrator = ShareCalibrator(0.2, prior=classifier.score_prior, clock=FakeClock(0.0))
    expected = quantile_of(list(classifier.score_prior), 0.8)
    assert calibrator.threshold() == pytest.approx(expected, abs=1e-9)


def test_target_share_is_validated() -> None:
    with pytest.raises(ValueError, match="target_share"):
        ShareCalibrator(1.5)


def test_realised_share_without_decisions_is_zero() -> None:
    assert ShareCalibrator(0.3, clock=FakeClock(0.1)).realised_share() == 0.0


def _decide_share(
    calibrator: ShareCalibrator, rng: random.Random, sampler: Sampler, n: int, last: int
) -> float:
    """Route a stream with ``decide``; closed share over the last ``last`` requests."""
    decisions: list[bool] = []
    for _ in range(n):
        score = sampler(rng)
        closed = calibrator.decide(score)
        calibrator.observe(score)
        calibrator.record(closed)
        decisions.append(closed)
    return sum(decisions[-last:]) / last


TIED: dict[str, Sampler] = {
    "all_equal": lambda r: 0.229,
    "near_equal": lambda r: 0.229 + r.uniform(-0.0015, 0.0015),
    "across_a_bin_edge": lambda r: 0.23 + r.uniform(-0.001, 0.001),
    "equal_mass_in_uniform": lambda r: 0.229 if r.random() < 0.6 else r.random(),
    "two_templates": lambda r: 0.229 if r.random() < 0.5 else 0.4,
}


@pytest.mark.parametrize("name", sorted(TIED))
@pytest.mark.parametrize("target", [0.05, 0.3, 0.7])
def test_tied_scores_track_the_target_share(name: str, target: float) -> None:
    prior = DifficultyClassifier.load().score_prior
    calibrator = ShareCalibrator(target, prior=prior, clock=FakeClock(0.05), seed=3)
    share = _decide_share(calibrator, random.Random(5), TIED[name], 12_000, 6_000)
    assert share == pytest.approx(target, abs=0.02)
    assert calibrator.realised_share() == pytest.approx(target, abs=0.02)


def test_a_threshold_alone_sends_a_tied_mass_one_way() -> None:
    # The problem decide() solves: every tied request is at or above the threshold.
    calibrator = ShareCalibrator(0.3, clock=FakeClock(0.05))
    share = _stream_share(calibrator, random.Random(5), [(TIED["all_equal"], 6_000)], 3_000)
    assert share == 1.0
    assert calibrator.closed_fraction_at_threshold() == pytest.approx(0.3, abs=0.01)


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_decide_converges_on_untied_streams_too(name: str) -> None:
    calibrator = ShareCalibrator(0.2, clock=FakeClock(0.05))
    share = _decide_share(calibrator, random.Random(7), DISTRIBUTIONS[name], 12_000, 6_000)
    assert share == pytest.approx(0.2, abs=0.02)


def test_decide_is_seeded_and_ordered_by_bin() -> None:
    def run(seed: int) -> list[bool]:
        calibrator = ShareCalibrator(0.5, clock=FakeClock(0.05), seed=seed)
        rng = random.Random(1)
        out = []
        for _ in range(2_000):
            score = TIED["two_templates"](rng)
            out.append(calibrator.decide(score))
            calibrator.observe(score)
        return out

    assert run(1) == run(1)
    calibrator = ShareCalibrator(0.25, clock=FakeClock(0.0))  # uniform prior: cut at 0.75
    assert calibrator.decide(0.9) and not calibrator.decide(0.5)
    assert not calibrator.decide(float("nan"))
    assert not ShareCalibrator(0.0).decide(0.99) and ShareCalibrator(1.0).decide(0.0)
