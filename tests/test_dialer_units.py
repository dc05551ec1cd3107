"""The dialer's pure parts: numbers, CSV rows, outcome classes, retry policy, calling window."""

from __future__ import annotations

import datetime as dt

import pytest

from esl_app.dialer import InvalidNumber, classify, in_window, next_step, normalize_number, parse_contacts_csv
from esl_app.dialer.policy import RetryPolicy, parse_schedule, progressive


def test_numbers_are_normalized_or_refused_with_the_reason() -> None:
    assert normalize_number("+44 (20) 7946-0958") == "+442079460958"
    assert normalize_number("0044 20 7946 0958") == "+442079460958"
    assert normalize_number("15551234567") == "15551234567"
    for bad in ("", "12345", "+1234567890123456", "0123456789", "555-CALL-NOW", "1555${x}", "155512\r\n34"):
        with pytest.raises(InvalidNumber):
            normalize_number(bad)


def test_a_csv_with_bad_rows_loads_the_good_ones_and_names_each_bad_line() -> None:
    text = (
        "number,name,account\n"
        "+15551230001,Ann,A1\n"
        "not-a-number,Bob,B2\n"
        "+15551230002,Cy,C3\n"
        "+1 555 123 0001,Dup,D4\n"
        "123,Short,E5\n"
        "+15551230003,Eve,E6,extra\n"
        "+15551230004,Fay,\"x}y\"\n"
        "+15551230005,Gus,G7\n"
    )
    load = parse_contacts_csv(text)
    assert [r.number for r in load.rows] == ["+15551230001", "+15551230002", "+15551230005"]
    assert load.rows[0].variables == {"name": "Ann", "account": "A1"}
    assert [(e.line, e.error.split(":")[0]) for e in load.errors] == [
        (3, "not a phone number"),
        (5, "+15551230001 already on line 2"),
        (6, "'123'"),
        (7, "more fields than the header"),
        (8, "control characters or braces in ['account']"),
    ]


def test_a_csv_without_a_number_column_is_refused_at_line_1() -> None:
    load = parse_contacts_csv("phone,name\n+15551230001,Ann\n")
    assert load.rows == [] and load.errors[0].line == 1


@pytest.mark.parametrize(
    ("cause", "outcome"),
    [("USER_BUSY", "busy"), ("NO_ANSWER", "no_answer"), ("NO_USER_RESPONSE", "no_answer"),
     ("CALL_REJECTED", "failed"), ("NORMAL_TEMPORARY_FAILURE", "failed"), ("UNALLOCATED_NUMBER", "final"),
     ("NODE_LOST", "lost"), (None, "failed")],
)  # fmt: skip
def test_causes_map_to_outcome_classes(cause: str | None, outcome: str) -> None:
    assert classify(cause) == outcome
    assert classify(cause, answered=True) == "answered"


def test_retry_delay_follows_the_class_and_stops_at_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=3, retry_busy=dt.timedelta(seconds=60), retry_no_answer=dt.timedelta(hours=1),
                         retry_failed=dt.timedelta(minutes=10))  # fmt: skip
    now = dt.datetime(2026, 1, 5, 12, tzinfo=dt.UTC)
    assert next_step(policy, "busy", 1, now).at == now + dt.timedelta(seconds=60)
    assert next_step(policy, "no_answer", 2, now).at == now + dt.timedelta(hours=1)
    assert next_step(policy, "failed", 1, now).at == now + dt.timedelta(minutes=10)
    assert next_step(policy, "lost", 1, now).at == now + dt.timedelta(minutes=10)
    assert next_step(policy, "busy", 3, now).state == "exhausted"
    assert next_step(policy, "final", 1, now).state == "exhausted"
    assert next_step(policy, "answered", 1, now).state == "done"
    # abandoned (answered, no agent in time): not again within 72 h by default (Ofcom)
    assert next_step(policy, "abandoned", 1, now).at == now + dt.timedelta(hours=72)
    assert next_step(policy, "abandoned", 3, now).state == "exhausted"


def test_the_window_is_read_in_the_tenant_time_zone() -> None:
    spans = parse_schedule("mon-fri 09:00-17:00; sat 10:00-12:00")
    assert len(spans) == 6
    # Monday 2026-01-05 14:30 UTC is 09:30 in New York (EST, UTC-5): open; 13:30 UTC is 08:30: closed
    assert in_window(spans, "America/New_York", dt.datetime(2026, 1, 5, 14, 30, tzinfo=dt.UTC))
    assert not in_window(spans, "America/New_York", dt.datetime(2026, 1, 5, 13, 30, tzinfo=dt.UTC))
    # Sunday: closed all day
    assert not in_window(spans, "America/New_York", dt.datetime(2026, 1, 4, 15, 0, tzinfo=dt.UTC))
    assert in_window([], "UTC", dt.datetime(2026, 1, 4, 3, 0, tzinfo=dt.UTC))
    with pytest.raises(ValueError, match="unknown day"):
        parse_schedule("mon-fry 09:00-17:00")


def test_the_metrics_are_exposed() -> None:
    from prometheus_client import generate_latest

    from esl_app.dialer import metrics

    metrics.ATTEMPTS.labels("c", "fs1", "answered").inc()
    metrics.IN_FLIGHT.labels("c").set(2)
    text = generate_latest().decode()
    for name in ("esl_app_dialer_attempts_total", "esl_app_dialer_in_flight", "esl_app_dialer_answer_ratio",
                 "esl_app_dialer_pacing_error_ratio"):  # fmt: skip
        assert name in text
    assert 'esl_app_dialer_attempts_total{campaign="c",node="fs1",outcome="answered"} 1.0' in text


def test_the_abandon_controller_lowers_the_ratio_as_the_rate_nears_the_cap() -> None:
    # a campaign at ratio 1.8 answers 100 calls a round; its abandons grow, pass 3 %, then stop
    answered = abandoned = 0
    seen = []
    for lost in (0, 0, 1, 2, 3, 4, 6, 10, 0, 0, 0, 0):
        answered, abandoned = answered + 100, abandoned + lost
        plan = progressive(1.8, answered, abandoned)
        seen.append((round(plan.rate, 4), round(plan.ratio, 3), plan.extra, plan.at_cap))
    assert seen == [
        (0.0, 1.8, 3, False),  # no abandon: the configured ratio; 3 extra calls could all abandon within 3 %
        (0.0, 1.8, 6, False),
        (0.0033, 1.8, 8, False),
        (0.0075, 1.8, 9, False),
        (0.012, 1.8, 9, False),  # up to half the cap (1.5 %): still the configured ratio
        (0.0167, 1.711, 8, False),  # over half the cap: lowered in proportion
        (0.0229, 1.381, 5, False),
        (0.0325, 1.0, 0, True),  # over the cap: 1.0, no extra call (pure progressive)
        (0.0289, 1.059, 1, False),  # under it again: back up as the window's rate falls
        (0.026, 1.213, 4, False),
        (0.0236, 1.339, 7, False),
        (0.0217, 1.444, 10, False),
    ]
    ratios = [r for _, r, _, _ in seen]
    assert ratios[4:8] == sorted(ratios[4:8], reverse=True) and ratios[7:] == sorted(ratios[7:])
    # exactly at the cap, or far over it: pure progressive whatever the configured ratio
    for configured, lost in ((1.8, 3), (3.0, 9), (1.2, 50)):
        plan = progressive(configured, 100, lost)
        assert (plan.ratio, plan.extra, plan.at_cap) == (1.0, 0, True)
    # no history: no extra call may be risked, whatever the ratio
    assert progressive(3.0, 0, 0).extra == 0 and progressive(3.0, 0, 0).at_cap
    # the extra calls allowed keep the rate within the cap even if every one of them is abandoned; one more would not
    for answered, abandoned in ((100, 0), (250, 3), (1000, 20), (34, 0), (33, 0)):
        extra = progressive(1.5, answered, abandoned).extra
        assert (abandoned + extra) / (answered + extra) <= 0.03 < (abandoned + extra + 1) / (answered + extra + 1)
