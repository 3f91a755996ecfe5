"""Ticket definitions, business-hours calendars and the durable store."""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from slawatch.config import parse_config
from slawatch.tickets import SourceMetrics, TicketCollector, build_store, parse_event
from slawatch.tickets.calendar import BusinessCalendar
from slawatch.tickets.lifecycle import FIRST_RESOLUTION, FIRST_RESPONSE, FULL_RESOLUTION, REQUESTER_WAIT

CHANNELS = ["phone", "email", "chat", "forum"]
PRIORITIES = ["low", "normal", "high", "urgent"]
WEEKDAYS_9_TO_6 = {day: ["09:00-18:00"] for day in ("mon", "tue", "wed", "thu", "fri")}
SHANGHAI = "+08:00"


def tickets_config(tmp_path: Path, **overrides) -> dict:
    data = {
        "database": str(tmp_path / "tickets.db"),
        "calendars": {"office": {"timezone": "Asia/Shanghai", "hours": WEEKDAYS_9_TO_6}},
        "business_calendar": "office",
    }
    data.update(overrides)
    return data


def open_store(tmp_path: Path, **overrides):
    config = parse_config({"tickets": tickets_config(tmp_path, **overrides)})
    return build_store(config.tickets)


def ingest(store, *events: dict):
    return store.ingest([parse_event(event, CHANNELS, PRIORITIES) for event in events])


def event(event_id: str, kind: str, ticket: str, at: str, **fields) -> dict:
    return {"id": event_id, "type": f"ticket.{kind}", "ticket_id": ticket, "time": at + SHANGHAI, **fields}


def observed(store, name: str, clock: str, channel: str = "email", priority: str = "normal") -> tuple[int, float]:
    """Return (count, sum) of one histogram series."""
    value = store.snapshot().histograms.get((name, ("webhook", channel, priority, "support", clock)))
    return (value.count, value.sum) if value else (0, 0.0)


def counter(store, name: str, labels: tuple) -> float:
    return store.snapshot().counters.get((name, labels), 0.0)


WORKED_CASE_1 = [
    event("1a", "created", "T1", "2025-03-03T10:15:00", channel="email", priority="normal"),
    event("1b", "replied", "T1", "2025-03-03T10:15:05", author="automation", public=True),
    event("1c", "replied", "T1", "2025-03-03T10:40:00", author="agent", visibility="internal"),
    event("1d", "replied", "T1", "2025-03-03T11:05:00", author="agent", public=True),
    event("1e", "status_changed", "T1", "2025-03-03T11:05:00", status="pending"),
    event("1f", "replied", "T1", "2025-03-03T16:30:00", author="requester"),
    event("1g", "status_changed", "T1", "2025-03-03T16:30:00", status="open"),
    event("1h", "status_changed", "T1", "2025-03-04T10:00:00", status="solved"),
]
CLOSE_CASE_1 = event("1i", "status_changed", "T1", "2025-03-08T10:00:00", status="closed")


def test_worked_case_email_with_pending(tmp_path: Path):
    store, _ = open_store(tmp_path)

    ingest(store, *WORKED_CASE_1)

    assert observed(store, FIRST_RESPONSE, "calendar") == (1, 3000)
    assert observed(store, FIRST_RESPONSE, "business") == (1, 3000)
    assert observed(store, FIRST_RESOLUTION, "calendar") == (1, 85500)
    assert observed(store, FIRST_RESOLUTION, "business") == (1, 31500)
    # Full resolution and requester wait are observed when the ticket closes.
    assert observed(store, FULL_RESOLUTION, "calendar") == (0, 0)

    ingest(store, CLOSE_CASE_1)

    assert observed(store, FULL_RESOLUTION, "calendar") == (1, 85500)
    assert observed(store, FULL_RESOLUTION, "business") == (1, 31500)
    assert observed(store, REQUESTER_WAIT, "calendar") == (1, 66000)
    assert observed(store, REQUESTER_WAIT, "business") == (1, 12000)
    assert counter(store, "slawatch_ticket_first_responses_total",
                   ("webhook", "email", "normal", "support", "human")) == 1


def test_worked_case_chat_over_weekend(tmp_path: Path):
    store, calendars = open_store(tmp_path)
    collector = TicketCollector(store, calendars, SourceMetrics(),
                                clock=lambda: datetime.fromisoformat("2025-03-07T18:30:00+08:00").timestamp())
    ingest(store, event("2a", "created", "T2", "2025-03-07T17:50:00", channel="chat", priority="normal"))

    samples = collected(collector)
    labels = (("channel", "chat"), ("priority", "normal"), ("source", "webhook"), ("team", "support"))
    calendar_age = ("slawatch_ticket_oldest_unanswered_age_seconds", tuple(sorted(labels + (("clock", "calendar"),))))
    business_age = ("slawatch_ticket_oldest_unanswered_age_seconds", tuple(sorted(labels + (("clock", "business"),))))
    assert samples[calendar_age] == 2400
    assert samples[business_age] == 600
    assert samples[("slawatch_tickets_unanswered", labels)] == 1

    ingest(store, event("2b", "replied", "T2", "2025-03-10T09:20:00", author="agent"),
           event("2c", "status_changed", "T2", "2025-03-10T09:50:00", status="solved"))

    assert observed(store, FIRST_RESPONSE, "calendar", "chat") == (1, 228600)
    assert observed(store, FIRST_RESPONSE, "business", "chat") == (1, 1800)
    assert observed(store, FIRST_RESOLUTION, "calendar", "chat") == (1, 230400)
    assert observed(store, FIRST_RESOLUTION, "business", "chat") == (1, 3600)
    assert collected(collector)[("slawatch_tickets_open", labels)] == 0


def test_worked_case_merged_ticket(tmp_path: Path):
    store, _ = open_store(tmp_path)

    ingest(store,
           event("3a", "created", "A", "2025-03-05T08:30:00", channel="email", priority="normal"),
           event("3b", "created", "B", "2025-03-05T08:45:00", channel="email", priority="normal"),
           event("3c", "removed", "A", "2025-03-05T09:30:00", reason="merged", merged_into="B"),
           event("3d", "replied", "B", "2025-03-05T09:30:00", author="agent", merge_comment=True),
           event("3e", "replied", "B", "2025-03-05T10:10:00", author="agent"),
           event("3f", "status_changed", "B", "2025-03-05T15:00:00", status="solved"))

    assert observed(store, FIRST_RESPONSE, "calendar") == (1, 5100)
    assert observed(store, FIRST_RESPONSE, "business") == (1, 4200)
    assert observed(store, FIRST_RESOLUTION, "calendar") == (1, 22500)
    assert observed(store, FIRST_RESOLUTION, "business") == (1, 21600)
    assert counter(store, "slawatch_tickets_removed_total", ("webhook", "email", "normal", "support", "merged")) == 1
    assert counter(store, "slawatch_tickets_created_total", ("webhook", "email", "normal", "support")) == 2
    assert set(store.open) == set()


def collected(collector) -> dict:
    registry = CollectorRegistry()
    registry.register(collector)
    from prometheus_client import generate_latest

    samples = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


# --- more definitions ------------------------------------------------------------------------

def test_reopen_counts_and_keeps_first_resolution(tmp_path: Path):
    store, _ = open_store(tmp_path)

    ingest(store,
           event("a", "created", "R", "2025-03-03T09:00:00", channel="email", priority="normal"),
           event("b", "replied", "R", "2025-03-03T09:30:00", author="agent"),
           event("c", "status_changed", "R", "2025-03-03T10:00:00", status="solved"),
           event("d", "status_changed", "R", "2025-03-03T11:00:00", status="open"),
           event("e", "status_changed", "R", "2025-03-03T12:00:00", status="solved"),
           event("f", "status_changed", "R", "2025-03-07T12:00:00", status="closed"))

    assert counter(store, "slawatch_tickets_reopened_total", ("webhook", "email", "normal", "support")) == 1
    assert observed(store, FIRST_RESOLUTION, "calendar") == (1, 3600)
    assert observed(store, FULL_RESOLUTION, "calendar") == (1, 3 * 3600)


@pytest.mark.parametrize(("policy", "count", "total", "unanswered"), [
    ("answered_at_creation", 1, 0.0, 0),
    ("next_reply", 1, 600.0, 0),
    ("exclude", 0, 0.0, 0),
])
def test_agent_created_phone_policy(tmp_path: Path, policy, count, total, unanswered):
    store, _ = open_store(tmp_path, agent_created=policy)

    ingest(store, event("a", "created", "P", "2025-03-03T10:00:00", channel="phone", priority="normal",
                        author="agent", public=True),
           event("b", "replied", "P", "2025-03-03T10:10:00", author="agent"))

    assert observed(store, FIRST_RESPONSE, "calendar", "phone") == (count, total)
    assert sum(not ticket.answered for ticket in store.open.values()) == unanswered


@pytest.mark.parametrize(("bot_counts", "first_response"), [(False, (1, 1800.0)), (True, (1, 60.0))])
def test_bot_reply_counted_as_automation(tmp_path: Path, bot_counts, first_response):
    store, _ = open_store(tmp_path, bot_first_response=bot_counts)

    ingest(store, event("a", "created", "B", "2025-03-03T10:00:00", channel="chat", priority="normal"),
           event("b", "replied", "B", "2025-03-03T10:01:00", author="bot"),
           event("c", "replied", "B", "2025-03-03T10:05:00", author="end_user"),
           event("d", "replied", "B", "2025-03-03T10:30:00", author="agent"))

    assert observed(store, FIRST_RESPONSE, "calendar", "chat") == first_response
    labels = ("webhook", "chat", "normal", "support")
    assert counter(store, "slawatch_ticket_first_responses_total", labels + ("automation",)) == 1
    assert counter(store, "slawatch_ticket_first_responses_total", labels + ("human",)) == 0


def test_priority_at_observation_time_and_team_mapping(tmp_path: Path):
    store, _ = open_store(tmp_path, teams={"L1 Support": "tier1"}, priority_calendars={"urgent": "24x7"})

    ingest(store, event("a", "created", "U", "2025-03-07T17:00:00", channel="email", priority="normal",
                        team="L1 Support"),
           event("b", "updated", "U", "2025-03-07T17:30:00", priority="urgent"),
           event("c", "replied", "U", "2025-03-07T19:00:00", author="agent"))

    series = store.snapshot().histograms
    business = series[(FIRST_RESPONSE, ("webhook", "email", "urgent", "tier1", "business"))]
    assert business.sum == 7200  # urgent tickets run on the 24x7 calendar
    assert counter(store, "slawatch_tickets_created_total", ("webhook", "email", "normal", "tier1")) == 1


def test_sla_counter_on_both_clocks(tmp_path: Path):
    store, _ = open_store(tmp_path)

    ingest(store, *WORKED_CASE_1[:4], event("x", "created", "S", "2025-03-07T17:50:00", channel="email",
                                            priority="normal"),
           event("y", "replied", "S", "2025-03-10T09:20:00", author="agent"))

    labels = ("webhook", "email", "normal", "support")
    assert counter(store, "slawatch_ticket_sla_total", labels + ("calendar", "first_response", "met")) == 1
    assert counter(store, "slawatch_ticket_sla_total", labels + ("calendar", "first_response", "breached")) == 1
    assert counter(store, "slawatch_ticket_sla_total", labels + ("business", "first_response", "met")) == 2
    assert 3600.0 in store.buckets[FIRST_RESPONSE]


def test_sla_threshold_becomes_bucket(tmp_path: Path):
    store, _ = open_store(tmp_path, slas=[{"name": "resolve_2d", "measure": "first_resolution", "threshold": "50h"}])

    assert 50 * 3600.0 in store.buckets[FIRST_RESOLUTION]


# --- calendars -------------------------------------------------------------------------------

def ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def office(**fields) -> BusinessCalendar:
    return BusinessCalendar("office", "Asia/Shanghai", WEEKDAYS_9_TO_6, **fields)


def test_calendar_holiday_closes_day():
    calendar = office(holidays={date(2025, 3, 4)})

    assert calendar.business_seconds(ts("2025-03-03T10:15:00+08:00"), ts("2025-03-04T10:00:00+08:00")) == 27900
    assert calendar.business_seconds(ts("2025-03-04T09:00:00+08:00"), ts("2025-03-04T18:00:00+08:00")) == 0


def test_calendar_makeup_workday_opens_saturday():
    calendar = office(workdays={date(2025, 3, 8)}, workday_hours=["10:00-16:00"])

    seconds = calendar.business_seconds(ts("2025-03-07T17:00:00+08:00"), ts("2025-03-10T10:00:00+08:00"))

    assert seconds == 3600 + 6 * 3600 + 3600


def test_calendar_several_ranges_a_day():
    calendar = BusinessCalendar("split", "Asia/Shanghai", {"mon": ["09:00-12:00", "13:30-18:00"]})

    assert calendar.business_seconds(ts("2025-03-03T11:00:00+08:00"), ts("2025-03-03T14:00:00+08:00")) == 3600 + 1800


def test_calendar_split_day_counts_each_range_once():
    calendar = BusinessCalendar("split", "Asia/Shanghai", {"fri": ["09:00-12:00", "13:00-18:00"]})

    lunch_span = calendar.business_seconds(ts("2025-03-07T10:00:00+08:00"), ts("2025-03-07T14:30:00+08:00"))
    whole_day = calendar.business_seconds(ts("2025-03-07T00:00:00+08:00"), ts("2025-03-08T00:00:00+08:00"))
    in_lunch = calendar.business_seconds(ts("2025-03-07T12:10:00+08:00"), ts("2025-03-07T12:50:00+08:00"))

    assert lunch_span == 2 * 3600 + 1.5 * 3600
    assert whole_day == 8 * 3600
    assert in_lunch == 0


def test_calendar_adjacent_ranges_count_once():
    calendar = BusinessCalendar("adjacent", "Asia/Shanghai", {"fri": ["09:00-12:00", "12:00-13:00"]})

    seconds = calendar.business_seconds(ts("2025-03-07T10:00:00+08:00"), ts("2025-03-07T12:30:00+08:00"))

    assert seconds == 9000


@pytest.mark.parametrize(("hours", "workday_hours", "named"), [
    ({"fri": ["09:00-12:00", "11:00-13:00"]}, None, "hours of fri: time ranges '09:00-12:00' and '11:00-13:00'"),
    ({"mon": ["13:00-18:00", "09:00-24:00"]}, None, "hours of mon: time ranges '09:00-24:00' and '13:00-18:00'"),
    ({"mon": ["09:00-18:00"]}, ["10:00-16:00", "09:00-10:30"],
     "workday_hours: time ranges '09:00-10:30' and '10:00-16:00'"),
])
def test_calendar_rejects_overlapping_ranges(hours, workday_hours, named):
    with pytest.raises(ValueError) as caught:
        BusinessCalendar("office", "Asia/Shanghai", hours, workday_hours=workday_hours)

    assert f"calendar 'office', {named} overlap" in str(caught.value)


def test_calendar_spring_forward_counts_once():
    # On 2025-03-09 New York skips 02:00-03:00. The range ending at 02:30 ends at 07:30 UTC, after
    # the 03:00 range starts (07:00 UTC), so the two half-hours must not both count.
    calendar = BusinessCalendar("ny", "America/New_York", {"sun": ["01:00-02:30", "03:00-04:00"]})
    start = ts("2025-03-09T00:00:00-05:00")

    assert calendar.business_seconds(start, start + 86400) == 2 * 3600


@pytest.mark.parametrize(("day", "open_seconds"), [
    ("2025-01-26", 9 * 3600),  # Sunday, make-up working day for the Spring Festival
    ("2025-01-28", 0),  # Spring Festival holiday on a Tuesday
    ("2025-10-01", 0),  # National Day on a Wednesday
    ("2025-03-10", 9 * 3600),  # an ordinary Monday
    ("2025-03-08", 0),  # an ordinary Saturday
])
def test_calendar_china_schedule(day, open_seconds):
    calendar = office(holiday_source="china")

    start = ts(f"{day}T00:00:00+08:00")

    assert calendar.business_seconds(start, start + 86400) == open_seconds


def test_calendar_china_config_overrides_package():
    calendar = office(holiday_source="china", holidays={date(2025, 3, 10)}, workdays={date(2025, 1, 28)})

    monday = ts("2025-03-10T00:00:00+08:00")
    festival = ts("2025-01-28T00:00:00+08:00")

    assert calendar.business_seconds(monday, monday + 86400) == 0
    assert calendar.business_seconds(festival, festival + 86400) == 9 * 3600


@pytest.mark.parametrize(("fallback", "open_seconds"), [("weekly", 9 * 3600), ("closed", 0)])
def test_calendar_date_outside_package_data(fallback, open_seconds, caplog):
    calendar = office(holiday_source="china", unknown_dates=fallback)
    monday = ts("2040-01-02T00:00:00+08:00")

    first = calendar.business_seconds(monday, monday + 86400)
    second = calendar.business_seconds(monday, monday + 86400)

    assert first == second == open_seconds
    assert calendar.unknown_dates_seen == {date(2040, 1, 2)}
    assert len([r for r in caplog.records if "outside the holiday data" in r.getMessage()]) == 1


def test_calendar_unknown_dates_metric(tmp_path: Path):
    store, calendars = open_store(tmp_path, calendars={"office": {"timezone": "Asia/Shanghai",
                                                                  "hours": WEEKDAYS_9_TO_6,
                                                                  "holiday_source": "china"}})
    ingest(store, event("a", "created", "F", "2040-01-02T10:00:00", channel="email", priority="normal"),
           event("b", "replied", "F", "2040-01-02T11:00:00", author="agent"))

    samples = collected(TicketCollector(store, calendars, SourceMetrics()))

    assert samples[("slawatch_calendar_unknown_dates_total", (("calendar", "office"),))] == 1
    assert observed(store, FIRST_RESPONSE, "business") == (1, 3600)


def test_calendar_daylight_saving_day():
    calendar = BusinessCalendar("ny", "America/New_York", {day: ["00:00-24:00"] for day in
                                                            ("mon", "tue", "wed", "thu", "fri", "sat", "sun")})
    start = ts("2025-03-09T00:00:00-05:00")
    end = ts("2025-03-10T00:00:00-04:00")

    assert calendar.business_seconds(start, end) == 23 * 3600


moments = st.floats(min_value=ts("2024-12-20T00:00:00+00:00"), max_value=ts("2025-02-20T00:00:00+00:00"),
                    allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(moments, moments, moments)
def test_calendar_additive_and_bounded(a, b, c):
    calendar = office(holiday_source="china")
    start, middle, end = sorted((a, b, c))

    whole = calendar.business_seconds(start, end)

    assert whole == pytest.approx(calendar.business_seconds(start, middle) + calendar.business_seconds(middle, end))
    assert 0 <= whole <= end - start


@settings(max_examples=100, deadline=None)
@given(moments, st.integers(min_value=0, max_value=10))
def test_calendar_full_weeks(start, weeks):
    # Any 7-day span without holidays contains exactly five 9-hour days.
    calendar = office()

    assert calendar.business_seconds(start, start + weeks * 7 * 86400) == pytest.approx(weeks * 45 * 3600)


@settings(max_examples=100, deadline=None)
@given(moments, moments)
def test_calendar_always_open_is_calendar_time(a, b):
    calendar = BusinessCalendar("all", "UTC", {}, always_open=True)

    assert calendar.business_seconds(min(a, b), max(a, b)) == max(a, b) - min(a, b)


# --- store -----------------------------------------------------------------------------------

def random_history(rng: random.Random, tickets: int) -> list[dict]:
    """Return events of `tickets` random tickets, each with replies, status changes and maybe a removal."""
    events = []
    start = datetime(2025, 3, 3, 8, 0, tzinfo=timezone(timedelta(hours=8)))
    for number in range(tickets):
        ticket = f"T{number}"
        at = start + timedelta(minutes=rng.randrange(0, 60 * 24 * 10))
        iso = lambda moment: moment.isoformat()  # noqa: E731
        events.append({"id": f"{ticket}-c", "type": "ticket.created", "ticket_id": ticket, "time": iso(at),
                       "channel": rng.choice(CHANNELS), "priority": rng.choice(PRIORITIES)})
        for step in range(rng.randrange(1, 8)):
            at += timedelta(minutes=rng.randrange(1, 600))
            kind = rng.choice(["reply", "reply", "status", "update"])
            base = {"id": f"{ticket}-{step}", "ticket_id": ticket, "time": iso(at)}
            if kind == "reply":
                events.append({**base, "type": "ticket.replied", "author": rng.choice(
                    ["agent", "requester", "bot", "automation"]), "public": rng.random() < 0.8})
            elif kind == "status":
                events.append({**base, "type": "ticket.status_changed", "status": rng.choice(
                    ["open", "pending", "solved", "closed"])})
            else:
                events.append({**base, "type": "ticket.updated", "priority": rng.choice(PRIORITIES)})
        if rng.random() < 0.1:
            at += timedelta(minutes=5)
            events.append({"id": f"{ticket}-x", "type": "ticket.removed", "ticket_id": ticket, "time": iso(at),
                           "reason": rng.choice(["merged", "deleted", "spam"])})
    return events


def aggregates(store) -> tuple[dict, dict, dict]:
    snapshot = store.snapshot()
    counters = {key: value for key, value in snapshot.counters.items() if value}
    histograms = {key: (value.count, tuple(value.buckets), round(value.sum, 3))
                  for key, value in snapshot.histograms.items() if value.count}
    open_tickets = {ticket_id: (t.labels, t.answered) for ticket_id, t in store.open.items()}
    return counters, histograms, open_tickets


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_store_order_independent(tmp_path: Path, seed: int):
    rng = random.Random(seed)
    history = random_history(rng, 60)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    in_order, _ = open_store(tmp_path / "a")
    shuffled, _ = open_store(tmp_path / "b")

    ingest(in_order, *history)
    mixed = history + rng.sample(history, 40)  # duplicates too
    rng.shuffle(mixed)
    while mixed:
        size = rng.randrange(1, 20)
        ingest(shuffled, *mixed[:size])
        mixed = mixed[size:]

    assert aggregates(shuffled) == aggregates(in_order)


def test_store_restart_keeps_aggregates(tmp_path: Path):
    history = random_history(random.Random(7), 40)
    store, _ = open_store(tmp_path)
    ingest(store, *history)
    before = aggregates(store)
    store.close()

    reopened, _ = open_store(tmp_path)
    result = ingest(reopened, *history[:10])

    assert aggregates(reopened) == before
    assert result.accepted == 0
    assert result.duplicates == 10


def test_store_rebuilds_when_buckets_change(tmp_path: Path):
    store, _ = open_store(tmp_path)
    ingest(store, *WORKED_CASE_1)
    store.close()

    reopened, _ = open_store(tmp_path, first_response_buckets=[600, 3000, 3600])

    assert reopened.buckets[FIRST_RESPONSE] == [600.0, 3000.0, 3600.0]
    value = reopened.snapshot().histograms[(FIRST_RESPONSE, ("webhook", "email", "normal", "support", "calendar"))]
    assert value.buckets == [0, 1, 0]
    assert value.count == 1


def test_store_late_event_for_unknown_ticket(tmp_path: Path):
    store, _ = open_store(tmp_path)

    ingest(store, WORKED_CASE_1[3])
    assert observed(store, FIRST_RESPONSE, "calendar") == (0, 0)
    assert store.open == {}

    ingest(store, WORKED_CASE_1[0])

    assert observed(store, FIRST_RESPONSE, "calendar") == (1, 3000)


# --- group commit ----------------------------------------------------------------------------

async def test_group_writer_results_per_request(tmp_path: Path):
    import asyncio

    from slawatch.tickets.writer import GroupWriter

    store, _ = open_store(tmp_path)
    writer = GroupWriter(store)
    requests = [[parse_event(WORKED_CASE_1[0], CHANNELS, PRIORITIES)],
                [parse_event(WORKED_CASE_1[0], CHANNELS, PRIORITIES),
                 parse_event(WORKED_CASE_1[3], CHANNELS, PRIORITIES)],
                [parse_event(WORKED_CASE_1[1], CHANNELS, PRIORITIES)]]

    results = await asyncio.gather(*(writer.ingest(events) for events in requests))
    await writer.close()

    assert [(r.accepted, r.duplicates) for r in results] == [(1, 0), (1, 1), (1, 0)]
    assert observed(store, FIRST_RESPONSE, "calendar") == (1, 3000)


async def test_group_writer_failure_stores_nothing(tmp_path: Path):
    import asyncio

    from slawatch.tickets.writer import GroupWriter

    store, _ = open_store(tmp_path)
    writer = GroupWriter(store)
    original = store._recompute

    def broken(ticket_id, batch, previous=None):
        original(ticket_id, batch, previous)
        raise OSError("disk full")

    store._recompute = broken
    outcomes = await asyncio.gather(*(writer.ingest([parse_event(e, CHANNELS, PRIORITIES)])
                                      for e in WORKED_CASE_1[:3]), return_exceptions=True)
    store._recompute = original
    retry = await writer.ingest([parse_event(WORKED_CASE_1[0], CHANNELS, PRIORITIES)])
    await writer.close()

    assert all(isinstance(outcome, OSError) for outcome in outcomes)
    assert retry.accepted == 1
    assert counter(store, "slawatch_tickets_created_total", ("webhook", "email", "normal", "support")) == 1


# --- secrets ---------------------------------------------------------------------------------

def secret_tickets(tmp_path: Path, webhook: dict | None = None, sources: dict | None = None):
    data = {"database": str(tmp_path / "tickets.db"), "webhook": webhook or {}, "sources": sources or {}}
    return parse_config({"tickets": data}).tickets


def test_secret_problems_none_when_usable(tmp_path: Path, monkeypatch):
    from slawatch.tickets.secrets import ticket_secret_problems

    for name in ("zendesk-secret", "rt-password", "jira-token", "zammad-token", "zendesk-token"):
        (tmp_path / name).write_text(f"{name}\n", encoding="utf-8")
    monkeypatch.setenv("SLAWATCH_TEST_WEBHOOK_SECRET", "shared")
    tickets = secret_tickets(tmp_path, {"secret_env": "SLAWATCH_TEST_WEBHOOK_SECRET",
                                        "zendesk_secret_file": str(tmp_path / "zendesk-secret")}, {
        "rt": {"url": "http://127.0.0.1:1", "user": "sla", "password_file": str(tmp_path / "rt-password")},
        "jira": {"url": "http://127.0.0.1:1", "user": "a@example.org", "token_file": str(tmp_path / "jira-token")},
        "zammad": {"url": "http://127.0.0.1:1", "token_file": str(tmp_path / "zammad-token")},
        "zendesk": {"url": "http://127.0.0.1:1", "email": "a@example.org",
                    "token_file": str(tmp_path / "zendesk-token")},
    })

    assert ticket_secret_problems(tickets) == []
    assert ticket_secret_problems(secret_tickets(tmp_path)) == []


def test_secret_problems_name_key_and_file(tmp_path: Path, monkeypatch):
    from slawatch.tickets.secrets import ticket_secret_problems

    (tmp_path / "empty").write_text("\n", encoding="utf-8")
    missing = tmp_path / "missing"
    monkeypatch.delenv("SLAWATCH_TEST_UNSET_SECRET", raising=False)
    tickets = secret_tickets(tmp_path, {"secret_env": "SLAWATCH_TEST_UNSET_SECRET",
                                        "zendesk_secret_file": str(missing)}, {
        "rt": {"url": "http://127.0.0.1:1", "token_file": str(missing)},
        "jira": {"url": "http://127.0.0.1:1", "user": "a@example.org", "token_file": str(tmp_path / "empty")},
        "zendesk": {"url": "http://127.0.0.1:1", "oauth_token_file": str(tmp_path)},
    })

    problems = ticket_secret_problems(tickets)

    assert problems == [
        "tickets.webhook.secret_env: environment variable SLAWATCH_TEST_UNSET_SECRET is not set: set it to the "
        "shared secret in the environment that runs slawatch",
        f"tickets.webhook.zendesk_secret_file: cannot read the webhook secret file {missing}: No such file or "
        "directory: check the path and the file's permissions",
        f"tickets.sources.rt.token_file: cannot read {missing}: No such file or directory: check the path and the "
        "file's permissions",
        f"tickets.sources.jira.token_file: {tmp_path / 'empty'} is empty: write the secret into it",
        f"tickets.sources.zendesk.oauth_token_file: cannot read {tmp_path}: Is a directory: check the path and the "
        "file's permissions",
    ]


def test_secret_problems_empty_webhook_secrets(tmp_path: Path, monkeypatch):
    from slawatch.tickets.secrets import ticket_secret_problems

    (tmp_path / "blank").write_text("  \n", encoding="utf-8")
    monkeypatch.setenv("SLAWATCH_TEST_EMPTY_SECRET", "")

    from_env = ticket_secret_problems(secret_tickets(tmp_path, {"secret_env": "SLAWATCH_TEST_EMPTY_SECRET"}))
    from_file = ticket_secret_problems(secret_tickets(tmp_path, {"secret_file": str(tmp_path / "blank")}))

    assert from_env == ["tickets.webhook.secret_env: environment variable SLAWATCH_TEST_EMPTY_SECRET is empty: "
                        "set it to the shared secret"]
    assert from_file == [f"tickets.webhook.secret_file: the webhook secret file {tmp_path / 'blank'} is empty: "
                         "write the secret into it"]
