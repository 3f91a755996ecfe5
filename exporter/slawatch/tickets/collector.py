"""The ticket metrics on /metrics: aggregates from the store, gauges from the open tickets."""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections import defaultdict

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from .. import names
from ..durations import format_le
from .calendar import BusinessCalendar
from .exposition import FamilyRenderer
from .lifecycle import (CLOCKS, CREATED, FIRST_RESPONSE, FIRST_RESPONSES, FULL_RESOLUTION, FIRST_RESOLUTION, LABEL_NAMES,
                        REMOVED, REOPENED, REQUESTER_WAIT, SLA, TICKET_LABELS)
from .store import TicketStore

HELP = {
    FIRST_RESPONSE: "Time from ticket creation to the first public reply by staff, in seconds.",
    FIRST_RESOLUTION: "Time from ticket creation to its first move to solved, in seconds.",
    FULL_RESOLUTION: "Time from ticket creation to its last move to solved, observed when it closes, in seconds.",
    REQUESTER_WAIT: "Full-resolution time less the time spent pending on the requester, in seconds.",
    CREATED: "Tickets created, by the labels they were created with.",
    REOPENED: "Moves of a ticket from solved or closed back to an open status.",
    REMOVED: "Tickets merged into another, deleted or marked as spam, by reason.",
    SLA: "Ticket SLA results, by SLA name, clock and result (met or breached).",
    FIRST_RESPONSES: "First public replies by staff or by a bot, by responder (human or automation).",
}
SOURCE_LAG = "slawatch_ticket_source_lag_seconds"
SOURCE_ERRORS = "slawatch_ticket_source_errors_total"
SOURCE_LAST_SUCCESS = "slawatch_ticket_source_last_success_timestamp_seconds"
UNKNOWN_DATES = "slawatch_calendar_unknown_dates_total"
CORRECTIONS = "slawatch_ticket_corrections_total"

# While set, collect() yields nothing, so a registry-wide exposition can skip the ticket families
# that the /metrics fast path renders itself.
_EXCLUDED = contextvars.ContextVar("slawatch_ticket_families_excluded", default=False)


class SourceMetrics:
    """Health of each ticket source (webhook or poller): lag, errors and last success."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.lag: dict[str, float] = {}
        self.errors: dict[tuple[str, str], int] = defaultdict(int)
        self.last_success: dict[str, float] = {}

    def success(self, source: str, lag: float | None = None) -> None:
        with self._lock:
            self.last_success[source] = time.time()
            if lag is not None:
                self.lag[source] = max(0.0, lag)

    def error(self, source: str, kind: str) -> None:
        with self._lock:
            self.errors[(source, kind)] += 1


class TicketCollector(Collector):
    """Exposes the ticket metrics of one store."""

    def __init__(self, store: TicketStore, calendars: dict[str, BusinessCalendar], sources: SourceMetrics,
                 clock=time.time, baseline: list[tuple[str, str, str, str]] | None = None):
        self.store = store
        # Label sets (source, channel, priority, team) exported with zero values before any ticket
        # arrives, so that rate() has a starting point and absent-data alerts see the series.
        self.baseline = sorted(baseline or [])
        self.calendars = calendars
        self.sources = sources
        self.clock = clock
        self._renderer = FamilyRenderer()

    @contextlib.contextmanager
    def excluded(self):
        """Hide the ticket families from registry-wide collection inside the block."""
        token = _EXCLUDED.set(True)
        try:
            yield
        finally:
            _EXCLUDED.reset(token)

    def render(self, openmetrics: bool) -> str:
        """Return the ticket families as exposition text, without the OpenMetrics # EOF line."""
        token = _EXCLUDED.set(False)
        try:
            return self._renderer.render(list(self.collect()), openmetrics)
        finally:
            _EXCLUDED.reset(token)

    def collect(self):
        if _EXCLUDED.get():
            return
        snapshot = self.store.snapshot()
        now = self.clock()

        for name in (FIRST_RESPONSE, FIRST_RESOLUTION, FULL_RESOLUTION, REQUESTER_WAIT):
            family = HistogramMetricFamily(name, HELP[name], labels=LABEL_NAMES[name])
            bounds = self.store.buckets[name]
            series = {labels: value for (series_name, labels), value in snapshot.histograms.items()
                      if series_name == name}
            if name == FIRST_RESPONSE:
                for labels in self.baseline:
                    for clock in CLOCKS:
                        series.setdefault((*labels, clock), None)
            for labels, value in sorted(series.items()):
                if value is None:
                    buckets = [(format_le(bound), 0) for bound in bounds] + [("+Inf", 0)]
                    family.add_metric(list(labels), buckets, 0.0)
                    continue
                cumulative, buckets = 0, []
                for bound, count in zip(bounds, value.buckets):
                    cumulative += count
                    buckets.append((format_le(bound), cumulative))
                buckets.append(("+Inf", value.count))
                family.add_metric(list(labels), buckets, value.sum)
            yield family

        for name in (CREATED, REOPENED, REMOVED, SLA, FIRST_RESPONSES):
            family = CounterMetricFamily(name.removesuffix("_total"), HELP[name], labels=LABEL_NAMES[name])
            series = {labels: value for (series_name, labels), value in snapshot.counters.items()
                      if series_name == name}
            if name == CREATED:
                for labels in self.baseline:
                    series.setdefault(labels, 0)
            for labels, value in sorted(series.items()):
                family.add_metric(list(labels), value)
            yield family

        yield from self._gauges(snapshot, now)
        yield from self._health(snapshot)

    def _gauges(self, snapshot, now: float):
        groups = {labels for (name, labels) in snapshot.counters if name == CREATED} | set(self.baseline)
        open_count: dict[tuple, int] = defaultdict(int)
        unanswered: dict[tuple, int] = defaultdict(int)
        oldest: dict[tuple, float] = {}
        for ticket in snapshot.open:
            groups.add(ticket.labels)
            open_count[ticket.labels] += 1
            if not ticket.answered:
                unanswered[ticket.labels] += 1
                oldest[ticket.labels] = min(oldest.get(ticket.labels, ticket.created), ticket.created)

        open_family = GaugeMetricFamily(names.TICKETS_OPEN, "Tickets currently new, open, pending or on hold.",
                                        labels=list(TICKET_LABELS))
        unanswered_family = GaugeMetricFamily("slawatch_tickets_unanswered",
                                              "Open tickets without a first response yet.", labels=list(TICKET_LABELS))
        age_family = GaugeMetricFamily(names.TICKET_OLDEST_UNANSWERED,
                                       "Age of the oldest open ticket without a first response, in seconds; "
                                       "0 when there is none.", labels=[*TICKET_LABELS, "clock"])
        calendar_for = self.store.policy.calendar_for
        for labels in sorted(groups):
            open_family.add_metric(list(labels), open_count.get(labels, 0))
            unanswered_family.add_metric(list(labels), unanswered.get(labels, 0))
            created = oldest.get(labels)
            calendar_age = max(0.0, now - created) if created is not None else 0.0
            business_age = calendar_for(labels[2]).business_seconds(created, now) if created is not None else 0.0
            age_family.add_metric([*labels, "calendar"], calendar_age)
            age_family.add_metric([*labels, "business"], business_age)
        yield from (open_family, unanswered_family, age_family)

    def _health(self, snapshot):
        events = CounterMetricFamily(names.TICKET_EVENTS_TOTAL.removesuffix("_total"),
                                     "Ticket events accepted since the exporter started, by type.", labels=["type"])
        for event_type, count in sorted(snapshot.events_received.items()):
            events.add_metric([event_type], count)
        corrections = CounterMetricFamily(CORRECTIONS.removesuffix("_total"),
                                          "Tickets whose earlier observations a late event replaced.",
                                          value=snapshot.corrections)
        unknown = CounterMetricFamily(UNKNOWN_DATES.removesuffix("_total"),
                                      "Distinct dates outside the holiday data, handled with the calendar's "
                                      "unknown_dates fallback.", labels=["calendar"])
        for name, calendar in sorted(self.calendars.items()):
            if calendar.holiday_source:
                unknown.add_metric([name], len(calendar.unknown_dates_seen))

        sources = self.sources
        with sources._lock:
            lag, errors, last = dict(sources.lag), dict(sources.errors), dict(sources.last_success)
        lag_family = GaugeMetricFamily(SOURCE_LAG, "Webhooks: seconds between the newest delivered event's time "
                                       "and its receipt. Pollers: seconds the last successful poll took.",
                                       labels=["source"])
        for source, value in sorted(lag.items()):
            lag_family.add_metric([source], value)
        error_family = CounterMetricFamily(SOURCE_ERRORS.removesuffix("_total"),
                                           "Rejected deliveries and failed polls, by source and kind.",
                                           labels=["source", "kind"])
        for (source, kind), value in sorted(errors.items()):
            error_family.add_metric([source, kind], value)
        success_family = GaugeMetricFamily(SOURCE_LAST_SUCCESS, "Unix time of the last accepted delivery or "
                                           "successful poll, by source.", labels=["source"])
        for source, value in sorted(last.items()):
            success_family.add_metric([source], value)
        yield from (events, corrections, unknown, lag_family, error_family, success_family)
