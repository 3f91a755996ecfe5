"""Jira Service Management poller, through the Jira Cloud platform REST API v3.

One search request returns the changed issues with their comments and their
changelog (`GET /rest/api/3/search/jql` with `fields=...,comment` and
`expand=changelog`). Each comment, each changelog entry and the creation become
events whose ids are Jira's ids, so reading an issue again adds nothing twice.

Author kinds come from the documented `accountType` of the user: `customer`
(a service-desk customer) is the reporter or another end user, `atlassian` is
an agent, and `app` is an automation, or a bot when its `appType` is `agent`.
A comment is internal when `jsdPublic` is false.

The cursor is the newest `updated` time of the applied issues, stored in the
same transaction as the page's events. An issue whose comments return 403 or
404 is skipped with a warning, so it does not hold the search at its page.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from datetime import datetime, timezone
from typing import Any

import aiohttp

from ...config import JiraSource, TicketsConfig
from ..collector import SourceMetrics
from ..events import TicketEvent, parse_event
from ..secrets import read_secret_file
from ..store import TicketStore
from .http import UNREADABLE_KINDS, SourceError, get_json, poll_forever

logger = logging.getLogger("slawatch.tickets.jira")

SOURCE = "jira"
CURSOR_KEY = "cursor:jira"
FIELDS = "created,updated,status,priority,reporter,comment"


class JiraPoller:
    """Poll Jira Service Management issues into the ticket store.

    Usage:

        poller = JiraPoller(config.tickets, store, source_metrics)
        await poller.poll_once()
    """

    def __init__(self, tickets: TicketsConfig, store: TicketStore, metrics: SourceMetrics, sleep=asyncio.sleep):
        self.tickets = tickets
        self.config: JiraSource = tickets.sources.jira
        self.store = store
        self.metrics = metrics
        self.sleep = sleep
        self.base = self.config.url.rstrip("/")

    async def run(self) -> None:
        """Poll every `interval` seconds until cancelled; log and count each failed poll."""
        await poll_forever(self.poll_once, SOURCE, "Jira", self.config.url, self.metrics, self.sleep,
                           self.config.interval)

    async def poll_once(self, max_pages: int | None = None) -> int:
        """Apply every issue updated since the cursor; return the number of issues read."""
        started = time.time()
        token = read_secret_file(self.config.token_file, "tickets.sources.jira.token_file")
        headers = {"Authorization": aiohttp.encode_basic_auth(self.config.user, token), "Accept": "application/json"}
        read = pages = 0
        page_token: str | None = None
        jql = self._jql(self._cursor())
        async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=60)) as session:
            while max_pages is None or pages < max_pages:
                params = {"jql": jql, "fields": FIELDS, "expand": "changelog", "maxResults": str(self.config.page_size)}
                if page_token:
                    params["nextPageToken"] = page_token
                page = await get_json(session, f"{self.base}/rest/api/3/search/jql", params, SOURCE, self.metrics,
                                      self.sleep)
                issues = page.get("issues") or []
                events: list[TicketEvent] = []
                newest = self._cursor()
                for issue in issues:
                    try:
                        events += await self._issue_events(session, issue)
                    except SourceError as error:
                        if error.kind not in UNREADABLE_KINDS:
                            raise
                        # One issue the API refuses must not stop the search at this page forever.
                        self.metrics.error(SOURCE, error.kind)
                        logger.warning("Skipped a Jira issue whose comments cannot be read issue=%s err=%s",
                                       issue["key"], error)
                    newest = max(newest, _parse_time(issue["fields"]["updated"]))
                await asyncio.get_running_loop().run_in_executor(
                    None, lambda: self.store.ingest(events, meta={CURSOR_KEY: newest.isoformat()}))
                read += len(issues)
                pages += 1
                # The last page has no nextPageToken (or a null one).
                page_token = page.get("nextPageToken")
                if not page_token or not issues:
                    break
        self.metrics.success(SOURCE, lag=time.time() - started)
        return read

    def _cursor(self) -> datetime:
        stored = self.store.get_meta(CURSOR_KEY)
        if stored:
            return datetime.fromisoformat(stored)
        return datetime(1970, 1, 1, tzinfo=timezone.utc)

    def _jql(self, cursor: datetime) -> str:
        # JQL dates are in the user's time zone and whole minutes; a relative "-Nm" avoids the zone,
        # and one extra minute re-reads the boundary, which event ids make harmless.
        minutes = math.ceil(max(0.0, time.time() - cursor.timestamp()) / 60) + 1
        condition = f"updated >= -{minutes}m"
        base = f"({self.config.jql}) AND {condition}" if self.config.jql else condition
        return f"{base} ORDER BY updated ASC"

    async def _issue_events(self, session: aiohttp.ClientSession, issue: dict) -> list[TicketEvent]:
        """Turn one issue, its comments and its changelog into events."""
        fields = issue["fields"]
        ticket = f"jira:{issue['key']}"
        reporter = (fields.get("reporter") or {}).get("accountId")
        histories = (issue.get("changelog") or {}).get("histories") or []
        changelog = issue.get("changelog") or {}
        if changelog.get("total", len(histories)) > len(histories):
            # NOTE: only the changelog entries the search returned are read; longer histories are cut.
            self.metrics.error(SOURCE, "truncated")
            logger.warning("Changelog cut by Jira issue=%s returned=%d total=%d", issue["key"], len(histories),
                           changelog.get("total"))
        priority_changes = sorted((h for h in histories for item in h.get("items") or []
                                   if item.get("field") == "priority"), key=lambda h: _parse_time(h["created"]))
        first_priority = (next(item for item in priority_changes[0]["items"] if item.get("field") == "priority")
                          .get("fromString") if priority_changes else (fields.get("priority") or {}).get("name"))

        created = {"id": f"jira:{issue['id']}:created", "type": "ticket.created", "ticket_id": ticket,
                   "time": _iso(fields["created"]), "source": SOURCE, "channel": self.config.channel,
                   "priority": self._priority(first_priority),
                   "author": "requester" if _account_type(fields.get("reporter")) == "customer" else "agent"}
        events = [created]

        for comment in await self._comments(session, issue):
            author = comment.get("author") or {}
            events.append({"id": f"jira:comment:{comment['id']}", "type": "ticket.replied", "ticket_id": ticket,
                           "time": _iso(comment["created"]), "source": SOURCE,
                           "author": self._author(author, reporter),
                           "visibility": "public" if comment.get("jsdPublic", True) else "internal"})

        for history in histories:
            for index, item in enumerate(history.get("items") or []):
                data = self._change(item)
                if data is not None:
                    events.append({"id": f"jira:history:{history['id']}:{index}", "ticket_id": ticket,
                                   "time": _iso(history["created"]), "source": SOURCE, **data})
        return [parse_event(data, self.tickets.channels, self.tickets.priorities) for data in events]

    async def _comments(self, session: aiohttp.ClientSession, issue: dict) -> list[dict]:
        page = issue["fields"].get("comment") or {}
        comments = list(page.get("comments") or [])
        total = page.get("total", len(comments))
        while len(comments) < total:
            more = await get_json(session, f"{self.base}/rest/api/3/issue/{issue['id']}/comment",
                                  {"startAt": str(len(comments)), "maxResults": "100"}, SOURCE, self.metrics,
                                  self.sleep)
            batch = more.get("comments") or []
            if not batch:
                break
            comments += batch
            total = more.get("total", total)
        return comments

    def _change(self, item: dict) -> dict | None:
        field = item.get("field")
        if field == "status":
            status = self.config.status_map.get(item.get("toString") or "")
            if status is None:
                logger.warning("Ignored unmapped Jira status status=%s", item.get("toString"))
                return None
            if status.startswith("removed:"):
                return {"type": "ticket.removed", "reason": status.split(":", 1)[1]}
            return {"type": "ticket.status_changed", "status": status}
        if field == "priority":
            return {"type": "ticket.updated", "priority": self._priority(item.get("toString"))}
        return None

    def _author(self, user: dict, reporter: str | None) -> str:
        kind = _account_type(user)
        if kind == "customer":
            return "requester" if user.get("accountId") == reporter else "end_user"
        if kind == "app":
            return "bot" if user.get("appType") == "agent" else "automation"
        return "agent"

    def _priority(self, name: Any) -> str:
        return self.config.priority_map.get(str(name), self.config.default_priority)


def _account_type(user: dict | None) -> str:
    return (user or {}).get("accountType") or "atlassian"


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _iso(value: str) -> str:
    """Return Jira's "2025-03-03T10:15:00.000+0800" as RFC 3339 with a colon in the offset."""
    return _parse_time(value).isoformat()
