"""The outbound dialer (issue 9, docs/dialer.md): campaigns in Postgres, paced through Redis, placed
exactly once on the cluster's outbound nodes.

| module | job |
|---|---|
| ``numbers`` | phone-number validation, contact CSV parsing (bad rows reported by line), pure |
| ``policy`` | outcome classes by hangup cause, retry policy, calling window, pure |
| ``store`` | the SQL: claim with ``SKIP LOCKED`` + lease, attempts written before originating |
| ``pacing`` | calls per second per campaign: a token bucket in Redis (Lua) |
| ``engine`` | ``Dialer``: pacing loop, originate, outcomes, leases, reconciliation |
| ``metrics`` | Prometheus counters and gauges |
"""

from .engine import Dialer
from .numbers import InvalidNumber, normalize_number, parse_contacts_csv
from .policy import classify, in_window, next_step, parse_schedule
from .settings import DialerSettings

__all__ = [
    "Dialer",
    "DialerSettings",
    "InvalidNumber",
    "classify",
    "in_window",
    "next_step",
    "normalize_number",
    "parse_contacts_csv",
    "parse_schedule",
]
