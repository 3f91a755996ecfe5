"""The status page's model: daily roll-ups, recent results, incidents and service states.

`StatusTracker.observe` is the scheduler's probe observer. It counts each
result of a public target into an in-memory day total, which `flush` adds
to the SQLite roll-ups, and keeps the results of the last
`status.thresholds.window` for the current state.

State of a public service, worst first:

- maintenance: an announced maintenance window for the service is running now;
  it replaces every other state, because failures during planned work are expected;
- major_outage, partial_outage, degraded: the worst of the probe state and
  the state of each open alert incident (`status.alert_states` by severity).
  The probe state compares the failure ratio over the window with the
  configured ratios, and the mean latency of successful probes with
  `degraded_latency`;
- operational: recent probes exist and none of the above applies;
- no_data: no probe result within the window and no open incident.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from ..config import Config, StatusConfig, Target
from ..probers import ProbeResult
from .inputs import alert_fingerprint, alert_time
from .store import DayTotals, Incident, StatusStore

logger = logging.getLogger("slawatch.status")

SEVERITY = {"operational": 0, "degraded": 1, "partial_outage": 2, "major_outage": 3}
# Results kept per service for the current state, whatever the window.
MAX_RECENT = 10000


@dataclass(frozen=True)
class RecentResult:
    time: float
    success: bool
    duration: float


@dataclass
class ServiceStatus:
    service: str
    state: str
    days: list[tuple[str, DayTotals]]
    recent_probes: int
    recent_failures: int
    recent_latency: float | None


def public_services(config: Config) -> list[str]:
    """Return the services that have at least one public target, in config order."""
    services: list[str] = []
    for target in config.targets:
        if target.public and target.service not in services:
            services.append(target.service)
    return services


class StatusTracker:
    """Collects what the status page shows; methods other than `observe` may block on SQLite."""

    def __init__(self, config: Config, store: StatusStore):
        self.store = store
        self._pending: dict[tuple[str, str], DayTotals] = defaultdict(DayTotals)
        self._recent: dict[str, deque[RecentResult]] = defaultdict(lambda: deque(maxlen=MAX_RECENT))
        # Alertmanager sends the same alert to several receivers at once, and
        # each request runs in its own executor thread.
        self._alert_lock = threading.Lock()
        self.apply(config)

    def apply(self, config: Config) -> None:
        self.config = config
        self.status: StatusConfig = config.status
        self.zone = ZoneInfo(config.status.timezone)
        self.services = public_services(config)

    def day_of(self, seconds: float) -> str:
        return datetime.fromtimestamp(seconds, self.zone).date().isoformat()

    def observe(self, target: Target, result: ProbeResult, now: float | None = None) -> None:
        """Count one scheduled probe result of a public target; private targets are ignored."""
        if not target.public:
            return
        now = time.time() if now is None else now
        totals = self._pending[(target.service, self.day_of(now))]
        totals.probes += 1
        if result.success:
            totals.latency_sum += result.duration
            totals.latency_count += 1
        else:
            totals.failures += 1
        self._recent[target.service].append(RecentResult(now, result.success, result.duration))

    def flush(self, now: float | None = None) -> None:
        """Add the pending day totals to the database and delete data older than the retention."""
        now = time.time() if now is None else now
        pending, self._pending = self._pending, defaultdict(DayTotals)
        if pending:
            try:
                self.store.add_days(pending)
            except Exception:
                # Keep the totals for the next flush, so a full disk loses no probe.
                for key, totals in pending.items():
                    self._pending[key].add(totals)
                raise
        first_day = self.first_day(now)
        oldest = now - self.status.retention_days * 86400
        removed = self.store.prune(first_day.isoformat(), oldest)
        if removed:
            logger.info("Deleted status data older than the retention rows=%d first_day=%s", removed, first_day)

    def first_day(self, now: float) -> date:
        today = datetime.fromtimestamp(now, self.zone).date()
        return today - timedelta(days=self.status.retention_days - 1)

    def record_alerts(self, alerts: list[dict], now: float | None = None) -> int:
        """Open an incident per firing alert of a public service and resolve it when the alert resolves.

        Return the number of incidents opened or resolved. Alerts without a
        `service` label of a public service are ignored.
        """
        now = time.time() if now is None else now
        with self._alert_lock:
            return self._record_alerts(alerts, now)

    def _record_alerts(self, alerts: list[dict], now: float) -> int:
        changed = 0
        for alert in alerts:
            labels = alert.get("labels") if isinstance(alert.get("labels"), dict) else {}
            service = labels.get("service")
            if service not in self.services:
                continue
            fingerprint = alert_fingerprint(alert)
            open_incident = self.store.open_alert(fingerprint)
            if alert.get("status") == "resolved":
                if open_incident is not None:
                    self.store.resolve(open_incident.id, alert_time(alert.get("endsAt"), now))
                    changed += 1
                continue
            if open_incident is not None:
                continue
            severity = str(labels.get("severity", ""))
            self.store.add_incident(Incident(
                id=0, kind="incident", fingerprint=fingerprint, services=[service],
                state=self.status.alert_states.get(severity, "degraded"),
                title=dict(self.status.alert_titles.get(str(labels.get("alertname", "")), {})),
                started=alert_time(alert.get("startsAt"), now), resolved=None, created=now,
            ))
            changed += 1
        return changed

    def add_announcement(self, incident: Incident) -> int:
        return self.store.add_incident(incident)

    def probe_state(self, service: str, now: float) -> tuple[str, int, int, float | None]:
        """Return the state from recent probes, with the window's probe count, failures and mean latency."""
        thresholds = self.status.thresholds
        since = now - thresholds.window
        recent = [r for r in self._recent.get(service, ()) if r.time >= since]
        if not recent:
            return "no_data", 0, 0, None
        failures = sum(1 for r in recent if not r.success)
        successes = [r.duration for r in recent if r.success]
        latency = sum(successes) / len(successes) if successes else None
        ratio = failures / len(recent)
        if ratio >= thresholds.major_outage_failure_ratio:
            state = "major_outage"
        elif ratio >= thresholds.partial_outage_failure_ratio:
            state = "partial_outage"
        elif ratio >= thresholds.degraded_failure_ratio:
            state = "degraded"
        elif thresholds.degraded_latency is not None and latency is not None and latency > thresholds.degraded_latency:
            state = "degraded"
        else:
            state = "operational"
        return state, len(recent), failures, latency

    def snapshot(self, now: float | None = None) -> tuple[list[ServiceStatus], list[Incident]]:
        """Return every public service's status and the incidents within the retention, newest first."""
        now = time.time() if now is None else now
        first_day = self.first_day(now)
        stored = self.store.days(first_day.isoformat())
        for key, totals in self._pending.items():
            stored.setdefault(key, DayTotals()).add(totals)
        incidents = self.store.incidents(now - self.status.retention_days * 86400)
        # An alert's service may have stopped being public since: show only public services.
        incidents = [i for i in incidents if all(s in self.services for s in i.services)]

        day_keys = [(first_day + timedelta(days=n)).isoformat() for n in range(self.status.retention_days)]
        statuses = []
        for service in self.services:
            state, probes, failures, latency = self.probe_state(service, now)
            for incident in incidents:
                if service not in incident.services and incident.services:
                    continue
                if incident.kind == "incident" and incident.resolved is None and incident.state in SEVERITY:
                    if state == "no_data" or SEVERITY[incident.state] > SEVERITY[state]:
                        state = incident.state
            if any(i.kind == "maintenance" and (service in i.services or not i.services)
                   and i.started <= now < (i.resolved or now) for i in incidents):
                state = "maintenance"
            days = [(day, stored.get((service, day), DayTotals())) for day in day_keys]
            statuses.append(ServiceStatus(service, state, days, probes, failures, latency))
        return statuses, incidents
