"""The Request Tracker poller against the real RT 5 from Debian, and against a rate-limiting stub."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import pytest
from aiohttp import web

from conftest import free_port
from slawatch.config import parse_config
from slawatch.tickets import SourceMetrics, build_store
from slawatch.tickets.lifecycle import CREATED, FIRST_RESOLUTION, FIRST_RESPONSE, FIRST_RESPONSES
from slawatch.tickets.sources.rt import CURSOR_KEY, RTPoller

RT_SETUP = "/usr/sbin/rt-setup-database-5"
RT_SERVER = "/usr/share/request-tracker5/libexec/rt-server"
USERS = """
@Users = (
    { Name => 'customer', EmailAddress => 'customer@example.test', Password => 'customer-pass', Privileged => 1 },
    { Name => 'agent', EmailAddress => 'agent@example.test', Password => 'agent-pass', Privileged => 1 },
);
@ACL = ( { GroupDomain => 'SystemInternal', GroupType => 'Privileged', Right => 'SuperUser' } );
1;
"""

@pytest.fixture(scope="module")
def rt_server(tmp_path_factory):
    """Run RT 5 with a fresh SQLite database on a loopback port; yield its base URL."""
    if not (os.access(RT_SETUP, os.X_OK) and os.access(RT_SERVER, os.X_OK)):
        pytest.skip("Request Tracker 5 is not installed (Debian packages request-tracker5 rt5-db-sqlite "
                    "rt5-standalone)")
    directory = tmp_path_factory.mktemp("rt")
    port = free_port()
    (directory / "site.d").mkdir()
    site = directory / "RT_SiteConfig.pm"
    site.write_text(f"""
Set($DatabaseType, 'SQLite');
Set($DatabaseName, '{directory}/rt.db');
Set($rtname, 'slawatch-test');
Set($Organization, 'slawatch.test');
Set($WebDomain, '127.0.0.1');
Set($WebPort, {port});
Set($WebPath, '');
Set($WebBaseURL, 'http://127.0.0.1:{port}');
Set($LogToSTDERR, 'warning');
Set($LogToSyslog, undef);
Set($LogToFile, undef);
Set($MailCommand, 'mbox');
1;
""", encoding="utf-8")
    (directory / "users.pl").write_text(USERS, encoding="utf-8")
    # RT reads RT_SITE_CONFIG instead of /etc/request-tracker5, so the system install stays untouched.
    env = {**os.environ, "RT_SITE_CONFIG": str(site), "RT_SITE_CONFIG_DIR": str(directory / "site.d")}
    for arguments in (["--action", "init", "--skip-create"],
                      ["--action", "insert", "--datafile", str(directory / "users.pl"), "--skip-create"]):
        completed = subprocess.run([RT_SETUP, *arguments], env=env, capture_output=True, text=True, timeout=300)
        assert completed.returncode == 0, completed.stdout + completed.stderr

    log = (directory / "rt-server.log").open("w")
    process = subprocess.Popen([RT_SERVER, "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            rest(base, "GET", "/queues/all", user="root", password="password")
            break
        except (urllib.error.URLError, OSError):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"RT did not start on {base}: see {directory / 'rt-server.log'}")
            time.sleep(0.5)
    yield base
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()

def rest(base: str, method: str, path: str, body: dict | None = None, user: str = "agent",
         password: str = "agent-pass"):
    credentials = base64.b64encode(f"{user}:{password}".encode()).decode()
    request = urllib.request.Request(f"{base}/REST/2.0{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"Basic {credentials}",
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read() or b"null")

def create_ticket(base: str, subject: str) -> str:
    created = rest(base, "POST", "/ticket", {"Queue": "General", "Subject": subject,
                                              "Requestor": "customer@example.test", "Content": "Please help"},
                   user="customer", password="customer-pass")
    return created["id"]

def reply(base: str, ticket: str, kind: str, user: str = "agent", password: str = "agent-pass") -> None:
    rest(base, "POST", f"/ticket/{ticket}/{kind}", {"Content": f"{kind} text", "ContentType": "text/plain"},
         user=user, password=password)

def history_times(base: str, ticket: str) -> dict[str, list[float]]:
    data = rest(base, "GET", f"/ticket/{ticket}/history?fields=Type,Created&per_page=100")
    times: dict[str, list[float]] = {}
    for item in data["items"]:
        moment = datetime.fromisoformat(item["Created"].replace("Z", "+00:00")).timestamp()
        times.setdefault(item["Type"], []).append(moment)
    return times

def rt_config(tmp_path: Path, base: str, **rt) -> dict:
    (tmp_path / "rt-password").write_text("agent-pass\n", encoding="utf-8")
    return {"tickets": {"database": str(tmp_path / "tickets.db"),
                        "sources": {"rt": {"url": base, "user": "agent",
                                           "password_file": str(tmp_path / "rt-password"), **rt}}}}

def labels(*extra: str) -> tuple[str, ...]:
    return ("rt", "email", "low", "support", *extra)

async def test_rt_first_response_from_history(rt_server, tmp_path: Path):
    ticket = create_ticket(rt_server, "Cannot log in")
    time.sleep(1.1)
    reply(rt_server, ticket, "comment")
    time.sleep(1.1)
    reply(rt_server, ticket, "correspond")
    reply(rt_server, ticket, "correspond", user="customer", password="customer-pass")
    rest(rt_server, "PUT", f"/ticket/{ticket}", {"Status": "resolved"})
    times = history_times(rt_server, ticket)
    config = parse_config(rt_config(tmp_path, rt_server, query=f"id = {ticket}"))
    store, _ = build_store(config.tickets)
    metrics = SourceMetrics()

    read = await RTPoller(config.tickets, store, metrics).poll_once()
    snapshot = store.snapshot()

    assert read == 1
    assert snapshot.counters[(CREATED, labels())] == 1
    response = snapshot.histograms[(FIRST_RESPONSE, labels("calendar"))]
    assert response.count == 1
    # The first Correspond counts; the auto-reply (EmailRecord by RT_System) and the comment do not.
    assert response.sum == times["Correspond"][0] - times["Create"][0]
    assert response.sum >= 2
    assert snapshot.counters[(FIRST_RESPONSES, labels("human"))] == 1
    resolution = snapshot.histograms[(FIRST_RESOLUTION, labels("calendar"))]
    assert resolution.sum == times["Status"][-1] - times["Create"][0]
    assert snapshot.open == []
    assert store.get_meta(CURSOR_KEY) is not None
    assert metrics.last_success["rt"] > 0

async def test_rt_restart_mid_page_counts_once(rt_server, tmp_path: Path):
    tickets = [create_ticket(rt_server, f"Batch {n}") for n in range(3)]
    for ticket in tickets:
        reply(rt_server, ticket, "correspond")
    query = " OR ".join(f"id = {ticket}" for ticket in tickets)
    config = parse_config(rt_config(tmp_path, rt_server, query=query, page_size=1))
    store, _ = build_store(config.tickets)

    first = await RTPoller(config.tickets, store, SourceMetrics()).poll_once(max_pages=1)
    cursor = store.get_meta(CURSOR_KEY)
    store.close()
    store, _ = build_store(config.tickets)
    rest_of_it = await RTPoller(config.tickets, store, SourceMetrics()).poll_once()
    again = await RTPoller(config.tickets, store, SourceMetrics()).poll_once()
    snapshot = store.snapshot()

    assert first == 1
    assert cursor is not None
    assert rest_of_it >= 2
    assert again >= 1  # the last second is read again, and its events are duplicates
    assert snapshot.counters[(CREATED, labels())] == 3
    assert snapshot.histograms[(FIRST_RESPONSE, labels("calendar"))].count == 3

async def test_rt_rate_limit_waits_retry_after(aiohttp_server, tmp_path: Path):
    calls = []

    async def tickets(request: web.Request) -> web.Response:
        calls.append(request.query.get("query"))
        if len(calls) == 1:
            return web.json_response({"message": "slow down"}, status=429, headers={"Retry-After": "7"})
        return web.json_response({"items": [], "page": 1, "pages": 0, "per_page": 50, "count": 0, "total": 0})

    app = web.Application()
    app.router.add_get("/REST/2.0/tickets", tickets)
    server = await aiohttp_server(app)
    config = parse_config(rt_config(tmp_path, str(server.make_url("/"))))
    store, _ = build_store(config.tickets)
    metrics = SourceMetrics()
    waits = []

    async def record_sleep(seconds: float) -> None:
        waits.append(seconds)

    read = await RTPoller(config.tickets, store, metrics, sleep=record_sleep).poll_once()

    assert read == 0
    assert waits == [7.0]
    assert len(calls) == 2
    assert metrics.errors[("rt", "rate_limited")] == 1
    assert "rt" in metrics.last_success

async def test_rt_server_error_counted(aiohttp_server, tmp_path: Path):
    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500, text="database is locked")

    app = web.Application()
    app.router.add_get("/REST/2.0/tickets", broken)
    server = await aiohttp_server(app)
    config = parse_config(rt_config(tmp_path, str(server.make_url("/")), interval="1s"))
    store, _ = build_store(config.tickets)
    metrics = SourceMetrics()
    stop = []

    async def stop_after_first(seconds: float) -> None:
        stop.append(seconds)
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        await RTPoller(config.tickets, store, metrics, sleep=stop_after_first).run()

    assert metrics.errors[("rt", "http_500")] == 1
    assert store.get_meta(CURSOR_KEY) is None
    assert "rt" not in metrics.last_success

def test_rt_config_needs_one_credential(tmp_path: Path):
    from slawatch.config import ConfigError

    with pytest.raises(ConfigError) as error:
        parse_config({"tickets": {"sources": {"rt": {"url": "http://127.0.0.1:1"}}}})

    assert "tickets.sources.rt" in str(error.value)
    assert "set exactly one of password_file" in str(error.value)


async def test_rt_invalid_answer_keeps_polling(aiohttp_server, tmp_path: Path):
    async def ticket_without_fields(request: web.Request) -> web.Response:
        # A listing item without the requested fields, as a proxy or an RT extension might return.
        return web.json_response({"count": 1, "page": 1, "per_page": 100, "total": 1,
                                  "items": [{"type": "ticket"}]})

    app = web.Application()
    app.router.add_get("/REST/2.0/tickets", ticket_without_fields)
    server = await aiohttp_server(app)
    config = parse_config(rt_config(tmp_path, str(server.make_url("/")), interval="1s"))
    store, _ = build_store(config.tickets)
    metrics = SourceMetrics()
    waits = []

    async def stop_after_second(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        await RTPoller(config.tickets, store, metrics, sleep=stop_after_second).run()

    assert metrics.errors[("rt", "invalid")] == 2
    assert waits == [1.0, 1.0]
    assert store.get_meta(CURSOR_KEY) is None


def test_rt_query_is_relative_to_rt_clock(tmp_path: Path):
    """TicketSQL reads an absolute time in the RT user's zone and `...T...Z` as a date only, so the
    cursor becomes a relative condition with a margin for clock skew."""
    config = parse_config(rt_config(tmp_path, "http://127.0.0.1:1/", query="Queue = 'General'"))
    store, _ = build_store(config.tickets)
    poller = RTPoller(config.tickets, store, SourceMetrics())
    cursor = datetime.fromtimestamp(time.time() - 600, timezone.utc)

    query = poller._query(cursor)
    seconds = int(query.split("LastUpdated > '")[1].split(" ")[0])

    assert query.startswith("(Queue = 'General') AND LastUpdated > '")
    assert query.endswith(" seconds ago'")
    assert 900 <= seconds <= 902
    assert poller._query(datetime(1970, 1, 1, tzinfo=timezone.utc)) == "Queue = 'General'"
