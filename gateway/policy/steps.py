"""Where a route's rule choice can change along the score axis.

Every condition compares the score with one number (`score >= t` or `score < t`), so
for a given set of calibrated thresholds the rule `planner.choose_rule` picks is constant
between consecutive cut points. Evaluating `choose_rule` once per cut and looking scores
up with a binary search gives exactly the server's choice for a whole array of scores
(`gateway policy simulate` does this). A new kind of condition must add its cut points
here; `RULE_FIELDS` and `CONDITION_FIELDS` make a schema change without that fail loudly instead of
simulating the wrong thing.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from gateway.policy.schema import Condition, ModelRoute, Rule

# The rule and condition fields score_cuts knows.
RULE_FIELDS = frozenset({"when", "to", "split"})
CONDITION_FIELDS = frozenset({"difficulty_at_least", "difficulty_below", "closed_share"})


def score_cuts(route: ModelRoute, threshold: Callable[[int], float]) -> list[float]:
    """Sorted scores at which the chosen rule may change, starting with -inf.

    `threshold(i)`: the calibrated threshold of rule `i` (a `closed_share` rule), as the
    planner is given it. The rule chosen for a score `s` is the one chosen for the last
    cut `<= s`.
    """
    unknown = set(Rule.model_fields) - RULE_FIELDS
    unknown |= set(Condition.model_fields) - CONDITION_FIELDS
    if unknown:
        raise NotImplementedError(f"score_cuts does not know rule fields {sorted(unknown)}")
    cuts = {-math.inf}
    for i, rule in enumerate(route.rules):
        when = rule.when
        if when is None:
            continue
        if when.closed_share is not None:
            cuts.add(float(threshold(i)))
        for value in (when.difficulty_at_least, when.difficulty_below):
            if value is not None:
                cuts.add(float(value))
    return sorted(cuts)
