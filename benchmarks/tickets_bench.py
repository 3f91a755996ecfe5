"""Ticket store benchmarks: webhook ingestion, start-up with many stored tickets, /metrics scrape time.

Run from the repository root (results go to docs/benchmarks-tickets.md by hand):

    PYTHONPATH=exporter python benchmarks/tickets_bench.py ingest --events 100000 --batch 100
    PYTHONPATH=exporter python benchmarks/tickets_bench.py startup --tickets 1000000 --dir /tmp/slawatch-bench

Every measurement runs the real exporter (`python -m slawatch serve`) as a subprocess on a loopback
port, with the ticket store in WAL mode (synchronous=NORMAL), as in production.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "exporter"))

from slawatch.config import parse_config  # noqa: E402
from slawatch.tickets import build_store, parse_event  # noqa: E402

CHANNELS = ["phone", "email", "chat", "forum"]
PRIORITIES = ["low", "normal", "high", "urgent"]
TEAMS = ["tier1", "tier2", "billing"]
CALENDAR = {"timezone": "Asia/Shanghai", "hours": {day: ["09:00-18:00"] for day in ("mon", "tue", "wed", "thu", "fri")},
            "holiday_source": "china"}


def config_data(database: Path) -> dict:
    return {
        "global": {"location": "bench"},
        "tickets": {"database": str(database), "calendars": {"office": CALENDAR}, "business_calendar": "office",
                    "priority_calendars": {"urgent": "24x7"}, "teams": {name: name for name in TEAMS}},
    }


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ticket_events(number: int, closed: bool = True) -> list[dict]:
    """Return the events of one ticket: created, an auto-reply, an agent reply, solved and closed."""
    ticket = f"B{number}"
    day = 3 + number % 5
    hour = 8 + number % 10
    base = f"2025-03-{day:02d}T{hour:02d}"
    labels = {"channel": CHANNELS[number % 4], "priority": PRIORITIES[(number // 4) % 4],
              "team": TEAMS[number % 3]}
    events = [
        {"id": f"{ticket}-c", "type": "ticket.created", "ticket_id": ticket, "time": f"{base}:00:00+08:00", **labels},
        {"id": f"{ticket}-a", "type": "ticket.replied", "ticket_id": ticket, "time": f"{base}:00:05+08:00",
         "author": "automation"},
        {"id": f"{ticket}-r", "type": "ticket.replied", "ticket_id": ticket,
         "time": f"{base}:{10 + number % 50:02d}:00+08:00", "author": "agent"},
    ]
    if closed:
        events += [
            {"id": f"{ticket}-s", "type": "ticket.status_changed", "ticket_id": ticket,
             "time": f"2025-03-{day + 1:02d}T10:00:00+08:00", "status": "solved"},
            {"id": f"{ticket}-x", "type": "ticket.status_changed", "ticket_id": ticket,
             "time": f"2025-03-{day + 5:02d}T10:00:00+08:00", "status": "closed"},
        ]
    return events


def start_exporter(config: Path, port: int, log: Path) -> tuple[subprocess.Popen, float]:
    """Start the exporter; return the process and the seconds until /-/ready returned 200."""
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "slawatch", "serve", f"--config.file={config}",
                                f"--web.listen-address=127.0.0.1:{port}"], stdout=log.open("a"),
                               stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(REPO / "exporter")})
    deadline = started + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"exporter exited with {process.returncode}: see {log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as response:
                if response.status == 200:
                    return process, time.monotonic() - started
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"exporter not ready after 600 s: see {log}")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()


def scrape_times(port: int, count: int) -> tuple[list[float], int]:
    times, size = [], 0
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for _ in range(count):
        started = time.perf_counter()
        connection.request("GET", "/metrics")
        body = connection.getresponse().read()
        times.append(time.perf_counter() - started)
        size = len(body)
    return times, size


def bench_ingest(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="slawatch-bench-") as scratch:
        directory = Path(scratch)
        config = directory / "slawatch.yml"
        config.write_text(yaml.safe_dump(config_data(directory / "tickets.db")), encoding="utf-8")
        port = free_port()
        process, _ = start_exporter(config, port, directory / "exporter.log")
        try:
            events = []
            number = 0
            while len(events) < args.events:
                events += ticket_events(number)
                number += 1
            events = events[:args.events]
            bodies = [json.dumps(events[i:i + args.batch]).encode() for i in range(0, len(events), args.batch)]
            failures = []

            def send(part: list[bytes]) -> None:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                for body in part:
                    connection.request("POST", "/api/v1/ticket-events", body=body,
                                       headers={"Content-Type": "application/json"})
                    response = connection.getresponse()
                    response.read()
                    if response.status != 200:
                        failures.append(response.status)

            threads = [threading.Thread(target=send, args=(bodies[i::args.clients],)) for i in range(args.clients)]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.perf_counter() - started
        finally:
            stop(process)
    print(f"ingest: events={len(events)} batch={args.batch} clients={args.clients} seconds={elapsed:.2f} "
          f"events_per_second={len(events) / elapsed:.0f} requests_per_second={len(bodies) / elapsed:.0f} "
          f"failures={len(failures)}")


def fill_store(database: Path, tickets: int, open_tickets: int) -> float:
    """Store `tickets` closed tickets and `open_tickets` open ones through the store's own ingest path."""
    config = parse_config(config_data(database)).tickets
    store, _ = build_store(config)
    started = time.perf_counter()
    batch: list = []
    for number in range(tickets + open_tickets):
        for data in ticket_events(number, closed=number < tickets):
            batch.append(parse_event(data, CHANNELS, PRIORITIES))
        if len(batch) >= 5000:
            store.ingest(batch)
            batch = []
        if number and number % 100000 == 0:
            print(f"  stored {number} tickets in {time.perf_counter() - started:.0f} s", flush=True)
    if batch:
        store.ingest(batch)
    store.close()
    return time.perf_counter() - started


def bench_startup(args: argparse.Namespace) -> None:
    directory = Path(args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    database = directory / "tickets.db"
    config = directory / "slawatch.yml"
    config.write_text(yaml.safe_dump(config_data(database)), encoding="utf-8")
    if not database.exists():
        seconds = fill_store(database, args.tickets, args.open)
        print(f"fill: tickets={args.tickets} open={args.open} seconds={seconds:.0f} "
              f"database_bytes={database.stat().st_size}")

    port = free_port()
    ready = []
    for _ in range(args.starts):
        process, seconds = start_exporter(config, port, directory / "exporter.log")
        ready.append(seconds)
        if len(ready) < args.starts:
            stop(process)
    try:
        times, size = scrape_times(port, args.scrapes)
    finally:
        stop(process)
    print(f"startup: tickets={args.tickets} open={args.open} ready_seconds={[round(s, 2) for s in ready]} "
          f"median={statistics.median(ready):.2f}")
    print(f"scrape: count={len(times)} median_ms={statistics.median(times) * 1000:.1f} "
          f"max_ms={max(times) * 1000:.1f} bytes={size}")
    loaded = [line for line in (directory / "exporter.log").read_text().splitlines() if "Loaded ticket store" in line]
    if loaded:
        print(f"store: {loaded[-1]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    ingest = commands.add_parser("ingest", help="sustained webhook ingestion")
    ingest.add_argument("--events", type=int, default=100000)
    ingest.add_argument("--batch", type=int, default=100, help="events per request")
    ingest.add_argument("--clients", type=int, default=4, help="concurrent HTTP connections")
    ingest.set_defaults(func=bench_ingest)
    startup = commands.add_parser("startup", help="start-up and /metrics scrape with many stored tickets")
    startup.add_argument("--tickets", type=int, default=1000000, help="closed tickets to store")
    startup.add_argument("--open", type=int, default=5000, help="open tickets to store")
    startup.add_argument("--dir", required=True, help="directory for the database; reused when it exists")
    startup.add_argument("--starts", type=int, default=3)
    startup.add_argument("--scrapes", type=int, default=20)
    startup.set_defaults(func=bench_startup)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
