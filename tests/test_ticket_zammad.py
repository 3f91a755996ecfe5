"""The Zammad poller against recorded Zammad REST API responses."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiohttp import web

from slawatch.config import ConfigError, parse_config
from slawatch.tickets import SourceMetrics, build_store
from slawatch.tickets.lifecycle import CREATED, FIRST_RESOLUTION, FIRST_RESPONSE, REMOVED
from slawatch.tickets.sources.zammad import CURSOR_KEY, ZammadPoller

DATA = Path(__file__).parent / "data" / "zammad"
OFFICE = {"timezone": "Asia/Shanghai", "hours": {day: ["09:00-18:00"] for day in ("mon", "tue", "wed", "thu", "fri")}}
LABELS = ("zammad", "email", "normal", "support")


def recorded(name: str):
    return json.loads((DATA / name).read_text(encoding="utf-8"))


@pytest.fixture
async def zammad(aiohttp_server):
    requests: list[web.Request] = []

    async def search(request: web.Request) -> web.Response:
        requests.append(request)
        return web.json_response(recorded("search.json") if request.query["page"] == "1" else [])

    async def articles(request: web.Request) -> web.Response:
        requests.append(request)
        return web.json_response(recorded(f"articles-{request.match_info['ticket']}.json"))

    app = web.Application()
    app.router.add_get("/api/v1/tickets/search", search)
    app.router.add_get("/api/v1/ticket_articles/by_ticket/{ticket}", articles)
    server = await aiohttp_server(app)
    return server, requests


def zammad_config(tmp_path: Path, url: str) -> dict:
    (tmp_path / "zammad-token").write_text("zammad-token\n", encoding="utf-8")
    return {"tickets": {"database": str(tmp_path / "tickets.db"), "calendars": {"office": OFFICE},
                        "business_calendar": "office",
                        "sources": {"zammad": {"url": url, "token_file": str(tmp_path / "zammad-token")}}}}


async def test_zammad_worked_case_merged(zammad, tmp_path: Path):
    server, requests = zammad
    config = parse_config(zammad_config(tmp_path, str(server.make_url("/")).rstrip("/")))
    store, _ = build_store(config.tickets)
    metrics = SourceMetrics()

    read = await ZammadPoller(config.tickets, store, metrics).poll_once()
    snapshot = store.snapshot()

    assert read == 2
    assert snapshot.counters[(CREATED, LABELS)] == 2
    assert snapshot.counters[(REMOVED, LABELS + ("merged",))] == 1
    assert snapshot.histograms[(FIRST_RESPONSE, LABELS + ("calendar",))].count == 1
    assert snapshot.histograms[(FIRST_RESPONSE, LABELS + ("calendar",))].sum == 5100
    assert snapshot.histograms[(FIRST_RESPONSE, LABELS + ("business",))].sum == 4200
    assert snapshot.histograms[(FIRST_RESOLUTION, LABELS + ("calendar",))].sum == 22500
    assert snapshot.histograms[(FIRST_RESOLUTION, LABELS + ("business",))].sum == 21600
    assert snapshot.open == []
    assert store.get_meta(CURSOR_KEY) == "2025-03-05T07:00:00+00:00"
    assert requests[0].headers["Authorization"] == "Token token=zammad-token"
    assert requests[0].query["sort_by"] == "updated_at"
    assert requests[0].query["order_by"] == "desc"
    assert requests[0].query["expand"] == "true"


async def test_zammad_second_poll_reads_nothing_new(zammad, tmp_path: Path):
    server, requests = zammad
    config = parse_config(zammad_config(tmp_path, str(server.make_url("/")).rstrip("/")))
    store, _ = build_store(config.tickets)
    poller = ZammadPoller(config.tickets, store, SourceMetrics())

    await poller.poll_once()
    again = await poller.poll_once()

    assert again == 1  # the newest ticket sits on the cursor and is read again, adding nothing
    assert store.snapshot().counters[(CREATED, LABELS)] == 2
    assert store.snapshot().histograms[(FIRST_RESPONSE, LABELS + ("calendar",))].count == 1


async def test_zammad_empty_token_fails_poll(zammad, tmp_path: Path, caplog):
    server, requests = zammad
    config = parse_config(zammad_config(tmp_path, str(server.make_url("/")).rstrip("/")))
    (tmp_path / "zammad-token").write_text("\n", encoding="utf-8")
    store, _ = build_store(config.tickets)
    metrics = SourceMetrics()

    async def stop(seconds: float) -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await ZammadPoller(config.tickets, store, metrics, sleep=stop).run()

    assert metrics.errors[("zammad", "config")] == 1
    assert requests == []
    assert f"tickets.sources.zammad.token_file: {tmp_path / 'zammad-token'} is empty: write the secret into it" \
        in caplog.text


def test_zammad_config_rejects_unknown_channel(tmp_path: Path):
    data = zammad_config(tmp_path, "http://127.0.0.1:1")
    data["tickets"]["sources"]["zammad"]["channel_map"] = {"sms": "pager"}

    with pytest.raises(ConfigError) as error:
        parse_config(data)

    assert "tickets.sources.zammad.channel_map.sms: unknown channel 'pager'" in str(error.value)
