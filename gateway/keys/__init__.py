"""API keys made through `/admin/keys`: `sk-gw-...` keys of a team of the policy, each with its
own allowed models, limits and expiry, stored only as a keyed hash.

records.py  KeyRecord (what is stored: the HMAC of the key, never the key), the request bodies
            and their checks against the policy
store.py    where records live: one hash-tagged Redis key space, or this process
table.py    VirtualKeys: the in-memory table authentication reads, refreshed by version, and
            create / change / rotate / revoke
"""

from gateway.keys.records import KEY_PREFIX, KeyChange, KeyRecord, NewKey, parse
from gateway.keys.table import VirtualKeys

__all__ = ["KEY_PREFIX", "KeyChange", "KeyRecord", "NewKey", "VirtualKeys", "parse"]
