"""Zammad poller: tickets through the search API and their articles.

The poller searches tickets sorted by `updated_at` (newest first, with
`expand=true` for the state, priority and group names) and stops at the
first ticket older than the cursor. Each ticket's articles
(`GET /api/v1/ticket_articles/by_ticket/{id}`) become replies whose event
ids are the article ids. A ticket whose articles return 403 or 404 is skipped
with a warning. The author kind comes from the documented `sender`
(`Agent`, `Customer`, `System`), and `internal: true` marks a note.

Zammad's documented REST API has no state history, so a state is recorded
at the ticket's `close_at` when the state maps to solved or closed and
`close_at` is set, and otherwise at its `updated_at`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone

import aiohttp

from ...config import TicketsConfig, ZammadSource
from ..collector import SourceMetrics
from ..events import TicketEvent, parse_event
from ..secrets import read_secret_file
from ..store import TicketStore
from .http import UNREADABLE_KINDS, SourceError, get_json, poll_forever

logger = logging.getLogger("slawatch.tickets.zammad")

SOURCE = "zammad"
CURSOR_KEY = "cursor:zammad"
# "<page> <newest updated_at>" of a pass that stopped at max_pages, or empty.
RESUME_KEY = "resume:zammad"


class ZammadPoller:
    """Poll one Zammad instance into the ticket store.

    Usage:

        poller = ZammadPoller(config.tickets, store, source_metrics)
        await poller.poll_once()
    """

    def __init__(self, tickets: TicketsConfig, store: TicketStore, metrics: SourceMetrics, sleep=asyncio.sleep):
        self.tickets = tickets
        self.config: ZammadSource = tickets.sources.zammad
        self.store = store
        self.metrics = metrics
        self.sleep = sleep
        self.base = self.config.url.rstrip("/") + "/api/v1"

    async def run(self) -> None:
        """Poll every `interval` seconds until cancelled; log and count each failed poll."""
        await poll_forever(self.poll_once, SOURCE, "Zammad", self.config.url, self.metrics, self.sleep,
                           self.config.interval)

    async def poll_once(self) -> int:
        """Apply every ticket updated since the cursor; return the number of tickets read.

        Pages arrive newest first, so the cursor moves only after the last page is applied. A restart
        before that reads the same tickets again, which event ids make harmless. A poll that stops at
        max_pages stores the next page and the newest time seen, and the next poll continues there.
        Tickets updated meanwhile move to the front, and the pass after this one reads them, because
        they are newer than the time stored.
        """
        started = time.time()
        token = read_secret_file(self.config.token_file, "tickets.sources.zammad.token_file")
        headers = {"Authorization": f"Token token={token}"}
        cursor = self._cursor()
        newest = cursor
        first_page = 1
        resume = self.store.get_meta(RESUME_KEY)
        if resume:
            page_text, _, newest_text = resume.partition(" ")
            first_page, newest = int(page_text), datetime.fromisoformat(newest_text)
        read = 0
        async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=60)) as session:
            for page in range(first_page, first_page + self.config.max_pages):
                tickets = await get_json(session, f"{self.base}/tickets/search", {
                    "query": self.config.query, "sort_by": "updated_at", "order_by": "desc", "expand": "true",
                    "page": str(page), "per_page": str(self.config.page_size)}, SOURCE, self.metrics, self.sleep)
                if not isinstance(tickets, list):
                    raise SourceError("invalid", f"GET {self.base}/tickets/search returned no list of tickets, as "
                                                 "Zammad does without expand=true: check that url is the Zammad base "
                                                 "URL and that no proxy drops the query string")
                changed = [t for t in tickets if _parse_time(t["updated_at"]) >= cursor]
                events: list[TicketEvent] = []
                for ticket in changed:
                    try:
                        events += await self._ticket_events(session, ticket)
                    except SourceError as error:
                        if error.kind not in UNREADABLE_KINDS:
                            raise
                        # One ticket the API refuses must not fail every later poll.
                        self.metrics.error(SOURCE, error.kind)
                        logger.warning("Skipped a Zammad ticket whose articles cannot be read ticket=%s err=%s",
                                       ticket["id"], error)
                    newest = max(newest, _parse_time(ticket["updated_at"]))
                await asyncio.get_running_loop().run_in_executor(None, self.store.ingest, events)
                read += len(changed)
                if len(changed) < len(tickets) or len(tickets) < self.config.page_size:
                    break
            else:
                # The cursor stays until the pass reaches tickets older than it.
                logger.warning("Stopped Zammad poll at max_pages, so the next poll continues at page=%d",
                               page + 1)
                self.metrics.error(SOURCE, "truncated")
                await asyncio.get_running_loop().run_in_executor(
                    None, lambda: self.store.ingest([], meta={RESUME_KEY: f"{page + 1} {newest.isoformat()}"}))
                return read
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: self.store.ingest([], meta={CURSOR_KEY: newest.isoformat(), RESUME_KEY: ""}))
        self.metrics.success(SOURCE, lag=time.time() - started)
        return read

    def _cursor(self) -> datetime:
        stored = self.store.get_meta(CURSOR_KEY)
        return datetime.fromisoformat(stored) if stored else datetime(1970, 1, 1, tzinfo=timezone.utc)

    async def _ticket_events(self, session: aiohttp.ClientSession, ticket: dict) -> list[TicketEvent]:
        number = str(ticket["id"])
        ticket_id = f"zammad:{number}"
        articles = await get_json(session, f"{self.base}/ticket_articles/by_ticket/{number}", None, SOURCE,
                                  self.metrics, self.sleep) or []
        customer = ticket.get("customer_id")
        priority = self.config.priority_map.get(ticket.get("priority") or "", self.config.default_priority)

        events = [{"id": f"zammad:{number}:created", "type": "ticket.created", "ticket_id": ticket_id,
                   "time": ticket["created_at"], "source": SOURCE, "channel": self._channel(ticket),
                   "priority": priority, "team": str(ticket.get("group_id")),
                   "author": "agent" if ticket.get("create_article_sender") == "Agent" else "requester"}]
        # The first article is the message the ticket was created with, so it is not a reply.
        for article in sorted(articles, key=lambda a: (a["created_at"], a["id"]))[1:]:
            events.append({"id": f"zammad:article:{article['id']}", "type": "ticket.replied", "ticket_id": ticket_id,
                           "time": article["created_at"], "source": SOURCE,
                           "author": self._author(article, customer),
                           "visibility": "internal" if article.get("internal") or article.get("type") == "note"
                           else "public"})

        status = self.config.status_map.get(ticket.get("state") or "")
        if status is None:
            logger.warning("Ignored unmapped Zammad state state=%s ticket=%s", ticket.get("state"), number)
        elif status != "new":
            at = ticket["updated_at"]
            if status in ("solved", "closed") and ticket.get("close_at"):
                at = ticket["close_at"]
            data = {"id": f"zammad:{number}:state:{ticket.get('state')}:{at}", "ticket_id": ticket_id, "time": at,
                    "source": SOURCE}
            if status.startswith("removed:"):
                data.update(type="ticket.removed", reason=status.split(":", 1)[1])
            else:
                data.update(type="ticket.status_changed", status=status)
            events.append(data)
        return [parse_event(data, self.tickets.channels, self.tickets.priorities) for data in events]

    def _channel(self, ticket: dict) -> str:
        return self.config.channel_map.get(ticket.get("create_article_type") or "", self.config.default_channel)

    def _author(self, article: dict, customer: int | None) -> str:
        sender = article.get("sender")
        if sender == "Agent":
            return "agent"
        if sender == "Customer":
            author = article.get("origin_by_id") or article.get("created_by_id")
            return "requester" if author == customer else "end_user"
        return "automation"


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
