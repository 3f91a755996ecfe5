"""The `slawatch tickets backfill` command: option checks, the output size limit and the messages it prints."""

from __future__ import annotations

import sqlite3
import sys
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path

from ..config import TicketsConfig
from ..durations import format_duration, parse_duration
from ..i18n import Catalog
from .backfill import (History, OldestEvent, OutputEstimate, PartialFileError, SampleGrid, estimate_output,
                       load_history, make_grid, write_file_atomically, write_openmetrics)

# Ticket latencies are tracked in seconds, so a shorter step multiplies the samples without adding detail.
MIN_STEP_SECONDS = 1.0
# About 3 GB of OpenMetrics text: a sample line is 150 to 160 bytes with the default labels and buckets.
DEFAULT_MAX_SAMPLES = 20_000_000
# Steps, in seconds, that the size message checks against the limit and suggests when one fits.
SUGGESTED_STEPS = (60, 300, 900, 1800, 3600, 7200, 21600, 86400)

TEXT = Catalog({
    "backfill.estimate": {
        "en": "Estimate: {samples:,} samples ({series:,} series, {steps:,} steps of {step} from {start} to {end}), "
              "about {size}.",
        "zh-CN": "估算：{samples:,} 个样本（{series:,} 个序列，从 {start} 到 {end} 每 {step} 一个样本，共 {steps:,} 步），"
                 "约 {size}。",
    },
    "backfill.written": {
        "en": "Wrote {samples:,} samples ({size}) to {path}.\nImport them with: promtool tsdb create-blocks-from "
              "openmetrics {path} <Prometheus data directory>",
        "zh-CN": "已将 {samples:,} 个样本（{size}）写入 {path}。\n导入命令：promtool tsdb create-blocks-from openmetrics "
                 "{path} <Prometheus 数据目录>",
    },
    "backfill.too_large": {
        "en": "Nothing was written to {path}: the output would have {samples:,} samples, about {size}, which is above "
              "the limit of {limit:,} samples (--max-samples). It would cover {series:,} series from {start} to {end} "
              "in {steps:,} steps of {step}, starting at the oldest event: {oldest}.\n"
              "To write less, pass --start TIME to begin later, use a larger --step{step_hint}, or raise the limit "
              "with --max-samples {samples}.",
        "zh-CN": "未向 {path} 写入任何内容：输出将有 {samples:,} 个样本，约 {size}，超过了 {limit:,} 个样本的上限"
                 "（--max-samples）。它将覆盖 {series:,} 个序列，从 {start} 到 {end}，每 {step} 一步，共 {steps:,} 步，"
                 "起点是最早的事件：{oldest}。\n"
                 "要减少输出，请用 --start TIME 推迟起点、使用更大的 --step{step_hint}，或用 --max-samples {samples} "
                 "提高上限。",
    },
    "backfill.step_hint": {
        "en": " (--step {step} would write {samples:,} samples, about {size})",
        "zh-CN": "（--step {step} 将写入 {samples:,} 个样本，约 {size}）",
    },
    "backfill.oldest_event": {
        "en": "event {event} of ticket {ticket} at {time}",
        "zh-CN": "工单 {ticket} 的事件 {event}，时间 {time}",
    },
    "backfill.oldest_ticket": {
        "en": "ticket {ticket} at {time}",
        "zh-CN": "工单 {ticket}，时间 {time}",
    },
    "backfill.nothing_in_window": {
        "en": "Nothing was written to {path}: the events run from {first} to {last}, and {window} leaves no sample "
              "time (a multiple of --step {step}) at or after the first event of any series. Choose --start and "
              "--end inside the range of the events and at least one step apart.",
        "zh-CN": "未向 {path} 写入任何内容：事件的时间范围是 {first} 到 {last}，而 {window} 范围内没有任何样本时间"
                 "（--step {step} 的整数倍）落在某个序列的首个事件之时或之后。请在事件的时间范围内选择 --start 和 "
                 "--end，且两者至少相隔一个步长。",
    },
    "backfill.failed": {
        "en": "Backfill failed: {error}. Nothing was written to {path}.",
        "zh-CN": "回填失败：{error}。未向 {path} 写入任何内容。",
    },
    "backfill.partial_left": {
        "en": "Backfill failed: {error}. The partial file {partial} could not be removed ({cleanup_error}): delete "
              "it by hand. {path} was not changed.",
        "zh-CN": "回填失败：{error}。无法删除不完整的文件 {partial}（{cleanup_error}）：请手动删除。{path} 未被改动。",
    },
    "backfill.no_input": {
        "en": "Backfill needs --events FILE (JSON lines of ticket events) or --database FILE (a slawatch ticket "
              "store).",
        "zh-CN": "回填需要 --events FILE（每行一个工单事件的 JSON）或 --database FILE（slawatch 工单库）。",
    },
    "backfill.both_inputs": {
        "en": "Pass only one of --events FILE and --database FILE: the backfill reads a single input.",
        "zh-CN": "--events FILE 和 --database FILE 只能传入其中一个：回填只读取一个输入。",
    },
    "backfill.step_invalid": {
        "en": "Invalid --step {value}: use a duration such as 1m, 5m or 1h.",
        "zh-CN": "无效的 --step {value}：请使用 1m、5m 或 1h 这样的时长。",
    },
    "backfill.step_not_positive": {
        "en": "Invalid --step {value}: the step must be greater than 0. Use a duration such as 1m, 5m or 1h.",
        "zh-CN": "无效的 --step {value}：步长必须大于 0。请使用 1m、5m 或 1h 这样的时长。",
    },
    "backfill.step_too_small": {
        "en": "Invalid --step {value}: the minimum is {minimum}, because a shorter step multiplies the samples "
              "without adding detail to ticket latencies. Use a duration such as 1m, 5m or 1h.",
        "zh-CN": "无效的 --step {value}：最小值为 {minimum}，因为更短的步长只会成倍增加样本，而不会让工单时长更精确。"
                 "请使用 1m、5m 或 1h 这样的时长。",
    },
    "backfill.time_invalid": {
        "en": "Invalid {option} {value}: use an RFC 3339 time such as 2025-03-01T00:00:00Z or "
              "2025-03-01T08:00:00+08:00, or a date such as 2025-03-01 (midnight UTC).",
        "zh-CN": "无效的 {option} {value}：请使用 RFC 3339 时间，如 2025-03-01T00:00:00Z 或 2025-03-01T08:00:00+08:00，"
                 "或日期，如 2025-03-01（UTC 零点）。",
    },
    "backfill.time_no_zone": {
        "en": "Invalid {option} {value}: the time has no time zone. Add Z or an offset such as +08:00.",
        "zh-CN": "无效的 {option} {value}：时间没有时区。请加上 Z 或 +08:00 这样的偏移。",
    },
    "backfill.window_reversed": {
        "en": "Invalid --start {start} and --end {end}: --start must be before --end.",
        "zh-CN": "无效的 --start {start} 和 --end {end}：--start 必须早于 --end。",
    },
    "backfill.max_samples_invalid": {
        "en": "Invalid --max-samples {value}: use a whole number greater than 0, such as 50000000.",
        "zh-CN": "无效的 --max-samples {value}：请使用大于 0 的整数，如 50000000。",
    },
})


class OptionError(ValueError):
    """An invalid command-line value; the message is already in the operator's locale."""


@dataclass(frozen=True)
class BackfillOptions:
    out: Path
    step: float
    start: float | None
    end: float | None
    max_samples: int
    events_file: Path | None
    database: Path | None


def parse_options(locale: str, out: str, step: str = "5m", start: str | None = None, end: str | None = None,
                  max_samples: str | None = None, events: str | None = None,
                  database: str | None = None) -> BackfillOptions:
    """Check the command-line values and convert them; raise OptionError naming the bad value and the fix."""
    if events is None and database is None:
        raise OptionError(TEXT.get("backfill.no_input", locale))
    if events is not None and database is not None:
        raise OptionError(TEXT.get("backfill.both_inputs", locale))

    start_time = _parse_option_time(locale, "--start", start)
    end_time = _parse_option_time(locale, "--end", end)
    if start_time is not None and end_time is not None and start_time >= end_time:
        raise OptionError(TEXT.get("backfill.window_reversed", locale, start=start, end=end))

    return BackfillOptions(
        out=Path(out),
        step=_parse_step(locale, step),
        start=start_time,
        end=end_time,
        max_samples=_parse_max_samples(locale, max_samples),
        events_file=Path(events) if events is not None else None,
        database=Path(database) if database is not None else None,
    )


def _parse_step(locale: str, text: str) -> float:
    try:
        step = parse_duration(text)
    except ValueError:
        raise OptionError(TEXT.get("backfill.step_invalid", locale, value=text)) from None
    if step <= 0:
        raise OptionError(TEXT.get("backfill.step_not_positive", locale, value=text))
    if step < MIN_STEP_SECONDS:
        raise OptionError(TEXT.get("backfill.step_too_small", locale, value=text,
                                   minimum=format_duration(MIN_STEP_SECONDS)))
    return step


def _parse_max_samples(locale: str, text: str | None) -> int:
    if text is None:
        return DEFAULT_MAX_SAMPLES
    try:
        value = int(text)
    except ValueError:
        raise OptionError(TEXT.get("backfill.max_samples_invalid", locale, value=text)) from None
    if value < 1:
        raise OptionError(TEXT.get("backfill.max_samples_invalid", locale, value=text))
    return value


def _parse_option_time(locale: str, option: str, text: str | None) -> float | None:
    """Parse an RFC 3339 time with a zone, or a YYYY-MM-DD date taken as midnight UTC, into epoch seconds."""
    if text is None:
        return None
    value = text.strip()
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp()
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise OptionError(TEXT.get("backfill.time_invalid", locale, option=option, value=text)) from None
    if parsed.tzinfo is None:
        raise OptionError(TEXT.get("backfill.time_no_zone", locale, option=option, value=text))
    try:
        return parsed.timestamp()
    except (OverflowError, ValueError):
        raise OptionError(TEXT.get("backfill.time_invalid", locale, option=option, value=text)) from None


def format_time(seconds: float) -> str:
    """Format Unix seconds as RFC 3339 in UTC, to the second."""
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_size(size_bytes: int) -> str:
    """Format a byte count with decimal units (1 MB = 1,000,000 bytes), as `ls --si` does."""
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if size_bytes >= scale:
            return f"{size_bytes / scale:.1f} {unit}"
    return f"{size_bytes} B"


def run_backfill(tickets: TicketsConfig, locale: str, out: str, step: str = "5m", start: str | None = None,
                 end: str | None = None, max_samples: str | None = None, events: str | None = None,
                 database: str | None = None) -> int:
    """Run the `slawatch tickets backfill` command; return the exit status.

    Exit status 2 is an invalid option and 1 a failure or an output above the
    limit. In both cases the file at `out` is left as it was.
    """
    try:
        options = parse_options(locale, out, step, start, end, max_samples, events, database)
    except OptionError as error:
        print(error, file=sys.stderr)
        return 2

    try:
        history = load_history(tickets, events_file=options.events_file, database=options.database)
    except (OSError, ValueError, sqlite3.Error) as error:
        print(TEXT.get("backfill.failed", locale, error=error, path=options.out), file=sys.stderr)
        return 1

    grid = make_grid(history, options.step, options.start, options.end)
    estimate = estimate_output(history, grid)
    if history.series and estimate.samples == 0:
        print(_nothing_in_window(locale, options, history), file=sys.stderr)
        return 1
    if estimate.samples > options.max_samples:
        print(_too_large(locale, options, history, grid, estimate), file=sys.stderr)
        return 1
    if history.series:
        print(TEXT.get("backfill.estimate", locale, samples=estimate.samples, series=estimate.series,
                       steps=estimate.steps, step=format_duration(options.step), start=format_time(grid.start),
                       end=format_time(grid.end), size=format_size(estimate.size_bytes)))

    try:
        samples = write_file_atomically(options.out, lambda file: write_openmetrics(history, grid, file))
        size = options.out.stat().st_size
    except PartialFileError as error:
        print(TEXT.get("backfill.partial_left", locale, error=error.error, partial=error.partial,
                       cleanup_error=error.cleanup_error, path=options.out), file=sys.stderr)
        return 1
    except OSError as error:
        print(TEXT.get("backfill.failed", locale, error=error, path=options.out), file=sys.stderr)
        return 1
    print(TEXT.get("backfill.written", locale, samples=samples, size=format_size(size), path=options.out))
    return 0


def _too_large(locale: str, options: BackfillOptions, history: History, grid: SampleGrid,
               estimate: OutputEstimate) -> str:
    step_hint = ""
    for candidate in SUGGESTED_STEPS:
        if candidate <= options.step:
            continue
        smaller = estimate_output(history, make_grid(history, candidate, options.start, options.end))
        if smaller.samples <= options.max_samples:
            step_hint = TEXT.get("backfill.step_hint", locale, step=format_duration(candidate),
                                 samples=smaller.samples, size=format_size(smaller.size_bytes))
            break
    return TEXT.get("backfill.too_large", locale, path=options.out, samples=estimate.samples,
                    size=format_size(estimate.size_bytes), limit=options.max_samples, series=estimate.series,
                    start=format_time(grid.start), end=format_time(grid.end), steps=estimate.steps,
                    step=format_duration(options.step), oldest=_describe_oldest(locale, history.oldest),
                    step_hint=step_hint)


def _describe_oldest(locale: str, oldest: OldestEvent) -> str:
    if oldest.event_id is None:
        return TEXT.get("backfill.oldest_ticket", locale, ticket=oldest.ticket_id, time=format_time(oldest.time))
    return TEXT.get("backfill.oldest_event", locale, event=oldest.event_id, ticket=oldest.ticket_id,
                    time=format_time(oldest.time))


def _nothing_in_window(locale: str, options: BackfillOptions, history: History) -> str:
    window = []
    if options.start is not None:
        window.append(f"--start {format_time(options.start)}")
    if options.end is not None:
        window.append(f"--end {format_time(options.end)}")
    return TEXT.get("backfill.nothing_in_window", locale, path=options.out, first=format_time(history.first),
                    last=format_time(history.last), window=" ".join(window), step=format_duration(options.step))
