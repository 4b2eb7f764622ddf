"""Rate limits and budgets per team and key, one Redis round trip per request.

rules.py      which limits apply to a tenant; Redis keys (hash tag `{team}`) and periods
estimate.py   tokenizer-free prompt and cost estimates; usage for answers without any
limits.lua    the script: sliding windows, paced rates (GCRA) and budget holds, checked and
              counted at once; several such calls in one
calls.py      what the script is asked (templates per set of rules) and what it answers
store.py      running the script: one team's calls coalesce while one is in flight
resp.py       the limiter's own pipelined Redis connection (RESP over TCP)
local.py      the same limits in one process: no Redis, or this process's share of them
admission.py  what an admitted request carries; the 429s and the fail-closed 503
limiter.py    admit / settle / release and the fallback
slices.py     a part of a large limit taken at once, admitted from without a round trip
delivery.py   settlements to Redis: batched every few ms, journaled and replayed
"""

from gateway.errors import BudgetExceeded, LimitsUnavailable
from gateway.limits.admission import Admission
from gateway.limits.estimate import Estimate, estimate, filled, tokens_in
from gateway.limits.limiter import Limiter

__all__ = [
    "Admission",
    "BudgetExceeded",
    "Estimate",
    "Limiter",
    "LimitsUnavailable",
    "estimate",
    "filled",
    "tokens_in",
]
