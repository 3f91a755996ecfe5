"""Every panel query of every generated dashboard, run against a real Prometheus.

An HTTPS server on loopback represents two services: "shop" always returns
200 and "api" returns 500 to every second request, so failures, status codes
and an SLO burn-rate alert exist. The exporter probes both every second and
receives ticket events; Prometheus scrapes it every second and evaluates the
generated rules. Each panel query then runs with the template variables
replaced, and must return no error and at least one series.

Exceptions, decided per query and printed by the test (pytest -s shows them):

- PENDING_METRICS are dashboard inputs that this exporter build does not
  export yet. A query that reads one of them, and that metric is missing from
  the exporter's /metrics, must still run without error but may return nothing.
  Once the exporter exports the metric, the query must return data.
- No other query may return an empty result: the "api" SLO burns its budget
  fast enough that its page alert fires, so the ALERTS panels have data too.
"""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trustme
import yaml
from prometheus_client.parser import text_string_to_metric_families

from slawatch import names
from slawatch.config import load_config
from slawatch.generate.dashboards import build_dashboards
from slawatch.generate.rules import write_rules

from conftest import free_port, require_binary, wait_http, write_config

pytestmark = pytest.mark.integration

# What Grafana would substitute. The rate window spans 15 scrapes at 1s; the
# range covers the minute in which events were posted.
GRAFANA_VARIABLES = {"__rate_interval": "15s", "__range": "1m", "__interval": "1s"}
# The "All" value of every query variable.
ALL = ".*"

PENDING_METRICS = {
    names.PROBE_TRANSFER_SPEED: "transfer-speed histogram of the HTTP prober",
    names.TICKET_RESOLUTION: "resolution-time histogram of the ticket store",
    names.TICKET_FIRST_RESPONSES_TOTAL: "first-response counter with the responder label",
    names.TICKETS_UNANSWERED: "unanswered-ticket gauge of the ticket store",
}
# Labels that the exporter adds together with the pending metrics.
PENDING_LABELS = {"clock": "calendar/business clock label of the ticket histograms"}

DATA_TIMEOUT = 180.0
BODY = b"x" * 20_000


class _Target(BaseHTTPRequestHandler):
    flaky_requests = 0
    lock = threading.Lock()

    def do_GET(self):
        status = 200
        if self.path == "/flaky":
            with self.lock:
                type(self).flaky_requests += 1
                status = 500 if self.flaky_requests % 2 == 0 else 200
        self.send_response(status)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args):
        pass


def start_https_target(workdir: Path) -> tuple[ThreadingHTTPServer, Path]:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    ca_path = workdir / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(context)
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Target)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, ca_path


def api_get(prometheus: str, path: str, params: dict) -> dict:
    url = f"{prometheus}{path}?" + urllib.parse.urlencode(params, doseq=True)
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:
        return json.load(error)


def post_json(url: str, data) -> dict:
    request = urllib.request.Request(url, data=json.dumps(data).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def iso(moment: datetime) -> str:
    return moment.isoformat()


def ticket_events() -> list[dict]:
    """Return events for four tickets: two answered, one late, one still unanswered."""
    now = datetime.now(timezone.utc)
    events = []
    tickets = [
        ("T-1", "email", "normal", timedelta(minutes=30), timedelta(minutes=20)),
        ("T-2", "email", "high", timedelta(hours=3), timedelta(hours=1)),
        ("T-3", "chat", "normal", timedelta(minutes=10), None),
        ("T-4", "chat", "urgent", timedelta(minutes=5), timedelta(minutes=4)),
    ]
    for ticket_id, channel, priority, created_ago, replied_ago in tickets:
        events.append({"id": f"{ticket_id}-c", "type": "ticket.created", "ticket_id": ticket_id,
                       "time": iso(now - created_ago), "channel": channel, "priority": priority})
        if replied_ago is not None:
            events.append({"id": f"{ticket_id}-r", "type": "ticket.replied", "ticket_id": ticket_id,
                           "time": iso(now - replied_ago), "author": "agent", "public": True})
    return events


def substitute(expr: str) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda match: GRAFANA_VARIABLES.get(match.group(1), ALL), expr)


def exported_sample_names(metrics_url: str) -> set[str]:
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def pending_metrics_of(expr: str, exported: set[str]) -> list[str]:
    """Return the pending metrics that `expr` reads and the exporter does not export."""
    return [name for name in PENDING_METRICS
            if re.search(rf"\b{name}(_bucket|_count|_sum)?\b", expr)
            and not any(sample.startswith(name) for sample in exported)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    prometheus_bin = require_binary("prometheus")
    workdir = tmp_path_factory.mktemp("queries")
    target, ca_path = start_https_target(workdir)
    base = f"https://127.0.0.1:{target.server_port}"
    ports = {"exporter": free_port(), "prometheus": free_port()}
    config = {
        "global": {"location": "ci", "probe_duration_buckets": [0.01, 0.05, 0.25, 1.0]},
        "modules": {"https_2xx": {"prober": "http", "timeout": "800ms",
                                  "http": {"tls_config": {"ca_file": str(ca_path)}}}},
        "targets": [
            {"service": "shop", "url": f"{base}/ok", "module": "https_2xx", "interval": "1s"},
            {"service": "api", "url": f"{base}/flaky", "module": "https_2xx", "interval": "1s"},
        ],
        "tickets": {"database": str(workdir / "tickets.db")},
        # Short windows so that the api SLO pages within a minute at 50% errors.
        "alerting": {"burn_windows": [{"severity": "page", "long": "30s", "short": "10s", "factor": 14.4,
                                       "for": "0s"}],
                     "absent_for": "1m"},
        "slos": [
            {"name": "shop-availability", "service": "shop", "sli": "probe_availability", "objective": 95,
             "window": "1h"},
            {"name": "api-availability", "service": "api", "sli": "probe_availability", "objective": 99,
             "window": "1h"},
            {"name": "support-first-response", "service": "support", "sli": "ticket_first_response",
             "objective": 90, "threshold": "1h", "window": "1h"},
        ],
    }
    config_path = write_config(workdir / "slawatch.yml", config)
    loaded = load_config(config_path)
    rule_files = write_rules(loaded, workdir)
    exporter = f"127.0.0.1:{ports['exporter']}"
    prometheus_config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [
            {"job_name": "slawatch", "static_configs": [{"targets": [exporter]}]},
            {"job_name": "blackbox", "metrics_path": "/probe",
             "params": {"module": ["https_2xx"], "target": [f"{base}/ok"]},
             "static_configs": [{"targets": [exporter]}]},
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(prometheus_config), encoding="utf-8")

    processes = []
    try:
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "slawatch", "serve", f"--config.file={config_path}",
             f"--web.listen-address={exporter}"],
            cwd=workdir, stdout=open(workdir / "exporter.log", "w"), stderr=subprocess.STDOUT))
        wait_http(f"http://{exporter}/-/healthy", timeout=60, process=processes[0])
        processes.append(subprocess.Popen(
            [prometheus_bin, f"--config.file={workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{ports['prometheus']}"],
            cwd=workdir, stdout=open(workdir / "prometheus.log", "w"), stderr=subprocess.STDOUT))
        prometheus = f"http://127.0.0.1:{ports['prometheus']}"
        wait_http(f"{prometheus}/-/ready", timeout=60, process=processes[1])

        # Post the tickets after the first scrape, so their counters rise inside the query range.
        wait_for_result(prometheus, f"{names.TICKET_FIRST_RESPONSE}_count", "the first ticket scrape")
        result = post_json(f"http://{exporter}/api/v1/ticket-events", ticket_events())
        assert result["accepted"] == 7, result
        wait_for_result(prometheus, 'ALERTS{alertname=~"SLO.*", alertstate="firing"}', "the api page alert")
        wait_for_result(prometheus, f'increase({names.PROBE_HTTP_RESPONSES_TOTAL}{{code="500"}}[15s]) > 0',
                        "500 responses")
        yield {"prometheus": prometheus, "config": loaded,
               "exported": exported_sample_names(f"http://{exporter}/metrics")}
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        target.shutdown()


def wait_for_result(prometheus: str, expr: str, description: str, timeout: float = DATA_TIMEOUT) -> list:
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        body = api_get(prometheus, "/api/v1/query", {"query": expr})
        if body.get("status") == "success" and body["data"]["result"]:
            return body["data"]["result"]
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout}s waiting for {description} ({expr}); last response {body}")


def run_target(prometheus: str, target: dict) -> dict:
    expr = substitute(target["expr"])
    if target["instant"]:
        return api_get(prometheus, "/api/v1/query", {"query": expr})
    end = time.time()
    return api_get(prometheus, "/api/v1/query_range",
                   {"query": expr, "start": end - 60, "end": end, "step": "5s"})


def dashboard_targets(config) -> list[tuple[str, str, dict]]:
    return [(file_name, panel["title"], target)
            for file_name, dashboard in sorted(build_dashboards(config).items())
            for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_every_panel_query_returns_data(stack):
    prometheus, exported = stack["prometheus"], stack["exported"]
    targets = dashboard_targets(stack["config"])
    assert len(targets) > 40

    errors, empty, pending = [], [], []
    # Some windows need a few more scrapes than the readiness checks; retry the empty ones.
    deadline = time.monotonic() + 60
    remaining = targets
    while remaining:
        still_empty = []
        for file_name, title, target in remaining:
            where = f"{file_name} / {title} / {target['refId']}: {substitute(target['expr'])}"
            body = run_target(prometheus, target)
            if body.get("status") != "success":
                errors.append(f"{where}: {body.get('error')}")
            elif not body["data"]["result"]:
                missing = pending_metrics_of(target["expr"], exported)
                if missing:
                    pending.append(f"{where}: pending {missing}")
                else:
                    still_empty.append((file_name, title, target))
        if not still_empty or time.monotonic() > deadline:
            empty = [f"{f} / {t} / {target['refId']}: {substitute(target['expr'])}" for f, t, target in still_empty]
            break
        remaining = still_empty
        time.sleep(3)

    assert errors == []
    assert empty == []
    # Only queries that read a pending metric may be empty, and each one is listed here.
    for line in pending:
        print("empty until the exporter exports it:", line)


def test_variable_queries_return_values(stack):
    prometheus = stack["prometheus"]
    checked = 0
    for file_name, dashboard in sorted(build_dashboards(stack["config"]).items()):
        for variable in dashboard["templating"]["list"]:
            if variable["type"] != "query":
                continue
            match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"])
            assert match, variable["query"]
            selector, label = substitute(match.group(1)), match.group(2)
            body = api_get(prometheus, f"/api/v1/label/{label}/values", {"match[]": selector})
            assert body["status"] == "success", f"{file_name} ${variable['name']}: {body}"
            checked += 1
            if label in PENDING_LABELS and not body["data"]:
                continue
            assert body["data"], f"{file_name} ${variable['name']}: no values for {variable['query']}"
    assert checked >= 9

