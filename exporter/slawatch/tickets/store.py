"""Durable ticket store (SQLite, WAL) with the metric aggregates kept beside the events.

Each event is stored once per event id. After a batch of events, every
affected ticket is recomputed from all of its stored events (see lifecycle.py)
and the difference between its new and its previous contributions is applied
to the aggregate tables in the same transaction. So:

- a committed event is counted exactly once, also across restarts and after a
  SIGKILL (the transaction either committed or left no trace);
- events that arrive late, twice or out of order give the same aggregates as
  events that arrived in order, and an event for a ticket not created yet is
  kept and applied when the creation arrives;
- start-up reads the aggregate tables and the open tickets only, not the events.

A late event that changes a value already observed (for example an earlier
reply that arrives after a later one) replaces the old observation, so a bucket
can decrease. Prometheus reads a decrease as a counter reset;
`slawatch_ticket_corrections_total` counts them.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .events import TicketEvent
from .lifecycle import HISTOGRAMS, MEASURES, Contribution, EventRow, Policy, derive

logger = logging.getLogger("slawatch.tickets")

SCHEMA_VERSION = 2
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
    received REAL NOT NULL,
    source TEXT,
    team TEXT,
    merge_comment INTEGER NOT NULL DEFAULT 0,
    reason TEXT,
    merged_into TEXT
);
CREATE INDEX IF NOT EXISTS events_ticket ON events (ticket_id);
CREATE TABLE IF NOT EXISTS ticket_state (
    ticket_id TEXT PRIMARY KEY,
    created REAL,
    open INTEGER NOT NULL DEFAULT 0,
    answered INTEGER NOT NULL DEFAULT 0,
    labels TEXT,
    contributions TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS ticket_state_open ON ticket_state (open) WHERE open = 1;
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    labels TEXT NOT NULL,
    UNIQUE (name, labels)
);
CREATE TABLE IF NOT EXISTS counter_values (
    series_id INTEGER PRIMARY KEY,
    value REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS histogram_values (
    series_id INTEGER PRIMARY KEY,
    buckets TEXT NOT NULL,
    count INTEGER NOT NULL,
    sum REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
EVENT_COLUMNS = ("id", "ticket_id", "type", "time", "channel", "priority", "author", "public", "status",
                 "received", "source", "team", "merge_comment", "reason", "merged_into")
ROW_COLUMNS = ("id", "type", "time", "source", "channel", "priority", "team", "author", "public",
               "merge_comment", "status", "reason")
# Old databases (schema 1) lack these event columns.
ADDED_EVENT_COLUMNS = {"source": "TEXT", "team": "TEXT", "merge_comment": "INTEGER NOT NULL DEFAULT 0",
                       "reason": "TEXT", "merged_into": "TEXT"}


@dataclass
class OpenTicket:
    labels: tuple[str, ...]
    created: float
    answered: bool


@dataclass
class HistogramValue:
    buckets: list[int]
    count: int = 0
    sum: float = 0.0


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    # Ids of duplicates whose content differs from the stored event: the stored one is kept. Pollers
    # meet these when a ticket's current values differ from those of an event built earlier.
    conflict_ids: list[str] = field(default_factory=list)
    ticket_ids: set[str] = field(default_factory=set)


class TicketStore:
    """SQLite-backed tickets and metric aggregates.

    The database runs in WAL mode with synchronous=NORMAL: a committed batch
    survives a crash or SIGKILL of the exporter, though the last commits can
    be lost if the whole machine loses power (synchronous=FULL closes that gap
    at the cost of an fsync per batch; see `durable`).

    Usage:

        store = TicketStore("tickets.db", {name: bounds, ...}, policy)
        store.ingest([parse_event(...)])
    """

    def __init__(self, path: str | Path, buckets: dict[str, list[float]], policy: Policy, durable: bool = False):
        self.path = str(path)
        self.buckets = {name: list(buckets[name]) for name in HISTOGRAMS}
        self.policy = policy
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
        except sqlite3.Error as error:
            raise ValueError(f"cannot open the ticket database {self.path!r}: {error}: check tickets.database "
                             "and that its directory exists and is writable") from None
        self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self._migrate()

        self.series: dict[tuple[str, tuple[str, ...]], int] = {}
        self.series_keys: dict[int, tuple[str, tuple[str, ...]]] = {}
        self.counters: dict[int, float] = {}
        self.histograms: dict[int, HistogramValue] = {}
        self.open: dict[str, OpenTicket] = {}
        self.events_received: Counter[str] = Counter()
        self.corrections = 0
        self._load()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- start-up ---------------------------------------------------------------------------

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        has_events = self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'events'").fetchone() is not None
        if has_events and version < SCHEMA_VERSION:
            present = {row[1] for row in self._db.execute("PRAGMA table_info(events)")}
            for column, kind in ADDED_EVENT_COLUMNS.items():
                if column not in present:
                    self._db.execute(f"ALTER TABLE events ADD COLUMN {column} {kind}")
            self._db.execute("DROP TABLE IF EXISTS tickets")
        self._db.executescript(SCHEMA)
        if version < SCHEMA_VERSION:
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            if has_events:
                self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('buckets', 'rebuild')")

    def _load(self) -> None:
        started = time.monotonic()
        stored = self._db.execute("SELECT value FROM meta WHERE key = 'buckets'").fetchone()
        layout = json.dumps(self.buckets, sort_keys=True)
        self._load_series()
        if stored is None or stored[0] != layout:
            self._rebuild(layout, first_start=stored is None)
            self._load_series()

        for series_id, value in self._db.execute("SELECT series_id, value FROM counter_values"):
            self.counters[series_id] = value
        for series_id, buckets, count, total in self._db.execute(
                "SELECT series_id, buckets, count, sum FROM histogram_values"):
            self.histograms[series_id] = HistogramValue(json.loads(buckets), count, total)
        for ticket_id, created, answered, labels in self._db.execute(
                "SELECT ticket_id, created, answered, labels FROM ticket_state WHERE open = 1"):
            self.open[ticket_id] = OpenTicket(tuple(json.loads(labels)), created, bool(answered))
        logger.info("Loaded ticket store path=%s series=%d open_tickets=%d seconds=%.3f", self.path,
                    len(self.series), len(self.open), time.monotonic() - started)

    def _load_series(self) -> None:
        for series_id, name, labels in self._db.execute("SELECT id, name, labels FROM series"):
            key = (name, tuple(json.loads(labels)))
            self.series[key] = series_id
            self.series_keys[series_id] = key

    def _rebuild(self, layout: str, first_start: bool) -> None:
        """Recompute every ticket and the aggregates from the stored events.

        Runs on the first start, after a schema upgrade, and when the bucket
        bounds (configured buckets or SLA thresholds) changed.
        """
        started = time.monotonic()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for table in ("ticket_state", "counter_values", "histogram_values"):
                    self._db.execute(f"DELETE FROM {table}")
                ticket_ids = [row[0] for row in self._db.execute("SELECT DISTINCT ticket_id FROM events")]
                batch = _Batch(self)
                for ticket_id in ticket_ids:
                    self._recompute(ticket_id, batch, previous=[])
                batch.write()
                self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('buckets', ?)", (layout,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        if not first_start or ticket_ids:
            logger.info("Rebuilt ticket aggregates path=%s tickets=%d seconds=%.3f", self.path, len(ticket_ids),
                        time.monotonic() - started)

    # --- ingestion --------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def ingest(self, events: list[TicketEvent], meta: dict[str, str] | None = None) -> IngestResult:
        """Store a batch of events in one transaction and update the affected tickets.

        An event id seen before is counted as a duplicate and changes nothing.
        `meta` (for example a poller's cursor) is written in the same
        transaction, so a cursor never runs ahead of the events it covers.
        The in-memory aggregates change only after the commit, so a failed
        batch leaves both the database and the metrics as they were.
        """
        return self.ingest_groups([events], meta)[0]

    def ingest_groups(self, groups: list[list[TicketEvent]], meta: dict[str, str] | None = None) -> list[IngestResult]:
        """Store several requests' events in one transaction; return one result per request."""
        results = [IngestResult() for _ in groups]
        affected: set[str] = set()
        accepted_types: list[str] = []
        received = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for events, result in zip(groups, results):
                    for event in events:
                        values = _event_values(event, received)
                        if self._insert(values):
                            result.accepted += 1
                            result.ticket_ids.add(event.ticket_id)
                            accepted_types.append(event.type)
                        else:
                            result.duplicates += 1
                            if self._conflicts(values):
                                result.conflict_ids.append(event.id)
                    affected |= result.ticket_ids
                batch = _Batch(self)
                for ticket_id in sorted(affected):
                    self._recompute(ticket_id, batch)
                batch.write()
                for key, value in (meta or {}).items():
                    self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            batch.apply()
            self.events_received.update(accepted_types)
        return results

    def _insert(self, values: tuple) -> bool:
        """Insert one event's row; return False when its id is already stored."""
        cursor = self._db.execute(
            f"INSERT OR IGNORE INTO events ({', '.join(EVENT_COLUMNS)}) VALUES ({', '.join('?' * len(EVENT_COLUMNS))})",
            values,
        )
        return cursor.rowcount == 1

    def _conflicts(self, values: tuple) -> bool:
        """Return whether the stored event with this row's id differs from it (apart from when it arrived)."""
        compared = [column for column in EVENT_COLUMNS if column != "received"]
        stored = self._db.execute(f"SELECT {', '.join(compared)} FROM events WHERE id = ?", (values[0],)).fetchone()
        return stored is not None and tuple(stored) != tuple(
            value for column, value in zip(EVENT_COLUMNS, values) if column != "received")

    def _recompute(self, ticket_id: str, batch: "_Batch", previous: list | None = None) -> None:
        rows = self._db.execute(f"SELECT {', '.join(ROW_COLUMNS)} FROM events WHERE ticket_id = ?", (ticket_id,))
        events = [EventRow(*row) for row in rows]
        state = derive(events, self.policy)
        if previous is None:
            row = self._db.execute("SELECT contributions FROM ticket_state WHERE ticket_id = ?",
                                   (ticket_id,)).fetchone()
            previous = [batch.decode(item) for item in json.loads(row[0])] if row else []

        new = [(name, labels, value, at) for name, labels, value, at in state.contributions]
        removed, added = _difference(previous, new)
        if removed:
            batch.corrections += 1
            logger.info("Corrected ticket observations ticket=%s removed=%d added=%d", ticket_id, len(removed),
                        len(added))
        for item in removed:
            batch.add(item, sign=-1)
        for item in added:
            batch.add(item, sign=1)

        encoded = json.dumps([batch.encode(item) for item in new], separators=(",", ":"))
        labels = json.dumps(state.labels) if state.labels else None
        self._db.execute(
            "INSERT INTO ticket_state (ticket_id, created, open, answered, labels, contributions) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (ticket_id) DO UPDATE SET created = excluded.created, "
            "open = excluded.open, answered = excluded.answered, labels = excluded.labels, "
            "contributions = excluded.contributions",
            (ticket_id, state.created, int(state.open), int(state.answered), labels, encoded),
        )
        if state.open:
            batch.open[ticket_id] = OpenTicket(state.labels, state.created, state.answered)
        else:
            batch.open[ticket_id] = None

    # --- reading ----------------------------------------------------------------------------

    def snapshot(self) -> "Snapshot":
        """Return a consistent copy of the aggregates for one scrape."""
        with self._lock:
            return Snapshot(
                counters={self.series_keys[i]: v for i, v in self.counters.items()},
                histograms={self.series_keys[i]: HistogramValue(list(h.buckets), h.count, h.sum)
                            for i, h in self.histograms.items()},
                open=list(self.open.values()),
                events_received=dict(self.events_received),
                corrections=self.corrections,
            )

    def contributions(self):
        """Yield every stored contribution as (ticket_id, name, labels, value, time); used by the backfill."""
        with self._lock:
            keys = dict(self.series_keys)
            rows = self._db.execute("SELECT ticket_id, contributions FROM ticket_state").fetchall()
        for ticket_id, encoded in rows:
            for series_id, value, at in json.loads(encoded):
                name, labels = keys[series_id]
                yield ticket_id, name, labels, value, at

    def event_id_at(self, ticket_id: str, at: float) -> str | None:
        """Return the id of an event of `ticket_id` with time `at`, or None when there is none."""
        with self._lock:
            row = self._db.execute("SELECT id FROM events WHERE ticket_id = ? AND time = ? ORDER BY id LIMIT 1",
                                   (ticket_id, at)).fetchone()
        return row[0] if row else None


@dataclass
class Snapshot:
    counters: dict[tuple[str, tuple[str, ...]], float]
    histograms: dict[tuple[str, tuple[str, ...]], HistogramValue]
    open: list[OpenTicket]
    events_received: dict[str, int]
    corrections: int


class _Batch:
    """Aggregate changes of one transaction: written to SQLite before COMMIT, to memory after."""

    def __init__(self, store: TicketStore):
        self.store = store
        self.new_series: dict[tuple[str, tuple[str, ...]], int] = {}
        self.counters: dict[int, float] = {}
        self.histograms: dict[int, HistogramValue] = {}
        self.open: dict[str, OpenTicket | None] = {}
        self.corrections = 0

    def series_id(self, name: str, labels: tuple[str, ...]) -> int:
        key = (name, labels)
        found = self.store.series.get(key) or self.new_series.get(key)
        if found is None:
            cursor = self.store._db.execute("INSERT INTO series (name, labels) VALUES (?, ?)",
                                            (name, json.dumps(list(labels))))
            found = self.new_series[key] = cursor.lastrowid
        return found

    def encode(self, item: Contribution) -> list:
        name, labels, value, at = item
        return [self.series_id(name, labels), value, at]

    def decode(self, item: list) -> Contribution:
        series_id, value, at = item
        keys = self.store.series_keys
        name, labels = keys[series_id] if series_id in keys else next(
            key for key, sid in self.new_series.items() if sid == series_id)
        return name, labels, value, at

    def add(self, item: Contribution, sign: int) -> None:
        name, labels, value, _ = item
        series_id = self.series_id(name, labels)
        if name in MEASURES.values():
            histogram = self.histograms.get(series_id)
            if histogram is None:
                stored = self.store.histograms.get(series_id)
                bounds = self.store.buckets[name]
                histogram = self.histograms[series_id] = (
                    HistogramValue(list(stored.buckets), stored.count, stored.sum) if stored
                    else HistogramValue([0] * len(bounds)))
            index = bisect_left(self.store.buckets[name], value)
            if index < len(histogram.buckets):
                histogram.buckets[index] += sign
            histogram.count += sign
            histogram.sum += sign * value
        else:
            current = self.counters.get(series_id, self.store.counters.get(series_id, 0.0))
            self.counters[series_id] = current + sign * value

    def write(self) -> None:
        db = self.store._db
        db.executemany("INSERT OR REPLACE INTO counter_values (series_id, value) VALUES (?, ?)",
                       list(self.counters.items()))
        db.executemany("INSERT OR REPLACE INTO histogram_values (series_id, buckets, count, sum) VALUES (?, ?, ?, ?)",
                       [(i, json.dumps(h.buckets), h.count, h.sum) for i, h in self.histograms.items()])

    def apply(self) -> None:
        store = self.store
        for key, series_id in self.new_series.items():
            store.series[key] = series_id
            store.series_keys[series_id] = key
        store.counters.update(self.counters)
        store.histograms.update(self.histograms)
        for ticket_id, ticket in self.open.items():
            if ticket is None:
                store.open.pop(ticket_id, None)
            else:
                store.open[ticket_id] = ticket
        store.corrections += self.corrections


def _difference(old: list[Contribution], new: list[Contribution]) -> tuple[list, list]:
    """Return (contributions only in old, contributions only in new), as multisets."""
    def key(item):
        name, labels, value, at = item
        return (name, tuple(labels), round(value, 6), round(at, 6))

    old_counts = Counter(key(item) for item in old)
    new_counts = Counter(key(item) for item in new)
    removed = [item for item in old if _unmatched(new_counts, key(item))]
    added = [item for item in new if _unmatched(old_counts, key(item))]
    return removed, added


def _unmatched(theirs: Counter, key) -> bool:
    """Return True when this copy of `key` has no partner in `theirs`; consume one match otherwise."""
    if theirs[key] > 0:
        theirs[key] -= 1
        return False
    return True


def _event_values(event: TicketEvent, received: float) -> tuple:
    """Return an event's row in EVENT_COLUMNS order."""
    return (event.id, event.ticket_id, event.type, event.time, event.channel, event.priority, event.author,
            int(event.public), event.status, received, event.source, event.team, int(event.merge_comment),
            event.reason, event.merged_into)
