"""Zendesk Support poller: the cursor-based incremental ticket export and each ticket's audits.

`GET /api/v2/incremental/tickets/cursor` returns the tickets changed since
the cursor, page by page, with `after_cursor` and `end_of_stream`. Each
changed ticket's history comes from `GET /api/v2/tickets/{id}/audits`: every
`Comment` event after the ticket's first message becomes a reply, and every
`Create` or `Change` event of the
`status`, `priority` or `group_id` field becomes a status change or an
update. Event ids are Zendesk's audit event ids, so reading a ticket again
adds nothing twice.

Author kinds come from the author's documented `role` (`GET
/api/v2/users/show_many`): `agent` and `admin` are agents, an `end-user` is
the requester or another end user. A comment whose via channel is `rule`
(a trigger or an automation) is an automation. The via channel `merge` marks
merge comments, and a move to a closed status by a merge removes the ticket.

The cursor is `after_cursor` of the last applied page, stored in the same
transaction as that page's events, so a restart in the middle of a page
reads the page again and adds nothing twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from typing import Any

import aiohttp

from ...config import TicketsConfig, ZendeskSource
from ..collector import SourceMetrics
from ..events import TicketEvent, parse_event
from ..secrets import read_secret_file
from ..store import TicketStore
from .http import UNREADABLE_KINDS, SourceError, get_json, poll_forever

logger = logging.getLogger("slawatch.tickets.zendesk")

SOURCE = "zendesk"
CURSOR_KEY = "cursor:zendesk"
EXPORT_PATH = "/api/v2/incremental/tickets/cursor"
# Zendesk rejects a start_time less than one minute in the past.
MIN_START_AGE = 60
# Zendesk rejects offset pagination past 100 pages (10,000 records) with 400. Audit pages hold at most 100 audits.
MAX_AUDIT_PAGES = 100
# show_many accepts up to 100 user ids per request.
USERS_PER_REQUEST = 100
# NOTE: assumed value. Zendesk's reference states only that deleted tickets appear in the export.
DELETED_STATUS = "deleted"
# Via types of business rules (triggers, automations) and of ticket merges, as via type and via id.
RULE_CHANNELS = {"rule", 8}
MERGE_CHANNELS = {"merge", 19}
STAFF_ROLES = {"agent", "admin"}
TRACKED_FIELDS = ("status", "priority", "group_id")


class ZendeskPoller:
    """Poll one Zendesk Support account into the ticket store.

    Usage:

        poller = ZendeskPoller(config.tickets, store, source_metrics)
        await poller.poll_once()
    """

    def __init__(self, tickets: TicketsConfig, store: TicketStore, metrics: SourceMetrics, sleep=asyncio.sleep):
        self.tickets = tickets
        self.config: ZendeskSource = tickets.sources.zendesk
        self.store = store
        self.metrics = metrics
        self.sleep = sleep
        self.base = self.config.url.rstrip("/")
        # User id -> role ("end-user", "agent", "admin"), or None for a user that show_many did not return.
        self.roles: dict[int, str | None] = {}

    def _auth_headers(self) -> dict[str, str]:
        """Return the Authorization header. The secret is read on every poll, so a rotated file applies."""
        if self.config.oauth_token_file:
            token = read_secret_file(self.config.oauth_token_file, "tickets.sources.zendesk.oauth_token_file")
            return {"Authorization": f"Bearer {token}"}
        token = read_secret_file(self.config.token_file, "tickets.sources.zendesk.token_file")
        return {"Authorization": aiohttp.encode_basic_auth(f"{self.config.email}/token", token)}

    async def run(self) -> None:
        """Poll every `interval` seconds until cancelled; log and count each failed poll."""
        await poll_forever(self.poll_once, SOURCE, "Zendesk", self.config.url, self.metrics, self.sleep,
                           self.config.interval)

    async def poll_once(self, max_pages: int | None = None) -> int:
        """Apply the export pages after the stored cursor and return the number of tickets read.

        Reading stops at `end_of_stream` or after `max_pages` pages (default: the configured
        `max_pages`); the next poll continues from the stored cursor.
        """
        started = time.time()
        limit = max_pages if max_pages is not None else self.config.max_pages
        headers = {**self._auth_headers(), "Accept": "application/json"}
        cursor = self.store.get_meta(CURSOR_KEY)
        read = pages = 0
        end_of_stream = False
        async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=60)) as session:
            while pages < limit and not end_of_stream:
                params = {"per_page": str(self.config.page_size)}
                if cursor:
                    params["cursor"] = cursor
                else:
                    params["start_time"] = str(self._start_time())
                page = await get_json(session, self.base + EXPORT_PATH, params, SOURCE, self.metrics, self.sleep)
                if not isinstance(page, dict) or not isinstance(page.get("tickets"), list) or \
                        "end_of_stream" not in page:
                    raise SourceError("invalid", f"GET {self.base + EXPORT_PATH} returned no tickets list or no "
                                                 "end_of_stream: check that url is the Zendesk account's base URL")
                tickets = page["tickets"]
                events = await self._page_events(session, tickets)
                after = page.get("after_cursor")
                meta = {CURSOR_KEY: after} if after else None
                await asyncio.get_running_loop().run_in_executor(None, lambda: self.store.ingest(events, meta))
                read += len(tickets)
                pages += 1
                # A missing end_of_stream counts as the end, so a malformed page cannot loop.
                end_of_stream = page.get("end_of_stream") is not False
                if not after:
                    if not end_of_stream:
                        logger.warning("Missing after_cursor on a Zendesk export page before end_of_stream, so the "
                                       "next poll starts from the stored cursor tickets=%d", len(tickets))
                    break
                cursor = after
        if not end_of_stream:
            logger.warning("Stopped Zendesk export at max_pages, so the next poll continues from the stored cursor "
                           "pages=%d", pages)
        logger.debug("Polled Zendesk tickets=%d pages=%d", read, pages)
        self.metrics.success(SOURCE, lag=time.time() - started)
        return read

    def _start_time(self) -> int:
        """Return the start_time of the first export: the configured start, at least a minute in the past."""
        start = 0.0
        if self.config.start is not None:
            configured = self.config.start
            start = (configured if configured.tzinfo else configured.replace(tzinfo=timezone.utc)).timestamp()
        return int(min(max(0.0, start), time.time() - MIN_START_AGE))

    async def _page_events(self, session: aiohttp.ClientSession, tickets: list[dict]) -> list[TicketEvent]:
        """Read the audits and author roles of one export page and turn its tickets into events."""
        histories: dict[Any, list[dict]] = {}
        skipped: set = set()
        for ticket in tickets:
            # A deleted ticket's history is no longer readable through the API, so only the removal is recorded.
            if ticket.get("status") != DELETED_STATUS:
                try:
                    histories[ticket["id"]] = await self._audits(session, ticket["id"])
                except SourceError as error:
                    if error.kind not in UNREADABLE_KINDS:
                        raise
                    # One ticket the API refuses must not stop the export at this page forever.
                    self.metrics.error(SOURCE, error.kind)
                    logger.warning("Skipped a Zendesk ticket whose audits cannot be read ticket=%s err=%s",
                                   ticket["id"], error)
                    skipped.add(ticket["id"])
        authors = {event.get("author_id", audit.get("author_id"))
                   for audits in histories.values() for audit in audits for event in audit.get("events") or []
                   if event.get("type") == "Comment"}
        await self._load_roles(session, authors)

        events: list[TicketEvent] = []
        for ticket in tickets:
            if ticket["id"] in histories:
                events += self._ticket_events(ticket, histories[ticket["id"]])
            elif ticket["id"] not in skipped:
                events += self._removal(ticket)
        return events

    async def _audits(self, session: aiohttp.ClientSession, ticket_id: Any) -> list[dict]:
        audits: list[dict] = []
        for page in range(1, MAX_AUDIT_PAGES + 1):
            data = await get_json(session, f"{self.base}/api/v2/tickets/{ticket_id}/audits", {"page": str(page)},
                                  SOURCE, self.metrics, self.sleep)
            audits += data.get("audits") or []
            if not data.get("next_page"):
                return audits
        # NOTE: audits past Zendesk's offset pagination limit are not read, so their events are missing.
        self.metrics.error(SOURCE, "truncated")
        logger.warning("Audits cut by the offset pagination limit ticket=%s audits=%d", ticket_id, len(audits))
        return audits

    async def _load_roles(self, session: aiohttp.ClientSession, user_ids: set) -> None:
        missing = sorted(user for user in user_ids if user is not None and user not in self.roles)
        for index in range(0, len(missing), USERS_PER_REQUEST):
            chunk = missing[index:index + USERS_PER_REQUEST]
            data = await get_json(session, f"{self.base}/api/v2/users/show_many",
                                  {"ids": ",".join(str(user) for user in chunk)}, SOURCE, self.metrics, self.sleep)
            for user in data.get("users") or []:
                self.roles[user.get("id")] = user.get("role")
            for user in chunk:
                self.roles.setdefault(user, None)

    def _removal(self, ticket: dict) -> list[TicketEvent]:
        status = self.config.status_map.get(DELETED_STATUS)
        if status is None or not status.startswith("removed:"):
            logger.warning("Ignored deleted Zendesk ticket because status_map has no removed: status for deleted, "
                           "add deleted: removed:deleted ticket=%s", ticket.get("id"))
            return []
        data = {"id": f"zendesk:{ticket['id']}:deleted", "type": "ticket.removed",
                "ticket_id": f"zendesk:{ticket['id']}", "time": ticket["updated_at"], "source": SOURCE,
                "reason": status.split(":", 1)[1]}
        return [parse_event(data, self.tickets.channels, self.tickets.priorities)]

    def _ticket_events(self, ticket: dict, audits: list[dict]) -> list[TicketEvent]:
        """Turn one ticket and its audits into events."""
        number = str(ticket["id"])
        base = {"ticket_id": f"zendesk:{number}", "source": SOURCE}
        audits = sorted(audits, key=lambda audit: (_parse_time(audit["created_at"]), audit.get("id") or 0))
        initial = _initial_values(ticket, audits)
        creating = _creating_comment(audits)

        created = {**base, "id": f"zendesk:{number}:created", "type": "ticket.created", "time": ticket["created_at"],
                   "channel": self._channel(ticket), "priority": self._priority(initial["priority"]),
                   "author": "requester", "public": True}
        if creating is not None:
            comment, audit = creating
            kind = self._author(comment, audit, ticket.get("requester_id"))
            created["author"] = kind if kind in ("agent", "bot", "automation") else "requester"
            created["public"] = bool(comment.get("public", True))
        if initial["group_id"] not in (None, ""):
            created["team"] = str(initial["group_id"])
        events = [created]

        for audit in audits:
            for event in audit.get("events") or []:
                if creating is not None and event is creating[0]:
                    continue
                data = self._event(event, audit, ticket)
                if data is not None:
                    events.append({**base, "id": f"zendesk:event:{event['id']}", "time": audit["created_at"], **data})
        return [parse_event(data, self.tickets.channels, self.tickets.priorities) for data in events]

    def _event(self, event: dict, audit: dict, ticket: dict) -> dict | None:
        """Return the fields of the slawatch event for one audit event, or None for events not tracked."""
        kind = event.get("type")
        if kind == "Comment":
            return {"type": "ticket.replied", "author": self._author(event, audit, ticket.get("requester_id")),
                    "visibility": "public" if event.get("public", True) else "internal",
                    "merge_comment": _via_channel(event, audit) in MERGE_CHANNELS}
        if kind not in ("Create", "Change") or event.get("field_name") not in TRACKED_FIELDS:
            return None
        field, value = event["field_name"], event.get("value")
        if field == "priority":
            return None if kind == "Create" else {"type": "ticket.updated", "priority": self._priority(value)}
        if field == "group_id":
            if kind == "Create" or value in (None, ""):
                return None
            return {"type": "ticket.updated", "team": str(value)}
        return self._status(kind, str(value), event, audit, ticket)

    def _status(self, kind: str, value: str, event: dict, audit: dict, ticket: dict) -> dict | None:
        status = self.config.status_map.get(value)
        if status is None:
            logger.warning("Ignored unmapped Zendesk status status=%s ticket=%s", value, ticket.get("id"))
            return None
        if kind == "Create" and status == "new":
            return None
        if status == "closed" and _via_channel(event, audit) in MERGE_CHANNELS:
            return {"type": "ticket.removed", "reason": "merged"}
        if status.startswith("removed:"):
            return {"type": "ticket.removed", "reason": status.split(":", 1)[1]}
        return {"type": "ticket.status_changed", "status": status}

    def _author(self, comment: dict, audit: dict, requester: Any) -> str:
        """Return the author kind of a comment: automation, bot, agent, requester or end_user."""
        if _via_channel(comment, audit) in RULE_CHANNELS:
            return "automation"
        author = comment.get("author_id", audit.get("author_id"))
        if author in self.config.bot_users:
            return "bot"
        if self.roles.get(author) in STAFF_ROLES:
            return "agent"
        # An end user, or a user that show_many did not return (for example a deleted user).
        return "requester" if author == requester else "end_user"

    def _priority(self, value: Any) -> str:
        return self.config.priority_map.get(str(value), self.config.default_priority)

    def _channel(self, ticket: dict) -> str:
        channel = (ticket.get("via") or {}).get("channel")
        return self.config.channel_map.get(str(channel), self.config.default_channel)


def _via_channel(event: dict, audit: dict) -> Any:
    """Return the via channel of an audit event. An event has its own via only when it differs from the audit's."""
    return (event.get("via") or audit.get("via") or {}).get("channel")


def _initial_values(ticket: dict, audits: list[dict]) -> dict[str, Any]:
    """Return the priority and group at creation: the Create event, else the first change's old value.

    Without either, the ticket's current value is used.
    """
    values: dict[str, Any] = {}
    for audit in audits:
        for event in audit.get("events") or []:
            field = event.get("field_name")
            if field in ("priority", "group_id") and field not in values:
                if event.get("type") == "Create":
                    values[field] = event.get("value")
                elif event.get("type") == "Change":
                    values[field] = event.get("previous_value")
    return {field: values.get(field, ticket.get(field)) for field in ("priority", "group_id")}


def _creating_comment(audits: list[dict]) -> tuple[dict, dict] | None:
    """Return (comment event, audit) of the message the ticket was created with, if the audits hold it."""
    if not audits:
        return None
    first = audits[0]
    events = first.get("events") or []
    if not any(event.get("type") == "Create" for event in events):
        return None
    for event in events:
        if event.get("type") == "Comment":
            return event, first
    return None


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
