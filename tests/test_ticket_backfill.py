"""`slawatch tickets backfill` output imported with the real promtool."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

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
