"""The exporter's routes, through aiohttp's test client and real local targets."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import yaml
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from slawatch.config import parse_config
from slawatch.web import Exporter, create_app
from slawatch.web.guard import ProbeGuard

from conftest import free_port, minimal_config, write_config

pytestmark = pytest.mark.both_loops


def parse_metrics(text: str) -> dict[tuple[str, tuple], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


@pytest.fixture
async def target(aiohttp_server):
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(text="late")

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/slow", slow)
    return await aiohttp_server(app)


@pytest.fixture
def make_client(aiohttp_client, tmp_path: Path):
    async def build(data: dict | None = None, config_path: Path | None = None):
        data = data or minimal_config(tmp_path)
        path = config_path or write_config(tmp_path / "slawatch.yml", data)
        exporter = Exporter(parse_config(data), str(path), registry=CollectorRegistry())
        client = await aiohttp_client(create_app(exporter))
        return client, exporter

    return build


async def test_probe_returns_blackbox_metrics(make_client, target):
    client, _ = await make_client()

    response = await client.get("/probe", params={"target": str(target.make_url("/ok")), "module": "http_2xx"})
    samples = parse_metrics(await response.text())

    assert response.status == 200
    assert samples[("probe_success", ())] == 1
    assert samples[("probe_http_status_code", ())] == 200
    assert ("probe_duration_seconds", ()) in samples
    for phase in ("resolve", "connect", "processing", "transfer"):
        assert ("probe_http_duration_seconds", (("phase", phase),)) in samples


async def test_probe_unreachable_target_is_success_zero(make_client):
    client, _ = await make_client()

    response = await client.get("/probe", params={"target": f"http://127.0.0.1:{free_port()}/", "module": "http_2xx"})
    samples = parse_metrics(await response.text())

    assert response.status == 200
    assert samples[("probe_success", ())] == 0


async def test_probe_tcp_module(make_client, target):
    client, _ = await make_client()

    response = await client.get("/probe", params={"target": f"127.0.0.1:{target.port}", "module": "tcp_connect"})

    assert response.status == 200
    assert parse_metrics(await response.text())[("probe_success", ())] == 1


BAD_PROBES = [
    ({"target": "http://127.0.0.1/", "module": "icmp"}, 400, 'Unknown module "icmp"'),
    ({"module": "http_2xx"}, 400, "Target parameter is missing"),
    ({"target": "ftp://127.0.0.1/", "module": "http_2xx"}, 400, "has scheme 'ftp'"),
    ({"target": "127.0.0.1", "module": "tcp_connect"}, 400, "is not host:port"),
    ({"target": "http://[::1", "module": "http_2xx"}, 400, "is not a valid URL"),
    ({"target": "tcp://127.0.0.1:22", "module": "tcp_connect"}, 400, "drop the scheme"),
    ({"target": "http://10.20.30.40/", "module": "http_2xx"}, 403, "10.20.30.40 is not in probe.allow"),
]


@pytest.mark.parametrize(("params", "status", "message"), BAD_PROBES)
async def test_probe_bad_requests(make_client, params, status, message):
    client, exporter = await make_client()

    response = await client.get("/probe", params=params)
    text = await response.text()

    assert response.status == status, text
    assert message in text


async def test_probe_deadline_follows_scrape_timeout(make_client, target):
    client, _ = await make_client()

    started = time.monotonic()
    response = await client.get("/probe", params={"target": str(target.make_url("/slow")), "module": "http_2xx"},
                                headers={"X-Prometheus-Scrape-Timeout-Seconds": "1.5"})
    elapsed = time.monotonic() - started

    assert parse_metrics(await response.text())[("probe_success", ())] == 0
    assert 0.9 <= elapsed < 1.5


async def test_probe_debug_redacts_secrets(make_client, target, tmp_path: Path):
    data = minimal_config(tmp_path)
    data["modules"]["http_2xx"]["http"] = {"headers": {"Authorization": "Bearer s3cret-token"}}
    client, _ = await make_client(data)

    response = await client.get("/probe", params={"target": str(target.make_url("/ok")), "module": "http_2xx",
                                                  "debug": "true"})
    config_text = await (await client.get("/config")).text()
    text = await response.text()

    assert "Probe succeeded" in text
    assert "probe_success 1.0" in text
    assert '"prober": "http"' in text
    assert "s3cret-token" not in text
    assert "<secret>" in text
    assert "s3cret-token" not in config_text


def test_guard_rules_without_connecting():
    config = parse_config({"probe": {"allow": ["127.0.0.0/8", "intranet.example"]}})
    guard = ProbeGuard(config)

    assert guard("127.0.0.2", "127.0.0.2") is None
    assert guard("localhost", "::ffff:127.0.0.2") is None
    assert guard("intranet.example", "192.0.2.10") is None
    assert "not in probe.allow" in guard("other.example", "192.0.2.10")
    # Only checked as strings here: nothing connects to these addresses.
    assert "link-local" in guard("intranet.example", "169.254.169.254")
    assert "link-local" in guard("intranet.example", "::ffff:169.254.169.254")
    assert "link-local" in guard("x", "fe80::1")


def test_guard_allows_listed_link_local_range():
    guard = ProbeGuard(parse_config({"probe": {"allow": ["169.254.0.0/16"]}}))

    assert guard("169.254.1.1", "169.254.1.1") is None


async def test_scheduled_probes_feed_counters(make_client, target, tmp_path: Path):
    data = minimal_config(tmp_path, targets=[
        {"service": "web", "url": str(target.make_url("/ok")), "module": "http_2xx", "interval": "3s"},
        {"service": "down", "url": f"http://127.0.0.1:{free_port()}/", "module": "http_2xx", "interval": "3s"},
    ])
    client, exporter = await make_client(data)

    deadline = time.monotonic() + 10
    web_labels = (("location", "test"), ("module", "http_2xx"), ("service", "web"))
    down_labels = (("location", "test"), ("module", "http_2xx"), ("service", "down"))
    while time.monotonic() < deadline:
        samples = parse_metrics(await (await client.get("/metrics")).text())
        if samples.get(("slawatch_probes_total", web_labels), 0) >= 1 and \
                samples.get(("slawatch_probes_total", down_labels), 0) >= 1:
            break
        await asyncio.sleep(0.2)

    assert samples[("slawatch_probes_total", web_labels)] >= 1
    assert samples[("slawatch_probe_failures_total", web_labels)] == 0
    assert samples[("slawatch_probe_success", web_labels)] == 1
    assert samples[("slawatch_probe_duration_seconds_count", web_labels)] >= 1
    assert samples[("slawatch_probes_total", down_labels)] >= 1
    assert samples[("slawatch_probe_failures_total", down_labels)] == samples[("slawatch_probes_total", down_labels)]
    assert samples[("slawatch_probe_success", down_labels)] == 0


def created(event_id: str, ticket: str, at: str, channel: str = "email", priority: str = "normal") -> dict:
    return {"id": event_id, "type": "ticket.created", "ticket_id": ticket, "time": at, "channel": channel,
            "priority": priority}


def replied(event_id: str, ticket: str, at: str, author: str = "agent", public: bool = True) -> dict:
    return {"id": event_id, "type": "ticket.replied", "ticket_id": ticket, "time": at, "author": author,
            "public": public}


def status(event_id: str, ticket: str, at: str, value: str) -> dict:
    return {"id": event_id, "type": "ticket.status_changed", "ticket_id": ticket, "time": at, "status": value}


EMAIL = (("channel", "email"), ("priority", "normal"), ("source", "webhook"), ("team", "support"))
EMAIL_CALENDAR = tuple(sorted(EMAIL + (("clock", "calendar"),)))


def bucket(le: str, labels=EMAIL_CALENDAR) -> tuple:
    return ("slawatch_ticket_first_response_seconds_bucket", tuple(sorted(labels + (("le", le),))))


async def test_ticket_first_response_histogram(make_client):
    client, _ = await make_client()
    events = [
        created("e1", "T1", "2026-12-01T09:00:00+08:00"),
        replied("e2", "T1", "2026-12-01T09:00:30+08:00", author="system"),
        replied("e3", "T1", "2026-12-01T09:10:00+08:00", public=False),
        replied("e4", "T1", "2026-12-01T09:40:00+08:00"),
        created("e5", "T2", "2026-12-01T01:00:00Z"),
        replied("e6", "T2", "2026-12-01T03:00:00Z"),
    ]

    response = await client.post("/api/v1/ticket-events", json={"events": events})
    samples = parse_metrics(await (await client.get("/metrics")).text())

    assert response.status == 200
    assert await response.json() == {"accepted": 6, "duplicates": 0, "conflicts": 0}
    assert samples[("slawatch_ticket_first_response_seconds_count", EMAIL_CALENDAR)] == 2
    assert samples[("slawatch_ticket_first_response_seconds_sum", EMAIL_CALENDAR)] == 2400 + 7200
    assert samples[bucket("1800.0")] == 0
    assert samples[bucket("3600.0")] == 1
    assert samples[bucket("7200.0")] == 2
    assert samples[("slawatch_tickets_created_total", EMAIL)] == 2


async def test_ticket_open_and_oldest_unanswered(make_client):
    client, _ = await make_client()
    now = time.time()
    iso = lambda seconds_ago: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - seconds_ago))  # noqa: E731
    phone = (("channel", "phone"), ("priority", "high"), ("source", "webhook"), ("team", "support"))
    phone_calendar = tuple(sorted(phone + (("clock", "calendar"),)))
    events = [
        created("a1", "A", iso(600), "phone", "high"),
        created("b1", "B", iso(300), "phone", "high"),
        created("c1", "C", iso(900), "phone", "high"),
        replied("c2", "C", iso(800)),
        created("d1", "D", iso(1200), "phone", "high"),
        status("d2", "D", iso(1100), "solved"),
    ]

    await client.post("/api/v1/ticket-events", json=events)
    samples = parse_metrics(await (await client.get("/metrics")).text())

    assert samples[("slawatch_tickets_open", phone)] == 3
    assert samples[("slawatch_tickets_unanswered", phone)] == 2
    assert 600 <= samples[("slawatch_ticket_oldest_unanswered_age_seconds", phone_calendar)] < 660
    assert samples[("slawatch_ticket_oldest_unanswered_age_seconds", EMAIL_CALENDAR)] == 0


async def test_ticket_duplicate_and_out_of_order(make_client):
    client, _ = await make_client()
    reply = replied("r1", "T9", "2026-12-01T10:05:00Z")
    create = created("c1", "T9", "2026-12-01T10:00:00Z")

    first = await client.post("/api/v1/ticket-events", json=reply)
    before = parse_metrics(await (await client.get("/metrics")).text())
    second = await client.post("/api/v1/ticket-events", json=[create, reply])
    third = await client.post("/api/v1/ticket-events", json=create)
    after = parse_metrics(await (await client.get("/metrics")).text())

    assert await first.json() == {"accepted": 1, "duplicates": 0, "conflicts": 0}
    assert before.get(("slawatch_ticket_first_response_seconds_count", EMAIL_CALENDAR), 0) == 0
    assert await second.json() == {"accepted": 1, "duplicates": 1, "conflicts": 0}
    assert await third.json() == {"accepted": 0, "duplicates": 1, "conflicts": 0}
    assert after[("slawatch_ticket_first_response_seconds_count", EMAIL_CALENDAR)] == 1
    assert after[("slawatch_ticket_first_response_seconds_sum", EMAIL_CALENDAR)] == 300


async def test_ticket_reused_event_id_keeps_the_stored_event(make_client, caplog):
    client, _ = await make_client()
    create = created("c1", "T9", "2026-12-01T10:00:00Z")
    first_reply = replied("r1", "T9", "2026-12-01T10:05:00Z")
    # The same id for another reply, twenty minutes later.
    other_reply = replied("r1", "T9", "2026-12-01T10:25:00Z")

    await client.post("/api/v1/ticket-events", json=[create, first_reply])
    response = await client.post("/api/v1/ticket-events", json=[other_reply, create])
    metrics = parse_metrics(await (await client.get("/metrics")).text())

    assert await response.json() == {"accepted": 0, "duplicates": 2, "conflicts": 1}
    assert metrics[("slawatch_ticket_first_response_seconds_sum", EMAIL_CALENDAR)] == 300
    assert "different events reuse their ids source=webhook ids=r1" in caplog.text


BAD_EVENTS = [
    ({"type": "ticket.created", "ticket_id": "T", "time": "2026-12-01T10:00:00Z", "channel": "email",
      "priority": "normal"}, "id", "required field is missing"),
    ({**created("x", "T", "2026-12-01T10:00:00"), }, "time", "has no time zone"),
    ({**created("x", "T", "yesterday")}, "time", "invalid timestamp"),
    ({**created("x", "T", "2026-12-01T10:00:00Z", channel="fax")}, "channel", "unknown value 'fax'"),
    ({**created("x", "T", "2026-12-01T10:00:00Z", priority="p0")}, "priority", "unknown value 'p0'"),
    ({**created("x", "T", "2026-12-01T10:00:00Z"), "type": "ticket.deleted"}, "type", "unknown event type"),
    ({**created("x", "T", "2026-12-01T10:00:00Z"), "colour": "red"}, "colour", "unknown field"),
    ({**replied("x", "T", "2026-12-01T10:00:00Z"), "public": "yes"}, "public", "expected true or false"),
    ({**replied("x", "T", "2026-12-01T10:00:00Z"), "author": "robot"}, "author", "unknown value 'robot'"),
    ({**created("x", "", "2026-12-01T10:00:00Z")}, "ticket_id", "non-empty string"),
    ({**created("x", "T", "0001-01-01T00:00:00+08:00")}, "time", "out of range"),
    ({**created("x", "T", "9999-12-31T23:59:59-08:00")}, "time", "out of range"),
]


@pytest.mark.parametrize(("event", "field", "message"), BAD_EVENTS)
async def test_ticket_bad_event_rejected(make_client, event, field, message):
    client, _ = await make_client()

    response = await client.post("/api/v1/ticket-events", json=event)
    body = await response.json()

    assert response.status == 400
    assert body["field"] == field
    assert message in body["error"]


async def test_ticket_bad_batch_stores_nothing(make_client):
    client, exporter = await make_client()
    good = created("g1", "G", "2026-12-01T10:00:00Z")
    bad = created("b1", "B", "2026-12-01T10:00:00Z", channel="fax")

    response = await client.post("/api/v1/ticket-events", json={"events": [good, bad]})
    retry = await client.post("/api/v1/ticket-events", json=good)

    assert response.status == 400
    assert (await response.json())["field"] == "events[1].channel"
    assert await retry.json() == {"accepted": 1, "duplicates": 0, "conflicts": 0}


async def test_ticket_non_object_item_rejected(make_client):
    client, _ = await make_client()

    response = await client.post("/api/v1/ticket-events", json={"events": ["not an event"]})
    body = await response.json()

    assert response.status == 400
    assert body["field"] == "events[0]"


async def test_ticket_deeply_nested_json_rejected(make_client):
    client, _ = await make_client()

    response = await client.post("/api/v1/ticket-events", data=b"[" * 100_000,
                                 headers={"Content-Type": "application/json"})

    assert response.status == 400
    assert "invalid JSON" in (await response.json())["error"]


async def test_ticket_invalid_json_rejected(make_client):
    client, _ = await make_client()

    response = await client.post("/api/v1/ticket-events", data=b"{not json",
                                 headers={"Content-Type": "application/json"})

    assert response.status == 400
    assert "invalid JSON" in (await response.json())["error"]


async def test_ticket_counters_survive_restart(make_client, tmp_path: Path):
    data = minimal_config(tmp_path)
    client, exporter = await make_client(data)
    await client.post("/api/v1/ticket-events", json=[created("c", "T", "2026-12-01T10:00:00Z"),
                                                      replied("r", "T", "2026-12-01T10:20:00Z"),
                                                      created("o", "U", "2026-12-01T10:00:00Z")])
    await client.close()

    restarted = Exporter(parse_config(data), None, registry=CollectorRegistry())
    try:
        from prometheus_client import generate_latest

        samples = parse_metrics(generate_latest(restarted.registry).decode())
    finally:
        restarted.store.close()

    assert samples[("slawatch_ticket_first_response_seconds_count", EMAIL_CALENDAR)] == 1
    assert samples[("slawatch_ticket_first_response_seconds_sum", EMAIL_CALENDAR)] == 1200
    assert samples[("slawatch_tickets_created_total", EMAIL)] == 2
    assert samples[("slawatch_tickets_open", EMAIL)] == 2


async def test_reload_applies_valid_and_keeps_old_on_invalid(make_client, target, tmp_path: Path):
    data = minimal_config(tmp_path)
    path = write_config(tmp_path / "slawatch.yml", data)
    client, exporter = await make_client(data, path)

    data["targets"] = [{"service": "web", "url": str(target.make_url("/ok")), "module": "http_2xx",
                        "interval": "5s"}]
    write_config(path, data)
    ok = await client.post("/-/reload")
    services_after_ok = [t.service for t in exporter.config.targets]

    path.write_text(yaml.safe_dump({**data, "targets": [{"service": "web"}]}), encoding="utf-8")
    failed = await client.post("/-/reload")
    metrics = parse_metrics(await (await client.get("/metrics")).text())

    assert ok.status == 200
    assert services_after_ok == ["web"]
    assert failed.status == 500
    assert "targets[0].url: required key is missing" in await failed.text()
    assert [t.service for t in exporter.config.targets] == ["web"]
    assert metrics[("slawatch_config_last_reload_successful", ())] == 0


async def test_alertmanager_webhook_sink(make_client):
    client, _ = await make_client()
    payload = {"version": "4", "status": "firing", "receiver": "oncall", "groupLabels": {"alertname": "X"},
               "alerts": [{"status": "firing", "labels": {"alertname": "X", "severity": "page"}}]}

    response = await client.post("/api/v1/alertmanager/webhook?receiver=oncall", json=payload)
    bad = await client.post("/api/v1/alertmanager/webhook?receiver=oncall", json={"status": "firing"})
    recent = await (await client.get("/api/v1/alertmanager/notifications")).json()

    assert response.status == 200
    assert bad.status == 400
    assert recent[0]["receiver"] == "oncall"
    assert recent[0]["alerts"][0]["labels"]["alertname"] == "X"


async def test_healthy_and_metrics_health(make_client):
    client, _ = await make_client()

    healthy = await client.get("/-/healthy")
    metrics = parse_metrics(await (await client.get("/metrics")).text())

    assert healthy.status == 200
    assert metrics[("slawatch_config_last_reload_successful", ())] == 1
    assert ("slawatch_build_info", (("version", "0.1.0"),)) in metrics


def test_http_responses_counted_by_code():
    from slawatch.probers.result import ProbeResult
    from slawatch.scheduler import ProbeMetrics

    registry = CollectorRegistry()
    metrics = ProbeMetrics(registry, [0.1, 1.0])
    labels = ("web", "http_2xx", "test")
    metrics.register_target(labels)
    metrics.observe(labels, ProbeResult(success=True, duration=0.01, status_code=200))
    metrics.observe(labels, ProbeResult(success=False, duration=0.01, reason="http_status", status_code=503))
    metrics.observe(labels, ProbeResult(success=False, duration=0.01, reason="connect"))
    code_labels = {"service": "web", "module": "http_2xx", "location": "test"}

    assert registry.get_sample_value("slawatch_probe_http_responses_total", {**code_labels, "code": "200"}) == 1
    assert registry.get_sample_value("slawatch_probe_http_responses_total", {**code_labels, "code": "503"}) == 1
    # A probe without a response has no code, so it adds no series.
    assert registry.get_sample_value("slawatch_probe_http_responses_total", {**code_labels, "code": "0"}) is None

    metrics.remove_target(labels)

    assert registry.get_sample_value("slawatch_probe_http_responses_total", {**code_labels, "code": "200"}) is None
    assert registry.get_sample_value("slawatch_probe_http_responses_total", {**code_labels, "code": "503"}) is None
