"""Routes of the public status page and the operators' announcement API."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from ..config import StatusConfig
from ..status import (AnnouncementError, StatusTracker, StatusView, choose_locale, parse_announcement,
                      public_document, render_html)

if TYPE_CHECKING:
    from .app import Exporter

logger = logging.getLogger("slawatch.status")

# Seconds between writes of the in-memory day totals to the status database.
FLUSH_INTERVAL = 60.0
MAX_ANNOUNCEMENT_BYTES = 64 * 1024


def add_status_routes(app: web.Application, exporter_key: web.AppKey) -> None:
    async def status_page(request: web.Request) -> web.Response:
        document = await _document(request, exporter_key)
        html = render_html(document)
        return web.Response(text=html, content_type="text/html", charset="utf-8",
                            headers=_headers(request, exporter_key))

    async def status_json(request: web.Request) -> web.Response:
        document = public_document(await _document(request, exporter_key))
        return web.json_response(document, dumps=lambda data: json.dumps(data, ensure_ascii=False),
                                 headers=_headers(request, exporter_key))

    async def announce(request: web.Request) -> web.Response:
        return await _announce(request, request.app[exporter_key])

    app.router.add_get("/status", status_page)
    app.router.add_get("/api/v1/status", status_json)
    app.router.add_post("/api/v1/announcements", announce)


def _tracker(request: web.Request, exporter_key: web.AppKey) -> StatusTracker:
    tracker = request.app[exporter_key].status
    if tracker is None:
        raise web.HTTPNotFound(text="The status page is disabled: set status.enabled: true in the config\n")
    return tracker


def _headers(request: web.Request, exporter_key: web.AppKey) -> dict[str, str]:
    headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
               # Inline styles only: the page loads nothing from anywhere else.
               "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
                                          "form-action 'none'; frame-ancestors 'none'"}
    if _tracker(request, exporter_key).status.accept_language:
        headers["Vary"] = "Accept-Language"
    return headers


async def _document(request: web.Request, exporter_key: web.AppKey) -> dict:
    tracker = _tracker(request, exporter_key)
    config = request.app[exporter_key].config
    lang = request.query.get("lang")
    locale = choose_locale(lang, request.headers.get("Accept-Language"), config.global_.locale,
                           config.status.accept_language)
    view = StatusView(tracker, locale)
    return await asyncio.get_running_loop().run_in_executor(None, view.build, time.time())


def read_announce_token(status: StatusConfig) -> str | None:
    """Return the announcement token from status.announce_token_file, else from its environment variable."""
    if status.announce_token_file:
        try:
            token = Path(status.announce_token_file).read_text(encoding="utf-8").strip()
        except OSError as error:
            logger.error("Cannot read the announcement token file file=%s err=%s", status.announce_token_file,
                         error.strerror)
            return None
        return token or None
    return os.environ.get(status.announce_token_env, "").strip() or None


async def _announce(request: web.Request, exporter: "Exporter") -> web.Response:
    tracker = exporter.status
    if tracker is None:
        return _error(404, "(status)", "the status page is disabled: set status.enabled: true in the config")
    token = read_announce_token(exporter.config.status)
    if token is None:
        return _error(403, "(auth)", "announcements are disabled: set status.announce_token_file or the "
                                     f"{exporter.config.status.announce_token_env} environment variable")
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), token.encode()):
        logger.warning("Rejected announcement with a missing or wrong token remote=%s", request.remote)
        return web.json_response({"error": "missing or invalid bearer token", "field": "(auth)"}, status=401,
                                 headers={"WWW-Authenticate": 'Bearer realm="slawatch"'})

    if request.content_length is not None and request.content_length > MAX_ANNOUNCEMENT_BYTES:
        return _error(413, "(body)", f"body of {request.content_length} bytes: send at most "
                                     f"{MAX_ANNOUNCEMENT_BYTES}")
    try:
        data = json.loads(await request.read())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return _error(400, "(body)", "invalid JSON: send one announcement object")
    try:
        incident = parse_announcement(data, tracker.services, time.time())
    except AnnouncementError as error:
        logger.info("Rejected announcement field=%s err=%s", error.field, error)
        return _error(400, error.field, str(error))

    incident_id = await asyncio.get_running_loop().run_in_executor(None, tracker.add_announcement, incident)
    logger.info("Posted announcement id=%d kind=%s services=%s", incident_id, incident.kind,
                ",".join(incident.services))
    return web.json_response({"id": incident_id, "kind": incident.kind}, status=201)


def _error(status: int, field: str, message: str) -> web.Response:
    return web.json_response({"error": message, "field": field}, status=status)


async def run_flusher(tracker: StatusTracker, interval: float = FLUSH_INTERVAL) -> None:
    """Write the day totals every `interval` seconds until cancelled, then once more."""
    loop = asyncio.get_running_loop()
    try:
        while True:
            await asyncio.sleep(interval)
            try:
                await loop.run_in_executor(None, tracker.flush)
            except Exception:
                logger.exception("Error writing status roll-ups, retrying at the next flush db=%s",
                                 tracker.store.path)
    finally:
        try:
            tracker.flush()
        except Exception:
            logger.exception("Error writing status roll-ups at shutdown db=%s", tracker.store.path)
