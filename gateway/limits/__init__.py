"""Rate limits and budgets per team and key, one Redis round trip per request.

rules.py      which limits apply to a tenant; Redis keys (hash tag `{team}`) and periods
estimate.py   tokenizer-free prompt and cost estimates; usage for answers without any
limits.lua    the script: sliding windows and budget holds, checked and counted at once
store.py      running the script (EVALSHA)
local.py      the same limits in one process: no Redis, or this process's share of them
admission.py  what an admitted request carries; the 429s and the fail-closed 503
limiter.py    admit / settle / release, the fallback and the replay journal
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
