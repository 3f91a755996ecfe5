"""POST /api/v1/ticket-events: signatures, bad input and the source metrics."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from conftest import free_port, minimal_config, write_config
from slawatch.config import parse_config
from slawatch.tickets.webhook import sign
from slawatch.web import Exporter, create_app

SECRET = b"webhook-test-secret"


@pytest.fixture
def make_client(aiohttp_client, tmp_path: Path):
    async def build(webhook: dict | None = None):
        data = minimal_config(tmp_path)
        if webhook is not None:
            data["tickets"]["webhook"] = webhook
        path = write_config(tmp_path / "slawatch.yml", data)
        exporter = Exporter(parse_config(data), str(path), registry=CollectorRegistry())
        return await aiohttp_client(create_app(exporter)), exporter

    return build


def samples(text: str) -> dict:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def created(event_id: str, ticket: str, **fields) -> dict:
    return {"id": event_id, "type": "ticket.created", "ticket_id": ticket, "time": "2025-03-03T10:00:00+08:00",
            "channel": "email", "priority": "normal", **fields}


def signed_headers(body: bytes, secret: bytes = SECRET, at: float | None = None) -> dict:
    timestamp = str(int(at if at is not None else time.time()))
    return {"Content-Type": "application/json", "X-Slawatch-Timestamp": timestamp,
            "X-Slawatch-Signature": sign(secret, timestamp, body)}


async def stored_events(exporter) -> int:
    return exporter.store._db.execute("SELECT COUNT(*) FROM events").fetchone()[0]


async def test_webhook_signature_accepted(make_client, tmp_path: Path):
    (tmp_path / "secret").write_bytes(SECRET + b"\n")
    client, exporter = await make_client({"secret_file": str(tmp_path / "secret")})
    body = json.dumps(created("e1", "T1")).encode()

    response = await client.post("/api/v1/ticket-events", data=body, headers=signed_headers(body))

    assert response.status == 200
    assert await stored_events(exporter) == 1


@pytest.mark.parametrize(("case", "message"), [
    ("wrong secret", "invalid X-Slawatch-Signature"),
    ("stale", "s behind the receiver's clock, more than tickets.webhook.max_age 300s"),
    ("future", "s ahead of the receiver's clock, more than tickets.webhook.max_age 300s"),
    ("milliseconds", "looks like milliseconds"),
    ("tampered body", "invalid X-Slawatch-Signature"),
    ("no signature", "missing X-Slawatch-Signature"),
    ("no timestamp", "missing X-Slawatch-Timestamp"),
    ("bad timestamp", "invalid X-Slawatch-Timestamp"),
])
async def test_webhook_bad_signature_rejected(make_client, monkeypatch, case, message):
    monkeypatch.setenv("SLAWATCH_TEST_SECRET", SECRET.decode())
    client, exporter = await make_client({"secret_env": "SLAWATCH_TEST_SECRET", "max_age": "5m"})
    body = json.dumps(created("e1", "T1")).encode()
    headers = signed_headers(body)
    if case == "wrong secret":
        headers = signed_headers(body, secret=b"other")
    elif case == "stale":
        headers = signed_headers(body, at=time.time() - 600)
    elif case == "future":
        headers = signed_headers(body, at=time.time() + 600)
    elif case == "milliseconds":
        moment = str(int(time.time() * 1000))
        headers = {"X-Slawatch-Timestamp": moment, "X-Slawatch-Signature": sign(SECRET, moment, body)}
    elif case == "tampered body":
        body = json.dumps(created("e1", "T1", priority="urgent")).encode()
    elif case == "no signature":
        del headers["X-Slawatch-Signature"]
    elif case == "no timestamp":
        del headers["X-Slawatch-Timestamp"]
    elif case == "bad timestamp":
        headers["X-Slawatch-Timestamp"] = "yesterday"

    response = await client.post("/api/v1/ticket-events", data=body, headers=headers)
    metrics = samples(await (await client.get("/metrics")).text())

    assert response.status == 401
    assert message in (await response.json())["error"]
    assert await stored_events(exporter) == 0
    assert metrics[("slawatch_ticket_source_errors_total", (("kind", "signature"), ("source", "webhook")))] == 1


BAD_EVENTS = [
    (created("x", "T", channel="fax"), "channel", "unknown value 'fax'"),
    (created("x", "T", priority="p9"), "priority", "unknown value 'p9'"),
    ({**created("x", "T"), "time": "2025-03-03T10:00:00"}, "time", "has no time zone"),
    ({**created("x", "T"), "time": "2099-03-03T10:00:00+08:00"}, "time", "is in the future"),
    ({**created("x", "T"), "source": "has space"}, "source", "invalid value"),
    ({"id": "x", "type": "ticket.replied", "ticket_id": "T", "time": "2025-03-03T10:00:00Z", "author": "agent",
      "visibility": "secret"}, "visibility", "unknown value 'secret'"),
    ({"id": "x", "type": "ticket.replied", "ticket_id": "T", "time": "2025-03-03T10:00:00Z", "author": "agent",
      "visibility": "internal", "public": True}, "visibility", "contradicts public"),
    ({"id": "x", "type": "ticket.removed", "ticket_id": "T", "time": "2025-03-03T10:00:00Z", "reason": "lost"},
     "reason", "unknown value 'lost'"),
    ({"id": "x", "type": "ticket.removed", "ticket_id": "T", "time": "2025-03-03T10:00:00Z", "reason": "spam",
      "merged_into": "U"}, "merged_into", "only a ticket removed with reason merged"),
    ({"id": "x", "type": "ticket.status_changed", "ticket_id": "T", "time": "2025-03-03T10:00:00Z",
      "status": "archived"}, "status", "unknown value 'archived'"),
]


@pytest.mark.parametrize(("bad", "field", "message"), BAD_EVENTS)
async def test_webhook_bad_event_changes_nothing(make_client, bad, field, message):
    client, exporter = await make_client()
    good = [created("g1", "G"), {"id": "g2", "type": "ticket.replied", "ticket_id": "G",
                                 "time": "2025-03-03T10:30:00+08:00", "author": "agent"}]
    assert (await client.post("/api/v1/ticket-events", json=good)).status == 200
    before = await (await client.get("/metrics")).text()

    response = await client.post("/api/v1/ticket-events", json={"events": [created("g3", "H"), bad]})
    after = await (await client.get("/metrics")).text()

    assert response.status == 400
    body = await response.json()
    assert body["field"] == f"events[1].{field}"
    assert message in body["error"]
    assert await stored_events(exporter) == 2
    unchanged = lambda text: {k: v for k, v in samples(text).items()  # noqa: E731
                              if not k[0].startswith(("slawatch_ticket_source", "slawatch_ticket_oldest"))}
    assert unchanged(after) == unchanged(before)


async def test_webhook_future_bound_allows_clock_skew(make_client):
    client, exporter = await make_client()
    soon = datetime.fromtimestamp(time.time() + 60, timezone.utc).isoformat()
    later = datetime.fromtimestamp(time.time() + 3600, timezone.utc).isoformat()

    accepted = await client.post("/api/v1/ticket-events", json={**created("e1", "T1"), "time": soon})
    refused = await client.post("/api/v1/ticket-events", json=[{**created("e2", "T2"), "time": later}])

    assert accepted.status == 200
    assert refused.status == 400
    body = await refused.json()
    assert body["field"] == "[0].time"
    assert "tickets.webhook.max_future" in body["error"]
    assert await stored_events(exporter) == 1


async def test_webhook_source_metrics(make_client):
    client, _ = await make_client()

    await client.post("/api/v1/ticket-events", json=created("e1", "T1"))
    metrics = samples(await (await client.get("/metrics")).text())

    assert metrics[("slawatch_ticket_source_last_success_timestamp_seconds", (("source", "webhook"),))] > 0
    assert metrics[("slawatch_ticket_source_lag_seconds", (("source", "webhook"),))] > 0


def test_serve_rejects_missing_secret_file(tmp_path: Path):
    import subprocess
    import sys

    data = minimal_config(tmp_path)
    data["tickets"]["webhook"] = {"secret_file": str(tmp_path / "missing")}
    path = write_config(tmp_path / "slawatch.yml", data)

    completed = subprocess.run([sys.executable, "-m", "slawatch", "serve", f"--config.file={path}",
                                f"--web.listen-address=127.0.0.1:{free_port()}"], capture_output=True, text=True, timeout=60)

    assert completed.returncode == 1
    assert "cannot read the webhook secret file" in completed.stderr


async def test_reload_rejects_ticket_setting_change(make_client, tmp_path: Path):
    client, exporter = await make_client()
    data = minimal_config(tmp_path)
    data["tickets"]["agent_created"] = "exclude"
    data["tickets"]["channels"] = ["phone", "email", "chat", "forum", "social"]
    write_config(tmp_path / "slawatch.yml", data)

    error = await exporter.reload()

    assert "tickets.agent_created changed: restart the exporter to apply it" in error
    assert exporter.config.tickets.agent_created == "answered_at_creation"


async def test_reload_applies_new_channel(make_client, tmp_path: Path):
    client, exporter = await make_client()
    data = minimal_config(tmp_path)
    data["tickets"]["channels"] = ["phone", "email", "chat", "forum", "social"]
    write_config(tmp_path / "slawatch.yml", data)

    assert await exporter.reload() is None
    response = await client.post("/api/v1/ticket-events", json=created("s1", "S", channel="social"))

    assert response.status == 200


@pytest.mark.parametrize("accept", ["", "text/plain; version=0.0.4",
                                    "application/openmetrics-text; version=1.0.0; charset=utf-8"])
async def test_metrics_fast_path_matches_generic(make_client, accept):
    from prometheus_client import generate_latest
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics

    client, exporter = await make_client()
    await client.post("/api/v1/ticket-events", json=[
        created("m1", "M"),
        {"id": "m2", "type": "ticket.replied", "ticket_id": "M", "time": "2025-03-03T10:30:00+08:00",
         "author": "agent"},
        created("m3", "N", channel="chat"),
        {"id": "m4", "type": "ticket.status_changed", "ticket_id": "N", "time": "2025-03-03T11:00:00+08:00",
         "status": "closed"}])

    response = await client.get("/metrics", headers={"Accept": accept} if accept else {})
    text = await response.text()
    openmetrics = "openmetrics" in accept

    assert response.status == 200
    assert response.headers["Content-Type"].startswith("application/openmetrics-text" if openmetrics else "text/plain")
    parsed = parse_openmetrics(text) if openmetrics else text_string_to_metric_families(text)
    fast = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in parsed for s in f.samples
            if s.name.startswith(("slawatch_ticket", "slawatch_tickets", "slawatch_calendar"))
            and "oldest_unanswered" not in s.name}
    generic = {k: v for k, v in samples(generate_latest(exporter.registry).decode()).items()
               if k[0].startswith(("slawatch_ticket", "slawatch_tickets", "slawatch_calendar"))
               and "oldest_unanswered" not in k[0] and "last_success" not in k[0] and "lag" not in k[0]}
    fast = {k: v for k, v in fast.items() if "last_success" not in k[0] and "lag" not in k[0]}
    assert fast == generic
    assert ("slawatch_ticket_first_response_seconds_count",
            (("channel", "email"), ("clock", "calendar"), ("priority", "normal"), ("source", "webhook"),
             ("team", "support"))) in fast
    assert text.count("# TYPE slawatch_tickets_created") == 1
    assert "slawatch_build_info" in text


@pytest.mark.parametrize(("case", "status"), [("valid", 200), ("wrong secret", 401), ("stale", 401),
                                              ("missing", 401)])
async def test_zendesk_webhook_signature(make_client, tmp_path: Path, case, status):
    from datetime import datetime, timezone

    from slawatch.tickets.webhook import sign_zendesk

    (tmp_path / "zendesk-secret").write_text("dGVzdC1zaWduaW5nLXNlY3JldA==\n", encoding="utf-8")
    client, exporter = await make_client({"zendesk_secret_file": str(tmp_path / "zendesk-secret")})
    body = json.dumps(created("z1", "Z-1")).encode()
    moment = time.time() - (900 if case == "stale" else 0)
    timestamp = datetime.fromtimestamp(moment, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    secret = b"other" if case == "wrong secret" else b"dGVzdC1zaWduaW5nLXNlY3JldA=="
    headers = {"Content-Type": "application/json", "X-Zendesk-Webhook-Signature-Timestamp": timestamp,
               "X-Zendesk-Webhook-Signature": sign_zendesk(secret, timestamp, body)}
    if case == "missing":
        del headers["X-Zendesk-Webhook-Signature"]

    response = await client.post("/api/v1/ticket-events/zendesk", data=body, headers=headers)

    assert response.status == status
    assert await stored_events(exporter) == (1 if status == 200 else 0)
    if status == 200:
        labels = ("zendesk", "email", "normal", "support")
        assert exporter.store.snapshot().counters[("slawatch_tickets_created_total", labels)] == 1


async def test_zendesk_route_off_without_secret(make_client):
    client, _ = await make_client()

    response = await client.post("/api/v1/ticket-events/zendesk", json=created("z1", "Z-1"))

    assert response.status == 404
    assert "tickets.webhook.zendesk_secret_file" in (await response.json())["error"]


async def test_webhook_oversized_and_empty_bodies_answer_json(make_client):
    client, exporter = await make_client()
    assert (await client.post("/api/v1/ticket-events", json=created("e1", "T1"))).status == 200
    padding = "x" * (9 * 1024 * 1024)

    oversized = await client.post("/api/v1/ticket-events", data=json.dumps({**created("e2", "T2"), "pad": padding}),
                                  headers={"Content-Type": "application/json"})
    empty = await client.post("/api/v1/ticket-events", json=[])
    metrics = samples(await (await client.get("/metrics")).text())

    assert oversized.status == 413
    assert (await oversized.json())["error"].startswith("the body is larger than 8 MiB")
    assert empty.status == 400
    assert (await empty.json())["field"] == "(body)"
    assert metrics[("slawatch_ticket_source_errors_total", (("kind", "invalid"), ("source", "webhook")))] == 2
    assert await stored_events(exporter) == 1
