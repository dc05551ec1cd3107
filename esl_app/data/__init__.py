"""Routing data for early-exit decisions: Postgres is the truth, Redis shares it, each process caches it.

``RoutingData`` is the facade guards and flows use (``decide``, ``number``, ``is_blocked``, ``is_open``,
``limits``, ``release``). With no Postgres DSN configured it serves the embedded file
``esl_app/data/demo_data.json`` (shipped with the package), so nothing needs a server. See ``docs/data.md``.
"""

from .facade import DataUnavailable, RoutingData
from .models import BlockList, BusinessHours, Decision, Holiday, Limits, Number, Snapshot, Span, Tenant
from .settings import DataSettings
from .snapshot import load_snapshot, snapshot_from_dict

__all__ = [
    "BlockList",
    "BusinessHours",
    "DataSettings",
    "DataUnavailable",
    "Decision",
    "Holiday",
    "Limits",
    "Number",
    "RoutingData",
    "Snapshot",
    "Span",
    "Tenant",
    "load_snapshot",
    "snapshot_from_dict",
]
