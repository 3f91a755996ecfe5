"""The monthly report on two months of generated history with known truth.

`history()` writes November 2026 and the end of October as OpenMetrics, promtool turns
them into TSDB blocks, and a real Prometheus serves them. The ticket store is
filled through TicketStore.ingest. The truth the checks use:

- shop probes from eu and us, 15 probes per 15 minutes in November (one per
  minute). October has probes only on its last two days, sampled hourly. eu fails every probe on
  2026-11-10 02:00-04:00 (120 failures of 86400 probes), and an alert series
  fires for those two hours. us answers in (0.25, 0.5] s, eu in (0.1, 0.25] s,
  except 2026-11-20 14:00-15:00 when us takes (1, 2.5] s because the
  processing phase grows from 0.1 s to 2 s.
- api probes only until 2026-11-16 00:00 (half of November), never failing.
- search is configured but never measured.
- shop's certificate expires 2026-11-20 until 2026-11-03, then 2027-01-10.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from slawatch import names
from slawatch.config import TicketsConfig, load_config
from slawatch.report import Period, ReportError, build_report, write_report
from slawatch.report.build import nearest_rank
from slawatch.report.queries import Prometheus
from slawatch.tickets.events import TicketEvent
from slawatch.tickets.build import build_store

from conftest import free_port, require_binary, wait_http, write_config

pytestmark = pytest.mark.integration

DURATION_BUCKETS = [0.1, 0.25, 0.5, 1.0, 2.5, 5.0]
TRANSFER_BUCKETS = [1e5, 1e6, 1e7]
PHASES = {"resolve": 0.01, "connect": 0.02, "tls": 0.05, "processing": 0.1, "transfer": 0.02}


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=timezone.utc).timestamp()


# October has data only in its last two days: enough for month-over-month, and
# promtool writes one block per 2 hours of history, which dominates the runtime.
OCTOBER_HISTORY = utc(2026, 10, 30)
NOVEMBER = utc(2026, 11, 1)
DECEMBER = utc(2026, 12, 1)
API_GAP_START = utc(2026, 11, 16)
OUTAGE = (utc(2026, 11, 10, 2), utc(2026, 11, 10, 4))
SLOW_HOUR = (utc(2026, 11, 20, 14), utc(2026, 11, 20, 15))
CERT_RENEWED = utc(2026, 11, 3)
OLD_CERT_EXPIRY = utc(2026, 11, 20)
NEW_CERT_EXPIRY = utc(2027, 1, 10)
SERIES = [("shop", "eu"), ("shop", "us"), ("api", "eu")]
# First-response histogram of email/normal tickets on both clocks: cumulative
# counts per bound, all observed at TICKETS_OBSERVED. 6 of 10 first responses
# took at most 1 hour on the calendar clock, 8 of 10 on the business clock.
FIRST_RESPONSE_BOUNDS = ["600.0", "3600.0", "7200.0", "+Inf"]
FIRST_RESPONSE_HISTOGRAMS = {"calendar": [2, 6, 9, 10], "business": [3, 8, 10, 10]}
TICKETS_OBSERVED = utc(2026, 11, 15, 12)


def sample_times(service: str) -> list[tuple[float, float]]:
    """Return (time, probes since the previous sample): hourly on Oct 30-31, every 15 minutes in November."""
    times = [(OCTOBER_HISTORY + hour * 3600, 60.0) for hour in range(1, 48)]
    end = API_GAP_START if service == "api" else DECEMBER + 1
    at = NOVEMBER
    while at < end:
        times.append((at, 60.0 if at == NOVEMBER else 15.0))
        at += 900
    return times


def in_window(at: float, window: tuple[float, float]) -> bool:
    """Whether the sample at `at` counts probes of (start, end]: a sample covers the 15 minutes before it."""
    return window[0] < at <= window[1]


def labels(**values: str) -> str:
    return "{" + ",".join(f'{key}="{value}"' for key, value in values.items()) + "}"


def history() -> str:
    """Return the OpenMetrics text of October and November; each series is written in time order."""
    probes, failures, duration, transfer, phase, expiry = [], [], [], [], [], []
    for service, location in SERIES:
        base = labels(service=service, location=location, module="http_2xx")[:-1]
        total = failed = 0.0
        counts = [0.0] * (len(DURATION_BUCKETS) + 1)
        speeds = [0.0] * (len(TRANSFER_BUCKETS) + 1)
        duration_sum = 0.0
        for at, count in sample_times(service):
            total += count
            if location == "eu" and service == "shop" and in_window(at, OUTAGE):
                failed += count
            probes.append(f"slawatch_probes_total{base}}} {total} {at:.0f}")
            failures.append(f"slawatch_probe_failures_total{base}}} {failed} {at:.0f}")
            if location == "us":
                seconds = 2.0 if in_window(at, SLOW_HOUR) else 0.4
            else:
                seconds = 0.2
            index = next(i for i, bound in enumerate(DURATION_BUCKETS + [math.inf]) if seconds <= bound)
            counts[index] += count
            duration_sum += seconds * count
            cumulative = 0.0
            for bound, bucket in zip(DURATION_BUCKETS + [math.inf], counts):
                cumulative += bucket
                le = "+Inf" if bound == math.inf else repr(bound)
                duration.append(f'{names.PROBE_DURATION}_bucket{base},le="{le}"}} {cumulative} {at:.0f}')
            duration.append(f"{names.PROBE_DURATION}_count{base}}} {total} {at:.0f}")
            duration.append(f"{names.PROBE_DURATION}_sum{base}}} {duration_sum} {at:.0f}")
            if service == "shop":
                speeds[2] += count
                cumulative = 0.0
                for bound, bucket in zip(TRANSFER_BUCKETS + [math.inf], speeds):
                    cumulative += bucket
                    le = "+Inf" if bound == math.inf else f"{bound:.1f}"
                    transfer.append(f'{names.PROBE_TRANSFER_SPEED}_bucket{base},le="{le}"}} {cumulative} {at:.0f}')
                transfer.append(f"{names.PROBE_TRANSFER_SPEED}_count{base}}} {total} {at:.0f}")
                transfer.append(f"{names.PROBE_TRANSFER_SPEED}_sum{base}}} {total * 5e6} {at:.0f}")
                cert = OLD_CERT_EXPIRY if at < CERT_RENEWED else NEW_CERT_EXPIRY
                expiry.append(f"{names.PROBE_SSL_EXPIRY}{base}}} {cert:.0f} {at:.0f}")
        for name, normal in PHASES.items():
            for at, _ in sample_times(service):
                value = 2.0 if (name == "processing" and location == "us" and in_window(at, SLOW_HOUR)) else normal
                phase.append(f'{names.PROBE_HTTP_PHASE}{base},phase="{name}"}} {value} {at:.0f}')

    tickets = []
    for clock, cumulative_counts in FIRST_RESPONSE_HISTOGRAMS.items():
        base = labels(channel="email", priority="normal", clock=clock)[:-1]
        for at, _ in sample_times("shop"):
            counts = cumulative_counts if at >= TICKETS_OBSERVED else [0] * len(cumulative_counts)
            for bound, count in zip(FIRST_RESPONSE_BOUNDS, counts):
                tickets.append(f'{names.TICKET_FIRST_RESPONSE}_bucket{base},le="{bound}"}} {count} {at:.0f}')
            tickets.append(f"{names.TICKET_FIRST_RESPONSE}_count{base}}} {counts[-1]} {at:.0f}")
            tickets.append(f"{names.TICKET_FIRST_RESPONSE}_sum{base}}} {counts[-1] * 3000} {at:.0f}")

    alert = labels(alertname="SLOErrorBudgetBurn", alertstate="firing", service="shop",
                   slo="shop-availability", severity="page")
    alerts = [f"ALERTS{alert} 1 {at:.0f}" for at, _ in sample_times("shop") if in_window(at, OUTAGE)]

    def family(name: str, kind: str, lines: list[str]) -> list[str]:
        return [f"# TYPE {name} {kind}"] + lines

    text = (family("slawatch_probes", "counter", probes)
            + family("slawatch_probe_failures", "counter", failures)
            + family(names.PROBE_DURATION, "histogram", duration)
            + family(names.PROBE_TRANSFER_SPEED, "histogram", transfer)
            + family(names.PROBE_HTTP_PHASE, "gauge", phase)
            + family(names.PROBE_SSL_EXPIRY, "gauge", expiry)
            + family(names.TICKET_FIRST_RESPONSE, "histogram", tickets)
            + family("ALERTS", "gauge", alerts))
    return "\n".join(text) + "\n# EOF\n"


# (ticket id, channel, created, first response or None); times in seconds.
TICKETS = (
    [(f"E-{n}", "email", utc(2026, 11, 5 + n, 10), seconds)
     for n, seconds in enumerate([600, 1200, 1800, 2400, 3000, 3600, 4000, 5000, 7200, None])]
    + [(f"C-{n}", "chat", utc(2026, 11, 12, 9 + n), seconds) for n, seconds in enumerate([60, 120, 180, 240])]
    + [
        # Created on the last evening, answered in December: unanswered at the month's end.
        ("E-late", "email", utc(2026, 11, 30, 23, 30), 3600),
        # Created and answered in October: outside November.
        ("E-oct", "email", utc(2026, 10, 20, 9), 600),
        # Created in October, never answered: November's backlog only.
        ("P-old", "phone", utc(2026, 10, 31, 22), None),
    ]
)


def fill_ticket_store(path: Path) -> None:
    store, _ = build_store(TicketsConfig(database=str(path), first_response_buckets=[60, 300, 900, 1800, 3600,
                                                                                      7200, 14400]))
    events = []
    for ticket_id, channel, created, seconds in TICKETS:
        events.append(TicketEvent(id=f"{ticket_id}-c", type="ticket.created", ticket_id=ticket_id, time=created,
                                  channel=channel, priority="normal"))
        if seconds is not None:
            events.append(TicketEvent(id=f"{ticket_id}-r", type="ticket.replied", ticket_id=ticket_id,
                                      time=created + seconds, author="agent", public=True))
    store.ingest(events)
    store.close()


@pytest.fixture(scope="module")
def month(tmp_path_factory):
    """Build the TSDB, start Prometheus on it, fill the ticket store; yield (config, Prometheus URL, workdir)."""
    prometheus_bin = require_binary("prometheus")
    promtool = require_binary("promtool")
    workdir = tmp_path_factory.mktemp("report")
    (workdir / "history.om").write_text(history(), encoding="utf-8")
    data = workdir / "data"
    subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", "--quiet",
                    str(workdir / "history.om"), str(data)], check=True, timeout=600)
    (workdir / "prometheus.yml").write_text(yaml.safe_dump({"global": {"scrape_interval": "1m"}}))
    port = free_port()
    process = subprocess.Popen(
        [prometheus_bin, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={data}",
         # The history is older than the default 15d retention.
         "--storage.tsdb.retention.time=100y", "--query.lookback-delta=1h",
         f"--web.listen-address=127.0.0.1:{port}"],
        cwd=workdir, stdout=open(workdir / "prometheus.log", "w"), stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/-/ready", timeout=180, process=process)
        fill_ticket_store(workdir / "tickets.db")
        config = {
            "global": {"location": "eu", "probe_duration_buckets": DURATION_BUCKETS},
            "modules": {"http_2xx": {"prober": "http", "timeout": "2s"}},
            "targets": [{"service": service, "url": f"http://127.0.0.1:9/{service}", "module": "http_2xx"}
                        for service in ("shop", "api", "search")],
            "tickets": {"database": str(workdir / "tickets.db")},
            "slos": [
                {"name": "shop-availability", "service": "shop", "sli": "probe_availability", "objective": 99.9},
                {"name": "shop-latency", "service": "shop", "sli": "probe_latency", "objective": 99.9,
                 "threshold": "500ms"},
                {"name": "api-availability", "service": "api", "sli": "probe_availability", "objective": 99},
                {"name": "search-availability", "service": "search", "sli": "probe_availability",
                 "objective": 99},
                {"name": "email-first-response", "service": "support", "sli": "ticket_first_response",
                 "objective": 90, "threshold": "1h", "channel": "email"},
            ],
        }
        config_path = write_config(workdir / "slawatch.yml", config)
        yield load_config(config_path), url, workdir
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def report(month):
    config, url, _ = month
    return build_report(config, Prometheus(url), Period.parse("2026-11"))


def service(report, name):
    return next(summary for summary in report.services if summary.service == name)


def slo(report, name):
    return next(result for result in report.slos if result.name == name)


# Histogram-derived ratios from increase() carry extrapolation at the window edges;
# availability and SLO shares are checked to within 0.001 percentage points.
RATIO_TOLERANCE = 1e-5


def test_availability_matches_truth(report):
    shop = service(report, "shop")
    eu = next(location for location in shop.locations if location.location == "eu")
    us = next(location for location in shop.locations if location.location == "us")

    assert shop.availability == pytest.approx(1 - 120 / 86400, abs=RATIO_TOLERANCE)
    assert eu.availability == pytest.approx(1 - 120 / 43200, abs=RATIO_TOLERANCE)
    assert us.availability == pytest.approx(1.0, abs=RATIO_TOLERANCE)
    assert shop.coverage == pytest.approx(1.0)


def test_slo_attainment_matches_truth(report):
    availability = slo(report, "shop-availability")
    latency = slo(report, "shop-latency")

    assert availability.status == "missed"
    assert availability.margin == pytest.approx((1 - 120 / 86400) * 100 - 99.9, abs=1e-3)
    assert availability.budget_spent == pytest.approx((120 / 86400) / 0.001, rel=1e-2)
    assert latency.status == "met"
    assert latency.attained == pytest.approx(1 - 60 / 86400, abs=RATIO_TOLERANCE)


def test_ticket_slo_reads_calendar_clock(report):
    result = slo(report, "email-first-response")

    assert result.attained == pytest.approx(0.6, abs=RATIO_TOLERANCE)
    assert result.status == "missed"


def test_gap_reports_coverage_not_full_month(report):
    api = service(report, "api")
    search = service(report, "search")

    assert api.coverage == pytest.approx(0.5, abs=1 / 720)
    assert slo(report, "api-availability").status == "partial"
    assert search.coverage == 0.0
    assert search.availability is None
    assert slo(report, "search-availability").status == "no_data"
    assert slo(report, "search-availability").attained is None


def test_latency_within_bucket_resolution(report):
    shop = service(report, "shop")
    eu = next(location for location in shop.locations if location.location == "eu")
    us = next(location for location in shop.locations if location.location == "us")

    assert 0.1 <= eu.latency[0.5] <= 0.25
    assert 0.25 <= us.latency[0.5] <= 0.5
    assert 0.25 <= us.latency[0.99] <= 0.5
    assert 1e6 <= shop.transfer[0.5] <= 1e7
    assert service(report, "api").transfer == {}


def test_worst_periods_name_the_phase_that_moved(report):
    shop = [period for period in report.worst if period.service == "shop"]
    by_start = {period.start: period for period in shop}

    assert len(shop) == 3
    assert by_start[OUTAGE[0]].error_ratio == pytest.approx(0.5, abs=0.01)
    assert by_start[OUTAGE[0] + 3600].error_ratio == pytest.approx(0.5, abs=0.01)
    slow = by_start[SLOW_HOUR[0]]
    assert 1.0 <= slow.p90 <= 2.5
    assert slow.moved == "processing"
    assert by_start[OUTAGE[0]].moved is None
    # api never failed and its latency never changed, so no hour qualifies.
    assert [period for period in report.worst if period.service == "api"] == []


def test_incident_duration_from_alerts(report):
    assert len(report.incidents) == 1
    incident = report.incidents[0]
    assert (incident.alertname, incident.service, incident.slo) == ("SLOErrorBudgetBurn", "shop", "shop-availability")
    assert incident.start == OUTAGE[0] + 900
    assert incident.duration == 7200


def test_support_counts_are_exact(report):
    support = {channel.channel: channel for channel in report.support}

    assert support["email"].created == 11
    assert support["email"].answered == 9
    assert support["email"].within_kpi == 6
    # E-late is 30 minutes old and unanswered at the month's end: not yet decided.
    assert support["email"].decided == 10
    assert support["email"].share_within == pytest.approx(6 / 10)
    assert support["email"].p50 == 3000
    assert support["email"].p90 == 7200
    assert support["email"].backlog == 2
    assert support["email"].business_share == pytest.approx(0.8, abs=RATIO_TOLERANCE)
    assert support["chat"].business_share is None
    assert support["chat"].created == 4
    assert support["chat"].within_kpi == 4
    assert (support["chat"].p50, support["chat"].p90) == (120, 240)
    assert support["phone"].created == 0
    assert support["phone"].backlog == 1


def test_certificate_checks(report):
    (cert,) = report.certs

    assert cert.service == "shop"
    assert cert.earliest_expiry == OLD_CERT_EXPIRY
    assert cert.days_left_at_end == pytest.approx(40)
    # The generated history has no reason label, so TLS failures are not recorded.
    assert cert.tls_failures is None


def test_month_over_month(report):
    shop = service(report, "shop")

    assert shop.previous_availability == pytest.approx(1.0, abs=RATIO_TOLERANCE)
    assert 0.25 <= shop.previous_p90 <= 0.5
    assert service(report, "search").previous_availability is None


@pytest.mark.parametrize(("locale", "phrases"), [
    ("en", ["Service performance report 2026-11", "missed", "not judged: data for 50.0% of the month",
            "search: no probe data this month", "processing", "2h 00m", "not recorded", "80.0%"]),
    ("zh-CN", ["2026-11 服务质量月报", "未达成", "无法判定：仅有当月 50.0% 的数据", "search：本月没有探测数据",
               "processing", "2h 00m", "未记录", "80.0%"]),
])
def test_report_files_in_locale(month, tmp_path, locale, phrases):
    config, url, _ = month
    paths = write_report(config, url, Period.parse("2026-11"), locale, tmp_path)
    html = (tmp_path / "report-2026-11.html").read_text(encoding="utf-8")
    markdown = (tmp_path / "report-2026-11.md").read_text(encoding="utf-8")

    assert {path.name for path in paths} == {"availability.png", "daily-availability.png", "latency.png",
                                             "report-2026-11.html", "report-2026-11.md"}
    for chart in ("availability.png", "daily-availability.png", "latency.png"):
        assert (tmp_path / chart).read_bytes().startswith(b"\x89PNG")
        assert f'src="{chart}"' in html
        assert f"]({chart})" in markdown
    for phrase in phrases:
        assert phrase in html, phrase
        assert phrase in markdown, phrase
    # search was never measured: no row may show it at 100%.
    search_rows = [line for line in markdown.splitlines() if line.startswith("| search |")]
    assert search_rows
    assert not any("100.000%" in line for line in search_rows)


def test_pdf_printed_with_chromium(month, tmp_path):
    require_binary("chromium", "chromium-browser", "google-chrome")
    config, url, _ = month
    paths = write_report(config, url, Period.parse("2026-11"), "zh-CN", tmp_path, pdf=True)
    pdf = (tmp_path / "report-2026-11.pdf").read_bytes()

    assert tmp_path / "report-2026-11.pdf" in paths
    assert pdf.startswith(b"%PDF-")
    # Tables and three charts take more than one A4 or Letter page.
    assert len(re.findall(rb"/Type\s*/Page[^s]", pdf)) >= 2


def test_cli_writes_report(month, tmp_path):
    config, url, workdir = month
    result = subprocess.run(
        [sys.executable, "-m", "slawatch", "report", f"--config.file={workdir / 'slawatch.yml'}",
         "--month=2026-11", f"--prometheus={url}", f"--out={tmp_path}", "--locale=en"],
        capture_output=True, text=True, timeout=300)

    assert result.returncode == 0, result.stderr
    assert f"Wrote {tmp_path / 'report-2026-11.html'}" in result.stdout


@pytest.mark.parametrize(("argument", "message"), [
    ("--month=2026-13", "invalid month '2026-13': use YYYY-MM"),
    ("--month=November", "invalid month 'November': use YYYY-MM"),
])
def test_cli_rejects_bad_month(tmp_path, argument, message):
    result = subprocess.run([sys.executable, "-m", "slawatch", "report", argument, f"--out={tmp_path}"],
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 1
    assert message in result.stderr


def test_unreachable_prometheus_is_an_error(month, tmp_path):
    config, _, _ = month
    with pytest.raises(ReportError, match="not reachable"):
        write_report(config, f"http://127.0.0.1:{free_port()}", Period.parse("2026-11"), "en", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_missing_ticket_store_is_an_error(month, tmp_path):
    config, url, _ = month
    broken = config.model_copy(update={"tickets": config.tickets.model_copy(
        update={"database": str(tmp_path / "missing.db")})})
    with pytest.raises(ReportError, match="missing.db not found"):
        build_report(broken, Prometheus(url), Period.parse("2026-11"))


def test_nearest_rank():
    assert nearest_rank([], 0.5) is None
    assert nearest_rank([5.0], 0.9) == 5.0
    assert nearest_rank([4.0, 1.0, 3.0, 2.0], 0.5) == 2.0
    assert nearest_rank([1.0, 2.0, 3.0, 4.0], 0.9) == 4.0


class _EmptyPrometheus(BaseHTTPRequestHandler):
    """Answer every API query with an empty result, as Prometheus does before any data exists."""

    def do_GET(self):
        kind = "matrix" if "query_range" in self.path else "vector"
        body = json.dumps({"status": "success", "data": {"resultType": kind, "result": []}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_report_of_month_without_data(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _EmptyPrometheus)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config_path = write_config(tmp_path / "slawatch.yml", {
        "modules": {"http_2xx": {"prober": "http", "timeout": "2s"}},
        "targets": [{"service": "shop", "url": "http://127.0.0.1:8080/", "module": "http_2xx"}],
        "tickets": {"database": str(tmp_path / "tickets.db")},
        "slos": [{"name": "shop-availability", "service": "shop", "sli": "probe_availability", "objective": 99}],
    })
    fill_ticket_store(tmp_path / "tickets.db")
    try:
        written = write_report(load_config(config_path), f"http://127.0.0.1:{server.server_port}",
                               Period.parse("2026-11"), "en", tmp_path / "out")
    finally:
        server.shutdown()

    html = next(path for path in written if path.suffix == ".html").read_text(encoding="utf-8")
    assert "shop" in html
    assert "100%" not in html.split("shop", 1)[1].split("</tr>", 1)[0]


def test_prometheus_url_without_scheme_is_an_error(month, tmp_path):
    config, _, _ = month
    with pytest.raises(ReportError, match="has no http:// or https:// scheme"):
        write_report(config, "127.0.0.1:9090", Period.parse("2026-11"), "en", tmp_path)
