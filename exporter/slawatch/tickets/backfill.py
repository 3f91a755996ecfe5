"""Historical ticket metrics as OpenMetrics text for `promtool tsdb create-blocks-from openmetrics`.

Importing weeks of history through the webhook would put every observation
at the moment of the import, as one spike. The backfill instead replays the
history and writes each series' cumulative value on a fixed time grid, with
the time of every sample, so Prometheus stores the history where it happened.

The output has one sample per time series per grid step, so its size grows
with the time range: `estimate_output` counts the samples before anything is
written, and the command rejects outputs above a limit.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import sqlite3
import tempfile
from bisect import bisect_left, bisect_right
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterable

from ..config import TicketsConfig
from ..durations import format_le
from .build import build_buckets, build_calendars, build_policy
from .collector import HELP
from .events import parse_event
from .lifecycle import HISTOGRAMS, LABEL_NAMES
from .store import TicketStore

INGEST_BATCH = 2000

# Each series' points: (time, value) in time order, keyed by (metric name, label values).
SeriesPoints = dict[tuple[str, tuple[str, ...]], list[tuple[float, float]]]


@dataclass(frozen=True)
class OldestEvent:
    """The event with the earliest counted time, which sets where the output begins."""

    time: float
    ticket_id: str
    event_id: str | None


@dataclass(frozen=True)
class History:
    """Replayed ticket history: every series' points and the histogram bucket bounds."""

    series: SeriesPoints
    buckets: dict[str, list[float]]
    oldest: OldestEvent | None

    @property
    def first(self) -> float:
        return min(points[0][0] for points in self.series.values())

    @property
    def last(self) -> float:
        return max(points[-1][0] for points in self.series.values())


@dataclass(frozen=True)
class SampleGrid:
    """Sample times every `step_ms` from `start_ms` to `end_ms` inclusive, in Unix epoch milliseconds.

    Integer milliseconds keep the step count exact. OpenMetrics timestamps are
    written with millisecond precision, which is also what the Prometheus TSDB stores.
    """

    start_ms: int
    end_ms: int
    step_ms: int

    @property
    def size(self) -> int:
        return max(0, (self.end_ms - self.start_ms) // self.step_ms + 1)

    @property
    def start(self) -> float:
        return self.start_ms / 1000

    @property
    def end(self) -> float:
        return self.end_ms / 1000

    def time(self, index: int) -> float:
        return (self.start_ms + index * self.step_ms) / 1000

    def first_index_at_or_after(self, moment: float) -> int:
        """Return the index of the first sample time >= `moment`, or `size` when there is none."""
        index = max(0, math.ceil((moment * 1000 - self.start_ms) / self.step_ms))
        # The float division can be off by one either way, so step to the exact index.
        while index > 0 and self.time(index - 1) >= moment:
            index -= 1
        while index < self.size and self.time(index) < moment:
            index += 1
        return min(index, self.size)


def make_grid(history: History, step: float, start: float | None = None, end: float | None = None) -> SampleGrid:
    """Return the sample times for `history`, on multiples of `step` seconds since the Unix epoch.

    Without `start`, the grid begins at the last multiple of `step` at or
    before the first point. Without `end`, it ends one step after the last
    multiple at or before the last point. A given `start` or `end` narrows the
    grid to the multiples inside [start, end]. The grid is empty when no
    multiple is left, and for an empty history.
    """
    step_ms = round(step * 1000)
    if not history.series:
        return SampleGrid(0, -step_ms, step_ms)
    start_ms = math.floor(history.first * 1000) // step_ms * step_ms
    if start is not None:
        start_ms = max(start_ms, -(-math.ceil(start * 1000) // step_ms) * step_ms)
    if end is None:
        end_ms = math.floor(history.last * 1000) // step_ms * step_ms + step_ms
    else:
        end_ms = math.floor(end * 1000) // step_ms * step_ms
    return SampleGrid(start_ms, end_ms, step_ms)


@dataclass(frozen=True)
class OutputEstimate:
    """The size of an OpenMetrics backfill file before it is written.

    `series` counts Prometheus time series, so each histogram bucket, `_count`
    and `_sum` is one series. `samples` is exact. `size_bytes` is an estimate
    that assumes every value is as wide as the series' final value.
    """

    series: int
    steps: int
    samples: int
    size_bytes: int


def events_to_store(tickets: TicketsConfig, events_file: Path, directory: Path) -> TicketStore:
    """Load a JSON-lines file of events into a fresh store in `directory`; raise ValueError naming the line."""
    calendars = build_calendars(tickets)
    store = TicketStore(directory / "backfill.db", build_buckets(tickets), build_policy(tickets, calendars))
    batch = []
    with events_file.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                batch.append(parse_event(json.loads(line), tickets.channels, tickets.priorities))
            except ValueError as error:
                raise ValueError(f"{events_file}:{number}: {error}") from None
            if len(batch) >= INGEST_BATCH:
                store.ingest(batch)
                batch = []
    if batch:
        store.ingest(batch)
    return store


def load_history(tickets: TicketsConfig, events_file: Path | None = None, database: Path | None = None) -> History:
    """Replay an events file, or read an existing store, into memory.

    An existing store is copied first and the copy is read, so the original
    file is never changed.
    """
    with tempfile.TemporaryDirectory(prefix="slawatch-backfill-") as scratch:
        if events_file is not None:
            store = events_to_store(tickets, events_file, Path(scratch))
        else:
            # Work on a copy: opening a store may rebuild its aggregates, and the exporter may be running.
            copy = Path(scratch) / "copy.db"
            with sqlite3.connect(database) as source, sqlite3.connect(copy) as target:
                source.backup(target)
            calendars = build_calendars(tickets)
            store = TicketStore(copy, build_buckets(tickets), build_policy(tickets, calendars))
        try:
            return _read_history(store)
        finally:
            store.close()


def _read_history(store: TicketStore) -> History:
    series: SeriesPoints = defaultdict(list)
    oldest_time, oldest_ticket = math.inf, ""
    for ticket_id, name, labels, value, at in store.contributions():
        series[(name, labels)].append((at, value))
        if at < oldest_time:
            oldest_time, oldest_ticket = at, ticket_id
    for points in series.values():
        points.sort()
    oldest = None
    if series:
        oldest = OldestEvent(oldest_time, oldest_ticket, store.event_id_at(oldest_ticket, oldest_time))
    return History(dict(series), store.buckets, oldest)


def estimate_output(history: History, grid: SampleGrid) -> OutputEstimate:
    """Count the series, steps and samples that `write_openmetrics` writes for `grid`, and estimate the bytes."""
    timestamp = f"{grid.end:.3f}"
    series = samples = 0
    size = len("# EOF\n")
    for name, members in _series_by_name(history, grid).items():
        size += len(_family_header(name))
        for labels, points, first_index in members:
            steps = grid.size - first_index
            label_text = _label_text(name, labels)
            if name in HISTOGRAMS:
                bounds = history.buckets[name]
                count, total = len(points), sum(value for _, value in points)
                lines = _histogram_lines(name, label_text, bounds, [count] * len(bounds), count, total, timestamp)
                per_step = len(bounds) + 3
            else:
                total = sum(value for _, value in points)
                lines = _counter_line(name, label_text, total, timestamp)
                per_step = 1
            series += per_step
            samples += per_step * steps
            size += len(lines) * steps
    return OutputEstimate(series=series, steps=grid.size, samples=samples, size_bytes=size)


def write_openmetrics(history: History, grid: SampleGrid, out: IO[str]) -> int:
    """Write every ticket series with one sample per grid time; return the number of samples written.

    A series starts at the first grid time at or after its first point. Its
    values there include every earlier point, so the samples are cumulative
    from the first event even when the grid begins later. Series whose first
    point comes after the grid's end are left out.
    """
    written = 0
    for name, members in _series_by_name(history, grid).items():
        out.write(_family_header(name))
        for labels, points, first_index in members:
            label_text = _label_text(name, labels)
            if name in HISTOGRAMS:
                written += _write_histogram(out, name, label_text, points, history.buckets[name], grid, first_index)
            else:
                written += _write_counter(out, name, label_text, points, grid, first_index)
    out.write("# EOF\n")
    return written


def _series_by_name(history: History, grid: SampleGrid) -> dict[str, list[tuple[tuple[str, ...], list, int]]]:
    """Group the series that have samples on `grid` by metric name, in output order, with their first grid index."""
    grouped: dict[str, list[tuple[tuple[str, ...], list, int]]] = defaultdict(list)
    for (name, labels), points in sorted(history.series.items()):
        first_index = grid.first_index_at_or_after(points[0][0])
        if first_index < grid.size:
            grouped[name].append((labels, points, first_index))
    return dict(grouped)


def _family_header(name: str) -> str:
    family = name.removesuffix("_total")
    kind = "histogram" if name in HISTOGRAMS else "counter"
    return f"# TYPE {family} {kind}\n# HELP {family} {HELP[name]}\n"


def _label_text(name: str, labels: tuple[str, ...]) -> str:
    return ",".join(f'{key}="{_escape(value)}"' for key, value in zip(LABEL_NAMES[name], labels))


def _counter_line(name: str, labels: str, value: float, timestamp: str) -> str:
    return f"{name}{{{labels}}} {value} {timestamp}\n"


def _histogram_lines(name: str, labels: str, bounds: list[float], cumulative: list[int], count: int, total: float,
                     timestamp: str) -> str:
    lines = [f'{name}_bucket{{{labels},le="{format_le(bound)}"}} {in_bucket} {timestamp}\n'
             for bound, in_bucket in zip(bounds, cumulative)]
    lines.append(f'{name}_bucket{{{labels},le="+Inf"}} {count} {timestamp}\n')
    lines.append(f"{name}_count{{{labels}}} {count} {timestamp}\n")
    lines.append(f"{name}_sum{{{labels}}} {total} {timestamp}\n")
    return "".join(lines)


def _write_counter(out: IO[str], name: str, labels: str, points: list[tuple[float, float]], grid: SampleGrid,
                   first_index: int) -> int:
    times = [at for at, _ in points]
    totals = _running(value for _, value in points)
    for index in range(first_index, grid.size):
        moment = grid.time(index)
        position = bisect_right(times, moment)
        out.write(_counter_line(name, labels, totals[position - 1] if position else 0.0, f"{moment:.3f}"))
    return grid.size - first_index


def _write_histogram(out: IO[str], name: str, labels: str, points: list[tuple[float, float]], bounds: list[float],
                     grid: SampleGrid, first_index: int) -> int:
    buckets = [0] * (len(bounds) + 1)
    count, total, next_point = 0, 0.0, 0
    for index in range(first_index, grid.size):
        moment = grid.time(index)
        while next_point < len(points) and points[next_point][0] <= moment:
            value = points[next_point][1]
            buckets[bisect_left(bounds, value)] += 1
            count += 1
            total += value
            next_point += 1
        out.write(_histogram_lines(name, labels, bounds, _running(buckets[:-1]), count, total, f"{moment:.3f}"))
    return (grid.size - first_index) * (len(bounds) + 3)


def _running(values: Iterable[float]) -> list:
    total, result = 0, []
    for value in values:
        total += value
        result.append(total)
    return result


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class PartialFileError(OSError):
    """Writing failed and the partial output file could not be removed."""

    def __init__(self, partial: Path, error: BaseException, cleanup_error: OSError):
        super().__init__(f"{error}; the partial file {partial} could not be removed: {cleanup_error}")
        self.partial = partial
        self.error = error
        self.cleanup_error = cleanup_error


def write_file_atomically(path: Path, write: Callable[[IO[str]], int]) -> int:
    """Run `write` on a new file next to `path`, then rename it to `path`; return what `write` returns.

    If `write` or the rename fails, the new file is removed and `path` keeps
    its earlier content (or stays absent), so no half-written output is
    left under that name. Raises PartialFileError if the removal fails too.
    """
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
    try:
        with partial.open("x", encoding="utf-8") as out:
            result = write(out)
        os.replace(partial, path)
    except BaseException as error:
        try:
            partial.unlink(missing_ok=True)
        except OSError as cleanup_error:
            raise PartialFileError(partial, error, cleanup_error) from error
        raise
    return result
