"""The ticket event format accepted by `POST /api/v1/ticket-events`, and its validation.

An event is a JSON object:

    {"id": "evt-1", "type": "ticket.created", "ticket_id": "T-1",
     "time": "2026-12-04T09:15:00+08:00", "channel": "email", "priority": "normal"}
    {"id": "evt-2", "type": "ticket.replied", "ticket_id": "T-1",
     "time": "2026-12-04T09:40:00+08:00", "author": "agent", "public": true}
    {"id": "evt-3", "type": "ticket.status_changed", "ticket_id": "T-1",
     "time": "2026-12-04T11:00:00+08:00", "status": "solved"}

docs/ticket-events.md describes every field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

EVENT_TYPES = ("ticket.created", "ticket.replied", "ticket.status_changed", "ticket.updated", "ticket.removed")
# Author kinds:
#   agent       a person on the support staff
#   requester   the customer who opened the ticket
#   end_user    another customer, for example in CC or on a forum thread
#   bot         an automated assistant that answers questions
#   automation  triggers, macros and auto-replies
#   system      messages the helpdesk writes itself
AUTHORS = ("agent", "requester", "end_user", "bot", "automation", "system")
STATUSES = ("new", "open", "pending", "on_hold", "solved", "closed")
OPEN_STATUSES = ("new", "open", "pending", "on_hold")
SOLVED_STATUSES = ("solved", "closed")
REMOVAL_REASONS = ("merged", "deleted", "spam")
VISIBILITIES = ("public", "internal")
MAX_ID_LENGTH = 200
LABEL_VALUE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.-]{0,62}$")
KNOWN_FIELDS = {"id", "type", "ticket_id", "time", "source", "channel", "priority", "team", "author", "public",
                "visibility", "merge_comment", "status", "reason", "merged_into"}


class EventError(ValueError):
    """An event that cannot be accepted; `field` names the offending key."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class TicketEvent:
    id: str
    type: str
    ticket_id: str
    time: float
    source: str | None = None
    channel: str | None = None
    priority: str | None = None
    team: str | None = None
    author: str | None = None
    public: bool = True
    merge_comment: bool = False
    status: str | None = None
    reason: str | None = None
    merged_into: str | None = None


def parse_event(data: Any, channels: list[str], priorities: list[str], prefix: str = "",
                latest: float | None = None) -> TicketEvent:
    """Validate one event object; raise EventError naming the field and the fix.

    `latest` is the latest accepted event time (Unix seconds): a webhook passes its clock plus the
    allowed skew, so an event dated in the future is refused instead of skewing the latencies.
    """
    if not isinstance(data, dict):
        raise EventError(prefix.rstrip(".") or "(body)", "expected a JSON object with id, type, ticket_id and time")

    for key in data:
        if key not in KNOWN_FIELDS:
            raise EventError(f"{prefix}{key}", f"unknown field: remove it or use one of {sorted(KNOWN_FIELDS)}")

    event_id = _required_string(data, "id", prefix)
    event_type = _required_string(data, "type", prefix)
    if event_type not in EVENT_TYPES:
        raise EventError(f"{prefix}type", f"unknown event type {event_type!r}: use one of {list(EVENT_TYPES)}")
    ticket_id = _required_string(data, "ticket_id", prefix)
    timestamp = _parse_time(data.get("time"), f"{prefix}time")
    if latest is not None and timestamp > latest:
        raise EventError(f"{prefix}time", f"{data['time']!r} is in the future, after "
                         f"{datetime.fromtimestamp(latest, timezone.utc).isoformat(timespec='seconds')} (the "
                         "receiver's clock plus tickets.webhook.max_future): send the time the event happened, "
                         "with its zone offset, and check the sender's clock")

    fields: dict[str, Any] = {}
    if "source" in data:
        fields["source"] = _label(data, "source", prefix)
    if "team" in data:
        fields["team"] = _required_string(data, "team", prefix)
    if event_type == "ticket.created":
        fields["channel"] = _choice(data, "channel", channels, prefix)
        fields["priority"] = _choice(data, "priority", priorities, prefix)
        # Who opened the ticket: a requester by default, an agent for a ticket logged from a phone call.
        fields["author"] = _choice(data, "author", list(AUTHORS), prefix) if "author" in data else "requester"
        fields["public"] = _visibility(data, prefix)
    else:
        # Channel and priority may change during a ticket's life; accept them on any event.
        if "channel" in data:
            fields["channel"] = _choice(data, "channel", channels, prefix)
        if "priority" in data:
            fields["priority"] = _choice(data, "priority", priorities, prefix)

    if event_type == "ticket.replied":
        fields["author"] = _choice(data, "author", list(AUTHORS), prefix)
        fields["public"] = _visibility(data, prefix)
        fields["merge_comment"] = _boolean(data, "merge_comment", False, prefix)
    elif event_type == "ticket.status_changed":
        fields["status"] = _choice(data, "status", list(STATUSES), prefix)
    elif event_type == "ticket.removed":
        fields["reason"] = _choice(data, "reason", list(REMOVAL_REASONS), prefix)
        if "merged_into" in data:
            if fields["reason"] != "merged":
                raise EventError(f"{prefix}merged_into", "only a ticket removed with reason merged has merged_into")
            fields["merged_into"] = _required_string(data, "merged_into", prefix)

    return TicketEvent(id=event_id, type=event_type, ticket_id=ticket_id, time=timestamp, **fields)


def _visibility(data: dict, prefix: str) -> bool:
    """Return whether the message is customer-visible, from `public` or `visibility` (they must agree)."""
    public = _boolean(data, "public", True, prefix)
    if "visibility" in data:
        visibility = _choice(data, "visibility", list(VISIBILITIES), prefix)
        if "public" in data and public != (visibility == "public"):
            raise EventError(f"{prefix}visibility", f"{visibility!r} contradicts public: {str(public).lower()}: "
                                                   "send only one")
        public = visibility == "public"
    return public


def _boolean(data: dict, key: str, default: bool, prefix: str) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise EventError(f"{prefix}{key}", f"expected true or false, got {value!r}")
    return value


def _label(data: dict, key: str, prefix: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not LABEL_VALUE.match(value):
        raise EventError(f"{prefix}{key}", f"invalid value {value!r}: use letters, digits, '_', '.' or '-', "
                                           "starting with a letter or '_', at most 63 characters")
    return value


def _required_string(data: dict, key: str, prefix: str) -> str:
    value = data.get(key)
    if value is None:
        raise EventError(f"{prefix}{key}", "required field is missing")
    if not isinstance(value, str) or not value.strip():
        raise EventError(f"{prefix}{key}", f"expected a non-empty string, got {value!r}")
    if len(value) > MAX_ID_LENGTH:
        raise EventError(f"{prefix}{key}", f"longer than {MAX_ID_LENGTH} characters: use a shorter id")
    return value


def _choice(data: dict, key: str, allowed: list[str], prefix: str) -> str:
    value = data.get(key)
    if value is None:
        raise EventError(f"{prefix}{key}", f"required field is missing: use one of {allowed}")
    if value not in allowed:
        raise EventError(f"{prefix}{key}", f"unknown value {value!r}: use one of {allowed}")
    return value


def _parse_time(value: Any, field: str) -> float:
    if value is None:
        raise EventError(field, "required field is missing: use RFC 3339 with a zone, e.g. 2026-12-04T09:15:00+08:00")
    if not isinstance(value, str):
        raise EventError(field, f"expected an RFC 3339 string, got {value!r}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise EventError(field, f"invalid timestamp {value!r}: use RFC 3339, e.g. 2026-12-04T09:15:00Z") from None
    if parsed.tzinfo is None:
        raise EventError(field, f"timestamp {value!r} has no time zone: add Z or an offset such as +08:00")
    try:
        return parsed.astimezone(timezone.utc).timestamp()
    except (OverflowError, ValueError):
        raise EventError(field, f"timestamp {value!r} is out of range: use a date between years 1 and 9999 in UTC") from None
