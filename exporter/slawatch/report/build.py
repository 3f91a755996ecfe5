"""Assemble the monthly report's numbers from Prometheus and the ticket store.

The result is a `Report` of plain values with no text in it, so the same
numbers render in every locale and tests can check them directly.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

from .. import names
from ..config import Config
from . import queries
from .queries import FIRST_RESPONSE_KPI, HOUR, Period, Prometheus

LATENCY_LEVELS = (0.5, 0.9, 0.99)
TRANSFER_LEVELS = (0.1, 0.5)
WORST_PERIODS = 3
# An hour without failures is listed as a worst period only when its p90 latency
# exceeds the month's p90 by this factor, so a steady month lists none.
SLOW_HOUR_FACTOR = 1.1
# A phase counts as what moved when it grew by at least this share of its month
# average and by at least MIN_PHASE_GROWTH seconds.
PHASE_GROWTH_SHARE = 0.1
MIN_PHASE_GROWTH = 0.001
# An SLO is judged on a month only when probes ran in at least this share of its hours.
MIN_COVERAGE = 0.9


@dataclass
class LocationSummary:
    location: str
    coverage: float
    availability: float | None
    latency: dict[float, float]
    transfer: dict[float, float]


@dataclass
class ServiceSummary:
    service: str
    # Share of the month's hours with probe data; 0 for a configured service that was never measured.
    coverage: float
    availability: float | None
    probes: float
    latency: dict[float, float]
    transfer: dict[float, float]
    locations: list[LocationSummary]
    previous_availability: float | None = None
    previous_p90: float | None = None

    @property
    def measured(self) -> bool:
        return self.availability is not None


@dataclass
class SLOResult:
    name: str
    service: str
    sli: str
    objective: float
    # Share of good events in the month, None when nothing was measured.
    attained: float | None
    coverage: float | None
    threshold: float | None = None

    @property
    def status(self) -> str:
        """Return met, missed, no_data, or partial (enough data to judge only part of the month)."""
        if self.attained is None:
            return "no_data"
        if self.coverage is not None and self.coverage < MIN_COVERAGE:
            return "partial"
        return "met" if self.attained * 100 >= self.objective else "missed"

    @property
    def margin(self) -> float | None:
        """Return attained minus objective in percentage points."""
        return None if self.attained is None else self.attained * 100 - self.objective

    @property
    def budget_spent(self) -> float | None:
        """Return the share of the error budget used: 1.0 is all of it."""
        if self.attained is None:
            return None
        return (1 - self.attained) / (1 - self.objective / 100)


@dataclass
class WorstPeriod:
    service: str
    start: float
    end: float
    error_ratio: float
    p90: float | None
    # {phase: (average in the period, average over the month)}
    phases: dict[str, tuple[float, float]]

    @property
    def moved(self) -> str | None:
        """Return the phase that grew most against the month's average, or None when none grew."""
        growth = {phase: value - baseline for phase, (value, baseline) in self.phases.items()}
        if not growth:
            return None
        phase = max(growth, key=growth.get)
        baseline = self.phases[phase][1]
        if growth[phase] >= max(MIN_PHASE_GROWTH, PHASE_GROWTH_SHARE * baseline):
            return phase
        return None


@dataclass
class Incident:
    alertname: str
    service: str
    slo: str
    severity: str
    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass
class ChannelSupport:
    channel: str
    created: int
    answered: int
    within_kpi: int
    # Tickets whose KPI outcome is known at the month's end: answered, or unanswered for longer than the KPI.
    decided: int
    # Share within 1 hour on the business clock from Prometheus; None when not recorded.
    business_share: float | None
    p50: float | None
    p90: float | None
    backlog: int

    @property
    def share_within(self) -> float | None:
        return self.within_kpi / self.decided if self.decided else None


@dataclass
class CertCheck:
    service: str
    earliest_expiry: float
    expiry_at_end: float
    days_left_at_end: float
    tls_failures: float | None


@dataclass
class Report:
    period: Period
    previous: Period
    services: list[ServiceSummary]
    slos: list[SLOResult]
    worst: list[WorstPeriod]
    incidents: list[Incident]
    support: list[ChannelSupport]
    certs: list[CertCheck]


def build_report(config: Config, prometheus: Prometheus, period: Period) -> Report:
    """Query Prometheus and the ticket store for `period` and return the report's numbers."""
    services = _services(config, prometheus, period)
    by_name = {summary.service: summary for summary in services}
    monthly_p90 = {summary.service: summary.latency.get(0.9) for summary in services if summary.measured}
    return Report(
        period=period,
        previous=period.previous(),
        services=services,
        slos=[_slo_result(slo, prometheus, period, by_name) for slo in config.slos],
        worst=_worst_periods(prometheus, period, monthly_p90),
        incidents=_incidents(prometheus, period),
        support=_support(config, prometheus, period),
        certs=_certs(prometheus, period),
    )


# --- services -------------------------------------------------------------------------


def _services(config: Config, prometheus: Prometheus, period: Period) -> list[ServiceSummary]:
    coverage = queries.coverage(prometheus, period, "service")
    location_coverage = queries.coverage(prometheus, period, "service, location")
    availability = queries.availability(prometheus, period, "service")
    location_availability = queries.availability(prometheus, period, "service, location")
    probes = queries.probe_counts(prometheus, period, "service")
    latency = queries.quantiles(prometheus, period, names.PROBE_DURATION, "service", LATENCY_LEVELS)
    location_latency = queries.quantiles(prometheus, period, names.PROBE_DURATION, "service, location",
                                         LATENCY_LEVELS)
    transfer = queries.quantiles(prometheus, period, names.PROBE_TRANSFER_SPEED, "service", TRANSFER_LEVELS)
    location_transfer = queries.quantiles(prometheus, period, names.PROBE_TRANSFER_SPEED, "service, location",
                                          TRANSFER_LEVELS)
    previous = period.previous()
    previous_availability = queries.availability(prometheus, previous, "service")
    previous_latency = queries.quantiles(prometheus, previous, names.PROBE_DURATION, "service", (0.9,))

    configured = {target.service for target in config.targets}
    configured |= {slo.service for slo in config.slos if slo.sli.startswith("probe_")}
    seen = {key[0] for key in coverage}
    summaries = []
    for service in sorted(configured | seen):
        locations = [
            LocationSummary(
                location=location,
                coverage=share,
                availability=location_availability.get((service, location)),
                latency=location_latency.get((service, location), {}),
                transfer=location_transfer.get((service, location), {}),
            )
            for (name, location), share in sorted(location_coverage.items()) if name == service
        ]
        key = (service,)
        summaries.append(ServiceSummary(
            service=service,
            coverage=coverage.get(key, 0.0),
            # A service without probe counts in the month has no availability, never 100%.
            availability=availability.get(key) if probes.get(key) else None,
            probes=probes.get(key, 0.0),
            latency=latency.get(key, {}),
            transfer=transfer.get(key, {}),
            locations=locations,
            previous_availability=previous_availability.get(key),
            previous_p90=previous_latency.get(key, {}).get(0.9),
        ))
    return summaries


def _slo_result(slo, prometheus: Prometheus, period: Period, services: dict[str, ServiceSummary]) -> SLOResult:
    summary = services.get(slo.service)
    coverage = summary.coverage if summary else None
    if slo.sli == "probe_availability":
        attained = summary.availability if summary else None
    elif slo.sli == "probe_latency":
        attained = queries.share_within(prometheus, period, names.PROBE_DURATION,
                                        f'service="{slo.service}"', slo.threshold)
    else:
        matchers = [f'{label}="{value}"' for label, value in (("channel", slo.channel), ("priority", slo.priority))
                    if value]
        # The calendar clock, or no clock label on exporters that record only one clock.
        matchers.append('clock=~"calendar|"')
        attained = queries.share_within(prometheus, period, names.TICKET_FIRST_RESPONSE, ", ".join(matchers),
                                        slo.threshold)
        coverage = None
    return SLOResult(name=slo.name, service=slo.service, sli=slo.sli, objective=slo.objective,
                     attained=attained, coverage=coverage, threshold=slo.threshold)


# --- worst periods and incidents ----------------------------------------------------------


def _worst_periods(prometheus: Prometheus, period: Period,
                   monthly_p90: dict[str, float | None]) -> list[WorstPeriod]:
    """Return the hours with the most failures, then the highest p90 latency, per service.

    Only hours with failures or with a p90 above SLOW_HOUR_FACTOR times the month's p90 qualify.
    """
    errors = queries.hourly_error_ratio(prometheus, period)
    latency = queries.hourly_latency(prometheus, period, 0.9)
    worst = []
    for service, month_p90 in monthly_p90.items():
        p90_by_hour = dict(latency.get(service, []))
        slow = SLOW_HOUR_FACTOR * month_p90 if month_p90 is not None else math.inf
        hours = [(ratio, p90_by_hour.get(at), at) for at, ratio in errors.get(service, [])
                 if ratio > 0 or (p90_by_hour.get(at) or 0.0) > slow]
        hours.sort(key=lambda item: (item[0], item[1] or 0.0), reverse=True)
        baseline = queries.phase_averages(prometheus, service, period.end, period.window)
        for ratio, p90, at in hours[:WORST_PERIODS]:
            current = queries.phase_averages(prometheus, service, at, "[1h]")
            phases = {phase: (value, baseline.get(phase, 0.0)) for phase, value in current.items()}
            worst.append(WorstPeriod(service=service, start=at - HOUR, end=at, error_ratio=ratio, p90=p90,
                                     phases=phases))
    return worst


def _incidents(prometheus: Prometheus, period: Period) -> list[Incident]:
    """Return firing periods of alerts: consecutive samples no further apart than twice their spacing."""
    incidents = []
    for series in queries.alert_samples(prometheus, period):
        times = sorted(float(at) for at, value in series["values"] if float(value) > 0)
        if not times:
            continue
        gaps = [later - earlier for earlier, later in zip(times, times[1:])]
        spacing = sorted(gaps)[len(gaps) // 2] if gaps else 60.0
        labels = series["metric"]
        run_start = previous = times[0]
        for at in times[1:] + [math.inf]:
            if at - previous > 2 * spacing:
                # The alert fired from its first sample until one sample spacing after its last.
                incidents.append(Incident(
                    alertname=labels.get("alertname", ""), service=labels.get("service", ""),
                    slo=labels.get("slo", ""), severity=labels.get("severity", ""),
                    start=run_start, end=min(previous + spacing, period.end)))
                run_start = at
            previous = at
    incidents.sort(key=lambda incident: incident.start)
    return incidents


# --- support and certificates --------------------------------------------------------------


def nearest_rank(values: list[float], level: float) -> float | None:
    """Return the nearest-rank percentile of `values`: the smallest value with at least `level` of them at or below."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(level * len(ordered)) - 1)]


def _support(config: Config, prometheus: Prometheus, period: Period) -> list[ChannelSupport]:
    rows = queries.tickets_of(config.tickets.database, period)
    business = queries.business_share_within(prometheus, period)
    created: dict[str, int] = defaultdict(int)
    answered: dict[str, int] = defaultdict(int)
    within: dict[str, int] = defaultdict(int)
    decided: dict[str, int] = defaultdict(int)
    backlog: dict[str, int] = defaultdict(int)
    response_times: dict[str, list[float]] = defaultdict(list)

    for row in rows:
        answered_in_time = row.first_response is not None and row.first_response < period.end
        if not answered_in_time:
            backlog[row.channel] += 1
        if row.created < period.start:
            continue
        created[row.channel] += 1
        if answered_in_time:
            seconds = max(0.0, row.first_response - row.created)
            answered[row.channel] += 1
            decided[row.channel] += 1
            response_times[row.channel].append(seconds)
            if seconds <= FIRST_RESPONSE_KPI:
                within[row.channel] += 1
        elif period.end - row.created > FIRST_RESPONSE_KPI:
            decided[row.channel] += 1

    channels = [c for c in config.tickets.channels if c in created or c in backlog]
    channels += sorted((set(created) | set(backlog)) - set(channels))
    return [
        ChannelSupport(channel=channel, created=created[channel], answered=answered[channel],
                       within_kpi=within[channel], decided=decided[channel], business_share=business.get(channel),
                       p50=nearest_rank(response_times[channel], 0.5),
                       p90=nearest_rank(response_times[channel], 0.9), backlog=backlog[channel])
        for channel in channels
    ]


def _certs(prometheus: Prometheus, period: Period) -> list[CertCheck]:
    expiry = queries.cert_expiry(prometheus, period)
    reasons = queries.failures_by_reason(prometheus, period)
    reason_recorded = any(reason for _, reason in reasons)
    checks = []
    for service, (earliest, at_end) in sorted(expiry.items()):
        tls_failures = reasons.get((service, "tls"), 0.0) if reason_recorded else None
        checks.append(CertCheck(service=service, earliest_expiry=earliest, expiry_at_end=at_end,
                                days_left_at_end=(at_end - period.end) / 86400, tls_failures=tls_failures))
    return checks
