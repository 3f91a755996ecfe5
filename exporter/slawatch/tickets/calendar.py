"""Business-hours calendars and the business-seconds clock.

A calendar has an IANA time zone, weekly opening hours (several ranges a day
allowed), public holidays and make-up working days. For China the official
schedule, including the weekends that become working days, comes from the
`chinese-calendar` package; dates listed in the config override it.

`business_seconds(start, end)` counts the seconds between two Unix times that
fall inside opening hours. Opening hours are local wall-clock times, so a
daylight-saving change shortens or lengthens that day's range in UTC.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import date, datetime, time as dtime, timedelta
from zoneinfo import ZoneInfo

logger = logging.getLogger("slawatch.tickets.calendar")

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ALWAYS_OPEN = "24x7"


def parse_range(text: str) -> tuple[dtime, dtime | None]:
    """Parse "09:00-18:00" into (start, end); an end of 24:00 is returned as None (midnight)."""
    try:
        start_text, end_text = (part.strip() for part in text.split("-"))
        start = dtime.fromisoformat(start_text)
        end = None if end_text == "24:00" else dtime.fromisoformat(end_text)
    except ValueError:
        raise ValueError(f"invalid time range {text!r}: use HH:MM-HH:MM, for example 09:00-18:00") from None
    if end is not None and end <= start:
        raise ValueError(f"time range {text!r} ends before it starts: use HH:MM-HH:MM with the end later, or 24:00")
    return start, end


@dataclass
class BusinessCalendar:
    """Opening hours of one support team, in one time zone.

    Usage:

        calendar = BusinessCalendar("cn", "Asia/Shanghai", {"mon": ["09:00-18:00"], ...}, holiday_source="china")
        calendar.business_seconds(created, answered)
    """

    name: str
    timezone: str
    hours: dict[str, list[str]]
    holidays: set[date] = field(default_factory=set)
    workdays: set[date] = field(default_factory=set)
    workday_hours: list[str] | None = None
    holiday_source: str | None = None
    unknown_dates: str = "weekly"
    always_open: bool = False

    def __post_init__(self) -> None:
        self.zone = ZoneInfo(self.timezone)
        self._weekly = [[parse_range(r) for r in self.hours.get(day, [])] for day in WEEKDAYS]
        first_open_day = next((ranges for ranges in self._weekly if ranges), [])
        self._makeup = [parse_range(r) for r in self.workday_hours] if self.workday_hours else first_open_day
        self._days: dict[date, list[tuple[float, float]]] = {}
        self._lock = threading.Lock()
        self.unknown_dates_seen: set[date] = set()

    def business_seconds(self, start: float, end: float) -> float:
        """Return the opening-hours seconds between two Unix times; 0 when end <= start."""
        if end <= start:
            return 0.0
        if self.always_open:
            return end - start
        day = datetime.fromtimestamp(start, self.zone).date()
        end_local = datetime.fromtimestamp(end, self.zone)
        last = end_local.date()
        if end_local.time() == dtime(0):
            last -= timedelta(days=1)  # nothing of a day that starts at `end` is inside the span
        total = 0.0
        while day <= last:
            for opens, closes in self._intervals(day):
                overlap = min(end, closes) - max(start, opens)
                if overlap > 0:
                    total += overlap
            day += timedelta(days=1)
        return total

    def _intervals(self, day: date) -> list[tuple[float, float]]:
        cached = self._days.get(day)
        if cached is None:
            cached = [self._to_unix(day, opens, closes) for opens, closes in self._ranges(day)]
            with self._lock:
                self._days[day] = cached
        return cached

    def _to_unix(self, day: date, opens: dtime, closes: dtime | None) -> tuple[float, float]:
        start = datetime.combine(day, opens, self.zone).timestamp()
        if closes is None:
            end = datetime.combine(day + timedelta(days=1), dtime(0), self.zone).timestamp()
        else:
            end = datetime.combine(day, closes, self.zone).timestamp()
        return start, end

    def _ranges(self, day: date) -> list[tuple[dtime, dtime | None]]:
        """Return the opening ranges of one local date; config overrides the holiday package."""
        weekly = self._weekly[day.weekday()]
        if day in self.holidays:
            return []
        if day in self.workdays:
            return weekly or self._makeup
        if self.holiday_source != "china":
            return weekly

        import chinese_calendar

        try:
            is_day_off, holiday_name = chinese_calendar.get_holiday_detail(day)
        except NotImplementedError:
            return self._unknown(day, weekly)
        if holiday_name is None:
            return weekly
        # A named day off is a statutory holiday; a named working day is a make-up working day.
        if is_day_off:
            return []
        return weekly or self._makeup

    def _unknown(self, day: date, weekly: list) -> list:
        with self._lock:
            first_time = day not in self.unknown_dates_seen
            self.unknown_dates_seen.add(day)
        if first_time:
            logger.warning(
                "Date outside the holiday data calendar=%s date=%s fallback=%s fix=%s", self.name, day.isoformat(),
                self.unknown_dates, "upgrade chinese-calendar or list the date under holidays or workdays",
            )
        return weekly if self.unknown_dates == "weekly" else []


def always_open_calendar(name: str = ALWAYS_OPEN) -> BusinessCalendar:
    return BusinessCalendar(name, "UTC", {}, always_open=True)
