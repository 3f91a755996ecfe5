"""End to end on real binaries: exporter, Prometheus and Alertmanager on loopback ports.

The exporter probes a local HTTP server, and Prometheus scrapes the exporter
and evaluates the generated rules. Stopping the HTTP server makes the
burn-rate page fire. Alertmanager, running the bundled alertmanager.yml,
then delivers the page to the exporter's webhook sink and to an SMTP server.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.parse
import urllib.request
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from slawatch.config import load_config
from slawatch.generate.rules import write_rules

from conftest import REPO, free_port, require_binary, wait_http, write_config

pytestmark = pytest.mark.integration


class _Healthy(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def start_target() -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Healthy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def query(prometheus: str, expr: str) -> list[dict]:
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]["result"]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def wait_for(check, timeout: float, interval: float = 1.0, what: str = "condition"):
    """Call `check` until it returns a truthy value; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


class _Mailbox:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(message_from_bytes(envelope.content))
        return "250 Message accepted for delivery"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Start target, exporter, Prometheus, Alertmanager and an SMTP server; yield their addresses."""
    import subprocess

    from aiosmtpd.controller import Controller

    prometheus_bin = require_binary("prometheus")
    alertmanager_bin = require_binary("prometheus-alertmanager", "alertmanager")
    workdir = tmp_path_factory.mktemp("stack")
    ports = {name: free_port() for name in ("exporter", "prometheus", "alertmanager", "smtp")}
    processes: list[subprocess.Popen] = []
    target = start_target()
    mailbox = _Mailbox()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=ports["smtp"])
    smtp.start()

    # Short windows stand in for the 1h/5m pair so an outage pages within a minute.
    config = {
        "global": {"location": "ci", "probe_duration_buckets": [0.05, 0.25, 1.0]},
        "modules": {"http_2xx": {"prober": "http", "timeout": "500ms"}},
        "targets": [{"service": "shop", "url": f"http://127.0.0.1:{target.server_port}/health",
                     "module": "http_2xx", "interval": "1s"}],
        "tickets": {"database": str(workdir / "tickets.db")},
        "alerting": {"burn_windows": [{"severity": "page", "long": "30s", "short": "10s", "factor": 14.4,
                                       "for": "0s"}],
                     "absent_for": "1m"},
        "slos": [{"name": "shop-availability", "service": "shop", "sli": "probe_availability", "objective": 95,
                  "window": "1h"}],
    }
    config_path = write_config(workdir / "slawatch.yml", config)
    rule_files = write_rules(load_config(config_path), workdir)

    alertmanager_config = yaml.safe_load((REPO / "alertmanager" / "alertmanager.yml").read_text())
    text = (REPO / "alertmanager" / "alertmanager.yml").read_text()
    text = text.replace("127.0.0.1:9115", f"127.0.0.1:{ports['exporter']}")
    text = text.replace("127.0.0.1:2525", f"127.0.0.1:{ports['smtp']}")
    alertmanager_config = yaml.safe_load(text)
    for route in [alertmanager_config["route"], *alertmanager_config["route"].get("routes", [])]:
        route["group_wait"] = "1s"
        route["group_interval"] = "2s"
    (workdir / "alertmanager").mkdir()
    write_config(workdir / "alertmanager" / "alertmanager.yml", alertmanager_config)
    (workdir / "alertmanager" / "templates").symlink_to(REPO / "alertmanager" / "templates")

    prometheus_config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in rule_files],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{ports['alertmanager']}"]}]}]},
        "scrape_configs": [
            {"job_name": "slawatch", "static_configs": [{"targets": [f"127.0.0.1:{ports['exporter']}"]}]},
            {"job_name": "blackbox", "metrics_path": "/probe", "params": {"module": ["http_2xx"]},
             "static_configs": [{"targets": [f"http://127.0.0.1:{target.server_port}/health"]}],
             "relabel_configs": [
                 {"source_labels": ["__address__"], "target_label": "__param_target"},
                 {"source_labels": ["__param_target"], "target_label": "instance"},
                 {"target_label": "__address__", "replacement": f"127.0.0.1:{ports['exporter']}"},
             ]},
        ],
    }
    write_config(workdir / "prometheus.yml", prometheus_config)

    def spawn(name: str, command: list[str]) -> subprocess.Popen:
        log = (workdir / f"{name}.log").open("w")
        process = subprocess.Popen(command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
        processes.append(process)
        return process

    exporter = spawn("exporter", [sys.executable, "-m", "slawatch", "serve", f"--config.file={config_path}",
                                  f"--web.listen-address=127.0.0.1:{ports['exporter']}"])
    prometheus = spawn("prometheus", [prometheus_bin, f"--config.file={workdir / 'prometheus.yml'}",
                                      f"--storage.tsdb.path={workdir / 'prometheus-data'}",
                                      f"--web.listen-address=127.0.0.1:{ports['prometheus']}"])
    alertmanager = spawn("alertmanager", [alertmanager_bin,
                                          f"--config.file={workdir / 'alertmanager' / 'alertmanager.yml'}",
                                          f"--storage.path={workdir / 'alertmanager-data'}",
                                          f"--web.listen-address=127.0.0.1:{ports['alertmanager']}",
                                          "--cluster.listen-address="])
    try:
        wait_http(f"http://127.0.0.1:{ports['exporter']}/-/healthy", process=exporter)
        wait_http(f"http://127.0.0.1:{ports['prometheus']}/-/ready", process=prometheus)
        wait_http(f"http://127.0.0.1:{ports['alertmanager']}/-/ready", process=alertmanager)
        yield {
            "prometheus": f"http://127.0.0.1:{ports['prometheus']}",
            "exporter": f"http://127.0.0.1:{ports['exporter']}",
            "target": target,
            "mailbox": mailbox,
            "workdir": workdir,
        }
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        target.shutdown()
        smtp.stop()


def test_prometheus_scrapes_exporter_and_probe(stack):
    prometheus = stack["prometheus"]

    up = wait_for(lambda: query(prometheus, 'up{job="slawatch"} == 1'), 30, what="exporter up")
    probes = wait_for(lambda: query(prometheus, 'slawatch_probes_total{service="shop",location="ci"} > 2'), 30,
                      what="scheduled probes")
    blackbox = wait_for(lambda: query(prometheus, 'probe_success{job="blackbox"} == 1'), 30,
                        what="/probe scrape")

    assert up[0]["metric"]["instance"].startswith("127.0.0.1:")
    assert probes[0]["metric"]["module"] == "http_2xx"
    assert blackbox[0]["metric"]["instance"].endswith("/health")
    assert query(prometheus, 'slawatch_probe_failures_total{service="shop"}')[0]["value"][1] == "0"


def test_rules_load_and_evaluate_without_errors(stack):
    prometheus = stack["prometheus"]

    def evaluated_groups():
        groups = get_json(f"{prometheus}/api/v1/rules")["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return groups if rules and all(rule.get("lastEvaluation", "").startswith("20") for rule in rules) else None

    groups = wait_for(evaluated_groups, 30, what="every rule evaluated")
    rules = [rule for group in groups for rule in group["rules"]]
    unhealthy = [(rule["name"], rule.get("lastError")) for rule in rules if rule["health"] != "ok"]
    ratio = wait_for(lambda: query(prometheus, 'slo:sli_error:ratio_rate10s{slo="shop-availability"}'), 30,
                     what="error ratio series")

    assert unhealthy == []
    assert {rule["type"] for rule in rules} == {"recording", "alerting"}
    assert float(ratio[0]["value"][1]) == 0.0


def test_outage_pages_through_alertmanager(stack):
    prometheus, exporter = stack["prometheus"], stack["exporter"]
    wait_for(lambda: query(prometheus, 'slo:sli_error:ratio_rate30s{slo="shop-availability"} == 0'), 40,
             what="a clean 30s window")
    assert query(prometheus, 'ALERTS{alertname="SLOErrorBudgetBurn"}') == []

    started = time.monotonic()
    stack["target"].shutdown()
    stack["target"].server_close()

    firing = wait_for(lambda: query(prometheus, 'ALERTS{alertname="SLOErrorBudgetBurn",alertstate="firing"}'), 90,
                      what="SLOErrorBudgetBurn firing")

    def oncall_notified():
        notes = get_json(f"{exporter}/api/v1/alertmanager/notifications")
        return [n for n in notes if n["receiver"] == "oncall" and any(
            a["labels"].get("alertname") == "SLOErrorBudgetBurn" for a in n["alerts"])]

    delivered = wait_for(oncall_notified, 60, what="oncall webhook notification")
    mail = wait_for(lambda: stack["mailbox"].messages, 60, what="support email")
    elapsed = time.monotonic() - started
    alert = delivered[0]["alerts"][0]

    assert firing[0]["metric"]["severity"] == "page"
    assert firing[0]["metric"]["slo"] == "shop-availability"
    assert alert["labels"]["service"] == "shop"
    assert alert["labels"]["severity"] == "page"
    assert alert["annotations"]["runbook_url"].endswith("/SLOErrorBudgetBurn.md")
    assert alert["annotations"]["summary"]
    assert "shop" in mail[0]["Subject"]
    assert elapsed < 150
