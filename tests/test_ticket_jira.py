"""The Jira Service Management poller against recorded Jira Cloud REST API v3 responses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiohttp import web

from slawatch.config import ConfigError, parse_config
from slawatch.tickets import SourceMetrics, build_store
from slawatch.tickets.lifecycle import CREATED, FIRST_RESOLUTION, FIRST_RESPONSE, FIRST_RESPONSES
from slawatch.tickets.sources.jira import CURSOR_KEY, JiraPoller

DATA = Path(__file__).parent / "data" / "jira"
OFFICE = {"timezone": "Asia/Shanghai", "hours": {day: ["09:00-18:00"] for day in ("mon", "tue", "wed", "thu", "fri")}}


def recorded(name: str) -> dict:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


@pytest.fixture
async def jira(aiohttp_server):
    """A stub Jira site that serves the recorded pages; the first search answers 429 once."""
    requests: list[web.Request] = []

    async def search(request: web.Request) -> web.Response:
        requests.append(request)
        if len(requests) == 1:
            return web.json_response({"errorMessages": ["Rate limit exceeded"]}, status=429,
                                     headers={"Retry-After": "3"})
        page = "search-page-2.json" if request.query.get("nextPageToken") == "page-2-token" else "search-page-1.json"
        return web.json_response(recorded(page))

    async def comments(request: web.Request) -> web.Response:
        requests.append(request)
        assert request.query["startAt"] == "2"
        return web.json_response(recorded(f"comments-{request.match_info['issue']}.json"))

    app = web.Application()
    app.router.add_get("/rest/api/3/search/jql", search)
    app.router.add_get("/rest/api/3/issue/{issue}/comment", comments)
    server = await aiohttp_server(app)
    return server, requests


def jira_config(tmp_path: Path, url: str) -> dict:
    (tmp_path / "jira-token").write_text("api-token\n", encoding="utf-8")
    return {"tickets": {"database": str(tmp_path / "tickets.db"), "calendars": {"office": OFFICE},
                        "business_calendar": "office",
                        "sources": {"jira": {"url": url, "user": "bot@example.test", "jql": "project = SUP",
                                             "token_file": str(tmp_path / "jira-token")}}}}


async def test_jira_worked_case_and_authors(jira, tmp_path: Path):
    server, requests = jira
    config = parse_config(jira_config(tmp_path, str(server.make_url("/")).rstrip("/")))
    store, _ = build_store(config.tickets)
    metrics = SourceMetrics()
    waits = []

    async def record_sleep(seconds: float) -> None:
        waits.append(seconds)

    read = await JiraPoller(config.tickets, store, metrics, sleep=record_sleep).poll_once()
    snapshot = store.snapshot()
    normal = ("jira", "email", "normal", "support")

    assert read == 2
    assert waits == [3.0]
    assert metrics.errors[("jira", "rate_limited")] == 1
    assert snapshot.histograms[(FIRST_RESPONSE, normal + ("calendar",))].sum == 3000
    assert snapshot.histograms[(FIRST_RESPONSE, normal + ("business",))].sum == 3000
    assert snapshot.histograms[(FIRST_RESOLUTION, normal + ("calendar",))].sum == 85500
    assert snapshot.histograms[(FIRST_RESOLUTION, normal + ("business",))].sum == 31500
    assert snapshot.counters[(FIRST_RESPONSES, normal + ("human",))] == 1
    # SUP-2: created as Highest, answered only by a Rovo agent (a bot), then lowered to Medium.
    assert snapshot.counters[(CREATED, ("jira", "email", "urgent", "support"))] == 1
    assert snapshot.counters[(FIRST_RESPONSES, ("jira", "email", "urgent", "support", "automation"))] == 1
    assert [t.answered for t in snapshot.open] == [False]
    assert snapshot.open[0].labels == normal
    assert store.get_meta(CURSOR_KEY) == "2025-03-05T09:30:00+08:00"


async def test_jira_query_and_auth(jira, tmp_path: Path):
    server, requests = jira
    config = parse_config(jira_config(tmp_path, str(server.make_url("/")).rstrip("/")))
    store, _ = build_store(config.tickets)

    await JiraPoller(config.tickets, store, SourceMetrics(), sleep=lambda s: _no_wait()).poll_once()
    search = requests[1]

    assert search.headers["Authorization"] == "Basic Ym90QGV4YW1wbGUudGVzdDphcGktdG9rZW4="
    assert search.query["jql"].startswith("(project = SUP) AND updated >= -")
    assert search.query["jql"].endswith("m ORDER BY updated ASC")
    assert search.query["expand"] == "changelog"
    assert "comment" in search.query["fields"].split(",")


async def test_jira_repoll_counts_once(jira, tmp_path: Path):
    server, _ = jira
    config = parse_config(jira_config(tmp_path, str(server.make_url("/")).rstrip("/")))
    store, _ = build_store(config.tickets)
    poller = JiraPoller(config.tickets, store, SourceMetrics(), sleep=lambda s: _no_wait())

    await poller.poll_once(max_pages=1)
    await poller.poll_once()
    await poller.poll_once()

    assert store.snapshot().counters[(CREATED, ("jira", "email", "normal", "support"))] == 1
    assert store.snapshot().histograms[(FIRST_RESPONSE, ("jira", "email", "normal", "support", "calendar"))].count == 1


def test_jira_config_rejects_unknown_priority(tmp_path: Path):
    data = jira_config(tmp_path, "http://127.0.0.1:1")
    data["tickets"]["sources"]["jira"]["priority_map"] = {"Blocker": "p0"}

    with pytest.raises(ConfigError) as error:
        parse_config(data)

    assert "tickets.sources.jira.priority_map.Blocker: unknown priority 'p0'" in str(error.value)


async def _no_wait() -> None:
    return None
