"""GET with the rate-limit handling that every helpdesk poller shares."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Awaitable, Callable

import aiohttp

from ..collector import SourceMetrics

logger = logging.getLogger("slawatch.tickets.sources")

MAX_RETRY_AFTER = 300.0
MAX_ATTEMPTS = 5
# Error kinds of a request for one ticket's history (comments, articles, audits) that skip that ticket instead
# of failing its page, because the ticket is deleted or not visible to the user.
UNREADABLE_KINDS = ("http_403", "http_404")


class SourceError(Exception):
    """A failed helpdesk request; `kind` is the error metric's label."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


async def get_json(session: aiohttp.ClientSession, url: str, params: dict | None, source: str,
                   metrics: SourceMetrics, sleep: Callable[[float], Awaitable[None]]) -> Any:
    """GET a JSON resource; wait and retry on 429 with Retry-After, raise SourceError otherwise."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            async with session.get(url, params=params) as response:
                if response.status == 429:
                    delay = retry_after(response.headers.get("Retry-After"))
                    metrics.error(source, "rate_limited")
                    logger.warning("Rate limited by helpdesk source=%s url=%s retry_after=%.0f attempt=%d", source,
                                   url, delay, attempt)
                    await sleep(delay)
                    continue
                if response.status != 200:
                    body = (await response.text())[:200]
                    raise SourceError(f"http_{response.status}", f"GET {url} returned {response.status}: {body}")
                text = await response.text()
        except aiohttp.ClientError as error:
            raise SourceError("network", f"GET {url} failed: {error}") from None
        except asyncio.TimeoutError:
            raise SourceError("timeout", f"GET {url} timed out: check that the helpdesk "
                                         "is reachable and not overloaded") from None
        try:
            return json.loads(text)
        except ValueError:
            raise SourceError("invalid", f"GET {url} returned a body that is not JSON: {text[:100]!r}: check the "
                                         "url, which must point at the helpdesk itself, not a login page or proxy")
    raise SourceError("rate_limited", f"GET {url} still rate limited after {MAX_ATTEMPTS} attempts")


def retry_after(value: str | None) -> float:
    """Return the wait in seconds from a Retry-After header (seconds or an HTTP date), capped."""
    if not value:
        return 1.0
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - datetime.now(timezone.utc)).total_seconds()
        except (TypeError, ValueError):
            return 1.0
    return min(MAX_RETRY_AFTER, max(0.0, seconds))


async def poll_forever(poll_once: Callable[[], Awaitable[Any]], source: str, name: str, url: str,
                       metrics: SourceMetrics, sleep: Callable[[float], Awaitable[None]], interval: float) -> None:
    """Call `poll_once` every `interval` seconds until cancelled; log and count each failed poll by kind.

    A failed poll leaves its cursor where it was, so the next poll reads the same tickets again.
    """
    while True:
        try:
            await poll_once()
        except SourceError as error:
            metrics.error(source, error.kind)
            logger.error("Failed to poll %s url=%s kind=%s err=%s", name, url, error.kind, error)
        except (OSError, ValueError) as error:
            metrics.error(source, "config")
            logger.error("Failed to poll %s url=%s err=%s", name, url, error)
        except (KeyError, TypeError, AttributeError) as error:
            # A response without a documented field.
            metrics.error(source, "invalid")
            logger.error("Failed to read a %s response url=%s missing_or_invalid=%r", name, url, error)
        await sleep(interval)
