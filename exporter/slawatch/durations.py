"""Prometheus-style durations ("15s", "1h30m", "30d") and bucket-bound formatting."""

from __future__ import annotations

import math
import re

from prometheus_client.utils import floatToGoString

_UNITS = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
    "y": 31536000.0,
}
_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
# Go's time.Duration (int64 nanoseconds, about 292 years) is the longest
# duration that Prometheus and Alertmanager read in the generated files.
MAX_DURATION_SECONDS = (2**63 - 1) / 1e9


def parse_duration(text: str | int | float) -> float:
    """Parse a Prometheus duration string into seconds.

    A bare number is taken as seconds. Raises ValueError for anything else,
    such as "5 minutes" or "-1s".
    """
    if isinstance(text, bool):
        raise ValueError(f"invalid duration {text!r}: use a number of seconds or a string like 30s, 5m, 1h")
    if isinstance(text, (int, float)):
        if text < 0 or math.isnan(text) or math.isinf(text):
            raise ValueError(f"invalid duration {text!r}: must be a finite number of seconds >= 0")
        return float(text)

    value = str(text).strip()
    position = 0
    total = 0.0
    for match in _PART.finditer(value):
        if match.start() != position:
            break
        digits = match.group(1)
        # A number of more than 20 digits is out of range in any unit, and
        # int() to float conversion would raise OverflowError for huge ones.
        total += int(digits) * _UNITS[match.group(2)] if len(digits) <= 20 else math.inf
        position = match.end()
    if not value or position != len(value):
        raise ValueError(f"invalid duration {text!r}: use a string like 30s, 5m, 1h30m or 30d")
    if total > MAX_DURATION_SECONDS:
        raise ValueError(f"duration {text!r} is out of range: the maximum is 292y, the range of Go's "
                         "time.Duration that Prometheus uses")
    return total


def format_duration(seconds: float) -> str:
    """Format seconds as the shortest Prometheus duration string ("90s" -> "1m30s")."""
    if seconds <= 0:
        return "0s"
    milliseconds = round(seconds * 1000)
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, milliseconds = divmod(milliseconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def format_le(value: float) -> str:
    """Format a bucket bound exactly as prometheus_client writes the `le` label (1 -> "1.0")."""
    return floatToGoString(value)
