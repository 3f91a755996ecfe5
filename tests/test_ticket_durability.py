"""The ticket store under SIGKILL: a real exporter process killed in the middle of a burst."""

from __future__ import annotations

import http.client
import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from conftest import free_port, minimal_config, wait_http, write_config
from prometheus_client.parser import text_string_to_metric_families

TICKETS = 5000  # two events each: 10,000 events
BATCH = 20


def burst_events() -> list[dict]:
    events = []
    for number in range(TICKETS):
        ticket = f"K{number}"
        events.append({"id": f"{ticket}-c", "type": "ticket.created", "ticket_id": ticket,
                       "time": "2025-03-03T10:00:00+08:00", "channel": "email", "priority": "normal"})
        events.append({"id": f"{ticket}-r", "type": "ticket.replied", "ticket_id": ticket,
                       "time": "2025-03-03T10:20:00+08:00", "author": "agent", "public": True})
    return events


def start_exporter(config: Path, port: int, log: Path) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "slawatch", "serve", f"--config.file={config}",
                                f"--web.listen-address=127.0.0.1:{port}"], stdout=log.open("a"),
                               stderr=subprocess.STDOUT)
    wait_http(f"http://127.0.0.1:{port}/-/healthy", timeout=60, process=process)
    return process


def post(connection: http.client.HTTPConnection, events: list[dict]) -> int:
    connection.request("POST", "/api/v1/ticket-events", body=json.dumps(events),
                       headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    response.read()
    return response.status


def metric_totals(port: int) -> dict[str, float]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("clock", "calendar") == "calendar":
                totals[sample.name] = totals.get(sample.name, 0) + sample.value
    return totals


def test_sigkill_mid_burst_loses_and_doubles_nothing(tmp_path: Path):
    data = minimal_config(tmp_path)
    config = write_config(tmp_path / "slawatch.yml", data)
    port = free_port()
    log = tmp_path / "exporter.log"
    process = start_exporter(config, port, log)
    events = burst_events()
    batches = [events[i:i + BATCH] for i in range(0, len(events), BATCH)]
    acknowledged: list[dict] = []
    lock = threading.Lock()

    def send(part: list[list[dict]]) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for batch in part:
            try:
                status = post(connection, batch)
            except (OSError, http.client.HTTPException):
                return
            if 200 <= status < 300:
                with lock:
                    acknowledged.extend(batch)

    senders = [threading.Thread(target=send, args=(batches[i::2],)) for i in range(2)]
    for sender in senders:
        sender.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with lock:
            if len(acknowledged) >= len(events) // 3:
                break
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    for sender in senders:
        sender.join(timeout=60)

    assert len(acknowledged) >= len(events) // 3
    assert len(acknowledged) < len(events), "the burst ended before the kill: nothing was tested"
    stored = {row[0] for row in sqlite3.connect(tmp_path / "tickets.db").execute("SELECT id FROM events")}
    missing = [event["id"] for event in acknowledged if event["id"] not in stored]
    assert missing == []

    process = start_exporter(config, port, log)
    try:
        after_restart = metric_totals(port)
        created_stored = sum(1 for event_id in stored if event_id.endswith("-c"))
        answered_stored = sum(1 for n in range(TICKETS) if f"K{n}-c" in stored and f"K{n}-r" in stored)
        assert after_restart["slawatch_tickets_created_total"] == created_stored
        assert after_restart["slawatch_ticket_first_response_seconds_count"] == answered_stored

        # The sender retries everything it sent; only the unstored events count.
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for batch in batches:
            assert post(connection, batch) == 200
        final = metric_totals(port)
    finally:
        process.terminate()
        process.wait(timeout=30)

    assert final["slawatch_tickets_created_total"] == TICKETS
    assert final["slawatch_ticket_first_response_seconds_count"] == TICKETS
    assert final["slawatch_ticket_first_response_seconds_sum"] == TICKETS * 1200
