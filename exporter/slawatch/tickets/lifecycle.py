"""The definitions of every ticket measure, as a replay of one ticket's events.

`derive(events, policy)` replays one ticket's events in time order and returns
its state and its contributions: one entry per histogram observation and per
counter increment, each with the labels the ticket had at that moment. The
result depends only on the set of events, never on the order they arrived in,
so the store can recompute a ticket after every event and apply the difference.

Definitions (docs/ticket-metrics.md gives examples):

- first response: the first customer-visible reply by an agent. Replies by the
  requester, other end users, automations (auto-replies, triggers), the system
  and merge comments never count; internal notes never count. A bot reply
  counts only when `bot_first_response` is set. A ticket that an agent opens
  with a public message follows `agent_created`.
- first resolution: the first move to solved (or closed); a reopen does not
  observe it again.
- full resolution: creation to the last move to solved, observed when the
  ticket is closed (the terminal state).
- requester wait: the full-resolution interval less the time spent pending
  (waiting on the requester); observed with full resolution.
- removed (merged, deleted, spam) tickets leave the open and unanswered
  gauges and add nothing more; what was observed before stays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .calendar import BusinessCalendar
from .events import OPEN_STATUSES, SOLVED_STATUSES

FIRST_RESPONSE = "slawatch_ticket_first_response_seconds"
FIRST_RESOLUTION = "slawatch_ticket_first_resolution_seconds"
FULL_RESOLUTION = "slawatch_ticket_full_resolution_seconds"
REQUESTER_WAIT = "slawatch_ticket_requester_wait_seconds"
CREATED = "slawatch_tickets_created_total"
REOPENED = "slawatch_tickets_reopened_total"
REMOVED = "slawatch_tickets_removed_total"
SLA = "slawatch_ticket_sla_total"
FIRST_RESPONSES = "slawatch_ticket_first_responses_total"

# The measure name (as used in tickets.slas[].measure) of each histogram.
MEASURES = {
    "first_response": FIRST_RESPONSE,
    "first_resolution": FIRST_RESOLUTION,
    "full_resolution": FULL_RESOLUTION,
    "requester_wait": REQUESTER_WAIT,
}
HISTOGRAMS = tuple(MEASURES.values())
TICKET_LABELS = ("source", "channel", "priority", "team")
LABEL_NAMES = {
    **{name: (*TICKET_LABELS, "clock") for name in HISTOGRAMS},
    CREATED: TICKET_LABELS,
    REOPENED: TICKET_LABELS,
    REMOVED: (*TICKET_LABELS, "reason"),
    SLA: (*TICKET_LABELS, "clock", "sla", "result"),
    FIRST_RESPONSES: (*TICKET_LABELS, "responder"),
}
CLOCKS = ("calendar", "business")

# Events at the same instant apply in this order, so the result never depends on arrival order.
TYPE_ORDER = {"ticket.created": 0, "ticket.updated": 1, "ticket.replied": 2, "ticket.status_changed": 3,
              "ticket.removed": 4}


@dataclass(frozen=True)
class EventRow:
    id: str
    type: str
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


@dataclass(frozen=True)
class SLATarget:
    name: str
    measure: str
    threshold: float
    channels: tuple[str, ...] = ()
    priorities: tuple[str, ...] = ()


@dataclass
class Policy:
    """The config choices that the definitions depend on."""

    calendar_for: Callable[[str], BusinessCalendar]
    slas: list[SLATarget] = field(default_factory=list)
    teams: dict[str, str] = field(default_factory=dict)
    default_team: str = "support"
    default_source: str = "webhook"
    agent_created: str = "answered_at_creation"
    bot_first_response: bool = False

    def team_label(self, group: str | None) -> str:
        if group is None:
            return self.default_team
        return self.teams.get(group, self.default_team)


# (metric name, label values, value, Unix time of the observation)
Contribution = tuple[str, tuple[str, ...], float, float]


@dataclass
class TicketState:
    created: float | None = None
    labels: tuple[str, ...] | None = None
    status: str = "new"
    removed: str | None = None
    answered: bool = False
    contributions: list[Contribution] = field(default_factory=list)

    @property
    def open(self) -> bool:
        return self.created is not None and self.removed is None and self.status in OPEN_STATUSES


def sort_key(event: EventRow) -> tuple:
    return (event.time, TYPE_ORDER[event.type], event.id)


def derive(events: list[EventRow], policy: Policy) -> TicketState:
    """Replay one ticket's events and return its state and contributions."""
    return _Replay(policy).run(sorted(events, key=sort_key))


class _Replay:
    def __init__(self, policy: Policy):
        self.policy = policy
        self.state = TicketState()
        self.source = policy.default_source
        self.channel: str | None = None
        self.priority: str | None = None
        self.group: str | None = None
        self.first_response: float | None = None
        self.response_excluded = False
        self.responder_counted = False
        self.first_solved: float | None = None
        self.last_solved: float | None = None
        self.closed = False
        self.pending_since: float | None = None
        self.pending: list[tuple[float, float]] = []

    def run(self, events: list[EventRow]) -> TicketState:
        for event in events:
            self._update_fields(event)
            if self.state.removed is not None:
                continue
            if event.type == "ticket.created":
                self._created(event)
            elif self.state.created is None:
                # Events before the creation (by time) only set fields; counting starts at creation.
                if event.type == "ticket.status_changed":
                    self.state.status = event.status
            elif event.type == "ticket.replied":
                self._replied(event)
            elif event.type == "ticket.status_changed":
                self._status_changed(event)
            elif event.type == "ticket.removed":
                self.state.removed = event.reason
                self._count(REMOVED, (event.reason,), event.time)
        self.state.labels = self._labels()
        self.state.answered = self.first_response is not None or self.response_excluded
        return self.state

    def _update_fields(self, event: EventRow) -> None:
        self.source = event.source or self.source
        self.channel = event.channel or self.channel
        self.priority = event.priority or self.priority
        self.group = event.team or self.group

    def _labels(self) -> tuple[str, ...]:
        return (self.source, self.channel or "", self.priority or "", self.policy.team_label(self.group))

    def _count(self, name: str, extra: tuple[str, ...], at: float, value: float = 1.0) -> None:
        self.state.contributions.append((name, self._labels() + extra, value, at))

    def _created(self, event: EventRow) -> None:
        if self.state.created is not None:
            return
        self.state.created = event.time
        self._count(CREATED, (), event.time)
        if event.author == "agent" and event.public:
            if self.policy.agent_created == "answered_at_creation":
                self._first_response(event.time, "human")
            elif self.policy.agent_created == "exclude":
                self.response_excluded = True

    def _replied(self, event: EventRow) -> None:
        if not event.public or event.merge_comment or event.author not in ("agent", "bot"):
            return
        responder = "human" if event.author == "agent" else "automation"
        if not self.responder_counted and self.first_response is None and not self.response_excluded:
            self.responder_counted = True
            self._count(FIRST_RESPONSES, (responder,), event.time)
        counts = event.author == "agent" or self.policy.bot_first_response
        if counts and self.first_response is None and not self.response_excluded:
            self._first_response(event.time, None)

    def _first_response(self, at: float, responder: str | None) -> None:
        self.first_response = at
        if responder is not None and not self.responder_counted:
            self.responder_counted = True
            self._count(FIRST_RESPONSES, (responder,), at)
        self._observe("first_response", self.state.created, at)

    def _status_changed(self, event: EventRow) -> None:
        old, new, at = self.state.status, event.status, event.time
        if old == "pending" and new != "pending" and self.pending_since is not None:
            self.pending.append((self.pending_since, at))
            self.pending_since = None
        if new == "pending" and old != "pending":
            self.pending_since = at

        if new in SOLVED_STATUSES and old not in SOLVED_STATUSES:
            if self.first_solved is None:
                self.first_solved = at
                self._observe("first_resolution", self.state.created, at)
            self.last_solved = at
        if old in SOLVED_STATUSES and new in OPEN_STATUSES:
            self._count(REOPENED, (), at)
        if new == "closed" and not self.closed:
            self.closed = True
            resolved = self.last_solved if self.last_solved is not None else at
            self._observe("full_resolution", self.state.created, resolved, observed_at=at)
            self._observe("requester_wait", self.state.created, resolved, observed_at=at, minus=self.pending)
        self.state.status = new

    def _observe(self, measure: str, start: float, end: float, observed_at: float | None = None,
                 minus: list[tuple[float, float]] = ()) -> None:
        """Add one histogram observation on both clocks, and the SLA results that depend on it."""
        calendar = self.policy.calendar_for(self.priority or "")
        values = {
            "calendar": max(0.0, end - start) - sum(_overlap(a, b, start, end) for a, b in minus),
            "business": calendar.business_seconds(start, end)
            - sum(calendar.business_seconds(max(a, start), min(b, end)) for a, b in minus),
        }
        at = observed_at if observed_at is not None else end
        labels = self._labels()
        for clock, seconds in values.items():
            seconds = max(0.0, seconds)
            self.state.contributions.append((MEASURES[measure], labels + (clock,), seconds, at))
            for sla in self.policy.slas:
                if sla.measure != measure:
                    continue
                if sla.channels and self.channel not in sla.channels:
                    continue
                if sla.priorities and self.priority not in sla.priorities:
                    continue
                result = "met" if seconds <= sla.threshold else "breached"
                self.state.contributions.append((SLA, labels + (clock, sla.name, result), 1.0, at))


def _overlap(a: float, b: float, start: float, end: float) -> float:
    return max(0.0, min(b, end) - max(a, start))
