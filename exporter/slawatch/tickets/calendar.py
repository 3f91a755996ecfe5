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

from ..config import WEEKDAYS

logger = logging.getLogger("slawatch.tickets.calendar")

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


def _range_seconds(text: str) -> tuple[int, int]:
    """Return a range's start and end as seconds after local midnight, with 24:00 as 86400."""
    start, end = parse_range(text)
    start_seconds = start.hour * 3600 + start.minute * 60 + start.second
    end_seconds = 86400 if end is None else end.hour * 3600 + end.minute * 60 + end.second
    return start_seconds, end_seconds


def _format_clock(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours:02d}:{minutes:02d}" + (f":{secs:02d}" if secs else "")


def check_no_overlap(texts: list[str]) -> list[str]:
    """Raise ValueError naming each pair of ranges in `texts` that share time, else return `texts`.

    Ranges that only touch, such as 09:00-12:00 and 12:00-13:00, do not overlap.
    Each range must already pass `parse_range`.
    """
    spans = sorted((*_range_seconds(text), text) for text in texts)
    pairs = []
    for index, (start, end, text) in enumerate(spans):
        for other_start, other_end, other in spans[index + 1:]:
            if other_start >= end:
                break  # sorted by start, so no later range reaches back into this one
            pairs.append((text, other, min(start, other_start), max(end, other_end)))
    if not pairs:
        return texts
    if len(pairs) == 1:
        first, second, start, end = pairs[0]
        raise ValueError(f"time ranges {first!r} and {second!r} overlap, so their shared time would count twice: "
                         f"merge them into {_format_clock(start)}-{_format_clock(end)}, or let one range end "
                         "where the other starts")
    named = ", ".join(f"{first!r} and {second!r}" for first, second, _, _ in pairs)
    raise ValueError(f"time ranges overlap ({named}), so their shared time would count twice: merge each "
                     "overlapping group into one range, or let each range end where the next starts")


def _merge_spans(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Return the non-empty spans sorted and with overlapping or touching spans joined."""
    merged: list[tuple[float, float]] = []
    for start, end in sorted(span for span in spans if span[1] > span[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


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
        for day in WEEKDAYS:
            try:
                check_no_overlap(self.hours.get(day, []))
            except ValueError as error:
                raise ValueError(f"calendar {self.name!r}, hours of {day}: {error}") from None
        if self.workday_hours:
            try:
                check_no_overlap(self.workday_hours)
            except ValueError as error:
                raise ValueError(f"calendar {self.name!r}, workday_hours: {error}") from None
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
            # Ranges that do not overlap in local time can still overlap in Unix time: on the day
            # clocks spring forward, a range ending at 02:30 in the skipped hour ends after one that
            # starts at 03:00. Merging counts such time once.
            cached = _merge_spans([self._to_unix(day, opens, closes) for opens, closes in self._ranges(day)])
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
