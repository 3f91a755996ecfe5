"""The Zammad poller against recorded Zammad REST API responses."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

import pytest
from aiohttp import web

from slawatch.config import ConfigError, parse_config
from slawatch.tickets import SourceMetrics, build_store
from slawatch.tickets.lifecycle import CREATED, FIRST_RESOLUTION, FIRST_RESPONSE, REMOVED
from slawatch.tickets.sources.http import SourceError
from slawatch.tickets.sources.zammad import CURSOR_KEY, RESUME_KEY, ZammadPoller

DATA = Path(__file__).parent / "data" / "zammad"
OFFICE = {"timezone": "Asia/Shanghai", "hours": {day: ["09:00-18:00"] for day in ("mon", "tue", "wed", "thu", "fri")}}
LABELS = ("zammad", "email", "normal", "support")
# The newest `updated_at` of the recorded search (ticket 12), and a cursor stored by an earlier poll.
NEWEST = "2025-03-05T07:00:00+00:00"
EARLIER = "2025-03-04T00:00:00+00:00"


def recorded(name: str):
    return json.loads((DATA / name).read_text(encoding="utf-8"))


class ZammadStub:
    """Serve the recorded Zammad responses. `fail` and `queue` add responses for one route.

    Routes: "search-<page>" is one page of the ticket search, "articles-<ticket id>" a ticket's articles.
    """

    def __init__(self):
        self.requests: list[web.Request] = []
        self.queued: dict[str, list[web.Response]] = {}
        # Delay in seconds before each search response.
        self.delay = 0.0

    def fail(self, route: str, status: int, headers: dict | None = None) -> None:
        self.queue(route, web.Response(status=status, headers=headers, text=f"status {status}"))

    def queue(self, route: str, response: web.Response) -> None:
        self.queued.setdefault(route, []).append(response)

    def _pop_queued(self, route: str) -> web.Response | None:
        queued = self.queued.get(route)
        return queued.pop(0) if queued else None

    async def search(self, request: web.Request) -> web.Response:
        self.requests.append(request)
        await asyncio.sleep(self.delay)
        page, per_page = int(request.query["page"]), int(request.query["per_page"])
        queued = self._pop_queued(f"search-{page}")
        if queued is not None:
            return queued
        # Zammad pages with page and per_page and returns an empty list past the last ticket.
        return web.json_response(recorded("search.json")[(page - 1) * per_page:page * per_page])

    async def articles(self, request: web.Request) -> web.Response:
        self.requests.append(request)
        ticket = request.match_info["ticket"]
        queued = self._pop_queued(f"articles-{ticket}")
        if queued is not None:
            return queued
        return web.json_response(recorded(f"articles-{ticket}.json"))

    def searches(self) -> list[web.Request]:
        return [request for request in self.requests if request.path == "/api/v1/tickets/search"]


@pytest.fixture
async def zammad(aiohttp_server):
    """A stub Zammad on a loopback port; returns its base URL and the stub."""
    stub = ZammadStub()
    app = web.Application()
    app.router.add_get("/api/v1/tickets/search", stub.search)
    app.router.add_get("/api/v1/ticket_articles/by_ticket/{ticket}", stub.articles)
    server = await aiohttp_server(app)
    return str(server.make_url("/")).rstrip("/"), stub


def zammad_config(tmp_path: Path, url: str, **source) -> dict:
    (tmp_path / "zammad-token").write_text("zammad-token\n", encoding="utf-8")
    return {"tickets": {"database": str(tmp_path / "tickets.db"), "calendars": {"office": OFFICE},
                        "business_calendar": "office",
                        "sources": {"zammad": {"url": url, "token_file": str(tmp_path / "zammad-token"), **source}}}}


def new_poller(tmp_path: Path, url: str, sleep=None, **source):
    config = parse_config(zammad_config(tmp_path, url, **source))
    store, _ = build_store(config.tickets)
    metrics = SourceMetrics()
    poller = ZammadPoller(config.tickets, store, metrics, sleep=sleep or no_wait)
    return poller, store, metrics


async def no_wait(seconds: float) -> None:
    return None


async def stop_run(seconds: float) -> None:
    """Stop ZammadPoller.run() at its first wait for the next interval."""
    raise asyncio.CancelledError


def http_date(seconds_ahead: float) -> str:
    return format_datetime(datetime.now(timezone.utc) + timedelta(seconds=seconds_ahead), usegmt=True)


def assert_complete(store) -> None:
    """Assert the aggregates of the third worked case (ticket 11 merged into 12), each ticket counted once."""
    snapshot = store.snapshot()
    histograms = snapshot.histograms
    assert snapshot.counters[(CREATED, LABELS)] == 2
    assert snapshot.counters[(REMOVED, LABELS + ("merged",))] == 1
    assert histograms[(FIRST_RESPONSE, LABELS + ("calendar",))].count == 1
    assert histograms[(FIRST_RESPONSE, LABELS + ("calendar",))].sum == 5100
    assert histograms[(FIRST_RESPONSE, LABELS + ("business",))].sum == 4200
    assert histograms[(FIRST_RESOLUTION, LABELS + ("calendar",))].count == 1
    assert histograms[(FIRST_RESOLUTION, LABELS + ("calendar",))].sum == 22500
    assert histograms[(FIRST_RESOLUTION, LABELS + ("business",))].sum == 21600
    assert snapshot.open == []


async def test_zammad_worked_case_merged(zammad, tmp_path: Path):
    url, stub = zammad
    poller, store, metrics = new_poller(tmp_path, url)

    read = await poller.poll_once()
    search = stub.searches()[0]

    assert read == 2
    assert_complete(store)
    assert store.get_meta(CURSOR_KEY) == NEWEST
    assert search.headers["Authorization"] == "Token token=zammad-token"
    assert search.query["sort_by"] == "updated_at"
    assert search.query["order_by"] == "desc"
    assert search.query["expand"] == "true"
    assert dict(metrics.errors) == {}


async def test_zammad_second_poll_reads_nothing_new(zammad, tmp_path: Path):
    url, _ = zammad
    poller, store, _ = new_poller(tmp_path, url)

    await poller.poll_once()
    again = await poller.poll_once()

    assert again == 1  # the newest ticket sits on the cursor and is read again, adding nothing
    assert store.snapshot().counters[(CREATED, LABELS)] == 2
    assert store.snapshot().histograms[(FIRST_RESPONSE, LABELS + ("calendar",))].count == 1


async def test_zammad_empty_token_fails_poll(zammad, tmp_path: Path, caplog):
    url, stub = zammad

    async def stop(seconds: float) -> None:
        raise asyncio.CancelledError

    poller, _, metrics = new_poller(tmp_path, url, sleep=stop)
    (tmp_path / "zammad-token").write_text("\n", encoding="utf-8")
    with pytest.raises(asyncio.CancelledError):
        await poller.run()

    assert metrics.errors[("zammad", "config")] == 1
    assert stub.requests == []
    assert f"tickets.sources.zammad.token_file: {tmp_path / 'zammad-token'} is empty: write the secret into it" \
        in caplog.text


@pytest.mark.parametrize("route", ["search-2", "articles-11"])
async def test_zammad_restart_mid_page(zammad, tmp_path: Path, route: str):
    url, stub = zammad
    stub.fail(route, 500)
    # One ticket a page: page 1 is ticket 12, page 2 ticket 11, page 3 is empty.
    poller, store, _ = new_poller(tmp_path, url, page_size=1)

    with pytest.raises(SourceError) as failed:
        await poller.poll_once()
    cursor_at_crash = store.get_meta(CURSOR_KEY)
    partial = store.snapshot()
    store.close()
    restarted, store, metrics = new_poller(tmp_path, url, page_size=1)
    read = await restarted.poll_once()

    assert failed.value.kind == "http_500"
    # Page 1 (ticket 12) was applied, but the cursor moves only after the last page.
    assert cursor_at_crash is None
    assert partial.counters[(CREATED, LABELS)] == 1
    assert partial.histograms[(FIRST_RESPONSE, LABELS + ("calendar",))].sum == 5100
    assert (REMOVED, LABELS + ("merged",)) not in partial.counters
    # The restarted poller reads all pages again; event ids keep ticket 12 from counting twice.
    assert [request.query["page"] for request in stub.searches()[-3:]] == ["1", "2", "3"]
    assert read == 2
    assert store.get_meta(CURSOR_KEY) == NEWEST
    assert "zammad" in metrics.last_success
    assert_complete(store)


@pytest.mark.parametrize(("route", "retry_after", "shortest", "longest"), [
    # An HTTP date has whole seconds, so the wait is up to one second shorter than the offset.
    ("search-1", lambda: http_date(90), 88.0, 90.0),
    ("articles-12", lambda: "5", 5.0, 5.0),
], ids=["search-http-date", "articles-seconds"])
async def test_zammad_waits_for_retry_after(zammad, tmp_path: Path, route: str, retry_after, shortest: float,
                                            longest: float):
    url, stub = zammad
    stub.fail(route, 429, {"Retry-After": retry_after()})
    waits: list[float] = []

    async def record_sleep(seconds: float) -> None:
        waits.append(seconds)

    poller, store, metrics = new_poller(tmp_path, url, sleep=record_sleep)
    read = await poller.poll_once()

    assert len(waits) == 1
    assert shortest <= waits[0] <= longest
    assert dict(metrics.errors) == {("zammad", "rate_limited"): 1}
    assert read == 2
    assert store.get_meta(CURSOR_KEY) == NEWEST
    assert "zammad" in metrics.last_success
    assert_complete(store)


@pytest.mark.parametrize("status", [401, 500])
async def test_zammad_failed_poll_counted(zammad, tmp_path: Path, status: int):
    url, stub = zammad
    stub.fail("search-1", status)
    waits: list[float] = []

    async def stop(seconds: float) -> None:
        waits.append(seconds)
        raise asyncio.CancelledError

    poller, store, metrics = new_poller(tmp_path, url, sleep=stop)
    store.ingest([], meta={CURSOR_KEY: EARLIER})
    with pytest.raises(asyncio.CancelledError):
        await poller.run()

    assert dict(metrics.errors) == {("zammad", f"http_{status}"): 1}
    assert "zammad" not in metrics.last_success
    assert "zammad" not in metrics.lag
    assert waits == [60.0]  # run() waited for the interval after the failed poll
    assert store.get_meta(CURSOR_KEY) == EARLIER
    assert store.snapshot().counters == {}


async def test_zammad_lag_recorded(zammad, tmp_path: Path):
    url, stub = zammad
    stub.delay = 0.2
    poller, _, metrics = new_poller(tmp_path, url)

    before = time.time()
    await poller.poll_once()
    after = time.time()

    # The lag is the duration of the poll, which waited 0.2 s for its one search page.
    assert 0.15 <= metrics.lag["zammad"] <= after - before
    assert before <= metrics.last_success["zammad"] <= after


async def test_zammad_login_page_counted_invalid(zammad, tmp_path: Path):
    url, stub = zammad
    stub.queue("search-1", web.Response(text="<html><body>Sign in to Zammad</body></html>", content_type="text/html"))
    poller, store, metrics = new_poller(tmp_path, url, sleep=stop_run)
    store.ingest([], meta={CURSOR_KEY: EARLIER})

    with pytest.raises(asyncio.CancelledError):
        await poller.run()

    assert dict(metrics.errors) == {("zammad", "invalid"): 1}
    assert "zammad" not in metrics.last_success
    assert store.get_meta(CURSOR_KEY) == EARLIER
    assert store.snapshot().counters == {}


async def test_zammad_compact_search_rejected(zammad, tmp_path: Path):
    url, stub = zammad
    # Without expand=true, Zammad returns ticket ids and assets instead of a list of tickets.
    stub.queue("search-1", web.json_response(recorded("search-compact.json")))
    stub.queue("search-1", web.json_response(recorded("search-compact.json")))
    poller, store, metrics = new_poller(tmp_path, url, sleep=stop_run)
    store.ingest([], meta={CURSOR_KEY: EARLIER})

    with pytest.raises(SourceError) as failed:
        await poller.poll_once()
    with pytest.raises(asyncio.CancelledError):
        await poller.run()

    assert failed.value.kind == "invalid"
    assert "expand=true" in str(failed.value)
    assert dict(metrics.errors) == {("zammad", "invalid"): 1}
    assert "zammad" not in metrics.last_success
    assert store.get_meta(CURSOR_KEY) == EARLIER
    assert store.snapshot().counters == {}


async def test_zammad_ticket_without_updated_at_counted_invalid(zammad, tmp_path: Path):
    url, stub = zammad
    tickets = recorded("search.json")
    del tickets[0]["updated_at"]
    stub.queue("search-1", web.json_response(tickets))
    poller, store, metrics = new_poller(tmp_path, url, sleep=stop_run)
    store.ingest([], meta={CURSOR_KEY: EARLIER})

    with pytest.raises(asyncio.CancelledError):
        await poller.run()

    assert dict(metrics.errors) == {("zammad", "invalid"): 1}
    assert "zammad" not in metrics.last_success
    assert store.get_meta(CURSOR_KEY) == EARLIER
    assert store.snapshot().counters == {}


@pytest.mark.parametrize("status", [403, 404])
async def test_zammad_unreadable_ticket_skipped(zammad, tmp_path: Path, status: int):
    url, stub = zammad
    stub.fail("articles-11", status)
    poller, store, metrics = new_poller(tmp_path, url)

    read = await poller.poll_once()
    snapshot = store.snapshot()

    assert read == 2
    assert dict(metrics.errors) == {("zammad", f"http_{status}"): 1}
    assert "zammad" in metrics.last_success
    # The poll completed without ticket 11 (A, merged into B), so only ticket 12 (B) is counted.
    assert store.get_meta(CURSOR_KEY) == NEWEST
    assert snapshot.counters[(CREATED, LABELS)] == 1
    assert (REMOVED, LABELS + ("merged",)) not in snapshot.counters
    assert snapshot.histograms[(FIRST_RESPONSE, LABELS + ("calendar",))].sum == 5100


async def test_zammad_max_pages_continues_later(zammad, tmp_path: Path):
    url, stub = zammad
    poller, store, metrics = new_poller(tmp_path, url, page_size=1, max_pages=1)

    for _ in range(3):
        await poller.poll_once()

    assert metrics.errors[("zammad", "truncated")] == 2
    assert [request.query["page"] for request in stub.searches()] == ["1", "2", "3"]
    assert store.get_meta(CURSOR_KEY) == NEWEST
    assert store.get_meta(RESUME_KEY) == ""
    assert_complete(store)


def test_zammad_config_rejects_unknown_channel(tmp_path: Path):
    data = zammad_config(tmp_path, "http://127.0.0.1:1")
    data["tickets"]["sources"]["zammad"]["channel_map"] = {"sms": "pager"}

    with pytest.raises(ConfigError) as error:
        parse_config(data)

    assert "tickets.sources.zammad.channel_map.sms: unknown channel 'pager'" in str(error.value)
