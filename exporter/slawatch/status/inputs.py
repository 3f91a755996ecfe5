"""Validate the status page's inputs: operator announcements and Alertmanager alerts.

Only text that an operator wrote for the public, or text from the status
catalog, ever reaches an `Incident`. Alert annotations, label values other
than `service`, `severity` and `alertname`, and generator URLs are dropped here.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from .store import Incident

ANNOUNCEMENT_KINDS = ("maintenance", "update", "report")
MAX_TITLE = 200
MAX_BODY = 4000
MAX_LINK = 2000
_FRACTION = re.compile(r"(\.\d{6})\d+")


class AnnouncementError(ValueError):
    """An announcement that cannot be accepted; `field` names the JSON key."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


def parse_time(value: Any, field: str) -> float:
    """Parse an RFC 3339 time with a UTC offset into Unix seconds."""
    if not isinstance(value, str):
        raise AnnouncementError(field, f"expected an RFC 3339 time such as 2026-12-05T01:00:00Z, got {value!r}")
    try:
        parsed = datetime.fromisoformat(_FRACTION.sub(r"\1", value.replace("Z", "+00:00").replace("z", "+00:00")))
    except ValueError:
        raise AnnouncementError(field, f"invalid time {value!r}: use RFC 3339, for example 2026-12-05T01:00:00Z") \
            from None
    if parsed.tzinfo is None:
        raise AnnouncementError(field, f"time {value!r} has no UTC offset: add Z or +08:00")
    return parsed.timestamp()


def _localized(value: Any, field: str, limit: int, required: bool) -> dict[str, str]:
    """Accept one string for both locales or a mapping {"en": ..., "zh-CN": ...}."""
    if value is None or value == "" or value == {}:
        if required:
            raise AnnouncementError(field, "missing: add a string or {\"en\": ..., \"zh-CN\": ...}")
        return {}
    if isinstance(value, str):
        value = {"en": value, "zh-CN": value}
    if not isinstance(value, dict):
        raise AnnouncementError(field, f"expected a string or a mapping of locale to text, got {type(value).__name__}")
    unknown = sorted(set(value) - {"en", "zh-CN"})
    if unknown:
        raise AnnouncementError(field, f"unknown locale(s) {unknown}: use en and zh-CN")
    texts = {}
    for locale, text in value.items():
        if not isinstance(text, str) or not text.strip():
            raise AnnouncementError(f"{field}.{locale}", "expected non-empty text")
        if len(text) > limit:
            raise AnnouncementError(f"{field}.{locale}", f"{len(text)} characters: use at most {limit}")
        texts[locale] = text.strip()
    # A text given in one locale only is shown in both.
    only = next(iter(texts.values()))
    return {"en": texts.get("en", only), "zh-CN": texts.get("zh-CN", only)}


def parse_announcement(data: Any, public_services: list[str], now: float) -> Incident:
    """Turn a posted announcement into an Incident, or raise AnnouncementError naming the field."""
    if not isinstance(data, dict):
        raise AnnouncementError("(body)", "expected a JSON object with kind, title and, for maintenance, starts_at "
                                          "and ends_at")
    unknown = sorted(set(data) - {"kind", "services", "title", "body", "starts_at", "ends_at", "link"})
    if unknown:
        raise AnnouncementError(unknown[0], "unknown field: remove it or check its spelling")

    kind = data.get("kind")
    if kind not in ANNOUNCEMENT_KINDS:
        raise AnnouncementError("kind", f"invalid kind {kind!r}: use one of {list(ANNOUNCEMENT_KINDS)}")

    services = data.get("services", [])
    if not isinstance(services, list) or not all(isinstance(s, str) for s in services):
        raise AnnouncementError("services", "expected a list of service names")
    for index, service in enumerate(services):
        if service not in public_services:
            raise AnnouncementError(f"services[{index}]", f"{service!r} is not a public service: use one of "
                                                          f"{public_services}")

    title = _localized(data.get("title"), "title", MAX_TITLE, required=True)
    body = _localized(data.get("body"), "body", MAX_BODY, required=False)

    link = data.get("link")
    if link is not None:
        if not isinstance(link, str) or len(link) > MAX_LINK:
            raise AnnouncementError("link", f"expected a URL of at most {MAX_LINK} characters")
        parts = urlsplit(link)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise AnnouncementError("link", f"{link!r} is not an http:// or https:// URL")
    if kind == "report" and not link:
        raise AnnouncementError("link", "missing: a report announcement needs the report's URL")

    started, ended = now, now
    if kind == "maintenance":
        if "starts_at" not in data or "ends_at" not in data:
            missing = "starts_at" if "starts_at" not in data else "ends_at"
            raise AnnouncementError(missing, "missing: a maintenance window needs starts_at and ends_at")
        started = parse_time(data["starts_at"], "starts_at")
        ended = parse_time(data["ends_at"], "ends_at")
        if ended <= started:
            raise AnnouncementError("ends_at", f"{data['ends_at']} is not after starts_at {data['starts_at']}")
    elif "starts_at" in data or "ends_at" in data:
        raise AnnouncementError("starts_at" if "starts_at" in data else "ends_at",
                                "only maintenance announcements take a time window: remove it")

    return Incident(id=0, kind=kind, services=list(services), title=title, body=body, link=link,
                    started=started, resolved=ended, created=now)


def alert_fingerprint(alert: dict) -> str:
    """Return Alertmanager's fingerprint, or a hash of the labels when it is missing."""
    fingerprint = alert.get("fingerprint")
    if isinstance(fingerprint, str) and fingerprint:
        return fingerprint
    labels = alert.get("labels") if isinstance(alert.get("labels"), dict) else {}
    text = ",".join(f"{k}={labels[k]}" for k in sorted(labels))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def alert_time(value: Any, fallback: float) -> float:
    """Parse an Alertmanager startsAt/endsAt; the zero time "0001-01-01..." and bad values give `fallback`."""
    try:
        seconds = parse_time(value, "time")
    except AnnouncementError:
        return fallback
    return seconds if seconds > 0 else fallback

