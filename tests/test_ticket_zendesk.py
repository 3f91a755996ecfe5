"""The Zendesk poller against recorded Zendesk Support API responses on a local stub server."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest
import aiohttp
from aiohttp import web

from slawatch.config import ConfigError, parse_config
from slawatch.tickets import SourceMetrics, build_store
from slawatch.tickets.lifecycle import (CREATED, FIRST_RESOLUTION, FIRST_RESPONSE, FIRST_RESPONSES, REMOVED)
from slawatch.tickets.sources.http import SourceError, get_json
from slawatch.tickets.sources.zendesk import CURSOR_KEY, ZendeskPoller

DATA = Path(__file__).parent / "data" / "zendesk"
OFFICE = {"timezone": "Asia/Shanghai", "hours": {day: ["09:00-18:00"] for day in ("mon", "tue", "wed", "thu", "fri")}}
# after_cursor of the recorded export pages 1, 2 and 3.
CURSOR_1 = "MTc0MTA1MzYwMC4wfHwxMDF8"
CURSOR_2 = "MTc0MTIyNDAwMC4wfHwyMDN8"
CURSOR_3 = "MTc0MTMxMjgwMC4wfHwyMDN8"
EMAIL = ("zendesk", "email", "normal", "support")        # ticket 101, the first worked case
ACCOUNTS = ("zendesk", "email", "normal", "accounts")    # tickets 201 (A) and 202 (B), the third worked case
PHONE = ("zendesk", "phone", "high", "billing")          # ticket 203, logged by an agent


def recorded(name: str):
    return json.loads((DATA / name).read_text(encoding="utf-8"))


class ZendeskStub:
    """Serve the recorded responses. `fail` queues error responses for one route."""

    def __init__(self):
        self.requests: list[web.Request] = []
        self.pages = {None: "export-page-1.json", CURSOR_1: "export-page-2.json", CURSOR_2: "export-empty.json"}
        self.failures: dict[str, list[tuple[int, dict, dict | None]]] = {}

    def fail(self, route: str, status: int, headers: dict | None = None, body: dict | None = None) -> None:
        self.failures.setdefault(route, []).append((status, headers or {}, body))

    def _failure(self, route: str) -> web.Response | None:
        queued = self.failures.get(route)
        if not queued:
            return None
        status, headers, body = queued.pop(0)
        if body is None:
            body = {"error": "stub error", "description": f"status {status}"}
        return web.json_response(body, status=status, headers=headers)

    async def export(self, request: web.Request) -> web.Response:
        self.requests.append(request)
        failure = self._failure("export")
        if failure is not None:
            return failure
        name = self.pages.get(request.query.get("cursor"))
        if name is None:
            return web.json_response({"error": "InvalidPaginationParameter"}, status=400)
        return web.json_response(recorded(name))

    async def audits(self, request: web.Request) -> web.Response:
        self.requests.append(request)
        ticket = request.match_info["ticket"]
        failure = self._failure(f"audits-{ticket}")
        if failure is not None:
            return failure
        page = request.query.get("page", "1")
        name = f"audits-{ticket}-page-{page}.json" if ticket == "101" else f"audits-{ticket}.json"
        if not (DATA / name).exists():
            return web.json_response({"error": "RecordNotFound", "description": "Not found"}, status=404)
        return web.json_response(recorded(name))

    async def users(self, request: web.Request) -> web.Response:
        self.requests.append(request)
        ids = {int(value) for value in request.query["ids"].split(",")}
        return web.json_response({"users": [user for user in recorded("users.json")["users"] if user["id"] in ids]})

    def paths(self, prefix: str) -> list[web.Request]:
        return [request for request in self.requests if request.path.startswith(prefix)]


@pytest.fixture
async def zendesk(aiohttp_server):
    stub = ZendeskStub()
    app = web.Application()
    app.router.add_get("/api/v2/incremental/tickets/cursor", stub.export)
    app.router.add_get("/api/v2/tickets/{ticket}/audits", stub.audits)
    app.router.add_get("/api/v2/users/show_many", stub.users)
    server = await aiohttp_server(app)
    return str(server.make_url("/")).rstrip("/"), stub


def zendesk_config(tmp_path: Path, url: str, agent_created: str = "answered_at_creation", **source) -> dict:
    (tmp_path / "zendesk-token").write_text("zendesk-token\n", encoding="utf-8")
    settings = {"url": url, "email": "agent@example.test", "token_file": str(tmp_path / "zendesk-token"),
                "channel_map": {"mail": "email", "web": "phone"}}
    settings.update(source)
    return {"tickets": {"database": str(tmp_path / "tickets.db"), "calendars": {"office": OFFICE},
                        "business_calendar": "office", "agent_created": agent_created,
                        "teams": {"360000000002": "billing", "360000000003": "accounts"},
                        "sources": {"zendesk": settings}}}


def new_poller(tmp_path: Path, url: str, sleep=None, **options):
    config = parse_config(zendesk_config(tmp_path, url, **options))
    store, _ = build_store(config.tickets)
    metrics = SourceMetrics()
    poller = ZendeskPoller(config.tickets, store, metrics, sleep=sleep or no_wait)
    return poller, store, metrics


async def no_wait(seconds: float) -> None:
    return None


def assert_complete_stream(store) -> None:
    """Assert the aggregates of export pages 1 and 2, each ticket counted once."""
    snapshot = store.snapshot()
    histograms = snapshot.histograms
    # Ticket 101: the auto-reply (trigger) and the internal note do not count; the agent replies at 11:05.
    assert histograms[(FIRST_RESPONSE, EMAIL + ("calendar",))].count == 1
    assert histograms[(FIRST_RESPONSE, EMAIL + ("calendar",))].sum == 3000
    assert histograms[(FIRST_RESPONSE, EMAIL + ("business",))].sum == 3000
    assert histograms[(FIRST_RESOLUTION, EMAIL + ("calendar",))].sum == 85500
    assert histograms[(FIRST_RESOLUTION, EMAIL + ("business",))].sum == 31500
    # Tickets 201 and 202: A is merged into B, and B's public merge comment is not its first response.
    assert histograms[(FIRST_RESPONSE, ACCOUNTS + ("calendar",))].count == 1
    assert histograms[(FIRST_RESPONSE, ACCOUNTS + ("calendar",))].sum == 5100
    assert histograms[(FIRST_RESPONSE, ACCOUNTS + ("business",))].sum == 4200
    assert histograms[(FIRST_RESOLUTION, ACCOUNTS + ("calendar",))].count == 1
    assert histograms[(FIRST_RESOLUTION, ACCOUNTS + ("calendar",))].sum == 22500
    assert histograms[(FIRST_RESOLUTION, ACCOUNTS + ("business",))].sum == 21600
    assert snapshot.counters[(CREATED, EMAIL)] == 1
    assert snapshot.counters[(CREATED, ACCOUNTS)] == 2
    assert snapshot.counters[(REMOVED, ACCOUNTS + ("merged",))] == 1
    assert snapshot.counters[(FIRST_RESPONSES, ACCOUNTS + ("human",))] == 1
    # Ticket 203: an agent logged the call with a public comment, so it is answered at creation.
    assert snapshot.counters[(CREATED, PHONE)] == 1
    assert histograms[(FIRST_RESPONSE, PHONE + ("calendar",))].sum == 0
    assert [(ticket.labels, ticket.answered) for ticket in snapshot.open] == [(PHONE, True)]


async def test_zendesk_worked_cases_across_two_pages(zendesk, tmp_path: Path):
    url, stub = zendesk
    poller, store, metrics = new_poller(tmp_path, url)

    read = await poller.poll_once()
    exports = stub.paths("/api/v2/incremental")

    assert read == 4
    assert_complete_stream(store)
    assert store.get_meta(CURSOR_KEY) == CURSOR_2
    assert [request.query.get("cursor") for request in exports] == [None, CURSOR_1]
    assert int(exports[0].query["start_time"]) == 0
    assert exports[0].query["per_page"] == "100"
    assert "start_time" not in exports[1].query
    assert [request.query["page"] for request in stub.paths("/api/v2/tickets/101/")] == ["1", "2"]
    expected = base64.b64encode(b"agent@example.test/token:zendesk-token").decode()
    assert exports[0].headers["Authorization"] == f"Basic {expected}"
    assert "zendesk" in metrics.last_success
    assert metrics.errors == {}


async def test_zendesk_agent_created_next_reply(zendesk, tmp_path: Path):
    url, _ = zendesk
    poller, store, _ = new_poller(tmp_path, url, agent_created="next_reply")

    await poller.poll_once()
    histograms = store.snapshot().histograms

    # The creating comment is the ticket's first message, not a reply; the next agent reply is 20 minutes later.
    assert histograms[(FIRST_RESPONSE, PHONE + ("calendar",))].count == 1
    assert histograms[(FIRST_RESPONSE, PHONE + ("calendar",))].sum == 1200


async def test_zendesk_repoll_and_reread_count_once(zendesk, tmp_path: Path):
    url, stub = zendesk
    poller, store, _ = new_poller(tmp_path, url)

    first = await poller.poll_once(max_pages=1)
    cursor_after_first = store.get_meta(CURSOR_KEY)
    await poller.poll_once()
    empty = await poller.poll_once()
    cursor_after_empty = store.get_meta(CURSOR_KEY)
    # Rewinding the cursor reads page 2 again, as after a lost cursor write.
    store.ingest([], meta={CURSOR_KEY: CURSOR_1})
    again = await poller.poll_once()

    assert first == 1
    assert cursor_after_first == CURSOR_1
    assert empty == 0
    assert cursor_after_empty == CURSOR_2  # an empty page has no after_cursor; the stored one stays
    assert again == 3
    assert [request.query.get("cursor") for request in stub.paths("/api/v2/incremental")] == [
        None, CURSOR_1, CURSOR_2, CURSOR_1]
    assert_complete_stream(store)


async def test_zendesk_restart_mid_page(zendesk, tmp_path: Path):
    url, stub = zendesk
    stub.fail("audits-202", 500)
    poller, store, _ = new_poller(tmp_path, url)

    with pytest.raises(SourceError) as failed:
        await poller.poll_once()
    cursor_at_crash = store.get_meta(CURSOR_KEY)
    partial = store.snapshot()
    store.close()
    restarted, store, _ = new_poller(tmp_path, url)
    await restarted.poll_once()

    assert failed.value.kind == "http_500"
    # Page 1 was applied with its cursor; nothing of page 2 was, though ticket 201 was already read.
    assert cursor_at_crash == CURSOR_1
    assert partial.counters[(CREATED, EMAIL)] == 1
    assert (CREATED, ACCOUNTS) not in partial.counters
    assert stub.paths("/api/v2/incremental")[-1].query["cursor"] == CURSOR_1
    assert store.get_meta(CURSOR_KEY) == CURSOR_2
    assert_complete_stream(store)


async def test_zendesk_waits_for_retry_after(zendesk, tmp_path: Path):
    url, stub = zendesk
    stub.fail("export", 429, {"Retry-After": "7"})
    waits: list[float] = []

    async def record_sleep(seconds: float) -> None:
        waits.append(seconds)

    poller, store, metrics = new_poller(tmp_path, url, sleep=record_sleep)
    read = await poller.poll_once()

    assert waits == [7.0]
    assert metrics.errors[("zendesk", "rate_limited")] == 1
    assert read == 4
    assert_complete_stream(store)


@pytest.mark.parametrize("status", [401, 500])
async def test_zendesk_failed_poll_counted(zendesk, tmp_path: Path, status: int):
    url, stub = zendesk
    stub.fail("export", status)

    async def stop(seconds: float) -> None:
        raise asyncio.CancelledError

    poller, store, metrics = new_poller(tmp_path, url, sleep=stop)
    with pytest.raises(asyncio.CancelledError):
        await poller.run()

    assert metrics.errors[("zendesk", f"http_{status}")] == 1
    assert "zendesk" not in metrics.last_success
    assert store.get_meta(CURSOR_KEY) is None
    assert store.snapshot().counters == {}


async def test_zendesk_malformed_page_counted(zendesk, tmp_path: Path):
    url, stub = zendesk
    # A ticket without its id: the page cannot be applied.
    stub.fail("export", 200, body={"tickets": [{"status": "open"}], "after_cursor": CURSOR_1, "after_url": None,
                                   "before_cursor": None, "before_url": None, "end_of_stream": True})

    async def stop(seconds: float) -> None:
        raise asyncio.CancelledError

    poller, store, metrics = new_poller(tmp_path, url, sleep=stop)
    with pytest.raises(asyncio.CancelledError):
        await poller.run()

    assert metrics.errors[("zendesk", "invalid")] == 1
    assert store.get_meta(CURSOR_KEY) is None


async def test_zendesk_deleted_ticket_removed(zendesk, tmp_path: Path):
    url, stub = zendesk
    stub.pages[CURSOR_2] = "export-page-3.json"
    poller, store, _ = new_poller(tmp_path, url)

    await poller.poll_once()
    audits_before = len(stub.paths("/api/v2/tickets/203/"))
    read = await poller.poll_once()
    snapshot = store.snapshot()

    assert read == 1
    assert snapshot.counters[(REMOVED, PHONE + ("deleted",))] == 1
    assert snapshot.counters[(CREATED, PHONE)] == 1
    assert snapshot.open == []
    # A deleted ticket's history is no longer readable, so the poller does not request its audits.
    assert len(stub.paths("/api/v2/tickets/203/")) == audits_before == 1
    assert store.get_meta(CURSOR_KEY) == CURSOR_3


async def test_zendesk_oauth_token_sent_as_bearer(zendesk, tmp_path: Path):
    url, stub = zendesk
    (tmp_path / "oauth-token").write_text("oauth-access-token\n", encoding="utf-8")
    poller, _, _ = new_poller(tmp_path, url, email=None, token_file=None,
                              oauth_token_file=str(tmp_path / "oauth-token"))

    await poller.poll_once(max_pages=1)

    assert {request.headers["Authorization"] for request in stub.requests} == {"Bearer oauth-access-token"}


def test_zendesk_author_kinds(tmp_path: Path):
    poller, _, _ = new_poller(tmp_path, "http://127.0.0.1:1", bot_users=[7100])
    poller.roles.update({7001: "agent", 7002: "admin", 9001: "end-user", 9002: "end-user"})
    web_audit = {"author_id": 7001, "via": {"channel": "web"}}
    cases = [
        ({"author_id": 7001, "via": {"channel": "rule"}}, "automation"),   # the comment's own via: a trigger
        ({"author_id": 7001, "via": {"channel": 8}}, "automation"),        # the same as a via id
        ({"author_id": 7100}, "bot"),
        ({"author_id": 7001}, "agent"),
        ({"author_id": 7002}, "agent"),
        ({"author_id": 9001}, "requester"),
        ({"author_id": 9002}, "end_user"),
        ({"author_id": 9999}, "end_user"),                                 # not returned by show_many
    ]

    for comment, expected in cases:
        assert poller._author(comment, web_audit, 9001) == expected, comment
    assert poller._author({"author_id": 7001}, {"author_id": 7001, "via": {"channel": "rule"}}, 9001) == "automation"


ZENDESK_PROBLEMS = [
    # (source keys replacing the valid ones, expected message)
    ({"subdomain": "example"}, "tickets.sources.zendesk.subdomain: unknown or unsupported key"),
    ({"oauth_token_file": "/etc/slawatch/oauth"}, "set exactly one of token_file (with email) or oauth_token_file"),
    ({"email": None}, "token_file needs email"),
    ({"url": "example.zendesk.com"}, "'example.zendesk.com' is not an http(s) URL without a query"),
    ({"page_size": 5000}, "tickets.sources.zendesk.page_size: must be less than or equal to 1000"),
    ({"max_pages": 0}, "tickets.sources.zendesk.max_pages: must be greater than or equal to 1"),
    ({"status_map": {"hold": "paused"}}, "tickets.sources.zendesk.status_map.hold: unknown status 'paused'"),
    ({"channel_map": {"voice": "pager"}}, "tickets.sources.zendesk.channel_map.voice: unknown channel 'pager'"),
    ({"priority_map": {"urgent": "p0"}}, "tickets.sources.zendesk.priority_map.urgent: unknown priority 'p0'"),
    ({"bot_users": ["assistant"]}, "tickets.sources.zendesk.bot_users[0]: expected a whole number"),
]


@pytest.mark.parametrize(("source", "message"), ZENDESK_PROBLEMS)
def test_zendesk_config_rejected(tmp_path: Path, source: dict, message: str):
    data = zendesk_config(tmp_path, "https://example.zendesk.com")
    data["tickets"]["sources"]["zendesk"].update(source)

    with pytest.raises(ConfigError) as error:
        parse_config(data)

    assert message in str(error.value)


def test_zendesk_config_defaults(tmp_path: Path):
    config = parse_config({"tickets": {"sources": {"zendesk": {
        "url": "https://example.zendesk.com", "email": "agent@example.test", "token_file": "token"}}}})
    source = config.tickets.sources.zendesk

    assert source.page_size == 100
    assert source.status_map["hold"] == "on_hold"
    assert source.status_map["deleted"] == "removed:deleted"
    assert source.channel_map["mail"] == "email"
    assert source.interval == 60.0


async def test_zendesk_unreadable_ticket_skipped(zendesk, tmp_path: Path):
    url, stub = zendesk
    stub.fail("audits-202", 404)
    poller, store, metrics = new_poller(tmp_path, url)

    read = await poller.poll_once()
    snapshot = store.snapshot()

    assert read == 4
    assert metrics.errors[("zendesk", "http_404")] == 1
    assert "zendesk" in metrics.last_success
    # The export moved past the page; ticket 202 is missing, the others are counted.
    assert store.get_meta(CURSOR_KEY) == CURSOR_2
    assert snapshot.counters[(CREATED, EMAIL)] == 1
    assert snapshot.counters[(CREATED, ACCOUNTS)] == 1
    assert snapshot.counters[(CREATED, PHONE)] == 1


async def test_zendesk_page_without_tickets_counted(zendesk, tmp_path: Path):
    url, stub = zendesk
    stub.fail("export", 200, body={"results": []})

    async def stop(seconds: float) -> None:
        raise asyncio.CancelledError

    poller, store, metrics = new_poller(tmp_path, url, sleep=stop)
    with pytest.raises(asyncio.CancelledError):
        await poller.run()

    assert metrics.errors[("zendesk", "invalid")] == 1
    assert "zendesk" not in metrics.last_success
    assert store.get_meta(CURSOR_KEY) is None


async def test_source_get_json_names_html_and_timeouts(aiohttp_server):
    async def login_page(request: web.Request) -> web.Response:
        return web.Response(text="<html><body>Sign in</body></html>", content_type="text/html")

    async def silent(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/login", login_page)
    app.router.add_get("/silent", silent)
    server = await aiohttp_server(app)
    metrics = SourceMetrics()

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.5)) as session:
        with pytest.raises(SourceError) as html:
            await get_json(session, str(server.make_url("/login")), None, "zendesk", metrics, no_wait)
        with pytest.raises(SourceError) as timeout:
            await get_json(session, str(server.make_url("/silent")), None, "zendesk", metrics, no_wait)

    assert html.value.kind == "invalid"
    assert "not JSON" in str(html.value)
    assert "Sign in" in str(html.value)
    assert timeout.value.kind == "timeout"
    assert "/silent" in str(timeout.value)
