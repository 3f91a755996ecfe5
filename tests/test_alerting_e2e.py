"""End to end: an outage travels from a probe to every receiver exactly once.

Real Prometheus evaluates the generated rules and sends to a two-node
Alertmanager cluster that gossips on loopback, with a copy of the bundled
alertmanager.yml. The receivers are the exporter's webhook sink, its chat
relay with a local DingTalk stand-in that checks signatures, and an aiosmtpd
mailbox. Prometheus adds the label chat="dingtalk" to every alert with
alert_relabel_configs, so the chat route picks the relay.

Two services are probed. "shop" (95% objective) fails completely while the
test runs an outage, which fires a page and, some seconds later, a ticket that
the page inhibits. "docs" (90% objective) fails 3 probes of 4. Its error
ratio of 75% is above the ticket threshold of 60% (6 x 10%), with room for
the ratio's jitter in a 20s window. It stays below the page threshold,
which is capped at 100%. The business-hours interval of the copy
excludes the current time, so the ticket must not reach the mailbox.

Windows are short so that the scenario runs in about two minutes:
page 20s/5s at 14.4x, ticket 2m/20s at 6x, probes, scrapes and rule
evaluation every 1s, group_wait 1s and group_interval 2s.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from datetime import datetime
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from slawatch.config import load_config
from slawatch.generate.rules import write_rules

from conftest import REPO, free_port, require_binary, wait_http, write_config
from robots import FakeRobots, ThreadedServer, write_robot_secrets

pytestmark = pytest.mark.integration

PAGE_WINDOW = {"severity": "page", "long": "20s", "short": "5s", "factor": 14.4, "for": "0s"}
TICKET_WINDOW = {"severity": "ticket", "long": "2m", "short": "20s", "factor": 6, "for": "0s"}
PEER_TIMEOUT = 5
TIMERS = {"group_wait": "1s", "group_interval": "2s"}


class Target:
    """A probed HTTP server: healthy ("up"), failing ("down"), or failing 3 requests of 4 ("flapping")."""

    def __init__(self, mode: str):
        self.mode = mode
        self.requests = 0
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                target.requests += 1
                failing = target.mode == "down" or (target.mode == "flapping" and target.requests % 4 != 0)
                body = b"down" if failing else b"ok"
                self.send_response(503 if failing else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/health"


class Mailbox:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((time.time(), message_from_bytes(envelope.content)))
        return "250 Message accepted for delivery"

    def subjects(self) -> list[str]:
        return [str(message["Subject"]) for _, message in self.messages]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def query(prometheus: str, expr: str) -> list[dict]:
    body = get_json(f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    assert body["status"] == "success", body
    return body["data"]["result"]


def wait_for(check, timeout: float, what: str, interval: float = 0.5):
    """Call `check` until it returns a truthy value; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def hours_excluding_now(zone: str) -> list[dict]:
    """Return time ranges covering 20 hours of the day, leaving out the 4 hours around now in `zone`."""
    hour = datetime.now(ZoneInfo(zone)).hour
    start = (hour + 2) % 24
    end = start + 20
    if end <= 24:
        spans = [(start, end)]
    else:
        spans = [(start, 24), (0, end - 24)]
    return [{"start_time": f"{a:02d}:00", "end_time": f"{b:02d}:00"} for a, b in spans]


def shorten_timers(route: dict) -> None:
    route.update(TIMERS)
    for child in route.get("routes", []):
        shorten_timers(child)


def alertmanager_config(workdir: Path, exporter_port: int, smtp_port: int) -> Path:
    text = (REPO / "alertmanager" / "alertmanager.yml").read_text(encoding="utf-8")
    text = text.replace("127.0.0.1:9115", f"127.0.0.1:{exporter_port}")
    config = yaml.safe_load(text)
    config["global"]["smtp_smarthost"] = f"127.0.0.1:{smtp_port}"
    secrets = workdir / "alertmanager" / "secrets"
    secrets.mkdir(parents=True)
    (secrets / "smtp-password").write_text("unused", encoding="utf-8")
    config["global"]["smtp_auth_password_file"] = str(secrets / "smtp-password")
    for receiver in config["receivers"]:
        for slack in receiver.get("slack_configs", []):
            (secrets / "slack-webhook-url").write_text(f"http://127.0.0.1:{exporter_port}/slack", encoding="utf-8")
            slack["api_url_file"] = str(secrets / "slack-webhook-url")
    (interval,) = config["time_intervals"]
    interval["time_intervals"] = [{"times": hours_excluding_now("Asia/Shanghai"), "location": "Asia/Shanghai"}]
    shorten_timers(config["route"])
    path = workdir / "alertmanager" / "alertmanager.yml"
    write_config(path, config)
    (workdir / "alertmanager" / "templates").symlink_to(REPO / "alertmanager" / "templates")
    return path


def is_page_for(notification: dict, service: str, status: str) -> bool:
    return notification["status"] == status and any(
        alert["labels"].get("alertname") == "SLOErrorBudgetBurn" and alert["labels"].get("service") == service
        and alert["labels"].get("severity") == "page" for alert in notification["alerts"])


def robot_titles(robots: FakeRobots) -> list[str]:
    return [message.body["markdown"]["title"] for message in robots.of_kind("dingtalk")]


@pytest.fixture(scope="module")
def incident(tmp_path_factory):
    """Run the outage scenario once and return what every receiver saw."""
    from aiosmtpd.controller import Controller

    prometheus_bin = require_binary("prometheus")
    alertmanager_bin = require_binary("prometheus-alertmanager", "alertmanager")
    workdir = tmp_path_factory.mktemp("alerting-e2e")
    ports = {name: free_port() for name in ("exporter", "prometheus", "am_a", "am_b", "gossip_a", "gossip_b",
                                            "smtp", "robots")}
    shop, docs = Target("up"), Target("flapping")
    mailbox = Mailbox()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=ports["smtp"])
    smtp.start()
    robots = FakeRobots()
    robot_server = ThreadedServer(robots.app(), ports["robots"])
    robot_server.start()

    config = {
        "global": {"location": "e2e", "probe_duration_buckets": [0.05, 0.25, 1.0]},
        "modules": {"http_2xx": {"prober": "http", "timeout": "500ms"}},
        "targets": [{"service": "shop", "url": shop.url, "interval": "1s"},
                    {"service": "docs", "url": docs.url, "interval": "1s"}],
        "tickets": {"database": str(workdir / "tickets.db")},
        "alerting": {"burn_windows": [PAGE_WINDOW, TICKET_WINDOW], "absent_for": "1m"},
        "relay": {"robots": write_robot_secrets(workdir / "relay-secrets", robot_server.base_url)},
        "slos": [{"name": "shop-availability", "service": "shop", "sli": "probe_availability", "objective": 95,
                  "window": "1h"},
                 {"name": "docs-availability", "service": "docs", "sli": "probe_availability", "objective": 90,
                  "window": "1h"}],
    }
    config_path = write_config(workdir / "slawatch.yml", config)
    rule_files = write_rules(load_config(config_path), workdir)
    am_config = alertmanager_config(workdir, ports["exporter"], ports["smtp"])

    prometheus_config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in rule_files],
        "alerting": {
            "alert_relabel_configs": [{"target_label": "chat", "replacement": "dingtalk"}],
            "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{ports['am_a']}",
                                                               f"127.0.0.1:{ports['am_b']}"]}]}],
        },
        "scrape_configs": [{"job_name": "slawatch",
                            "static_configs": [{"targets": [f"127.0.0.1:{ports['exporter']}"]}]}],
    }
    write_config(workdir / "prometheus.yml", prometheus_config)

    processes: dict[str, subprocess.Popen] = {}

    def spawn(name: str, command: list[str]) -> subprocess.Popen:
        log = (workdir / f"{name}.log").open("w")
        processes[name] = subprocess.Popen(command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
        return processes[name]

    def alertmanager(node: str, peer: str) -> list[str]:
        return [alertmanager_bin, f"--config.file={am_config}", f"--storage.path={workdir / f'data-{node}'}",
                f"--web.listen-address=127.0.0.1:{ports[f'am_{node}']}",
                f"--web.external-url=http://127.0.0.1:{ports[f'am_{node}']}",
                f"--cluster.listen-address=127.0.0.1:{ports[f'gossip_{node}']}",
                f"--cluster.peer=127.0.0.1:{ports[f'gossip_{peer}']}",
                f"--cluster.peer-timeout={PEER_TIMEOUT}s"]

    exporter = f"http://127.0.0.1:{ports['exporter']}"
    prometheus = f"http://127.0.0.1:{ports['prometheus']}"
    record: dict = {"robots": robots, "mailbox": mailbox, "workdir": workdir, "exporter": exporter,
                    "prometheus": prometheus}
    try:
        spawn("exporter", [sys.executable, "-m", "slawatch", "serve", f"--config.file={config_path}",
                           f"--web.listen-address=127.0.0.1:{ports['exporter']}"])
        spawn("am_a", alertmanager("a", "b"))
        spawn("am_b", alertmanager("b", "a"))
        spawn("prometheus", [prometheus_bin, f"--config.file={workdir / 'prometheus.yml'}",
                             f"--storage.tsdb.path={workdir / 'prometheus-data'}",
                             f"--web.listen-address=127.0.0.1:{ports['prometheus']}"])
        wait_http(f"{exporter}/-/healthy", process=processes["exporter"])
        for node in ("a", "b"):
            wait_http(f"http://127.0.0.1:{ports[f'am_{node}']}/-/ready", process=processes[f"am_{node}"])
        wait_http(f"{prometheus}/-/ready", process=processes["prometheus"])
        prometheus_started = time.time()

        def cluster_size(node: str) -> int:
            status = get_json(f"http://127.0.0.1:{ports[f'am_{node}']}/api/v2/status")
            return len(status["cluster"].get("peers") or [])

        wait_for(lambda: cluster_size("a") == 2 and cluster_size("b") == 2, 60, "both Alertmanagers to see 2 peers")

        def notifications() -> list[dict]:
            return get_json(f"{exporter}/api/v1/alertmanager/notifications")

        # The docs ticket fires from the start and goes to the webhook and the chat.
        wait_for(lambda: [n for n in notifications() if n["receiver"] == "slo-webhook" and any(
            a["labels"].get("service") == "docs" and a["labels"].get("severity") == "ticket" for a in n["alerts"])],
            120, "docs ticket at the SLO webhook")
        wait_for(lambda: [t for t in robot_titles(robots) if "[TICKET]" in t and "service docs" in t], 60,
                 "docs ticket at the DingTalk robot")
        wait_for(lambda: query(prometheus, 'slo:sli_error:ratio_rate20s{slo="shop-availability"} == 0'), 60,
                 "a clean 20s window for shop")
        # Until the 2m ticket window contains 2m of data, a shorter outage fills
        # it, and the shop ticket could fire before the page that inhibits it.
        time.sleep(max(0.0, prometheus_started + 130 - time.time()))
        assert query(prometheus, 'ALERTS{service="shop"}') == []

        # The outage.
        outage_start = time.time()
        shop.mode = "down"
        oncall = wait_for(lambda: [n for n in notifications() if n["receiver"] == "oncall"
                                   and is_page_for(n, "shop", "firing")], 120, "the shop page at on-call")
        record["page_latency"] = oncall[0]["received"] - outage_start
        wait_for(lambda: [s for s in mailbox.subjects() if "[PAGE]" in s and "service shop" in s], 60,
                 "the shop page email")
        wait_for(lambda: [t for t in robot_titles(robots) if "[PAGE]" in t and "service shop" in t], 60,
                 "the shop page at the DingTalk robot")
        ticket = wait_for(lambda: query(prometheus, 'ALERTS{service="shop",severity="ticket",alertstate="firing"}'),
                          120, "the shop ticket to fire in Prometheus")
        record["shop_ticket_labels"] = ticket[0]["metric"]
        record["shop_ticket_states"] = {
            node: get_json(f"http://127.0.0.1:{ports[f'am_{node}']}/api/v2/alerts?"
                           + urllib.parse.urlencode([("filter", 'service="shop"'), ("filter", 'severity="ticket"')]))
            for node in ("a", "b")}
        # The second node sends only after PEER_TIMEOUT, if the first has not:
        # wait well past that before counting.
        time.sleep(3 * PEER_TIMEOUT)
        record["during_incident"] = notifications()
        record["mail_during_incident"] = mailbox.subjects()
        record["robot_during_incident"] = robot_titles(robots)

        # One Alertmanager goes away mid-incident; the other must still deliver.
        processes["am_a"].terminate()
        processes["am_a"].wait(timeout=30)
        shop.mode = "up"
        recovery_start = time.time()
        resolved = wait_for(lambda: [n for n in notifications() if n["receiver"] == "oncall"
                                     and is_page_for(n, "shop", "resolved")], 120, "the shop page resolved")
        record["resolve_latency"] = resolved[0]["received"] - recovery_start
        wait_for(lambda: [t for t in robot_titles(robots) if "[RESOLVED]" in t and "service shop" in t], 60,
                 "the resolved shop page at the DingTalk robot")
        time.sleep(3)
        record["after_recovery"] = notifications()
        record["mail_after_recovery"] = mailbox.subjects()
        record["robot_rejected"] = list(robots.rejected)
        yield record
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.terminate()
        for process in processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        robot_server.stop()
        smtp.stop()
        shop.server.shutdown()
        docs.server.shutdown()


def count_pages(notifications: list[dict], receiver: str, status: str) -> int:
    return sum(1 for n in notifications if n["receiver"] == receiver and is_page_for(n, "shop", status))


@pytest.mark.parametrize("receiver", ["oncall", "slo-webhook"])
def test_page_reaches_webhook_receiver_once(incident, receiver):
    assert count_pages(incident["during_incident"], receiver, "firing") == 1


def test_page_reaches_mailbox_once(incident):
    pages = [s for s in incident["mail_during_incident"] if "[PAGE]" in s and "service shop" in s]
    assert len(pages) == 1
    assert "SLO shop-availability" in pages[0]
    assert pages[0].startswith("[FIRING:1]")


def test_page_reaches_chat_robot_once(incident):
    pages = [t for t in incident["robot_during_incident"] if "[FIRING:1] [PAGE]" in t and "service shop" in t]
    assert len(pages) == 1
    assert incident["robot_rejected"] == []


def test_page_skips_default_chat(incident):
    assert count_pages(incident["during_incident"], "support-chat", "firing") == 0


def test_inhibited_ticket_is_silent(incident):
    states = incident["shop_ticket_states"]
    for node, alerts in states.items():
        (alert,) = alerts
        assert alert["status"]["state"] == "suppressed", node
        assert alert["status"]["inhibitedBy"], node
    shop_tickets = [n for n in incident["during_incident"] if any(
        a["labels"].get("service") == "shop" and a["labels"].get("severity") == "ticket" for a in n["alerts"])]
    assert shop_tickets == [], [a["labels"] for n in shop_tickets for a in n["alerts"]]
    assert not [s for s in incident["mail_during_incident"] if "[TICKET]" in s and "service shop" in s]
    assert not [t for t in incident["robot_during_incident"] if "[TICKET]" in t and "service shop" in t]


def test_ticket_outside_business_hours_skips_mailbox(incident):
    assert [s for s in incident["mail_after_recovery"] if "[TICKET]" in s] == []
    docs_chat = [t for t in incident["robot_during_incident"] if "[TICKET]" in t and "service docs" in t]
    assert len(docs_chat) == 1


def test_resolved_after_node_stop(incident):
    assert count_pages(incident["after_recovery"], "oncall", "resolved") == 1
    assert count_pages(incident["after_recovery"], "oncall", "firing") == 1
    resolved_mail = [s for s in incident["mail_after_recovery"] if s.startswith("[RESOLVED]") and "service shop" in s]
    assert len(resolved_mail) == 1


def test_page_latency_is_bounded(incident):
    # The page needs 72% errors over the 20s window: about 15s of outage,
    # plus evaluation, group_wait and delivery.
    print(f"outage to on-call page: {incident['page_latency']:.1f}s; "
          f"recovery to resolved page: {incident['resolve_latency']:.1f}s")
    assert 10 < incident["page_latency"] < 90
