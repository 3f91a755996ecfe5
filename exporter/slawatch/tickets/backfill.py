"""Historical ticket metrics as OpenMetrics text for `promtool tsdb create-blocks-from openmetrics`.

Importing weeks of history through the webhook would put every observation
at the moment of the import, as one spike. The backfill instead replays the
history and writes each series' cumulative value on a fixed time grid, with
the time of every sample, so Prometheus stores the history where it happened.
"""

from __future__ import annotations

import json
import math
import sqlite3
import sys
import tempfile
from bisect import bisect_left, bisect_right
from collections import defaultdict
from pathlib import Path
from typing import IO, Iterable

from ..config import TicketsConfig
from ..durations import format_le
from ..i18n import Catalog
from .build import build_buckets, build_calendars, build_policy
from .collector import HELP
from .events import parse_event
from .lifecycle import HISTOGRAMS, LABEL_NAMES
from .store import TicketStore

INGEST_BATCH = 2000


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


def write_openmetrics(store: TicketStore, out: IO[str], step: float, until: float | None = None) -> int:
    """Write every ticket series sampled each `step` seconds; return the number of samples written."""
    changes: dict[tuple[str, tuple[str, ...]], list[tuple[float, float]]] = defaultdict(list)
    for name, labels, value, at in store.contributions():
        changes[(name, labels)].append((at, value))
    if not changes:
        out.write("# EOF\n")
        return 0

    first = min(at for points in changes.values() for at, _ in points)
    last = max(at for points in changes.values() for at, _ in points)
    start = math.floor(first / step) * step
    end = until if until is not None else math.floor(last / step) * step + step
    grid = [start + index * step for index in range(int((end - start) // step) + 1)]

    written = 0
    for name in sorted({name for name, _ in changes}):
        family = name.removesuffix("_total")
        kind = "histogram" if name in HISTOGRAMS else "counter"
        out.write(f"# TYPE {family} {kind}\n# HELP {family} {HELP[name]}\n")
        for (series_name, labels), points in sorted(changes.items()):
            if series_name != name:
                continue
            label_text = ",".join(f'{key}="{_escape(value)}"' for key, value in zip(LABEL_NAMES[name], labels))
            if kind == "histogram":
                written += _write_histogram(out, name, label_text, sorted(points), store.buckets[name], grid)
            else:
                written += _write_counter(out, name, label_text, sorted(points), grid)
    out.write("# EOF\n")
    return written


def _write_counter(out: IO[str], name: str, labels: str, points: list[tuple[float, float]],
                   grid: list[float]) -> int:
    times = [at for at, _ in points]
    totals = _running(value for _, value in points)
    written = 0
    for moment in grid[bisect_left(grid, times[0]):] or grid[-1:]:
        index = bisect_right(times, moment)
        out.write(f"{name}{{{labels}}} {totals[index - 1] if index else 0.0} {moment:.3f}\n")
        written += 1
    return written


def _write_histogram(out: IO[str], name: str, labels: str, points: list[tuple[float, float]],
                     bounds: list[float], grid: list[float]) -> int:
    buckets = [0] * (len(bounds) + 1)
    count, total, next_point, written = 0, 0.0, 0, 0
    for moment in grid[bisect_left(grid, points[0][0]):] or grid[-1:]:
        while next_point < len(points) and points[next_point][0] <= moment:
            value = points[next_point][1]
            buckets[bisect_left(bounds, value)] += 1
            count += 1
            total += value
            next_point += 1
        cumulative = 0
        for bound, in_bucket in zip(bounds, buckets):
            cumulative += in_bucket
            out.write(f'{name}_bucket{{{labels},le="{format_le(bound)}"}} {cumulative} {moment:.3f}\n')
        out.write(f'{name}_bucket{{{labels},le="+Inf"}} {count} {moment:.3f}\n')
        out.write(f"{name}_count{{{labels}}} {count} {moment:.3f}\n")
        out.write(f"{name}_sum{{{labels}}} {total} {moment:.3f}\n")
        written += len(bounds) + 3
    return written


def _running(values: Iterable[float]) -> list[float]:
    total, result = 0.0, []
    for value in values:
        total += value
        result.append(total)
    return result


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def backfill(tickets: TicketsConfig, out_path: Path, step: float, events_file: Path | None = None,
             database: Path | None = None) -> int:
    """Write the OpenMetrics file from an events file or from an existing store; return the sample count."""
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
            with out_path.open("w", encoding="utf-8") as out:
                return write_openmetrics(store, out, step)
        finally:
            store.close()


TEXT = Catalog({
    "backfill.written": {
        "en": "Wrote {samples} samples to {path}.\nImport them with: promtool tsdb create-blocks-from openmetrics "
              "{path} <Prometheus data directory>",
        "zh-CN": "已将 {samples} 个样本写入 {path}。\n导入命令：promtool tsdb create-blocks-from openmetrics "
                 "{path} <Prometheus 数据目录>",
    },
    "backfill.failed": {
        "en": "Backfill failed: {error}",
        "zh-CN": "回填失败：{error}",
    },
    "backfill.no_input": {
        "en": "Backfill needs --events FILE (JSON lines of ticket events) or --database FILE (a slawatch ticket "
              "store).",
        "zh-CN": "回填需要 --events FILE（每行一个工单事件的 JSON）或 --database FILE（slawatch 工单库）。",
    },
})


def run_backfill(tickets: TicketsConfig, locale: str, out_path: Path, step: float, events_file: Path | None,
                 database: Path | None) -> int:
    """Run the `slawatch tickets backfill` command; return the exit status."""
    if (events_file is None) == (database is None):
        print(TEXT.get("backfill.no_input", locale), file=sys.stderr)
        return 2
    try:
        samples = backfill(tickets, out_path, step, events_file=events_file, database=database)
    except (OSError, ValueError, sqlite3.Error) as error:
        print(TEXT.get("backfill.failed", locale, error=error), file=sys.stderr)
        return 1
    print(TEXT.get("backfill.written", locale, samples=samples, path=out_path))
    return 0
