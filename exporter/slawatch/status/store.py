"""Durable status data (SQLite): daily probe roll-ups per public service and incidents.

The status page reads only this database and the in-memory recent results,
so it keeps working while Prometheus is down. Days are calendar days in the
configured time zone, keyed by their ISO date.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS daily (
    service TEXT NOT NULL,
    day TEXT NOT NULL,
    probes INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    latency_sum REAL NOT NULL DEFAULT 0,
    latency_count INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (service, day)
);
CREATE TABLE IF NOT EXISTS incidents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    fingerprint TEXT,
    services TEXT NOT NULL,
    state TEXT,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    link TEXT,
    started REAL NOT NULL,
    resolved REAL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS incidents_fingerprint ON incidents (fingerprint, resolved);
"""

# Incident kinds: "incident" comes from Alertmanager, the others from announcements.
KINDS = ("incident", "maintenance", "update", "report")


@dataclass
class DayTotals:
    """Probe counts and latency sums of one service on one day."""

    probes: int = 0
    failures: int = 0
    latency_sum: float = 0.0
    latency_count: int = 0

    def add(self, other: "DayTotals") -> None:
        self.probes += other.probes
        self.failures += other.failures
        self.latency_sum += other.latency_sum
        self.latency_count += other.latency_count


@dataclass
class Incident:
    """An incident or announcement as stored; `title` and `body` map locale to public text.

    For maintenance, `started` and `resolved` are the planned window's start
    and end. For alerts, `resolved` is None while the alert fires.
    """

    id: int
    kind: str
    services: list[str]
    title: dict[str, str]
    body: dict[str, str] = field(default_factory=dict)
    state: str | None = None
    link: str | None = None
    started: float = 0.0
    resolved: float | None = None
    created: float = 0.0
    fingerprint: str | None = None


class StatusStore:
    """SQLite tables of daily roll-ups and incidents; safe to call from executor threads."""

    def __init__(self, path: str):
        self.path = path
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.executescript(SCHEMA)
        self._db.commit()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add_days(self, totals: dict[tuple[str, str], DayTotals]) -> None:
        """Add per-(service, day) totals to the stored roll-ups in one transaction."""
        rows = [(service, day, t.probes, t.failures, t.latency_sum, t.latency_count)
                for (service, day), t in totals.items()]
        with self._lock, self._db:
            self._db.executemany(
                "INSERT INTO daily (service, day, probes, failures, latency_sum, latency_count) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (service, day) DO UPDATE SET "
                "probes = probes + excluded.probes, failures = failures + excluded.failures, "
                "latency_sum = latency_sum + excluded.latency_sum, "
                "latency_count = latency_count + excluded.latency_count",
                rows,
            )

    def days(self, first_day: str) -> dict[tuple[str, str], DayTotals]:
        """Return the roll-ups of every service from `first_day` (ISO date) on."""
        with self._lock:
            rows = self._db.execute(
                "SELECT service, day, probes, failures, latency_sum, latency_count FROM daily WHERE day >= ?",
                (first_day,),
            ).fetchall()
        return {(service, day): DayTotals(probes, failures, latency_sum, latency_count)
                for service, day, probes, failures, latency_sum, latency_count in rows}

    def prune(self, first_day: str, oldest_time: float) -> int:
        """Delete roll-ups before `first_day` and incidents that ended before `oldest_time`."""
        with self._lock, self._db:
            days = self._db.execute("DELETE FROM daily WHERE day < ?", (first_day,)).rowcount
            incidents = self._db.execute(
                "DELETE FROM incidents WHERE resolved IS NOT NULL AND resolved < ?", (oldest_time,)).rowcount
        return days + incidents

    def add_incident(self, incident: Incident) -> int:
        with self._lock, self._db:
            cursor = self._db.execute(
                "INSERT INTO incidents (kind, fingerprint, services, state, title, body, link, started, resolved, "
                "created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (incident.kind, incident.fingerprint, json.dumps(incident.services), incident.state,
                 json.dumps(incident.title, ensure_ascii=False), json.dumps(incident.body, ensure_ascii=False),
                 incident.link, incident.started, incident.resolved, incident.created),
            )
        return int(cursor.lastrowid)

    def open_alert(self, fingerprint: str) -> Incident | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM incidents WHERE kind = 'incident' AND fingerprint = ? AND resolved IS NULL",
                (fingerprint,),
            ).fetchone()
        return _incident(row) if row else None

    def resolve(self, incident_id: int, resolved: float) -> None:
        with self._lock, self._db:
            self._db.execute("UPDATE incidents SET resolved = ? WHERE id = ?", (resolved, incident_id))

    def incidents(self, since: float) -> list[Incident]:
        """Return incidents still open, or that ended or start at or after `since`, newest first."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM incidents WHERE resolved IS NULL OR resolved >= ? "
                "ORDER BY started DESC, id DESC",
                (since,),
            ).fetchall()
        return [_incident(row) for row in rows]


_COLUMNS = "id, kind, fingerprint, services, state, title, body, link, started, resolved, created"


def _incident(row: tuple) -> Incident:
    id_, kind, fingerprint, services, state, title, body, link, started, resolved, created = row
    return Incident(id=id_, kind=kind, fingerprint=fingerprint, services=json.loads(services), state=state,
                    title=json.loads(title), body=json.loads(body), link=link, started=started,
                    resolved=resolved, created=created)
