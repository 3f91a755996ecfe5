"""The status page: roll-ups, states, incidents, announcements, locales and leak prevention."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from slawatch.cli import main as cli_main
from slawatch.config import ConfigError, parse_config
from slawatch.probers import ProbeResult
from slawatch.status import (AnnouncementError, Incident, StatusStore, StatusTracker, StatusView, choose_locale,
                             parse_announcement, render_html)
from slawatch.status.store import DayTotals
from slawatch.web import Exporter, create_app

from conftest import free_port, minimal_config, write_config

# 2026-12-04 12:00:00 UTC
NOON = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc).timestamp()
SECRET_URL = "http://127.0.0.1:{port}/internal-only-health?token=s3cr3t"
SECRETS = ("internal-only-health", "s3cr3t", "10.20.30.40", "instance-label-value", "annotation-secret-text",
           "db-primary-7", "Connection refused")


def make_config(tmp_path: Path, **status) -> dict:
    data = minimal_config(tmp_path)
    data["targets"] = [
        {"service": "web", "url": "http://127.0.0.1:1/a", "module": "http_2xx"},
        {"service": "web", "url": "http://127.0.0.1:1/b", "module": "http_2xx"},
        {"service": "api", "url": "http://127.0.0.1:1/api", "module": "http_2xx"},
        {"service": "db-primary-7", "url": "127.0.0.1:1", "module": "tcp_connect", "public": False},
    ]
    data["status"] = status
    return data


def tracker_for(tmp_path: Path, **status) -> StatusTracker:
    config = parse_config(make_config(tmp_path, **status))
    return StatusTracker(config, StatusStore(str(tmp_path / "status.db")))


def target(tracker: StatusTracker, service: str):
    return next(t for t in tracker.config.targets if t.service == service)


def ok(duration: float = 0.1) -> ProbeResult:
    return ProbeResult(success=True, duration=duration)


def failed() -> ProbeResult:
    return ProbeResult(success=False, duration=2.0, reason="connect", error="Connection refused 10.20.30.40")


# Roll-ups


def test_rollups_count_per_day_and_persist(tmp_path: Path):
    tracker = tracker_for(tmp_path)
    web_target = target(tracker, "web")
    for offset in range(10):
        tracker.observe(web_target, ok(0.2), NOON - offset)
    tracker.observe(web_target, failed(), NOON)
    tracker.observe(web_target, ok(0.4), NOON - 86400)
    tracker.flush(NOON)
    tracker.store.close()

    reopened = tracker_for(tmp_path)
    stored = reopened.store.days("2026-01-01")
    today = stored[("web", "2026-12-04")]
    assert today.probes == 11
    assert today.failures == 1
    assert today.latency_count == 10
    assert today.latency_sum == pytest.approx(2.0)
    assert stored[("web", "2026-12-03")].probes == 1


def test_rollups_add_pending_to_stored(tmp_path: Path):
    tracker = tracker_for(tmp_path)
    tracker.observe(target(tracker, "api"), ok(), NOON)
    tracker.flush(NOON)
    tracker.observe(target(tracker, "api"), failed(), NOON + 1)

    statuses, _ = tracker.snapshot(NOON + 2)
    api = next(s for s in statuses if s.service == "api")
    assert dict(api.days)["2026-12-04"] == DayTotals(probes=2, failures=1, latency_sum=0.1, latency_count=1)


def test_rollups_use_configured_timezone(tmp_path: Path):
    tracker = tracker_for(tmp_path, timezone="Asia/Shanghai")
    # 2026-12-04 17:00 UTC is 2026-12-05 01:00 in Shanghai.
    tracker.observe(target(tracker, "web"), ok(), NOON + 5 * 3600)
    tracker.flush(NOON + 5 * 3600)
    assert list(tracker.store.days("2026-01-01")) == [("web", "2026-12-05")]


def test_rollups_ignore_private_targets(tmp_path: Path):
    tracker = tracker_for(tmp_path)
    tracker.observe(target(tracker, "db-primary-7"), failed(), NOON)
    tracker.flush(NOON)
    assert tracker.store.days("2026-01-01") == {}
    assert "db-primary-7" not in tracker.services


def test_retention_deletes_old_days_and_incidents(tmp_path: Path):
    tracker = tracker_for(tmp_path)
    tracker.store.add_days({("web", "2026-09-05"): DayTotals(probes=5), ("web", "2026-09-06"): DayTotals(probes=6)})
    old = Incident(id=0, kind="update", services=[], title={"en": "old", "zh-CN": "旧"}, started=NOON - 100 * 86400,
                   resolved=NOON - 100 * 86400, created=NOON - 100 * 86400)
    tracker.store.add_incident(old)
    tracker.flush(NOON)
    # 90 days ending 2026-12-04 start on 2026-09-06.
    assert list(tracker.store.days("2000-01-01")) == [("web", "2026-09-06")]
    assert tracker.store.incidents(0) == []


def test_flush_failure_keeps_pending_totals(tmp_path: Path):
    tracker = tracker_for(tmp_path)
    tracker.observe(target(tracker, "web"), ok(), NOON)
    tracker.store.close()
    with pytest.raises(Exception):
        tracker.flush(NOON)
    tracker.store = StatusStore(str(tmp_path / "status.db"))
    tracker.flush(NOON)
    assert tracker.store.days("2026-01-01")[("web", "2026-12-04")].probes == 1


# States

STATE_CASES = [
    # (successes, failures, latency of successes, status config, expected state)
    (20, 0, 0.1, {}, "operational"),
    (19, 1, 0.1, {}, "degraded"),
    (15, 5, 0.1, {}, "partial_outage"),
    (5, 15, 0.1, {}, "major_outage"),
    (0, 20, 0.1, {}, "major_outage"),
    (20, 0, 0.8, {"thresholds": {"degraded_latency": "500ms"}}, "degraded"),
    (20, 0, 0.4, {"thresholds": {"degraded_latency": "500ms"}}, "operational"),
    (9, 1, 0.1, {"thresholds": {"degraded_failure_ratio": 0.2, "partial_outage_failure_ratio": 0.5,
                                "major_outage_failure_ratio": 0.9}}, "operational"),
    (0, 0, 0.1, {}, "no_data"),
]


@pytest.mark.parametrize("successes, failures, latency, status, expected", STATE_CASES)
def test_state_from_recent_probes(tmp_path: Path, successes, failures, latency, status, expected):
    tracker = tracker_for(tmp_path, **status)
    for n in range(successes):
        tracker.observe(target(tracker, "web"), ok(latency), NOON - n)
    for n in range(failures):
        tracker.observe(target(tracker, "web"), failed(), NOON - n)
    statuses, _ = tracker.snapshot(NOON)
    assert statuses[0].service == "web"
    assert statuses[0].state == expected


def test_state_ignores_results_outside_window(tmp_path: Path):
    tracker = tracker_for(tmp_path, thresholds={"window": "5m"})
    tracker.observe(target(tracker, "web"), failed(), NOON - 600)
    tracker.observe(target(tracker, "web"), ok(), NOON - 10)
    statuses, _ = tracker.snapshot(NOON)
    assert statuses[0].state == "operational"


def firing(service: str, fingerprint: str, severity: str = "page", **extra) -> dict:
    return {"status": "firing", "fingerprint": fingerprint, "startsAt": "2026-12-04T11:00:00.123456789Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "labels": {"alertname": "SLOErrorBudgetBurn", "service": service, "severity": severity,
                       "instance": "instance-label-value"},
            "annotations": {"summary": "annotation-secret-text", "description": "annotation-secret-text"},
            "generatorURL": "http://10.20.30.40:9090/graph", **extra}


def test_alert_raises_state_and_resolves(tmp_path: Path):
    tracker = tracker_for(tmp_path)
    for n in range(10):
        tracker.observe(target(tracker, "web"), ok(), NOON - n)
    assert tracker.record_alerts([firing("web", "f1", "ticket")], NOON) == 1
    statuses, incidents = tracker.snapshot(NOON)
    assert statuses[0].state == "degraded"
    assert incidents[0].started == pytest.approx(NOON - 3600, abs=1)

    resolved = {**firing("web", "f1", "ticket"), "status": "resolved", "endsAt": "2026-12-04T11:45:00Z"}
    assert tracker.record_alerts([resolved], NOON) == 1
    statuses, incidents = tracker.snapshot(NOON)
    assert statuses[0].state == "operational"
    assert incidents[0].resolved == pytest.approx(NOON - 900)


def test_alert_state_beats_no_data(tmp_path: Path):
    tracker = tracker_for(tmp_path)
    tracker.record_alerts([firing("api", "f2", "page")], NOON)
    statuses, _ = tracker.snapshot(NOON)
    api = next(s for s in statuses if s.service == "api")
    assert api.state == "partial_outage"


def test_alert_repeated_opens_one_incident(tmp_path: Path):
    tracker = tracker_for(tmp_path)
    # Alertmanager sends the same alert to oncall and support-email, then repeats it.
    assert tracker.record_alerts([firing("web", "f3")], NOON) == 1
    assert tracker.record_alerts([firing("web", "f3")], NOON + 1) == 0
    assert tracker.record_alerts([firing("web", "f3")], NOON + 300) == 0
    assert len(tracker.store.incidents(0)) == 1


def test_alert_after_resolve_opens_new_incident(tmp_path: Path):
    tracker = tracker_for(tmp_path)
    tracker.record_alerts([firing("web", "f4")], NOON)
    tracker.record_alerts([{**firing("web", "f4"), "status": "resolved", "endsAt": "2026-12-04T11:30:00Z"}], NOON)
    tracker.record_alerts([firing("web", "f4", startsAt="2026-12-04T11:50:00Z")], NOON)
    incidents = tracker.store.incidents(0)
    assert len(incidents) == 2
    assert incidents[0].resolved is None


@pytest.mark.parametrize("alert", [
    firing("db-primary-7", "p1"),
    firing("unknown-service", "p2"),
    {"status": "firing", "labels": {"alertname": "Watchdog", "severity": "none"}},
    {"status": "firing", "labels": "not a mapping"},
])
def test_alert_without_public_service_ignored(tmp_path: Path, alert):
    tracker = tracker_for(tmp_path)
    assert tracker.record_alerts([alert], NOON) == 0
    assert tracker.store.incidents(0) == []


def test_maintenance_overrides_state(tmp_path: Path):
    tracker = tracker_for(tmp_path)
    for n in range(10):
        tracker.observe(target(tracker, "web"), failed(), NOON - n)
        tracker.observe(target(tracker, "api"), failed(), NOON - n)
    running = parse_announcement({"kind": "maintenance", "services": ["web"], "title": "Upgrade",
                                  "starts_at": "2026-12-04T11:00:00Z", "ends_at": "2026-12-04T13:00:00Z"},
                                 tracker.services, NOON)
    later = parse_announcement({"kind": "maintenance", "services": ["api"], "title": "Later",
                                "starts_at": "2026-12-05T11:00:00Z", "ends_at": "2026-12-05T13:00:00Z"},
                               tracker.services, NOON)
    tracker.add_announcement(running)
    tracker.add_announcement(later)
    states = {s.service: s.state for s in tracker.snapshot(NOON)[0]}
    assert states == {"web": "maintenance", "api": "major_outage"}
    states = {s.service: s.state for s in tracker.snapshot(NOON + 2 * 3600)[0]}
    assert states["web"] == "no_data"


# Announcements

BAD_ANNOUNCEMENTS = [
    ([], "(body)"),
    ({"kind": "outage", "title": "x"}, "kind"),
    ({"kind": "update"}, "title"),
    ({"kind": "update", "title": "  "}, "title.en"),
    ({"kind": "update", "title": {"fr": "x"}}, "title"),
    ({"kind": "update", "title": "x" * 201}, "title.en"),
    ({"kind": "update", "title": "x", "services": ["db-primary-7"]}, "services[0]"),
    ({"kind": "update", "title": "x", "services": "web"}, "services"),
    ({"kind": "update", "title": "x", "colour": "red"}, "colour"),
    ({"kind": "update", "title": "x", "starts_at": "2026-12-04T11:00:00Z"}, "starts_at"),
    ({"kind": "report", "title": "x"}, "link"),
    ({"kind": "report", "title": "x", "link": "javascript:alert(1)"}, "link"),
    ({"kind": "maintenance", "title": "x", "starts_at": "2026-12-04T11:00:00Z"}, "ends_at"),
    ({"kind": "maintenance", "title": "x", "starts_at": "tomorrow", "ends_at": "2026-12-04T11:00:00Z"},
     "starts_at"),
    ({"kind": "maintenance", "title": "x", "starts_at": "2026-12-04T11:00:00",
      "ends_at": "2026-12-04T12:00:00Z"}, "starts_at"),
    ({"kind": "maintenance", "title": "x", "starts_at": "2026-12-04T11:00:00Z",
      "ends_at": "2026-12-04T10:00:00Z"}, "ends_at"),
]


@pytest.mark.parametrize("data, field", BAD_ANNOUNCEMENTS)
def test_announcement_rejects_bad_input(data, field):
    with pytest.raises(AnnouncementError) as error:
        parse_announcement(data, ["web", "api"], NOON)
    assert error.value.field == field


def test_announcement_text_in_one_locale_fills_both():
    incident = parse_announcement({"kind": "update", "title": {"zh-CN": "网络调整"}}, ["web"], NOON)
    assert incident.title == {"en": "网络调整", "zh-CN": "网络调整"}
    assert incident.started == NOON
    assert incident.resolved == NOON


# Locale


@pytest.mark.parametrize("query, header, allowed, expected", [
    (None, None, True, "en"),
    ("zh-CN", "en-US", True, "zh-CN"),
    ("fr", "zh-CN,zh;q=0.9", True, "zh-CN"),
    (None, "zh-TW;q=0.8, en;q=0.9", True, "en"),
    (None, "fr-FR, zh;q=0.5", True, "zh-CN"),
    (None, "zh-CN", False, "en"),
    (None, "fr, de;q=0.8", True, "en"),
    (None, "en;q=0, zh", True, "zh-CN"),
    (None, ";;;, q=x", True, "en"),
])
def test_choose_locale(query, header, allowed, expected):
    assert choose_locale(query, header, "en", allowed) == expected


# Config


@pytest.mark.parametrize("status, message", [
    ({"timezone": "Mars/Base"}, "status.timezone: unknown time zone 'Mars/Base'"),
    ({"thresholds": {"degraded_failure_ratio": 0.5, "partial_outage_failure_ratio": 0.3}},
     "status.thresholds: failure ratios must rise"),
    ({"services": {"db-primary-7": {"name": {"en": "DB"}}}}, "status.services.db-primary-7: no public target"),
    ({"alert_states": {"page": "broken"}}, "status.alert_states.page"),
    ({"retention_days": 0}, "status.retention_days"),
    ({"title": {"de": "Status"}}, "status.title.de"),
])
def test_config_rejects_bad_status(tmp_path: Path, status, message):
    with pytest.raises(ConfigError) as error:
        parse_config(make_config(tmp_path, **status), "slawatch.yml")
    assert message in str(error.value)


# Rendering and leaks


def populated_tracker(tmp_path: Path) -> StatusTracker:
    tracker = tracker_for(tmp_path, services={"web": {"name": {"en": "Website", "zh-CN": "官网"}}})
    for n in range(30):
        tracker.observe(target(tracker, "web"), ok(0.25), NOON - n)
        tracker.observe(target(tracker, "api"), failed(), NOON - n)
    tracker.observe(target(tracker, "db-primary-7"), failed(), NOON)
    tracker.store.add_days({("web", "2026-11-30"): DayTotals(probes=1000, failures=2, latency_sum=100,
                                                             latency_count=998)})
    tracker.record_alerts([firing("api", "a1")], NOON)
    tracker.add_announcement(parse_announcement(
        {"kind": "report", "title": {"en": "November report", "zh-CN": "十一月报告"},
         "link": "https://status.example.org/reports/2026-11.html", "body": "<script>alert(1)</script>"},
        tracker.services, NOON))
    return tracker


def test_view_matches_data(tmp_path: Path):
    document = StatusView(populated_tracker(tmp_path), "en").build(NOON)
    services = {s["id"]: s for s in document["services"]}
    assert list(services) == ["web", "api"]
    assert services["web"]["name"] == "Website"
    assert services["web"]["state"] == "operational"
    assert services["api"]["state"] == "major_outage"
    assert document["overall"]["state"] == "major_outage"
    assert len(services["web"]["days"]) == 90
    assert services["web"]["days"][-1]["date"] == "2026-12-04"
    day = next(d for d in services["web"]["days"] if d["date"] == "2026-11-30")
    assert day["availability"] == pytest.approx(99.8)
    assert day["level"] == "fair"
    assert day["response_time_ms"] == pytest.approx(100.2, abs=0.1)
    assert services["web"]["response_time_ms"] == pytest.approx(250.0)
    # Newest first: the report was posted at noon, the alert started at 11:00.
    assert [i["kind"] for i in document["incidents"]] == ["report", "incident"]
    incident = next(i for i in document["incidents"] if i["kind"] == "incident")
    assert incident["status"] == "ongoing"
    assert incident["title"] == "Service disruption"


def test_uptime_text_names_the_measured_days(tmp_path: Path):
    services = {s["id"]: s for s in StatusView(populated_tracker(tmp_path), "en").build(NOON)["services"]}
    # web has data on 2026-11-30 and today; api only today.
    assert services["web"]["uptime_text"].endswith("uptime over 2 days with measurements (of the last 90)")
    assert services["api"]["uptime_text"] == "0% uptime over 1 day with measurements (of the last 90)"
    # (100 s + 30 x 0.25 s) / (998 + 30) checks = 105 ms.
    assert services["web"]["response_text"] == "Response time: 250 ms now, 105 ms average over 2 days with measurements"
    chinese = {s["id"]: s for s in StatusView(populated_tracker(tmp_path / "zh"), "zh-CN").build(NOON)["services"]}
    assert chinese["api"]["uptime_text"] == "最近 90 天中有测量数据的 1 天可用率 0%"
    assert chinese["web"]["response_text"] == "响应时间：当前 250 ms，有测量数据的 2 天平均 105 ms"


def test_uptime_text_over_full_history(tmp_path: Path):
    tracker = tracker_for(tmp_path, services={"web": {}})
    tracker.observe(target(tracker, "web"), ok(0.1), NOON)
    tracker.store.add_days({("web", day.isoformat()): DayTotals(probes=100, failures=0, latency_sum=10,
                                                                latency_count=100)
                            for day in (date(2026, 12, 3) - timedelta(days=n) for n in range(89))})
    service = StatusView(tracker, "en").build(NOON)["services"][0]
    assert service["uptime_text"] == "100% uptime over the last 90 days"
    assert service["response_text"] == "Response time: 100 ms now, 100 ms average over 90 days"
    assert StatusView(tracker, "zh-CN").build(NOON)["services"][0]["uptime_text"] == "最近 90 天可用率 100%"


def test_view_in_chinese(tmp_path: Path):
    document = StatusView(populated_tracker(tmp_path), "zh-CN").build(NOON)
    assert document["title"] == "服务状态"
    assert document["services"][0]["name"] == "官网"
    assert document["services"][0]["state_text"] == "正常运行"
    assert document["overall"]["text"] == "服务严重中断"
    report = next(i for i in document["incidents"] if i["kind"] == "report")
    assert report["title"] == "十一月报告"


def test_html_escapes_announcement_text(tmp_path: Path):
    html = render_html(StatusView(populated_tracker(tmp_path), "en").build(NOON))
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


@pytest.mark.parametrize("locale", ["en", "zh-CN"])
def test_html_and_json_leak_nothing(tmp_path: Path, locale):
    tracker = populated_tracker(tmp_path)
    document = StatusView(tracker, locale).build(NOON)
    html = render_html(document)
    text = json.dumps(document, ensure_ascii=False)
    for target_config in tracker.config.targets:
        assert target_config.url not in html
        assert target_config.url not in text
    for secret in SECRETS:
        assert secret not in html, secret
        assert secret not in text, secret
    assert "127.0.0.1" not in html
    assert "127.0.0.1" not in text


def test_html_loads_no_external_assets(tmp_path: Path):
    html = render_html(StatusView(populated_tracker(tmp_path), "en").build(NOON))
    assert "<script" not in html
    assert "<link" not in html
    assert "@import" not in html
    assert "url(" not in html
    # The only absolute URL is the announced report link.
    assert html.count("https://") == 1
    assert "http://" not in html


# Routes, with real scheduled probes against local servers


@pytest.fixture
async def failing_server(aiohttp_server):
    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=503, text="backend db-primary-7 at 10.20.30.40 is down")

    async def healthy(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/internal-only-health", broken)
    app.router.add_get("/healthy", healthy)
    return await aiohttp_server(app)


@pytest.fixture
def make_exporter(aiohttp_client, tmp_path: Path, failing_server):
    async def build(token: str | None = "t0ken-for-tests", **status):
        port = failing_server.port
        data = minimal_config(tmp_path)
        data["modules"]["http_2xx"]["timeout"] = "1s"
        data["modules"]["tcp_connect"]["timeout"] = "1s"
        data["targets"] = [
            {"service": "web", "url": f"http://127.0.0.1:{port}/healthy", "module": "http_2xx", "interval": "2s"},
            {"service": "api", "url": SECRET_URL.format(port=port), "module": "http_2xx", "interval": "2s"},
            {"service": "db-primary-7", "url": f"127.0.0.1:{free_port()}", "module": "tcp_connect",
             "interval": "2s", "public": False},
        ]
        if token is not None:
            (tmp_path / "token").write_text(token + "\n")
            status.setdefault("announce_token_file", str(tmp_path / "token"))
        data["status"] = status
        path = write_config(tmp_path / "slawatch.yml", data)
        exporter = Exporter(parse_config(data), str(path), registry=CollectorRegistry())
        client = await aiohttp_client(create_app(exporter))
        return client, exporter

    return build


async def wait_for_states(client, expected: dict[str, str], timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    document: dict = {}
    while time.monotonic() < deadline:
        response = await client.get("/api/v1/status")
        document = await response.json()
        if {s["id"]: s["state"] for s in document["services"]} == expected:
            return document
        await asyncio.sleep(0.3)
    raise AssertionError(f"states did not reach {expected} within {timeout}s: {document.get('services')}")


async def test_routes_show_scheduled_probe_results(make_exporter):
    client, _ = await make_exporter()
    document = await wait_for_states(client, {"web": "operational", "api": "major_outage"})
    assert document["locale"] == "en"

    page = await client.get("/status")
    html = await page.text()
    assert page.status == 200
    assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert 'data-service="api" data-state="major_outage"' in html
    assert "Major outage" in html


async def test_routes_leak_nothing(make_exporter, failing_server):
    client, exporter = await make_exporter()
    await wait_for_states(client, {"web": "operational", "api": "major_outage"})
    webhook = {"status": "firing", "receiver": "oncall", "alerts": [firing("api", "r1"), firing("db-primary-7", "r2")]}
    response = await client.post("/api/v1/alertmanager/webhook?receiver=oncall", json=webhook)
    assert response.status == 200

    for lang in ("en", "zh-CN"):
        html = await (await client.get("/status", params={"lang": lang})).text()
        text = await (await client.get("/api/v1/status", params={"lang": lang})).text()
        for secret in (*SECRETS, SECRET_URL.format(port=failing_server.port), "127.0.0.1",
                       str(failing_server.port)):
            assert secret not in html, (lang, secret)
            assert secret not in text, (lang, secret)
        assert f'<html lang="{lang}">' in html


async def test_routes_pick_locale(make_exporter):
    client, _ = await make_exporter()
    zh = await (await client.get("/status", headers={"Accept-Language": "zh-CN,zh;q=0.9"})).text()
    assert '<html lang="zh-CN">' in zh
    en = await (await client.get("/status", params={"lang": "en"}, headers={"Accept-Language": "zh-CN"})).text()
    assert '<html lang="en">' in en


async def test_routes_ignore_header_when_disallowed(make_exporter):
    client, _ = await make_exporter(accept_language=False)
    html = await (await client.get("/status", headers={"Accept-Language": "zh-CN"})).text()
    assert '<html lang="en">' in html


async def test_webhook_opens_and_resolves_incident(make_exporter):
    client, _ = await make_exporter()
    alert = firing("web", "w1", "ticket")
    for receiver in ("oncall", "support-email"):
        await client.post(f"/api/v1/alertmanager/webhook?receiver={receiver}",
                          json={"status": "firing", "alerts": [alert]})
    document = await (await client.get("/api/v1/status")).json()
    assert [(i["kind"], i["status"]) for i in document["incidents"]] == [("incident", "ongoing")]

    resolved = {**alert, "status": "resolved", "endsAt": "2026-12-04T11:30:00Z"}
    await client.post("/api/v1/alertmanager/webhook?receiver=oncall", json={"status": "resolved", "alerts": [resolved]})
    document = await (await client.get("/api/v1/status")).json()
    assert [(i["kind"], i["status"]) for i in document["incidents"]] == [("incident", "resolved")]
    assert document["incidents"][0]["ended_at"] == "2026-12-04T11:30:00+00:00"


ANNOUNCEMENT = {"kind": "maintenance", "services": ["web"], "title": {"en": "Database upgrade", "zh-CN": "数据库升级"},
                "starts_at": "2099-01-01T01:00:00Z", "ends_at": "2099-01-01T03:00:00Z"}


@pytest.mark.parametrize("headers, status", [
    ({}, 401),
    ({"Authorization": "Bearer wrong"}, 401),
    ({"Authorization": "Basic t0ken-for-tests"}, 401),
    ({"Authorization": "Bearer t0ken-for-tests"}, 201),
])
async def test_announce_requires_token(make_exporter, headers, status):
    client, _ = await make_exporter()
    response = await client.post("/api/v1/announcements", json=ANNOUNCEMENT, headers=headers)
    assert response.status == status


async def test_announce_disabled_without_token(make_exporter, monkeypatch):
    monkeypatch.delenv("SLAWATCH_ANNOUNCE_TOKEN", raising=False)
    client, _ = await make_exporter(token=None)
    response = await client.post("/api/v1/announcements", json=ANNOUNCEMENT, headers={"Authorization": "Bearer x"})
    assert response.status == 403
    assert "status.announce_token_file" in (await response.json())["error"]


async def test_announce_token_from_environment(make_exporter, monkeypatch):
    monkeypatch.setenv("SLAWATCH_TEST_TOKEN", "from-env")
    client, _ = await make_exporter(token=None, announce_token_env="SLAWATCH_TEST_TOKEN")
    response = await client.post("/api/v1/announcements", json=ANNOUNCEMENT,
                                 headers={"Authorization": "Bearer from-env"})
    assert response.status == 201


async def test_announce_bad_input_keeps_accepted(make_exporter):
    client, _ = await make_exporter()
    auth = {"Authorization": "Bearer t0ken-for-tests"}
    assert (await client.post("/api/v1/announcements", json=ANNOUNCEMENT, headers=auth)).status == 201

    bad = await client.post("/api/v1/announcements", json={**ANNOUNCEMENT, "ends_at": "2098-01-01T00:00:00Z"},
                            headers=auth)
    assert bad.status == 400
    assert (await bad.json())["field"] == "ends_at"
    not_json = await client.post("/api/v1/announcements", data=b"{", headers=auth)
    assert not_json.status == 400

    document = await (await client.get("/api/v1/status", params={"lang": "zh-CN"})).json()
    assert [(i["title"], i["status"]) for i in document["incidents"]] == [("数据库升级", "scheduled")]


async def test_rollups_survive_exporter_restart(make_exporter, tmp_path: Path):
    client, exporter = await make_exporter()
    await wait_for_states(client, {"web": "operational", "api": "major_outage"})
    await exporter.stop()
    today = StatusStore(str(tmp_path / "slawatch-status.db")).days("2000-01-01")
    assert today, "no roll-ups written at shutdown"
    assert all(totals.probes > 0 for totals in today.values())
    assert {service for service, _ in today} == {"web", "api"}


async def test_cli_announce_posts(make_exporter, tmp_path: Path, capsys):
    client, _ = await make_exporter()
    url = str(client.make_url("/")).rstrip("/")
    argv = ["announce", "report", "--web.url", url, "--token-file", str(tmp_path / "token"),
            "--title", "November report", "--title-zh", "十一月服务报告",
            "--link", "https://status.example.org/reports/2026-11.html"]
    code = await asyncio.get_running_loop().run_in_executor(None, cli_main, argv)
    assert code == 0
    assert "Posted report announcement" in capsys.readouterr().out

    bad = ["announce", "maintenance", "--web.url", url, "--token-file", str(tmp_path / "token"), "--title", "x",
           "--starts", "2099-01-01T01:00:00Z"]
    code = await asyncio.get_running_loop().run_in_executor(None, cli_main, bad)
    assert code == 1
    assert "ends_at" in capsys.readouterr().err

    document = await (await client.get("/api/v1/status", params={"lang": "zh-CN"})).json()
    assert [i["title"] for i in document["incidents"]] == ["十一月服务报告"]


def test_cli_announce_without_token(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.delenv("SLAWATCH_ANNOUNCE_TOKEN", raising=False)
    code = cli_main(["announce", "update", "--web.url", f"http://127.0.0.1:{free_port()}", "--title", "x"])
    assert code == 2
    assert "SLAWATCH_ANNOUNCE_TOKEN" in capsys.readouterr().err


def test_cli_announce_unreachable(tmp_path: Path, capsys):
    (tmp_path / "token").write_text("t")
    code = cli_main(["announce", "update", "--web.url", f"http://127.0.0.1:{free_port()}", "--title", "x",
                     "--token-file", str(tmp_path / "token"), "--timeout", "5"])
    assert code == 1
    assert "Cannot reach the exporter" in capsys.readouterr().err


async def test_scheduler_survives_observer_error(tmp_path: Path, failing_server):
    from slawatch.scheduler import ProbeMetrics, Scheduler

    data = minimal_config(tmp_path)
    data["modules"]["http_2xx"]["timeout"] = "1s"
    data["targets"] = [{"service": "web", "url": f"http://127.0.0.1:{failing_server.port}/healthy",
                        "module": "http_2xx", "interval": "2s"}]
    config = parse_config(data)
    seen = []

    def broken(target_config, result):
        raise RuntimeError("observer bug")

    registry = CollectorRegistry()
    scheduler = Scheduler(ProbeMetrics(registry, config.global_.probe_duration_buckets), config,
                          [broken, lambda t, r: seen.append((t.service, r.success))])
    await scheduler.start()
    try:
        deadline = time.monotonic() + 20
        while not seen and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    finally:
        await scheduler.stop()
    assert seen[0] == ("web", True)
    assert registry.get_sample_value("slawatch_probes_total",
                                     {"service": "web", "module": "http_2xx", "location": "test"}) >= 1


def test_status_database_defaults_next_to_tickets(tmp_path: Path):
    config = parse_config(make_config(tmp_path))
    assert config.status.database_path(config.tickets.database) == str(tmp_path / "slawatch-status.db")
