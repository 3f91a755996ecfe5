"""Durable ticket store (SQLite) and the metrics derived from it.

Events are stored once per event id. A ticket's state is recomputed from all
of its stored events, so events that arrive out of order give the same result.
The first-response histogram and the created counter are rebuilt from the
database at start-up, so they continue across exporter restarts instead of
dropping to zero.
"""

from __future__ import annotations

import bisect
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from .. import names
from ..durations import format_le
from .events import OPEN_STATUSES, TicketEvent

logger = logging.getLogger("slawatch.tickets")

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    ticket_id TEXT NOT NULL,
    type TEXT NOT NULL,
    time REAL NOT NULL,
    channel TEXT,
    priority TEXT,
    author TEXT,
    public INTEGER NOT NULL DEFAULT 1,
    status TEXT,
    received REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_ticket ON events (ticket_id);
CREATE TABLE IF NOT EXISTS tickets (
    ticket_id TEXT PRIMARY KEY,
    channel TEXT,
    priority TEXT,
    created REAL,
    first_response REAL,
    response_channel TEXT,
    response_priority TEXT,
    status TEXT NOT NULL DEFAULT 'new'
);
"""


@dataclass
class _OpenTicket:
    channel: str
    priority: str
    created: float
    answered: bool


@dataclass
class _Histogram:
    buckets: list[int]
    count: int = 0
    total: float = 0.0


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    ticket_ids: set[str] = field(default_factory=set)


class TicketStore:
    """SQLite-backed tickets with in-memory aggregates for scraping.

    The database runs in WAL mode with synchronous=NORMAL: a committed batch
    survives a crash or SIGKILL of the exporter, though the last commits can
    be lost if the whole machine loses power.
    """

    def __init__(self, path: str | Path, buckets: list[float]):
        self.path = str(path)
        self.bucket_bounds = list(buckets)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
        except sqlite3.Error as error:
            raise ValueError(f"cannot open the ticket database {self.path!r}: {error}: check tickets.database "
                             "and that its directory exists and is writable") from None
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self.histograms: dict[tuple[str, str], _Histogram] = {}
        self.created: dict[tuple[str, str], int] = {}
        self.open: dict[str, _OpenTicket] = {}
        self.events_received: dict[str, int] = {}
        self._load()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _load(self) -> None:
        started = time.monotonic()
        rows = self._db.execute(
            "SELECT response_channel, response_priority, first_response - created FROM tickets "
            "WHERE first_response IS NOT NULL AND created IS NOT NULL"
        )
        for channel, priority, seconds in rows:
            self._observe(channel, priority, seconds)
        for channel, priority, count in self._db.execute(
            "SELECT channel, priority, COUNT(*) FROM tickets WHERE created IS NOT NULL GROUP BY channel, priority"
        ):
            self.created[(channel, priority)] = count
        for ticket_id, channel, priority, created, first_response, status in self._db.execute(
            "SELECT ticket_id, channel, priority, created, first_response, status FROM tickets "
            "WHERE created IS NOT NULL AND status IN (?, ?, ?)", OPEN_STATUSES
        ):
            self.open[ticket_id] = _OpenTicket(channel, priority, created, first_response is not None)
        logger.info("Loaded ticket store path=%s open_tickets=%d seconds=%.3f", self.path, len(self.open),
                    time.monotonic() - started)

    def _observe(self, channel: str, priority: str, seconds: float) -> None:
        histogram = self.histograms.setdefault((channel, priority), _Histogram([0] * len(self.bucket_bounds)))
        seconds = max(0.0, seconds)
        index = bisect.bisect_left(self.bucket_bounds, seconds)
        if index < len(self.bucket_bounds):
            histogram.buckets[index] += 1
        histogram.count += 1
        histogram.total += seconds

    def ingest(self, events: list[TicketEvent]) -> IngestResult:
        """Store a batch of events in one transaction and update the affected tickets.

        An event id seen before is counted as a duplicate and changes nothing.
        """
        result = IngestResult()
        received = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for event in events:
                    cursor = self._db.execute(
                        "INSERT OR IGNORE INTO events (id, ticket_id, type, time, channel, priority, author, public, "
                        "status, received) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (event.id, event.ticket_id, event.type, event.time, event.channel, event.priority,
                         event.author, int(event.public), event.status, received),
                    )
                    if cursor.rowcount == 1:
                        result.accepted += 1
                        result.ticket_ids.add(event.ticket_id)
                        self.events_received[event.type] = self.events_received.get(event.type, 0) + 1
                    else:
                        result.duplicates += 1
                changes = [self._recompute(ticket_id) for ticket_id in sorted(result.ticket_ids)]
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            for change in changes:
                change()
        return result

    def _recompute(self, ticket_id: str):
        """Derive a ticket's state from its events; return a callable that updates the aggregates.

        The aggregates change only after the transaction commits, so a failed
        batch leaves both the database and the metrics as they were.
        """
        rows = self._db.execute(
            "SELECT type, time, channel, priority, author, public, status FROM events WHERE ticket_id = ? "
            "ORDER BY time, id", (ticket_id,)
        ).fetchall()
        previous = self._db.execute(
            "SELECT created, first_response FROM tickets WHERE ticket_id = ?", (ticket_id,)
        ).fetchone()
        had_created = previous is not None and previous[0] is not None
        had_response = previous is not None and previous[1] is not None

        channel = priority = None
        created = first_response = None
        response_channel = response_priority = None
        status = "new"
        for event_type, at, event_channel, event_priority, author, public, event_status in rows:
            channel = event_channel or channel
            priority = event_priority or priority
            if event_type == "ticket.created" and created is None:
                created = at
            elif event_type == "ticket.replied" and author == "agent" and public and first_response is None:
                first_response = at
                response_channel, response_priority = channel, priority
            elif event_type == "ticket.status_changed":
                status = event_status

        # An already observed first response stays as observed: a counter cannot be taken back.
        if had_response:
            first_response = previous[1]
        elif first_response is not None and created is not None:
            response_channel = response_channel or channel
            response_priority = response_priority or priority

        self._db.execute(
            "INSERT INTO tickets (ticket_id, channel, priority, created, first_response, response_channel, "
            "response_priority, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (ticket_id) DO UPDATE SET "
            "channel = excluded.channel, priority = excluded.priority, created = excluded.created, "
            "first_response = CASE WHEN tickets.first_response IS NULL AND excluded.created IS NOT NULL "
            "THEN excluded.first_response ELSE tickets.first_response END, "
            "response_channel = COALESCE(tickets.response_channel, excluded.response_channel), "
            "response_priority = COALESCE(tickets.response_priority, excluded.response_priority), "
            "status = excluded.status",
            (ticket_id, channel, priority, created, first_response if created is not None else None,
             response_channel, response_priority, status),
        )

        observe = (not had_response and created is not None and first_response is not None)

        def apply() -> None:
            if created is not None and not had_created:
                key = (channel, priority)
                self.created[key] = self.created.get(key, 0) + 1
            if observe:
                self._observe(response_channel, response_priority, first_response - created)
            if created is not None and status in OPEN_STATUSES:
                self.open[ticket_id] = _OpenTicket(channel, priority, created, first_response is not None)
            else:
                self.open.pop(ticket_id, None)

        return apply


class TicketCollector(Collector):
    """Exposes the ticket aggregates; every configured channel and priority gets a series."""

    def __init__(self, store: TicketStore, channels: list[str], priorities: list[str]):
        self.store = store
        self.channels = channels
        self.priorities = priorities

    def collect(self):
        store = self.store
        now = time.time()
        label_names = ["channel", "priority"]
        combinations = [(c, p) for c in self.channels for p in self.priorities]
        extra = sorted((set(store.histograms) | set(store.created)) - set(combinations))
        combinations += [key for key in extra if key not in combinations]

        created = CounterMetricFamily(names.TICKETS_CREATED_TOTAL.removesuffix("_total"),
                                      "Tickets created, by the channel and priority they were created with.",
                                      labels=label_names)
        histogram = HistogramMetricFamily(names.TICKET_FIRST_RESPONSE,
                                          "Time from ticket creation to the first public agent reply, in seconds.",
                                          labels=label_names)
        open_tickets = GaugeMetricFamily(names.TICKETS_OPEN, "Tickets currently new, open or pending.",
                                         labels=label_names)
        oldest = GaugeMetricFamily(names.TICKET_OLDEST_UNANSWERED,
                                   "Age of the oldest open ticket without a public agent reply, in seconds; "
                                   "0 when there is none.", labels=label_names)

        open_counts: dict[tuple[str, str], int] = {}
        oldest_created: dict[tuple[str, str], float] = {}
        for ticket in list(store.open.values()):
            key = (ticket.channel, ticket.priority)
            open_counts[key] = open_counts.get(key, 0) + 1
            if not ticket.answered:
                oldest_created[key] = min(oldest_created.get(key, ticket.created), ticket.created)

        for key in combinations:
            labels = list(key)
            created.add_metric(labels, store.created.get(key, 0))
            data = store.histograms.get(key) or _Histogram([0] * len(store.bucket_bounds))
            cumulative, buckets = 0, []
            for bound, count in zip(store.bucket_bounds, data.buckets):
                cumulative += count
                buckets.append((format_le(bound), cumulative))
            buckets.append(("+Inf", data.count))
            histogram.add_metric(labels, buckets, data.total)
            open_tickets.add_metric(labels, open_counts.get(key, 0))
            oldest.add_metric(labels, max(0.0, now - oldest_created[key]) if key in oldest_created else 0.0)

        events = CounterMetricFamily(names.TICKET_EVENTS_TOTAL.removesuffix("_total"),
                                     "Ticket events accepted since the exporter started, by type.", labels=["type"])
        for event_type, count in sorted(store.events_received.items()):
            events.add_metric([event_type], count)
        yield from (created, histogram, open_tickets, oldest, events)
