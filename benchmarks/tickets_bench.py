"""Ticket store benchmarks: webhook ingestion, start-up with many stored tickets, /metrics scrape time.

Run from the repository root (results go to docs/benchmarks-tickets.md by hand):

    PYTHONPATH=exporter python benchmarks/tickets_bench.py ingest --batch 1 --clients 16
    PYTHONPATH=exporter python benchmarks/tickets_bench.py ingest --batch 100 --clients 4 --events 2000000
    PYTHONPATH=exporter python benchmarks/tickets_bench.py startup --tickets 1000000 --dir /tmp/slawatch-bench

Every measurement runs the real exporter (`python -m slawatch serve`) as a subprocess on a loopback
port, with the ticket store in WAL mode (synchronous=NORMAL), as in production. Ingestion is driven
by wrk (apt-get install wrk) with HMAC-signed requests prepared before the run, each sent once; the
exporter is pinned to one CPU and wrk to the other.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "exporter"))

from slawatch.config import parse_config  # noqa: E402
from slawatch.tickets import build_store, parse_event  # noqa: E402
from slawatch.tickets.webhook import sign  # noqa: E402

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


def start_exporter(config: Path, port: int, log: Path, cpu: str | None = None) -> tuple[subprocess.Popen, float]:
    """Start the exporter (pinned to `cpu` if given); return the process and the seconds until /-/ready returned 200."""
    started = time.monotonic()
    process = subprocess.Popen([*(["taskset", "-c", cpu] if cpu else []), sys.executable, "-m", "slawatch", "serve", f"--config.file={config}",
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


WRK_SCRIPT = """
-- Sends each pre-signed request of the file once, in order, over every connection.
local requests = {}
for line in io.lines(os.getenv("SLAWATCH_BENCH_REQUESTS")) do
  local timestamp, signature, body = line:match("^(%d+)\\t([^\\t]+)\\t(.*)$")
  requests[#requests + 1] = {timestamp, signature, body}
end
local next_request = 0
local exhausted = false
wrk.method = "POST"
request = function()
  next_request = next_request + 1
  if next_request > #requests then
    exhausted = true
    next_request = 1
  end
  local item = requests[next_request]
  return wrk.format(nil, nil, {["Content-Type"] = "application/json", ["X-Slawatch-Timestamp"] = item[1],
                               ["X-Slawatch-Signature"] = item[2]}, item[3])
end
done = function(summary, latency, requests_done)
  io.write(string.format("WRK requests=%d non2xx=%d socket_errors=%d micros=%d p50_us=%d p99_us=%d\\n",
    summary.requests, summary.errors.status, summary.errors.connect + summary.errors.read +
    summary.errors.write + summary.errors.timeout, summary.duration, latency:percentile(50),
    latency:percentile(99)))
end
"""


def signed_requests(events: list[dict], batch: int, secret: bytes) -> list[str]:
    """Return one line per request: Unix timestamp, signature and JSON body, tab-separated."""
    timestamp = str(int(time.time()))
    lines = []
    for start in range(0, len(events), batch):
        part = events[start:start + batch]
        body = json.dumps(part[0] if batch == 1 else part, separators=(",", ":")).encode()
        lines.append(f"{timestamp}\t{sign(secret, timestamp, body)}\t{body.decode()}")
    return lines


def bench_ingest(args: argparse.Namespace) -> None:
    """Drive the webhook with wrk: every request is signed and distinct, and its response comes after its commit."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    with tempfile.TemporaryDirectory(prefix="slawatch-bench-") as scratch:
        directory = Path(scratch)
        secret = b"bench-secret"
        (directory / "secret").write_bytes(secret)
        data = config_data(directory / "tickets.db")
        data["tickets"]["webhook"] = {"secret_file": str(directory / "secret")}
        config = directory / "slawatch.yml"
        config.write_text(yaml.safe_dump(data), encoding="utf-8")

        events: list[dict] = []
        number = 0
        while len(events) < args.events:
            events += ticket_events(number)
            number += 1
        lines = signed_requests(events[:args.events], args.batch, secret)
        (directory / "requests.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (directory / "send.lua").write_text(WRK_SCRIPT, encoding="utf-8")

        port = free_port()
        process, _ = start_exporter(config, port, directory / "exporter.log", args.cpu)
        try:
            before = cpu_seconds(process.pid)
            wrk = subprocess.run(
                ["taskset", "-c", args.client_cpu, "wrk", "-t1", f"-c{args.clients}", f"-d{args.duration}s",
                 "-s", str(directory / "send.lua"), f"http://127.0.0.1:{port}/api/v1/ticket-events"],
                capture_output=True, text=True, env={**os.environ, "SLAWATCH_BENCH_REQUESTS": str(directory / "requests.tsv")},
                timeout=args.duration + 120, check=True)
            cpu = cpu_seconds(process.pid) - before
            stored = stored_events(port)
        finally:
            stop(process)
    summary = dict(field.split("=") for field in next(
        line for line in wrk.stdout.splitlines() if line.startswith("WRK ")).split()[1:])
    requests = int(summary["requests"])
    seconds = int(summary["micros"]) / 1e6
    if requests > len(lines):
        print(f"warning: wrk sent {requests} requests but only {len(lines)} were prepared, so some were "
              "duplicates: raise --events")
    print(f"ingest: batch={args.batch} clients={args.clients} seconds={seconds:.1f} requests={requests} "
          f"events_per_second={min(requests, len(lines)) * args.batch / seconds:.0f} "
          f"requests_per_second={requests / seconds:.0f} non2xx={summary['non2xx']} "
          f"socket_errors={summary['socket_errors']} p50_ms={int(summary['p50_us']) / 1000:.1f} "
          f"p99_ms={int(summary['p99_us']) / 1000:.1f} exporter_cpu_seconds={cpu:.1f} stored_events={stored}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stored_events(port: int) -> int:
    """Sum of slawatch_ticket_events_total on the exporter's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as response:
        text = response.read().decode()
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("slawatch_ticket_events_total{")))


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
    ingest.add_argument("--events", type=int, default=300000, help="distinct events to prepare")
    ingest.add_argument("--batch", type=int, default=1, help="events per request")
    ingest.add_argument("--clients", type=int, default=16, help="concurrent HTTP connections")
    ingest.add_argument("--duration", type=int, default=20, help="seconds of load")
    ingest.add_argument("--cpu", default="1", help="CPU list the exporter is pinned to (taskset -c)")
    ingest.add_argument("--client-cpu", default="0", help="CPU list wrk is pinned to")
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
