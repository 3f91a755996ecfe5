"""Build the calendars, the policy and the store from the tickets section of the config."""

from __future__ import annotations

from ..config import TicketsConfig
from .calendar import ALWAYS_OPEN, BusinessCalendar, always_open_calendar
from .lifecycle import MEASURES, Policy, SLATarget
from .store import TicketStore


def build_calendars(tickets: TicketsConfig) -> dict[str, BusinessCalendar]:
    calendars = {ALWAYS_OPEN: always_open_calendar()}
    for name, spec in tickets.calendars.items():
        calendars[name] = BusinessCalendar(
            name, spec.timezone, dict(spec.hours), holidays=set(spec.holidays), workdays=set(spec.workdays),
            workday_hours=spec.workday_hours, holiday_source=None if spec.holiday_source == "none" else spec.holiday_source,
            unknown_dates=spec.unknown_dates, always_open=spec.always_open,
        )
    return calendars


def build_policy(tickets: TicketsConfig, calendars: dict[str, BusinessCalendar]) -> Policy:
    """Return the policy; without a business_calendar the business clock is the 24x7 calendar."""
    default = calendars[tickets.business_calendar or ALWAYS_OPEN]
    per_priority = {priority: calendars[name] for priority, name in tickets.priority_calendars.items()}
    slas = [SLATarget(s.name, s.measure, s.threshold, tuple(s.channels), tuple(s.priorities)) for s in tickets.slas]
    return Policy(
        calendar_for=lambda priority: per_priority.get(priority, default),
        slas=slas,
        teams=dict(tickets.teams),
        default_team=tickets.default_team,
        agent_created=tickets.agent_created,
        bot_first_response=tickets.bot_first_response,
    )


def build_buckets(tickets: TicketsConfig) -> dict[str, list[float]]:
    return {name: tickets.buckets_for(measure) for measure, name in MEASURES.items()}


def build_store(tickets: TicketsConfig, path: str | None = None) -> tuple[TicketStore, dict[str, BusinessCalendar]]:
    calendars = build_calendars(tickets)
    store = TicketStore(path or tickets.database, build_buckets(tickets), build_policy(tickets, calendars))
    return store, calendars
