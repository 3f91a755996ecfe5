"""Request Tracker 5 poller: tickets and their transaction history through the REST2 API.

RT overwrites a ticket's `Told` and `Resolved` fields on later replies and
resolutions, so the poller reads each changed ticket's transaction history
(`GET /REST/2.0/ticket/{id}/history`) and turns every transaction into an
event whose id is the transaction id. Re-reading a ticket therefore adds
nothing twice.

The cursor is the newest `LastUpdated` of the applied tickets. It is written
in the same SQLite transaction as the page's events, so a restart in the
middle of a page reads that page again and loses nothing.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import aiohttp

from ...config import RTSource, TicketsConfig
from ..collector import SourceMetrics
from ..events import TicketEvent, parse_event
from ..secrets import read_secret_file
from ..store import TicketStore
from .http import get_json, poll_forever

logger = logging.getLogger("slawatch.tickets.rt")

SOURCE = "rt"
CURSOR_KEY = "cursor:rt"
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Seconds read again before the cursor, so a difference of up to this much between the clocks of
# RT and the exporter loses no update.
CLOCK_MARGIN = 300
TICKET_FIELDS = "Queue,Status,Created,LastUpdated,Requestor,Priority"
HISTORY_FIELDS = "Type,Creator,Created,OldValue,NewValue,Field"
SYSTEM_USERS = {"RT_System", "Nobody"}


class RTPoller:
    """Poll one RT instance into the ticket store.

    Usage:

        poller = RTPoller(config.tickets, store, source_metrics)
        await poller.poll_once()       # or: task = asyncio.create_task(poller.run())
    """

    def __init__(self, tickets: TicketsConfig, store: TicketStore, metrics: SourceMetrics,
                 sleep=asyncio.sleep):
        self.tickets = tickets
        self.config: RTSource = tickets.sources.rt
        self.store = store
        self.metrics = metrics
        self.sleep = sleep
        self.base = self.config.url.rstrip("/") + "/REST/2.0"
        self._queue_names: dict[str, str] = {}

    def _auth_headers(self) -> dict[str, str]:
        """Return the Authorization header; the secret is read on every poll so a rotated file applies."""
        if self.config.token_file:
            token = read_secret_file(self.config.token_file, "tickets.sources.rt.token_file")
            return {"Authorization": f"token {token}"}
        password = read_secret_file(self.config.password_file, "tickets.sources.rt.password_file")
        return {"Authorization": aiohttp.encode_basic_auth(self.config.user, password)}

    async def run(self) -> None:
        """Poll every `interval` seconds until cancelled; log and count each failed poll."""
        await poll_forever(self.poll_once, SOURCE, "Request Tracker", self.config.url, self.metrics, self.sleep,
                           self.config.interval)

    async def poll_once(self, max_pages: int | None = None) -> int:
        """Apply every ticket updated since the cursor; return the number of tickets read.

        `max_pages` stops after that many pages, as a crash between pages would.
        """
        started = time.time()
        headers = self._auth_headers()
        timeout = aiohttp.ClientTimeout(total=60)
        read = pages = 0
        page = 1
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
            while max_pages is None or pages < max_pages:
                cursor = self._cursor()
                listing = await self._get(session, "/tickets", {
                    "query": self._query(cursor), "orderby": "LastUpdated", "order": "ASC", "page": str(page),
                    "per_page": str(self.config.page_size), "fields": TICKET_FIELDS, "fields[Queue]": "Name",
                })
                items = listing.get("items") or []
                if not items:
                    break
                events: list[TicketEvent] = []
                newest = cursor
                for ticket in items:
                    updated = _parse_time(ticket["LastUpdated"])
                    # The clock margin returns tickets applied before. Ties in the cursor's second are read again,
                    # because RT stores whole seconds.
                    if updated < cursor - timedelta(seconds=1):
                        continue
                    events += await self._ticket_events(session, ticket)
                    newest = max(newest, updated)
                    read += 1
                await asyncio.get_running_loop().run_in_executor(
                    None, lambda: self.store.ingest(events, meta={CURSOR_KEY: newest.isoformat()}))
                pages += 1
                if len(items) < self.config.page_size:
                    break
                # The query starts at the cursor, so the next page is page 1 again, unless a full page
                # shared one LastUpdated second and the cursor could not move.
                page = page + 1 if newest == cursor else 1
        logger.debug("Polled Request Tracker tickets=%d pages=%d", read, pages)
        # Everything updated before this poll started is applied now.
        self.metrics.success(SOURCE, lag=time.time() - started)
        return read

    def _cursor(self) -> datetime:
        stored = self.store.get_meta(CURSOR_KEY)
        if stored:
            return datetime.fromisoformat(stored)
        if self.config.start is not None:
            start = self.config.start
            return start if start.tzinfo else start.replace(tzinfo=timezone.utc)
        return EPOCH

    def _query(self, cursor: datetime) -> str:
        """Return the TicketSQL of the tickets updated since `cursor`, with a margin for clock skew.

        TicketSQL reads an absolute time in the RT user's time zone (US/Eastern in RT_Config.pm, the
        system zone in Debian's package) and reads `...T...Z` as a date only. So the condition is
        relative to RT's own clock instead. poll_once skips the tickets of the margin it applied before.
        """
        if cursor <= EPOCH:
            return self.config.query or "id > 0"
        seconds = math.ceil(time.time() - cursor.timestamp()) + CLOCK_MARGIN
        query = f"LastUpdated > '{seconds} seconds ago'"
        return f"({self.config.query}) AND {query}" if self.config.query else query

    async def _get(self, session: aiohttp.ClientSession, path: str, params: dict | None = None) -> Any:
        return await get_json(session, self.base + path, params, SOURCE, self.metrics, self.sleep)

    async def _history(self, session: aiohttp.ClientSession, ticket_id: str) -> list[dict]:
        transactions, page = [], 1
        while True:
            data = await self._get(session, f"/ticket/{ticket_id}/history",
                                   {"fields": HISTORY_FIELDS, "per_page": "100", "page": str(page)})
            transactions += data.get("items") or []
            if page >= int(float(data.get("pages") or 1)):
                return transactions
            page += 1

    async def _queue_name(self, session: aiohttp.ClientSession, queue_id: str) -> str:
        if queue_id not in self._queue_names:
            data = await self._get(session, f"/queue/{queue_id}")
            self._queue_names[queue_id] = data.get("Name") or queue_id
        return self._queue_names[queue_id]

    async def _ticket_events(self, session: aiohttp.ClientSession, ticket: dict) -> list[TicketEvent]:
        """Turn one ticket's transaction history into events."""
        number = str(ticket["id"])
        transactions = await self._history(session, number)
        requestors = {user.get("id") for user in ticket.get("Requestor") or []}
        priority_changes = [t for t in transactions if t.get("Type") == "Set" and t.get("Field") == "Priority"]
        queue_changes = [t for t in transactions if t.get("Type") == "Set" and t.get("Field") == "Queue"]
        # The creation carries the values from before the first change, so labels are as of that moment.
        priority = priority_changes[0]["OldValue"] if priority_changes else ticket.get("Priority")
        queue = (await self._queue_name(session, queue_changes[0]["OldValue"]) if queue_changes
                 else (ticket.get("Queue") or {}).get("Name"))

        events = []
        for transaction in transactions:
            data = self._event(number, transaction, requestors, priority, queue)
            if data is None:
                continue
            if transaction.get("Type") == "Set" and transaction.get("Field") == "Queue":
                data["team"] = await self._queue_name(session, transaction["NewValue"])
            events.append(parse_event(data, self.tickets.channels, self.tickets.priorities))
        return events

    def _event(self, number: str, transaction: dict, requestors: set, priority: Any, queue: str | None) -> dict | None:
        kind = transaction.get("Type")
        base = {"id": f"rt:{transaction['id']}", "ticket_id": f"rt:{number}", "time": transaction["Created"],
                "source": SOURCE}
        author = self._author((transaction.get("Creator") or {}).get("id"), requestors)
        if kind == "Create":
            data = {**base, "type": "ticket.created", "channel": self.config.channel, "author": author,
                    "priority": self._priority(priority)}
            if queue:
                data["team"] = queue
            return data
        if kind in ("Correspond", "Comment"):
            return {**base, "type": "ticket.replied", "author": author,
                    "visibility": "public" if kind == "Correspond" else "internal"}
        if kind == "Status":
            status = self.config.status_map.get(transaction.get("NewValue"))
            if status is None:
                logger.warning("Ignored unmapped Request Tracker status status=%s ticket=%s",
                               transaction.get("NewValue"), number)
                return None
            if status.startswith("removed:"):
                return {**base, "type": "ticket.removed", "reason": status.split(":", 1)[1]}
            return {**base, "type": "ticket.status_changed", "status": status}
        if kind == "Set" and transaction.get("Field") == "Priority":
            return {**base, "type": "ticket.updated", "priority": self._priority(transaction.get("NewValue"))}
        if kind == "Set" and transaction.get("Field") == "Queue":
            return {**base, "type": "ticket.updated"}
        return None

    def _author(self, user: str | None, requestors: set) -> str:
        if user in SYSTEM_USERS or user is None:
            return "automation"
        if user in self.config.bot_users:
            return "bot"
        if user in requestors:
            return "requester"
        return "agent"

    def _priority(self, value: Any) -> str:
        try:
            number = int(float(value))
        except (TypeError, ValueError):
            number = 0
        thresholds = sorted(self.config.priority_map)
        label = self.config.priority_map[thresholds[0]]
        for threshold in thresholds:
            if number >= threshold:
                label = self.config.priority_map[threshold]
        return label


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))

