"""Prometheus metrics of a dialer instance (the default registry; ``metrics_port`` serves it).

Attempts per second per campaign and node: ``rate(esl_app_dialer_attempts_total[1m])``; answer
rate: ``sum(rate(..{outcome="answered"}[5m])) / sum(rate(..[5m]))`` (also the gauge below). Abandon rate
per campaign (queue campaigns): ``esl_app_dialer_abandon_rate``, the figure the dialer holds under its cap.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

ATTEMPTS = Counter(
    "esl_app_dialer_attempts_total", "attempts settled by this instance", ["campaign", "node", "outcome"]
)
NOT_ORIGINATED = Counter(
    "esl_app_dialer_not_originated_total", "claims no node took (not counted as attempts)", ["campaign"]
)
DNC = Counter("esl_app_dialer_dnc_total", "contacts skipped: on a do-not-call list", ["campaign"])
IN_FLIGHT = Gauge("esl_app_dialer_in_flight", "originates in progress in this instance", ["campaign"])
TOKENS = Counter("esl_app_dialer_paced_total", "calls the token bucket let start, per campaign", ["campaign"])
ANSWER_RATIO = Gauge("esl_app_dialer_answer_ratio", "answered / attempts over the last 5 minutes", ["campaign"])
PACING_ERROR = Gauge(
    "esl_app_dialer_pacing_error_ratio",
    "(attempts started in the last 10 s by every instance - cps x 10) / (cps x 10), while running",
    ["campaign"],
)
ABANDONED = Counter(
    "esl_app_dialer_abandoned_total",
    "answered calls no agent took in time (they heard the abandon message)",
    ["campaign"],
)
ABANDON_RATE = Gauge(
    "esl_app_dialer_abandon_rate",
    "abandoned / answered (abandoned included) over the abandon window (24 h), every instance's; cap 0.03",
    ["campaign"],
)
DIAL_RATIO = Gauge(
    "esl_app_dialer_dial_ratio", "calls per idle agent the campaign dials now (1.0: progressive)", ["campaign"]
)
QUEUE_IDLE = Gauge("esl_app_dialer_queue_idle_agents", "idle agents of the campaign's queue, last round", ["campaign"])
