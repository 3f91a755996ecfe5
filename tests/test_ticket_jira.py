"""The Jira Service Management poller against recorded Jira Cloud REST API v3 responses."""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

import pytest
from aiohttp import web

from slawatch.config import ConfigError, parse_config
from slawatch.tickets import SourceMetrics, build_store
from slawatch.tickets.lifecycle import CREATED, FIRST_RESOLUTION, FIRST_RESPONSE, FIRST_RESPONSES
from slawatch.tickets.sources.http import SourceError
from slawatch.tickets.sources.jira import CURSOR_KEY, JiraPoller

DATA = Path(__file__).parent / "data" / "jira"
OFFICE = {"timezone": "Asia/Shanghai", "hours": {day: ["09:00-18:00"] for day in ("mon", "tue", "wed", "thu", "fri")}}
NORMAL = ("jira", "email", "normal", "support")
URGENT = ("jira", "email", "urgent", "support")
# The newest `updated` of search pages 1 and 2.
CURSOR_1 = "2025-03-04T10:00:00+08:00"
CURSOR_2 = "2025-03-05T09:30:00+08:00"


def recorded(name: str) -> dict:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


class JiraStub:
    """Serve the recorded Jira responses. `fail` and `queue` add responses for one route.

    Routes: "search-1" and "search-2" are the two search pages, "comments-<issue id>" an issue's comments.
    """

    def __init__(self):
        self.requests: list[web.Request] = []
        self.queued: dict[str, list[web.Response]] = {}
        # Delay in seconds before each search response.
        self.delay = 0.0

    def fail(self, route: str, status: int, headers: dict | None = None) -> None:
        body = {"errorMessages": [f"status {status}"], "errors": {}}
        self.queue(route, web.json_response(body, status=status, headers=headers))

    def queue(self, route: str, response: web.Response) -> None:
        self.queued.setdefault(route, []).append(response)

    def _pop_queued(self, route: str) -> web.Response | None:
        queued = self.queued.get(route)
        return queued.pop(0) if queued else None

    async def search(self, request: web.Request) -> web.Response:
        self.requests.append(request)
        await asyncio.sleep(self.delay)
        page = 2 if request.query.get("nextPageToken") == "page-2-token" else 1
        queued = self._pop_queued(f"search-{page}")
        if queued is not None:
            return queued
        return web.json_response(recorded(f"search-page-{page}.json"))

    async def comments(self, request: web.Request) -> web.Response:
        self.requests.append(request)
        issue = request.match_info["issue"]
        queued = self._pop_queued(f"comments-{issue}")
        if queued is not None:
            return queued
        assert request.query["startAt"] == "2"
        return web.json_response(recorded(f"comments-{issue}.json"))

    def searches(self) -> list[web.Request]:
        return [request for request in self.requests if request.path == "/rest/api/3/search/jql"]


@pytest.fixture
async def jira(aiohttp_server):
    """A stub Jira site on a loopback port; returns its base URL and the stub."""
    stub = JiraStub()
    app = web.Application()
    app.router.add_get("/rest/api/3/search/jql", stub.search)
    app.router.add_get("/rest/api/3/issue/{issue}/comment", stub.comments)
    server = await aiohttp_server(app)
    return str(server.make_url("/")).rstrip("/"), stub


def jira_config(tmp_path: Path, url: str) -> dict:
    (tmp_path / "jira-token").write_text("api-token\n", encoding="utf-8")
    return {"tickets": {"database": str(tmp_path / "tickets.db"), "calendars": {"office": OFFICE},
                        "business_calendar": "office",
                        "sources": {"jira": {"url": url, "user": "bot@example.test", "jql": "project = SUP",
                                             "token_file": str(tmp_path / "jira-token")}}}}


def new_poller(tmp_path: Path, url: str, sleep=None):
    config = parse_config(jira_config(tmp_path, url))
    store, _ = build_store(config.tickets)
    metrics = SourceMetrics()
    poller = JiraPoller(config.tickets, store, metrics, sleep=sleep or no_wait)
    return poller, store, metrics


async def no_wait(seconds: float) -> None:
    return None


def http_date(seconds_ahead: float) -> str:
    return format_datetime(datetime.now(timezone.utc) + timedelta(seconds=seconds_ahead), usegmt=True)


def jql_minutes(request: web.Request) -> int:
    match = re.search(r"updated >= -(\d+)m", request.query["jql"])
    assert match, request.query["jql"]
    return int(match.group(1))


def assert_complete(store) -> None:
    """Assert the aggregates of search pages 1 and 2, each issue counted once."""
    snapshot = store.snapshot()
    histograms = snapshot.histograms
    # SUP-1: the first worked case. The app's auto-reply and the internal comment do not count.
    assert snapshot.counters[(CREATED, NORMAL)] == 1
    assert histograms[(FIRST_RESPONSE, NORMAL + ("calendar",))].count == 1
    assert histograms[(FIRST_RESPONSE, NORMAL + ("calendar",))].sum == 3000
    assert histograms[(FIRST_RESPONSE, NORMAL + ("business",))].sum == 3000
    assert histograms[(FIRST_RESOLUTION, NORMAL + ("calendar",))].count == 1
    assert histograms[(FIRST_RESOLUTION, NORMAL + ("calendar",))].sum == 85500
    assert histograms[(FIRST_RESOLUTION, NORMAL + ("business",))].sum == 31500
    assert snapshot.counters[(FIRST_RESPONSES, NORMAL + ("human",))] == 1
    # SUP-2: created as Highest, answered only by a Rovo agent (a bot), then lowered to Medium.
    assert snapshot.counters[(CREATED, URGENT)] == 1
    assert snapshot.counters[(FIRST_RESPONSES, URGENT + ("automation",))] == 1
    assert [(ticket.labels, ticket.answered) for ticket in snapshot.open] == [(NORMAL, False)]


async def stop_run(seconds: float) -> None:
    """Stop JiraPoller.run() at its first wait for the next interval."""
    raise asyncio.CancelledError


async def test_jira_worked_case_and_authors(jira, tmp_path: Path):
    url, stub = jira
    stub.fail("search-1", 429, {"Retry-After": "3"})
    waits = []

    async def record_sleep(seconds: float) -> None:
        waits.append(seconds)

    poller, store, metrics = new_poller(tmp_path, url, sleep=record_sleep)
    read = await poller.poll_once()

    assert read == 2
    assert waits == [3.0]
    assert metrics.errors[("jira", "rate_limited")] == 1
    assert_complete(store)
    assert store.get_meta(CURSOR_KEY) == CURSOR_2


async def test_jira_query_and_auth(jira, tmp_path: Path):
    url, stub = jira
    poller, _, _ = new_poller(tmp_path, url)

    await poller.poll_once()
    search = stub.searches()[0]

    assert search.headers["Authorization"] == "Basic Ym90QGV4YW1wbGUudGVzdDphcGktdG9rZW4="
    assert search.query["jql"].startswith("(project = SUP) AND updated >= -")
    assert search.query["jql"].endswith("m ORDER BY updated ASC")
    assert search.query["expand"] == "changelog"
    assert "comment" in search.query["fields"].split(",")


async def test_jira_repoll_counts_once(jira, tmp_path: Path):
    url, _ = jira
    poller, store, _ = new_poller(tmp_path, url)

    await poller.poll_once(max_pages=1)
    await poller.poll_once()
    await poller.poll_once()

    assert store.snapshot().counters[(CREATED, NORMAL)] == 1
    assert store.snapshot().histograms[(FIRST_RESPONSE, NORMAL + ("calendar",))].count == 1


async def test_jira_restart_mid_page(jira, tmp_path: Path):
    url, stub = jira
    stub.fail("search-2", 500)
    poller, store, _ = new_poller(tmp_path, url)

    with pytest.raises(SourceError) as failed:
        await poller.poll_once()
    cursor_at_crash = store.get_meta(CURSOR_KEY)
    partial = store.snapshot()
    store.close()
    restarted, store, metrics = new_poller(tmp_path, url)
    read = await restarted.poll_once()
    searches = stub.searches()

    assert failed.value.kind == "http_500"
    # Page 1 (SUP-1) was applied with its cursor, page 2 (SUP-2) was not.
    assert cursor_at_crash == CURSOR_1
    assert partial.counters[(CREATED, NORMAL)] == 1
    assert partial.histograms[(FIRST_RESPONSE, NORMAL + ("calendar",))].sum == 3000
    assert (CREATED, URGENT) not in partial.counters
    assert partial.open == []
    # The restarted poller searches from the stored cursor, not from 1970.
    assert len(searches) == 4
    expected_minutes = math.ceil((time.time() - datetime.fromisoformat(CURSOR_1).timestamp()) / 60) + 1
    assert abs(jql_minutes(searches[2]) - expected_minutes) <= 1
    assert jql_minutes(searches[2]) < jql_minutes(searches[0])
    assert read == 2
    assert store.get_meta(CURSOR_KEY) == CURSOR_2
    assert "jira" in metrics.last_success
    assert_complete(store)


async def test_jira_comment_failure_keeps_page(jira, tmp_path: Path):
    url, stub = jira
    stub.fail("comments-10001", 500)
    poller, store, _ = new_poller(tmp_path, url)

    with pytest.raises(SourceError) as failed:
        await poller.poll_once()
    cursor_at_crash = store.get_meta(CURSOR_KEY)
    partial = store.snapshot()
    store.close()
    restarted, store, _ = new_poller(tmp_path, url)
    read = await restarted.poll_once()

    assert failed.value.kind == "http_500"
    # SUP-1's later comments could not be read, so nothing of page 1 was stored.
    assert cursor_at_crash is None
    assert partial.counters == {}
    assert partial.open == []
    assert read == 2
    assert store.get_meta(CURSOR_KEY) == CURSOR_2
    assert_complete(store)


@pytest.mark.parametrize(("retry_after", "shortest", "longest"), [
    (lambda: "7", 7.0, 7.0),
    # An HTTP date has whole seconds, so the wait is up to one second shorter than the offset.
    (lambda: http_date(120), 118.0, 120.0),
], ids=["seconds", "http-date"])
async def test_jira_waits_for_retry_after(jira, tmp_path: Path, retry_after, shortest: float, longest: float):
    url, stub = jira
    stub.fail("search-2", 429, {"Retry-After": retry_after()})
    waits: list[float] = []

    async def record_sleep(seconds: float) -> None:
        waits.append(seconds)

    poller, store, metrics = new_poller(tmp_path, url, sleep=record_sleep)
    read = await poller.poll_once()

    assert len(waits) == 1
    assert shortest <= waits[0] <= longest
    assert metrics.errors[("jira", "rate_limited")] == 1
    assert [request.query.get("nextPageToken") for request in stub.searches()] == [
        None, "page-2-token", "page-2-token"]
    assert read == 2
    assert store.get_meta(CURSOR_KEY) == CURSOR_2
    assert "jira" in metrics.last_success
    assert_complete(store)


@pytest.mark.parametrize("status", [401, 500])
async def test_jira_failed_poll_counted(jira, tmp_path: Path, status: int):
    url, stub = jira
    stub.fail("search-1", status)
    waits: list[float] = []

    async def stop(seconds: float) -> None:
        waits.append(seconds)
        raise asyncio.CancelledError

    poller, store, metrics = new_poller(tmp_path, url, sleep=stop)
    store.ingest([], meta={CURSOR_KEY: CURSOR_1})
    with pytest.raises(asyncio.CancelledError):
        await poller.run()

    assert dict(metrics.errors) == {("jira", f"http_{status}"): 1}
    assert "jira" not in metrics.last_success
    assert "jira" not in metrics.lag
    assert waits == [60.0]  # run() waited for the interval after the failed poll
    assert store.get_meta(CURSOR_KEY) == CURSOR_1
    assert store.snapshot().counters == {}


async def test_jira_lag_recorded(jira, tmp_path: Path):
    url, stub = jira
    stub.delay = 0.2
    poller, _, metrics = new_poller(tmp_path, url)

    before = time.time()
    await poller.poll_once()
    after = time.time()

    # The lag is the duration of the poll, which waited for two searches of 0.2 s each.
    assert 0.35 <= metrics.lag["jira"] <= after - before
    assert before <= metrics.last_success["jira"] <= after


async def test_jira_login_page_counted_invalid(jira, tmp_path: Path):
    url, stub = jira
    stub.queue("search-1", web.Response(text="<html><body>Log in to continue to Jira</body></html>",
                                         content_type="text/html"))
    poller, store, metrics = new_poller(tmp_path, url, sleep=stop_run)
    store.ingest([], meta={CURSOR_KEY: CURSOR_1})

    with pytest.raises(asyncio.CancelledError):
        await poller.run()

    assert dict(metrics.errors) == {("jira", "invalid"): 1}
    assert "jira" not in metrics.last_success
    assert store.get_meta(CURSOR_KEY) == CURSOR_1
    assert store.snapshot().counters == {}


async def test_jira_issue_without_fields_counted_invalid(jira, tmp_path: Path):
    url, stub = jira
    # The issue lacks its documented `fields`, so the page cannot be applied.
    stub.queue("search-1", web.json_response({"issues": [{"id": "10001", "key": "SUP-1"}]}))
    poller, store, metrics = new_poller(tmp_path, url, sleep=stop_run)
    store.ingest([], meta={CURSOR_KEY: CURSOR_1})

    with pytest.raises(asyncio.CancelledError):
        await poller.run()

    assert dict(metrics.errors) == {("jira", "invalid"): 1}
    assert "jira" not in metrics.last_success
    assert store.get_meta(CURSOR_KEY) == CURSOR_1
    assert store.snapshot().counters == {}


@pytest.mark.parametrize("status", [403, 404])
async def test_jira_unreadable_issue_skipped(jira, tmp_path: Path, status: int):
    url, stub = jira
    stub.fail("comments-10001", status)
    poller, store, metrics = new_poller(tmp_path, url)

    read = await poller.poll_once()
    snapshot = store.snapshot()

    assert read == 2
    assert dict(metrics.errors) == {("jira", f"http_{status}"): 1}
    assert "jira" in metrics.last_success
    # The search moved past SUP-1, which is missing; SUP-2 is counted.
    assert store.get_meta(CURSOR_KEY) == CURSOR_2
    assert (CREATED, NORMAL) not in snapshot.counters
    assert snapshot.counters[(CREATED, URGENT)] == 1
    assert snapshot.counters[(FIRST_RESPONSES, URGENT + ("automation",))] == 1


def test_jira_config_rejects_unknown_priority(tmp_path: Path):
    data = jira_config(tmp_path, "http://127.0.0.1:1")
    data["tickets"]["sources"]["jira"]["priority_map"] = {"Blocker": "p0"}

    with pytest.raises(ConfigError) as error:
        parse_config(data)

    assert "tickets.sources.jira.priority_map.Blocker: unknown priority 'p0'" in str(error.value)
