"""PromQL for the SLI of each SLO kind: its error ratio and its event count over a window.

Every error ratio guards its denominator with `> 0`, so a window without
events returns no series instead of NaN. docs/slo-rules.md shows the
expression of each kind.
"""

from __future__ import annotations

from .. import names
from ..config import SLO, WINDOW_PLACEHOLDER
from ..durations import format_duration, format_le

PROBE_SUCCESS = "probe_success"


def selector(metric: str, matchers: dict[str, str]) -> str:
    """Return `metric{key="value",...}` with the values escaped for PromQL."""
    if not matchers:
        return metric
    escaped = ",".join(f'{key}="{escape(value)}"' for key, value in matchers.items())
    return f"{metric}{{{escaped}}}"


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def ticket_matchers(slo: SLO) -> dict[str, str]:
    """Return the matchers of a ticket SLO's time histogram."""
    matchers = {}
    if slo.channel:
        matchers["channel"] = slo.channel
    if slo.priority:
        matchers["priority"] = slo.priority
    if slo.ticket_team:
        matchers["team"] = slo.ticket_team
    matchers["clock"] = slo.clock
    matchers.update(slo.matchers)
    return matchers


def probe_matchers(slo: SLO) -> dict[str, str]:
    return {"service": slo.service, **slo.matchers}


def histogram(slo: SLO) -> tuple[str, dict[str, str]]:
    """Return the histogram name and matchers of a threshold SLI."""
    if slo.sli == "probe_latency":
        return names.PROBE_DURATION, probe_matchers(slo)
    if slo.sli == "transfer_speed":
        return names.PROBE_TRANSFER_SPEED, probe_matchers(slo)
    if slo.sli == "ticket_first_response":
        return names.TICKET_FIRST_RESPONSE, ticket_matchers(slo)
    return names.TICKET_RESOLUTION, ticket_matchers(slo)


def fill_window(query: str, window: float) -> str:
    return query.replace(WINDOW_PLACEHOLDER, format_duration(window))


def error_ratio_expr(slo: SLO, window: float) -> str:
    """Return the PromQL error ratio of `slo` over `window` seconds."""
    range_ = f"[{format_duration(window)}]"

    if slo.sli == "probe_availability" and slo.source == "probe_success":
        # probe_success is 1 or 0 per /probe scrape, so its sum counts the good
        # scrapes and count_over_time counts all of them.
        samples = selector(PROBE_SUCCESS, slo.matchers)
        good = f"sum(sum_over_time({samples}{range_}))"
        total = f"sum(count_over_time({samples}{range_}))"
        return f"1 - {good} / ({total} > 0)"

    if slo.sli == "probe_availability":
        matchers = probe_matchers(slo)
        failures = f"rate({selector(names.PROBE_FAILURES_TOTAL, matchers)}{range_})"
        probes = f"rate({selector(names.PROBES_TOTAL, matchers)}{range_})"
        # A service whose failure counter was never created counts as zero failures.
        return f"sum({failures} or 0 * {probes}) / (sum({probes}) > 0)"

    if slo.sli == "custom_ratio":
        total = fill_window(slo.total_query, window)
        if slo.bad_query is not None:
            return f"({fill_window(slo.bad_query, window)}) / (({total}) > 0)"
        return f"1 - ({fill_window(slo.good_query, window)}) / (({total}) > 0)"

    metric, matchers = histogram(slo)
    bucket = selector(metric + "_bucket", {**matchers, "le": format_le(slo.threshold)})
    below = f"sum(rate({bucket}{range_}))"
    total = f"sum(rate({selector(metric + '_count', matchers)}{range_}))"
    if slo.sli == "transfer_speed":
        # A transfer at or below the threshold speed is bad.
        return f"{below} / ({total} > 0)"
    return f"1 - {below} / ({total} > 0)"


def events_expr(slo: SLO, window: float) -> str:
    """Return the PromQL number of events of `slo` in `window` seconds (extrapolated like increase())."""
    range_ = f"[{format_duration(window)}]"

    if slo.sli == "probe_availability" and slo.source == "probe_success":
        return f"sum(count_over_time({selector(PROBE_SUCCESS, slo.matchers)}{range_}))"
    if slo.sli == "probe_availability":
        return f"sum(increase({selector(names.PROBES_TOTAL, probe_matchers(slo))}{range_}))"
    if slo.sli == "custom_ratio":
        # total_query is a per-second rate, as in Sloth's specs.
        return f"({fill_window(slo.total_query, window)}) * {window:g}"
    metric, matchers = histogram(slo)
    return f"sum(increase({selector(metric + '_count', matchers)}{range_}))"


def absent_expr(slo: SLO, activity_window: float, absent_window: float) -> str:
    """Return the PromQL that is non-empty while the data of `slo` is missing.

    `activity_window` is how long a scheduled-probe counter may stay flat, and
    `absent_window` the range used for /probe scrapes and custom queries.
    """
    if slo.sli in ("probe_latency", "transfer_speed") or (
        slo.sli == "probe_availability" and slo.source == "counters"
    ):
        probes = selector(names.PROBES_TOTAL, probe_matchers(slo))
        # absent() covers a series that is gone, for example when the exporter is
        # down. The increase covers an exporter that is scraped but no longer probes.
        return f"absent({probes}) or sum(increase({probes}[{format_duration(activity_window)}])) == 0"
    if slo.sli == "probe_availability":
        return f"absent_over_time({selector(PROBE_SUCCESS, slo.matchers)}[{format_duration(absent_window)}])"
    if slo.sli == "custom_ratio":
        return f"absent({fill_window(slo.total_query, absent_window)})"
    # Hours without tickets are normal, so only a missing counter means missing data.
    return f"absent({absent_ticket_selector(slo)})"


def absent_ticket_selector(slo: SLO) -> str:
    """Return the ticket counter selector that must exist while the exporter serves the SLO's tickets.

    Only channel and priority are matched, the labels that the exporter
    exports for every configured channel and priority even without tickets.
    """
    matchers = {}
    if slo.channel:
        matchers["channel"] = slo.channel
    if slo.priority:
        matchers["priority"] = slo.priority
    return selector(names.TICKETS_CREATED_TOTAL, matchers)
