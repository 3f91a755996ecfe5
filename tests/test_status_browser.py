"""The status page in headless Chromium, served by a real `slawatch serve` process.

The test writes known daily roll-ups into the status database and starts the
exporter, which probes loopback targets. It posts alerts and announcements,
then reads the DOM that Chromium rendered in both locales. Phone and desktop
screenshots go to tests/artifacts/ for review.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path

import pytest

from slawatch.status.store import DayTotals, StatusStore

from conftest import REPO, free_port, minimal_config, require_binary, wait_http, write_config

ARTIFACTS = Path(os.environ.get("SLAWATCH_TEST_ARTIFACTS", REPO / "tests" / "artifacts"))
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]
TOKEN = "browser-test-token"


class StatusDom(HTMLParser):
    """Collect the data-* attributes and texts the status template puts on its elements."""

    def __init__(self):
        super().__init__()
        self.html_lang = None
        self.overall = None
        self.services: dict[str, dict] = {}
        self.incidents: list[dict] = []
        self.title_text = ""
        self._current_service = None
        self._in_title = False
        self.elements_with_src: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "html":
            self.html_lang = attributes.get("lang")
        if tag in ("script", "img", "iframe", "link") or "src" in attributes:
            self.elements_with_src.append(tag)
        if attributes.get("id") == "overall":
            self.overall = attributes.get("data-state")
        if "data-service" in attributes:
            self._current_service = attributes["data-service"]
            self.services[self._current_service] = {"state": attributes["data-state"], "bars": []}
        if "data-date" in attributes and self._current_service:
            self.services[self._current_service]["bars"].append(
                (attributes["data-date"], attributes.get("data-level"), attributes.get("data-availability")))
        if "data-kind" in attributes:
            self.incidents.append({"kind": attributes["data-kind"], "status": attributes["data-status"]})
        if tag == "h1":
            self._in_title = True

    def handle_endtag(self, tag):
        if tag == "h1":
            self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title_text += data.strip()


def run_chromium(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=120)


def post(url: str, body: dict, headers: dict | None = None) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    return json.loads(text) if text.startswith("{") else {}


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def served_status(tmp_path: Path, stop_processes):
    """Start `slawatch serve` with known history; return its base URL and the history written."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    data = minimal_config(tmp_path)
    data["global"]["locale"] = "en"
    data["modules"]["http_2xx"]["timeout"] = "900ms"
    data["modules"]["tcp_connect"]["timeout"] = "900ms"
    closed = free_port()
    data["targets"] = [
        {"service": "website", "url": f"{base}/-/healthy", "module": "http_2xx", "interval": "1s"},
        {"service": "api", "url": f"http://127.0.0.1:{closed}/v1/health", "module": "http_2xx", "interval": "1s"},
        {"service": "storage", "url": f"{base}/-/healthy", "module": "http_2xx", "interval": "1s"},
        {"service": "billing-db", "url": f"127.0.0.1:{closed}", "module": "tcp_connect", "interval": "1s",
         "public": False},
    ]
    (tmp_path / "token").write_text(TOKEN)
    data["status"] = {
        "database": str(tmp_path / "status.db"),
        "announce_token_file": str(tmp_path / "token"),
        "services": {"website": {"name": {"en": "Website", "zh-CN": "官方网站"}},
                     "api": {"name": {"en": "Public API", "zh-CN": "开放接口"}},
                     "storage": {"name": {"en": "Object storage", "zh-CN": "对象存储"}}},
    }
    config = write_config(tmp_path / "slawatch.yml", data)

    today = datetime.now(timezone.utc).date()
    history = {
        ("website", (today - timedelta(days=3)).isoformat()): DayTotals(10000, 0, 1000.0, 10000),
        ("website", (today - timedelta(days=10)).isoformat()): DayTotals(1000, 5, 99.5, 995),
        ("website", (today - timedelta(days=30)).isoformat()): DayTotals(100, 10, 9.0, 90),
        ("api", (today - timedelta(days=2)).isoformat()): DayTotals(1000, 30, 50.0, 970),
    }
    store = StatusStore(str(tmp_path / "status.db"))
    store.add_days(history)
    store.close()

    log = tmp_path / "serve.log"
    process = subprocess.Popen([sys.executable, "-m", "slawatch", "serve", "--config.file", str(config),
                                "--web.listen-address", f"127.0.0.1:{port}"], cwd=tmp_path,
                               stdout=log.open("w"), stderr=subprocess.STDOUT)
    stop_processes.append(process)
    wait_http(f"{base}/-/healthy", timeout=60, process=process)

    now = datetime.now(timezone.utc).replace(microsecond=0)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    post(f"{base}/api/v1/announcements", {
        "kind": "maintenance", "services": ["storage"],
        "title": {"en": "Storage cluster upgrade", "zh-CN": "存储集群升级"},
        "body": {"en": "Uploads may be slow during the upgrade.", "zh-CN": "升级期间上传可能变慢。"},
        "starts_at": iso(now - timedelta(minutes=10)), "ends_at": iso(now + timedelta(hours=2))}, auth)
    post(f"{base}/api/v1/announcements", {
        "kind": "report", "title": {"en": "Service report for November 2026", "zh-CN": "2026 年 11 月服务报告"},
        "link": "https://status.example.org/reports/2026-11.html"}, auth)
    alert = {"fingerprint": "0a1b2c", "labels": {"alertname": "SLOErrorBudgetBurn", "service": "website",
                                                 "severity": "ticket", "instance": "10.99.0.7:9100"},
             "annotations": {"summary": "internal annotation text"},
             "startsAt": iso(now - timedelta(hours=5)), "endsAt": iso(now - timedelta(hours=4, minutes=20))}
    webhook = f"{base}/api/v1/alertmanager/webhook?receiver=oncall"
    post(webhook, {"status": "firing", "alerts": [{**alert, "status": "firing"}]})
    post(webhook, {"status": "resolved", "alerts": [{**alert, "status": "resolved"}]})
    post(webhook, {"status": "firing", "alerts": [{
        "status": "firing", "fingerprint": "3d4e5f", "startsAt": iso(now - timedelta(minutes=15)),
        "labels": {"alertname": "SLOErrorBudgetBurn", "service": "api", "severity": "page"}}]})

    expected = {"website": "operational", "api": "major_outage", "storage": "maintenance"}
    deadline = time.monotonic() + 60
    states: dict = {}
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{base}/api/v1/status", timeout=10) as response:
            document = json.load(response)
        states = {s["id"]: s["state"] for s in document["services"]}
        if states == expected:
            break
        time.sleep(0.5)
    assert states == expected, f"exporter states {states} did not reach {expected}: {log.read_text()[-2000:]}"
    return base, history, today


def test_status_page_in_chromium(served_status, tmp_path: Path):
    chromium = require_binary("chromium", "chromium-browser")
    base, history, today = served_status
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    expected_titles = {"en": "Service status", "zh-CN": "服务状态"}
    for locale in ("en", "zh-CN"):
        url = f"{base}/status?lang={locale}"
        dumped = run_chromium(chromium, tmp_path / f"profile-dom-{locale}", "--dump-dom", url)
        assert dumped.returncode == 0, dumped.stderr[-2000:]
        dom = StatusDom()
        dom.feed(dumped.stdout)

        assert dom.html_lang == locale
        assert dom.title_text == expected_titles[locale]
        assert dom.elements_with_src == []
        assert dom.overall == "major_outage"
        assert {name: s["state"] for name, s in dom.services.items()} == {
            "website": "operational", "api": "major_outage", "storage": "maintenance"}
        for name, service in dom.services.items():
            assert len(service["bars"]) == 90, name
            assert service["bars"][-1][0] == today.isoformat(), name
        for (service, day), totals in history.items():
            bars = {date: (level, availability) for date, level, availability in dom.services[service]["bars"]}
            availability = 100 * (totals.probes - totals.failures) / totals.probes
            assert bars[day][1] == f"{availability:.3f}", (service, day)
        levels = {date: level for date, level, _ in dom.services["website"]["bars"]}
        assert levels[(today - timedelta(days=3)).isoformat()] == "good"
        assert levels[(today - timedelta(days=10)).isoformat()] == "fair"
        assert levels[(today - timedelta(days=30)).isoformat()] == "bad"
        assert levels[(today - timedelta(days=60)).isoformat()] == "none"
        assert sorted((i["kind"], i["status"]) for i in dom.incidents) == [
            ("incident", "ongoing"), ("incident", "resolved"), ("maintenance", "in_progress"), ("report", "posted")]

        text = dumped.stdout
        for secret in ("billing-db", "/v1/health", "10.99.0.7", "internal annotation text", "Connection refused"):
            assert secret not in text, (locale, secret)
        assert "存储集群升级" in text if locale == "zh-CN" else "Storage cluster upgrade" in text

        for name, size in (("phone", "390,844"), ("phone-full", "390,2600"), ("desktop", "1280,1400")):
            shot = ARTIFACTS / f"status-{locale}-{name}.png"
            shot.unlink(missing_ok=True)
            result = run_chromium(chromium, tmp_path / f"profile-{locale}-{name}", f"--screenshot={shot}",
                                  f"--window-size={size}", url)
            assert result.returncode == 0, result.stderr[-2000:]
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            print(f"screenshot: {shot}")


def test_status_page_follows_browser_language(served_status, tmp_path: Path):
    chromium = require_binary("chromium", "chromium-browser")
    base, _, _ = served_status
    dumped = run_chromium(chromium, tmp_path / "profile-accept", "--accept-lang=zh-CN,zh", "--dump-dom",
                          f"{base}/status")
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = StatusDom()
    dom.feed(dumped.stdout)
    assert dom.html_lang == "zh-CN"
    assert dom.title_text == "服务状态"
