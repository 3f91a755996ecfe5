"""Read one month of measurements from the Prometheus HTTP API and the ticket store.

Every function takes the month as a `Period` of UTC timestamps [start, end)
and returns plain Python values. Prometheus evaluates month-long windows at
`period.end`, so a range such as `[2592000s]` covers exactly the month.
"""

from __future__ import annotations

import calendar
import json
import logging
import math
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import requests

from .. import names
from ..tickets.lifecycle import REMOVED as REMOVED_TOTAL

logger = logging.getLogger("slawatch.report")
from ..durations import format_le

HOUR = 3600.0
# The support KPI: a first response within 1 hour.
FIRST_RESPONSE_KPI = 3600.0


class ReportError(Exception):
    """A failure that stops the report, with a message for the operator."""


@dataclass(frozen=True)
class Period:
    """A calendar month in UTC, as Unix timestamps [start, end)."""

    year: int
    month: int

    @classmethod
    def parse(cls, text: str) -> "Period":
        try:
            moment = datetime.strptime(text, "%Y-%m")
        except ValueError:
            raise ReportError(f"invalid month {text!r}: use YYYY-MM, for example 2026-11") from None
        return cls(moment.year, moment.month)

    @property
    def label(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def start(self) -> float:
        return datetime(self.year, self.month, 1, tzinfo=timezone.utc).timestamp()

    @property
    def end(self) -> float:
        days = calendar.monthrange(self.year, self.month)[1]
        return self.start + days * 86400

    @property
    def seconds(self) -> int:
        return int(self.end - self.start)

    @property
    def window(self) -> str:
        """Return the PromQL range of the whole month, such as [2592000s]."""
        return f"[{self.seconds}s]"

    def previous(self) -> "Period":
        if self.month == 1:
            return Period(self.year - 1, 12)
        return Period(self.year, self.month - 1)


class Prometheus:
    """A small client of the Prometheus HTTP API (/api/v1/query and /api/v1/query_range)."""

    def __init__(self, url: str, timeout: float = 60.0):
        if not url.startswith(("http://", "https://")):
            raise ReportError(f"--prometheus {url!r} has no http:// or https:// scheme: use a URL such as "
                              "http://127.0.0.1:9090")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()

    def _get(self, path: str, params: dict) -> dict:
        try:
            response = self.session.get(f"{self.url}{path}", params=params, timeout=self.timeout)
        except requests.ConnectionError as error:
            logger.debug("Prometheus request failed url=%s err=%s", self.url, error)
            raise ReportError(f"Prometheus at {self.url} is not reachable: check --prometheus and that "
                              "Prometheus is running") from None
        except requests.RequestException as error:
            raise ReportError(f"Prometheus request to {self.url} failed: {error}: check --prometheus, "
                              "for example http://127.0.0.1:9090") from None
        try:
            body = response.json()
        except ValueError:
            raise ReportError(f"Prometheus at {self.url} returned HTTP {response.status_code} "
                              f"without JSON for {params.get('query')!r}") from None
        if body.get("status") != "success":
            raise ReportError(f"Prometheus query failed: {body.get('error')} (query {params.get('query')!r})")
        return body["data"]

    def query(self, expr: str, at: float) -> list[dict]:
        return self._get("/api/v1/query", {"query": expr, "time": at})["result"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict]:
        return self._get("/api/v1/query_range",
                         {"query": expr, "start": start, "end": end, "step": step})["result"]


def _number(value: str) -> float | None:
    number = float(value)
    return None if math.isnan(number) or math.isinf(number) else number


def _by_labels(result: list[dict], *labels: str) -> dict[tuple[str, ...], float]:
    """Return {label values: value} of an instant-vector result, without NaN values."""
    values = {}
    for series in result:
        number = _number(series["value"][1])
        if number is not None:
            values[tuple(series["metric"].get(label, "") for label in labels)] = number
    return values


# --- probes -------------------------------------------------------------------------


def coverage(prometheus: Prometheus, period: Period, by: str) -> dict[tuple[str, ...], float]:
    """Return the share of the month's hours in which probes ran, per `by` labels.

    An hour counts when the probe counter has at least one sample in it, so a
    target that was not scraped or not configured in an hour lowers the share.
    """
    expr = f"count by ({by}) (count_over_time({names.PROBES_TOTAL}[1h]))"
    hours = period.seconds / HOUR
    covered: dict[tuple[str, ...], int] = {}
    labels = tuple(label.strip() for label in by.split(","))
    for series in prometheus.query_range(expr, period.start + HOUR, period.end, HOUR):
        key = tuple(series["metric"].get(label, "") for label in labels)
        covered[key] = sum(1 for _, value in series["values"] if float(value) > 0)
    return {key: count / hours for key, count in covered.items()}


def availability(prometheus: Prometheus, period: Period, by: str) -> dict[tuple[str, ...], float]:
    """Return 1 - failed / all scheduled probes in the month, per `by` labels."""
    window = period.window
    failed = (f"increase({names.PROBE_FAILURES_TOTAL}{window}) "
              f"or 0 * increase({names.PROBES_TOTAL}{window})")
    expr = f"1 - sum by ({by}) ({failed}) / (sum by ({by}) (increase({names.PROBES_TOTAL}{window})) > 0)"
    return _by_labels(prometheus.query(expr, period.end), *[label.strip() for label in by.split(",")])


def probe_counts(prometheus: Prometheus, period: Period, by: str) -> dict[tuple[str, ...], float]:
    """Return the estimated number of scheduled probes in the month, per `by` labels."""
    expr = f"sum by ({by}) (increase({names.PROBES_TOTAL}{period.window}))"
    return _by_labels(prometheus.query(expr, period.end), *[label.strip() for label in by.split(",")])


def share_within(prometheus: Prometheus, period: Period, histogram: str, matchers: str,
                 threshold: float) -> float | None:
    """Return the share of observations at or below `threshold` (a bucket bound) in the month."""
    window = period.window
    good = f'{histogram}_bucket{{{matchers}{", " if matchers else ""}le="{format_le(threshold)}"}}'
    total = f"{histogram}_count{{{matchers}}}"
    expr = f"sum(increase({good}{window})) / (sum(increase({total}{window})) > 0)"
    values = _by_labels(prometheus.query(expr, period.end))
    return values.get(())


def quantiles(prometheus: Prometheus, period: Period, histogram: str, by: str,
              levels: tuple[float, ...]) -> dict[tuple[str, ...], dict[float, float]]:
    """Return histogram_quantile estimates over the month: {labels: {level: value}}."""
    labels = [label.strip() for label in by.split(",")]
    estimates: dict[tuple[str, ...], dict[float, float]] = {}
    for level in levels:
        expr = (f"histogram_quantile({level}, sum by ({by}, le) "
                f"(increase({histogram}_bucket{period.window})))")
        for key, value in _by_labels(prometheus.query(expr, period.end), *labels).items():
            estimates.setdefault(key, {})[level] = value
    return estimates


def hourly_series(prometheus: Prometheus, period: Period, expr: str, label: str) -> dict[str, list[tuple[float, float]]]:
    """Return [(hour end, value)] per value of `label` for an expression over [1h] windows."""
    series: dict[str, list[tuple[float, float]]] = {}
    for item in prometheus.query_range(expr, period.start + HOUR, period.end, HOUR):
        points = [(float(at), number) for at, value in item["values"] if (number := _number(value)) is not None]
        series[item["metric"].get(label, "")] = points
    return series


def hourly_error_ratio(prometheus: Prometheus, period: Period) -> dict[str, list[tuple[float, float]]]:
    failed = f"increase({names.PROBE_FAILURES_TOTAL}[1h]) or 0 * increase({names.PROBES_TOTAL}[1h])"
    expr = f"sum by (service) ({failed}) / (sum by (service) (increase({names.PROBES_TOTAL}[1h])) > 0)"
    return hourly_series(prometheus, period, expr, "service")


def hourly_latency(prometheus: Prometheus, period: Period, level: float) -> dict[str, list[tuple[float, float]]]:
    expr = (f"histogram_quantile({level}, sum by (service, le) "
            f"(increase({names.PROBE_DURATION}_bucket[1h])))")
    return hourly_series(prometheus, period, expr, "service")


def daily_availability(prometheus: Prometheus, period: Period) -> dict[str, list[tuple[float, float]]]:
    failed = f"increase({names.PROBE_FAILURES_TOTAL}[1d]) or 0 * increase({names.PROBES_TOTAL}[1d])"
    expr = f"1 - sum by (service) ({failed}) / (sum by (service) (increase({names.PROBES_TOTAL}[1d])) > 0)"
    series: dict[str, list[tuple[float, float]]] = {}
    for item in prometheus.query_range(expr, period.start + 86400, period.end, 86400):
        points = [(float(at), number) for at, value in item["values"] if (number := _number(value)) is not None]
        series[item["metric"].get("service", "")] = points
    return series


def phase_averages(prometheus: Prometheus, service: str, at: float, window: str) -> dict[str, float]:
    """Return the average duration of each HTTP phase of `service` over `window` ending at `at`."""
    selector = f'{names.PROBE_HTTP_PHASE}{{service="{service}"}}'
    expr = f"avg by (phase) (avg_over_time({selector}{window}))"
    return {key[0]: value for key, value in _by_labels(prometheus.query(expr, at), "phase").items()}


def cert_expiry(prometheus: Prometheus, period: Period) -> dict[str, tuple[float, float]]:
    """Return (earliest expiry seen in the month, expiry at the month's end) per service, as Unix times."""
    window = period.window
    lowest = _by_labels(prometheus.query(
        f"min by (service) (min_over_time({names.PROBE_SSL_EXPIRY}{window}))", period.end), "service")
    last = _by_labels(prometheus.query(
        f"min by (service) (last_over_time({names.PROBE_SSL_EXPIRY}{window}))", period.end), "service")
    return {key[0]: (value, last.get(key, value)) for key, value in lowest.items()}


def failures_by_reason(prometheus: Prometheus, period: Period) -> dict[tuple[str, str], float]:
    """Return failed probes in the month per (service, reason); the reason is empty when not recorded."""
    expr = f"sum by (service, reason) (increase({names.PROBE_FAILURE_REASONS_TOTAL}{period.window})) > 0"
    return _by_labels(prometheus.query(expr, period.end), "service", "reason")


def alert_samples(prometheus: Prometheus, period: Period) -> list[dict]:
    """Return the raw samples of firing ALERTS in the month, one entry per alert series."""
    expr = f'ALERTS{{alertstate="firing"}}{period.window}'
    return prometheus.query(expr, period.end)


def business_share_within(prometheus: Prometheus, period: Period) -> dict[str, float]:
    """Return the share of first responses within 1 hour on the business clock, per channel.

    Empty when the exporter does not record the clock label.
    """
    window = period.window
    bucket = f'{names.TICKET_FIRST_RESPONSE}_bucket{{clock="business", le="{format_le(FIRST_RESPONSE_KPI)}"}}'
    total = f'{names.TICKET_FIRST_RESPONSE}_count{{clock="business"}}'
    expr = (f"sum by (channel) (increase({bucket}{window})) "
            f"/ (sum by (channel) (increase({total}{window})) > 0)")
    return {key[0]: value for key, value in _by_labels(prometheus.query(expr, period.end), "channel").items()}


# --- tickets ------------------------------------------------------------------------


@dataclass
class TicketRow:
    channel: str
    priority: str
    created: float
    first_response: float | None


def tickets_of(database: str | Path, period: Period) -> list[TicketRow]:
    """Return the tickets created before the end of `period` that were unanswered at its start or later.

    The store is opened read-only, so the report can run next to a live exporter.
    """
    path = Path(database)
    if not path.is_file():
        raise ReportError(f"ticket store {path} not found: set tickets.database in the config "
                          "to the exporter's database file")
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        series = {series_id: (name, json.loads(labels))
                  for series_id, name, labels in connection.execute("SELECT id, name, labels FROM series")}
        states = connection.execute(
            "SELECT created, labels, contributions FROM ticket_state WHERE created IS NOT NULL AND created < ?",
            (period.end,),
        ).fetchall()
    except sqlite3.Error as error:
        raise ReportError(f"cannot read the ticket store {path}: {error}") from None
    finally:
        connection.close()

    result = []
    for created, labels, contributions in states:
        _, channel, priority, _ = json.loads(labels)
        first_response = None
        removed = False
        # A ticket's contributions are [series id, value, Unix time]; the first-response observation on the
        # calendar clock is made at the moment of the first response.
        for series_id, _, at in json.loads(contributions):
            name, series_labels = series.get(series_id, ("", []))
            if name == names.TICKET_FIRST_RESPONSE and series_labels[-1] == "calendar":
                first_response = at
            elif name == REMOVED_TOTAL:
                removed = True
        if removed:
            continue
        if first_response is None or first_response >= period.start or created >= period.start:
            result.append(TicketRow(channel, priority, created, first_response))
    return result
