"""`slawatch tickets backfill` output imported with the real promtool."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from conftest import minimal_config, require_binary, write_config


def history(path: Path) -> None:
    """Write 20 tickets over five days, each answered after 10 + n minutes."""
    lines = []
    for number in range(20):
        ticket = f"H{number}"
        day = 3 + number % 5
        lines.append({"id": f"{ticket}-c", "type": "ticket.created", "ticket_id": ticket,
                      "time": f"2025-03-{day:02d}T10:00:00+08:00", "channel": "email", "priority": "normal"})
        lines.append({"id": f"{ticket}-r", "type": "ticket.replied", "ticket_id": ticket,
                      "time": f"2025-03-{day:02d}T10:{10 + number:02d}:00+08:00", "author": "agent"})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")


def dump(promtool: str, data: Path, selector: str) -> list[tuple[float, float]]:
    completed = subprocess.run([promtool, "tsdb", "dump", f"--match={selector}", str(data)], capture_output=True,
                               text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    points = []
    for line in completed.stdout.splitlines():
        match = re.search(r"} (\S+) (\d+)$", line)
        if match:
            points.append((int(match.group(2)) / 1000, float(match.group(1))))
    return sorted(points)


def test_backfill_imports_with_promtool(tmp_path: Path):
    promtool = require_binary("promtool")
    events = tmp_path / "events.jsonl"
    history(events)
    config = write_config(tmp_path / "slawatch.yml", minimal_config(tmp_path))
    out = tmp_path / "history.om"

    completed = subprocess.run([sys.executable, "-m", "slawatch", "tickets", "backfill", f"--config.file={config}",
                                f"--events={events}", f"--out={out}", "--step=1h"], capture_output=True, text=True,
                               timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert "promtool tsdb create-blocks-from openmetrics" in completed.stdout

    data = tmp_path / "prometheus"
    created = subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", str(out), str(data)],
                             capture_output=True, text=True, timeout=300)
    assert created.returncode == 0, created.stdout + created.stderr
    (data / "wal").mkdir(exist_ok=True)  # promtool tsdb dump opens the WAL too

    tickets = dump(promtool, data, "slawatch_tickets_created_total")
    responses = dump(promtool, data, 'slawatch_ticket_first_response_seconds_count{clock="calendar"}')
    first_day_end = datetime.fromisoformat("2025-03-04T00:00:00+08:00").timestamp()
    assert tickets[-1][1] == 20
    assert responses[-1][1] == 20
    # The history lands where it happened: four tickets by the end of the first day, not 20 at import time.
    assert max(value for at, value in tickets if at <= first_day_end) == 4
    assert tickets[0][0] < first_day_end


def test_backfill_reports_bad_event_line(tmp_path: Path):
    events = tmp_path / "events.jsonl"
    events.write_text('{"id": "a", "type": "ticket.created", "ticket_id": "T", "time": "2025-03-03T10:00:00"}\n',
                      encoding="utf-8")
    config = write_config(tmp_path / "slawatch.yml", minimal_config(tmp_path))

    completed = subprocess.run([sys.executable, "-m", "slawatch", "tickets", "backfill", f"--config.file={config}",
                                f"--events={events}", f"--out={tmp_path / 'out.om'}"], capture_output=True, text=True,
                               timeout=120)

    assert completed.returncode == 1
    assert f"{events}:1: time:" in completed.stderr


def test_backfill_from_database_leaves_it_unchanged(tmp_path: Path):
    from slawatch.config import parse_config
    from slawatch.tickets import build_store, parse_event

    data = minimal_config(tmp_path)
    config = write_config(tmp_path / "slawatch.yml", data)
    store, _ = build_store(parse_config(data).tickets)
    events = tmp_path / "events.jsonl"
    history(events)
    store.ingest([parse_event(json.loads(line), ["email"], ["normal"]) for line in events.read_text().splitlines()])
    store.close()
    database = Path(data["tickets"]["database"])
    before = database.read_bytes()
    out = tmp_path / "from-db.om"

    completed = subprocess.run([sys.executable, "-m", "slawatch", "tickets", "backfill", f"--config.file={config}",
                                f"--database={database}", f"--out={out}", "--step=1h"], capture_output=True,
                               text=True, timeout=120)

    assert completed.returncode == 0, completed.stderr
    assert database.read_bytes() == before
    text = out.read_text()
    assert text.endswith("# EOF\n")
    final = [line for line in text.splitlines() if line.startswith("slawatch_tickets_created_total{")][-1]
    assert final.split()[1] == "20.0"


# --- output size, time window and option checks ---------------------------------------------------------------

def created(ticket: str, time: str, channel: str = "email") -> dict:
    return {"id": f"{ticket}-c", "type": "ticket.created", "ticket_id": ticket, "time": time, "channel": channel,
            "priority": "normal"}


def write_events(path: Path, events: list[dict]) -> Path:
    path.write_text("".join(json.dumps(event) + "\n" for event in events), encoding="utf-8")
    return path


def two_tickets(path: Path) -> Path:
    """Two created tickets with the same labels, at 10:00 and 12:30 UTC: one counter series."""
    return write_events(path, [created("A", "2025-03-03T10:00:00Z"), created("B", "2025-03-03T12:30:00Z")])


def with_old_ticket(path: Path) -> Path:
    """The two tickets plus one created in 2003, which stretches the output over 22 years."""
    return write_events(path, [created("OLD", "2003-05-01T09:00:00Z"), created("A", "2025-03-03T10:00:00Z"),
                               created("B", "2025-03-03T12:30:00Z")])


def tickets_config(tmp_path: Path, locale: str = "en"):
    from slawatch.config import parse_config

    data = minimal_config(tmp_path)
    data["global"]["locale"] = locale
    return parse_config(data).tickets


def run(tmp_path: Path, capsys, locale: str = "en", **options) -> tuple[int, str, str]:
    from slawatch.tickets.backfill_command import run_backfill

    status = run_backfill(tickets_config(tmp_path), locale, **options)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def counter_samples(text: str) -> list[tuple[str, str]]:
    """Return (value, timestamp) of every slawatch_tickets_created_total sample line."""
    return [tuple(line.split()[1:]) for line in text.splitlines() if line.startswith("slawatch_tickets_created_total{")]


def at(text: str) -> str:
    return f"{datetime.fromisoformat(text).timestamp():.3f}"


def test_estimate_exact_for_two_tickets(tmp_path: Path):
    events = two_tickets(tmp_path / "events.jsonl")
    config = write_config(tmp_path / "slawatch.yml", minimal_config(tmp_path))
    out = tmp_path / "two.om"

    completed = subprocess.run([sys.executable, "-m", "slawatch", "tickets", "backfill", f"--config.file={config}",
                                f"--events={events}", f"--out={out}", "--step=1h"], capture_output=True, text=True,
                               timeout=120)

    assert completed.returncode == 0, completed.stderr
    # One series on the hours 10:00, 11:00, 12:00 and 13:00 (one step after the last event): 4 samples.
    size = out.stat().st_size
    assert completed.stdout.splitlines()[0] == (
        "Estimate: 4 samples (1 series, 4 steps of 1h from 2025-03-03T10:00:00Z to 2025-03-03T13:00:00Z), "
        f"about {size} B.")
    assert f"Wrote 4 samples ({size} B) to {out}." in completed.stdout
    assert counter_samples(out.read_text()) == [
        ("1.0", at("2025-03-03T10:00:00+00:00")), ("1.0", at("2025-03-03T11:00:00+00:00")),
        ("1.0", at("2025-03-03T12:00:00+00:00")), ("2.0", at("2025-03-03T13:00:00+00:00"))]


def test_start_keeps_earlier_counts(tmp_path: Path, capsys):
    events = two_tickets(tmp_path / "events.jsonl")
    out = tmp_path / "late.om"

    status, stdout, stderr = run(tmp_path, capsys, out=str(out), step="1h", start="2025-03-03T10:30:00Z",
                                 events=str(events))

    assert status == 0, stderr
    assert "Estimate: 3 samples (1 series, 3 steps of 1h from 2025-03-03T11:00:00Z" in stdout
    # The first sample is the next whole hour after --start and still counts ticket A from 10:00.
    assert counter_samples(out.read_text()) == [
        ("1.0", at("2025-03-03T11:00:00+00:00")), ("1.0", at("2025-03-03T12:00:00+00:00")),
        ("2.0", at("2025-03-03T13:00:00+00:00"))]


def test_end_stops_output_early(tmp_path: Path, capsys):
    events = write_events(tmp_path / "events.jsonl", [
        created("A", "2025-03-03T10:00:00Z"), created("B", "2025-03-03T12:30:00Z"),
        created("C", "2025-03-03T12:40:00Z", channel="chat")])
    out = tmp_path / "early.om"

    status, stdout, stderr = run(tmp_path, capsys, out=str(out), step="1h", end="2025-03-03T19:30:00+08:00",
                                 events=str(events))

    assert status == 0, stderr
    assert "Estimate: 2 samples (1 series, 2 steps of 1h from 2025-03-03T10:00:00Z to 2025-03-03T11:00:00Z)" in stdout
    text = out.read_text()
    assert counter_samples(text) == [("1.0", at("2025-03-03T10:00:00+00:00")),
                                     ("1.0", at("2025-03-03T11:00:00+00:00"))]
    # Ticket C's chat series begins after --end, so it has no sample at all.
    assert 'channel="chat"' not in text


def test_date_start_is_midnight_utc(tmp_path: Path, capsys):
    events = write_events(tmp_path / "events.jsonl", [created("A", "2025-03-02T10:00:00Z"),
                                                      created("B", "2025-03-04T10:00:00Z")])
    out = tmp_path / "dates.om"

    status, _, stderr = run(tmp_path, capsys, out=str(out), step="1d", start="2025-03-03", end="2025-03-04",
                            events=str(events))

    assert status == 0, stderr
    assert counter_samples(out.read_text()) == [("1.0", at("2025-03-03T00:00:00+00:00")),
                                                ("1.0", at("2025-03-04T00:00:00+00:00"))]


def test_estimate_matches_written_history(tmp_path: Path, capsys):
    events = tmp_path / "events.jsonl"
    history(events)
    out = tmp_path / "history.om"

    status, stdout, stderr = run(tmp_path, capsys, out=str(out), step="1h", events=str(events))

    assert status == 0, stderr
    estimated = int(re.search(r"Estimate: ([\d,]+) samples", stdout).group(1).replace(",", ""))
    written = int(re.search(r"Wrote ([\d,]+) samples", stdout).group(1).replace(",", ""))
    text = out.read_text()
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert estimated == written
    assert written == len(lines)

    from slawatch.tickets.backfill import estimate_output, load_history, make_grid

    loaded = load_history(tickets_config(tmp_path), events_file=events)
    estimate = estimate_output(loaded, make_grid(loaded, 3600))
    assert estimate.samples == written
    assert abs(estimate.size_bytes - len(text.encode())) <= 0.02 * len(text.encode())


def test_oversized_output_rejected(tmp_path: Path):
    events = with_old_ticket(tmp_path / "events.jsonl")
    data = minimal_config(tmp_path)
    config = write_config(tmp_path / "slawatch.yml", data)
    out = tmp_path / "old.om"

    completed = subprocess.run([sys.executable, "-m", "slawatch", "tickets", "backfill", f"--config.file={config}",
                                f"--events={events}", f"--out={out}", "--step=1h", "--max-samples=10000"],
                               capture_output=True, text=True, timeout=120)

    assert completed.returncode == 1
    assert not out.exists()
    assert list(tmp_path.glob("*.partial")) == []
    assert not Path(data["tickets"]["database"]).exists()
    # One series on every hour from 2003-05-01T09:00Z to 2025-03-03T13:00Z.
    hours = int((datetime.fromisoformat("2025-03-03T13:00:00+00:00")
                 - datetime.fromisoformat("2003-05-01T09:00:00+00:00")).total_seconds() // 3600) + 1
    # With --step 1d: every midnight from 2003-05-02, the first after the old ticket, to 2025-03-04.
    days = (datetime(2025, 3, 4) - datetime(2003, 5, 2)).days + 1
    message = completed.stderr
    assert f"Nothing was written to {out}: the output would have {hours:,} samples" in message
    assert "above the limit of 10,000 samples (--max-samples)" in message
    assert f"from 2003-05-01T09:00:00Z to 2025-03-03T13:00:00Z in {hours:,} steps of 1h" in message
    assert "the oldest event: event OLD-c of ticket OLD at 2003-05-01T09:00:00Z" in message
    assert "--start TIME" in message
    assert f"(--step 1d would write {days:,} samples" in message
    assert f"--max-samples {hours}." in message


def test_default_limit_rejects_second_steps(tmp_path: Path, capsys):
    events = with_old_ticket(tmp_path / "events.jsonl")
    out = tmp_path / "old.om"

    status, stdout, stderr = run(tmp_path, capsys, out=str(out), step="1s", events=str(events))

    assert status == 1
    assert stdout == ""
    assert "above the limit of 20,000,000 samples (--max-samples)" in stderr
    # --step 1m is the smallest suggested step that fits: every minute from 09:00 to 12:31, one after the newest event.
    minutes = int((datetime.fromisoformat("2025-03-03T12:31:00+00:00")
                   - datetime.fromisoformat("2003-05-01T09:00:00+00:00")).total_seconds() // 60) + 1
    assert f"(--step 1m would write {minutes:,} samples" in stderr
    assert not out.exists()


def test_rejected_run_keeps_existing_output(tmp_path: Path, capsys):
    events = with_old_ticket(tmp_path / "events.jsonl")
    out = tmp_path / "old.om"
    out.write_text("earlier output\n", encoding="utf-8")

    status, _, stderr = run(tmp_path, capsys, out=str(out), step="1h", max_samples="100", events=str(events))

    assert status == 1
    assert "Nothing was written" in stderr
    assert out.read_text(encoding="utf-8") == "earlier output\n"


def test_rejected_database_run_leaves_store(tmp_path: Path):
    from slawatch.config import parse_config
    from slawatch.tickets import build_store, parse_event

    data = minimal_config(tmp_path)
    config = write_config(tmp_path / "slawatch.yml", data)
    store, _ = build_store(parse_config(data).tickets)
    events = with_old_ticket(tmp_path / "events.jsonl")
    store.ingest([parse_event(json.loads(line), ["email"], ["normal"]) for line in events.read_text().splitlines()])
    store.close()
    database = Path(data["tickets"]["database"])
    before = database.read_bytes()
    out = tmp_path / "from-db.om"

    completed = subprocess.run([sys.executable, "-m", "slawatch", "tickets", "backfill", f"--config.file={config}",
                                f"--database={database}", f"--out={out}", "--step=1h", "--max-samples=1000"],
                               capture_output=True, text=True, timeout=120)

    assert completed.returncode == 1
    assert "event OLD-c of ticket OLD at 2003-05-01T09:00:00Z" in completed.stderr
    assert not out.exists()
    assert database.read_bytes() == before
    with sqlite3.connect(database) as connection:
        ids = sorted(row[0] for row in connection.execute("SELECT id FROM events"))
    assert ids == ["A-c", "B-c", "OLD-c"]


def test_rejection_message_in_chinese(tmp_path: Path):
    events = with_old_ticket(tmp_path / "events.jsonl")
    data = minimal_config(tmp_path)
    data["global"]["locale"] = "zh-CN"
    config = write_config(tmp_path / "slawatch.yml", data)
    out = tmp_path / "old.om"

    completed = subprocess.run([sys.executable, "-m", "slawatch", "tickets", "backfill", f"--config.file={config}",
                                f"--events={events}", f"--out={out}", "--step=1d", "--max-samples=100"],
                               capture_output=True, text=True, timeout=120)

    assert completed.returncode == 1
    assert f"未向 {out} 写入任何内容" in completed.stderr
    assert "工单 OLD 的事件 OLD-c，时间 2003-05-01T09:00:00Z" in completed.stderr
    assert "--max-samples" in completed.stderr
    assert not out.exists()


@pytest.mark.parametrize(("step", "expected"), [
    ("0s", "Invalid --step 0s: the step must be greater than 0"),
    ("0ms", "Invalid --step 0ms: the step must be greater than 0"),
    ("500ms", "Invalid --step 500ms: the minimum is 1s"),
    ("-1s", "Invalid --step -1s: use a duration such as 1m, 5m or 1h"),
    ("five minutes", "Invalid --step five minutes: use a duration such as 1m, 5m or 1h"),
])
def test_bad_step_rejected(tmp_path: Path, capsys, step: str, expected: str):
    events = two_tickets(tmp_path / "events.jsonl")
    out = tmp_path / "out.om"

    status, stdout, stderr = run(tmp_path, capsys, out=str(out), step=step, events=str(events))

    assert status == 2
    assert expected in stderr
    assert "1m, 5m or 1h" in stderr
    assert stdout == ""
    assert not out.exists()


def test_zero_step_on_command_line(tmp_path: Path):
    events = two_tickets(tmp_path / "events.jsonl")
    config = write_config(tmp_path / "slawatch.yml", minimal_config(tmp_path))

    completed = subprocess.run([sys.executable, "-m", "slawatch", "tickets", "backfill", f"--config.file={config}",
                                f"--events={events}", f"--out={tmp_path / 'out.om'}", "--step=0s"],
                               capture_output=True, text=True, timeout=120)

    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    assert "Invalid --step 0s: the step must be greater than 0" in completed.stderr


@pytest.mark.parametrize(("options", "expected"), [
    ({"start": "yesterday"}, "Invalid --start yesterday: use an RFC 3339 time such as 2025-03-01T00:00:00Z"),
    ({"end": "2025-13-01"}, "Invalid --end 2025-13-01: use an RFC 3339 time"),
    ({"start": "2025-03-03T10:00:00"}, "Invalid --start 2025-03-03T10:00:00: the time has no time zone. Add Z"),
    ({"start": "2025-03-04", "end": "2025-03-03"},
     "Invalid --start 2025-03-04 and --end 2025-03-03: --start must be before --end"),
    ({"start": "2025-03-03", "end": "2025-03-03T00:00:00Z"},
     "Invalid --start 2025-03-03 and --end 2025-03-03T00:00:00Z: --start must be before --end"),
    ({"max_samples": "0"}, "Invalid --max-samples 0: use a whole number greater than 0"),
    ({"max_samples": "-5"}, "Invalid --max-samples -5: use a whole number greater than 0"),
    ({"max_samples": "1e6"}, "Invalid --max-samples 1e6: use a whole number greater than 0"),
])
def test_bad_window_or_limit_rejected(tmp_path: Path, capsys, options: dict, expected: str):
    events = two_tickets(tmp_path / "events.jsonl")
    out = tmp_path / "out.om"

    status, _, stderr = run(tmp_path, capsys, out=str(out), events=str(events), **options)

    assert status == 2
    assert expected in stderr
    assert not out.exists()


def test_both_inputs_rejected(tmp_path: Path):
    events = two_tickets(tmp_path / "events.jsonl")
    data = minimal_config(tmp_path)
    config = write_config(tmp_path / "slawatch.yml", data)

    completed = subprocess.run([sys.executable, "-m", "slawatch", "tickets", "backfill", f"--config.file={config}",
                                f"--events={events}", f"--database={data['tickets']['database']}",
                                f"--out={tmp_path / 'out.om'}"], capture_output=True, text=True, timeout=120)

    assert completed.returncode == 2
    assert "Pass only one of --events FILE and --database FILE" in completed.stderr
    assert "needs" not in completed.stderr
    assert not (tmp_path / "out.om").exists()


def test_no_input_rejected(tmp_path: Path, capsys):
    status, _, stderr = run(tmp_path, capsys, out=str(tmp_path / "out.om"))

    assert status == 2
    assert "Backfill needs --events FILE" in stderr


def test_window_without_samples_rejected(tmp_path: Path, capsys):
    events = two_tickets(tmp_path / "events.jsonl")
    out = tmp_path / "out.om"

    status, _, stderr = run(tmp_path, capsys, out=str(out), step="1h", start="2025-03-04", events=str(events))

    assert status == 1
    assert (f"Nothing was written to {out}: the events run from 2025-03-03T10:00:00Z to 2025-03-03T12:30:00Z, and "
            "--start 2025-03-04T00:00:00Z leaves no sample time") in stderr
    assert not out.exists()


def test_failed_write_removes_partial_file(tmp_path: Path, capsys, monkeypatch):
    import errno

    from slawatch.tickets import backfill

    real_write = backfill._write_counter
    calls = []

    def write_then_fail(out, *arguments):
        calls.append(1)
        real_write(out, *arguments)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(backfill, "_write_counter", write_then_fail)
    events = two_tickets(tmp_path / "events.jsonl")
    out = tmp_path / "full.om"
    out.write_text("earlier output\n", encoding="utf-8")

    status, _, stderr = run(tmp_path, capsys, out=str(out), step="1h", events=str(events))

    assert calls == [1]
    assert status == 1
    assert f"Backfill failed: [Errno {errno.ENOSPC}] No space left on device. Nothing was written to {out}." in stderr
    assert out.read_text(encoding="utf-8") == "earlier output\n"
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith(".")) == []


def test_partial_file_reported_when_not_removable(tmp_path: Path, monkeypatch):
    from slawatch.tickets.backfill import PartialFileError, write_file_atomically

    def fail(out):
        out.write("half")
        raise OSError("disk failed")

    def fail_unlink(self, missing_ok=False):
        raise PermissionError("read-only directory")

    out = tmp_path / "stuck.om"
    monkeypatch.setattr(Path, "unlink", fail_unlink)
    with pytest.raises(PartialFileError) as raised:
        write_file_atomically(out, fail)
    monkeypatch.undo()

    partial = raised.value.partial
    assert partial.parent == tmp_path
    assert partial.read_text() == "half"
    assert str(partial) in str(raised.value)
    assert "disk failed" in str(raised.value)
    assert not out.exists()


def test_grid_index_exact_at_boundaries():
    from slawatch.tickets.backfill import SampleGrid

    grid = SampleGrid(start_ms=1_740_996_000_000, end_ms=1_740_996_000_000 + 10 * 420_000, step_ms=420_000)

    assert grid.size == 11
    assert grid.first_index_at_or_after(1_740_995_000.0) == 0
    assert grid.first_index_at_or_after(grid.time(3)) == 3
    assert grid.first_index_at_or_after(grid.time(3) + 0.001) == 4
    assert grid.first_index_at_or_after(grid.time(3) - 0.000001) == 3
    assert grid.first_index_at_or_after(grid.time(10) + 1) == 11


def test_format_size_units():
    from slawatch.tickets.backfill_command import format_size

    assert format_size(999) == "999 B"
    assert format_size(1500) == "1.5 kB"
    assert format_size(3_400_000_000) == "3.4 GB"
    assert format_size(14_020_000_000) == "14.0 GB"
