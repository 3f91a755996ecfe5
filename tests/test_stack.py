"""`slawatch stack`, the process behind `make run`, with the bundled configs on their fixed ports."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO, require_binary

pytestmark = pytest.mark.integration

PORTS = (9090, 9093, 9115, 2525)


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def process_alive(pid: int) -> bool:
    """Return whether `pid` runs and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def query(expr: str) -> list[dict]:
    url = "http://127.0.0.1:9090/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)["data"]["result"]


def test_stack_runs_and_stops_cleanly(tmp_path: Path):
    require_binary("prometheus")
    require_binary("prometheus-alertmanager", "alertmanager")
    busy = [port for port in PORTS if port_in_use(port)]
    if busy:
        pytest.skip(f"ports {busy} on 127.0.0.1 are in use; the stack needs them free")

    log = tmp_path / "stack.log"
    process = subprocess.Popen([sys.executable, "-m", "slawatch", "stack", f"--data-dir={tmp_path / 'data'}"],
                               cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "stack is running" not in log.read_text():
            assert process.poll() is None, log.read_text()
            time.sleep(0.5)
        assert "stack is running" in log.read_text()
        assert "http://127.0.0.1:9090/" in log.read_text()

        # Within a minute: the exporter is up, every rule evaluates cleanly, the default targets are probed.
        deadline = time.monotonic() + 60
        state = {}
        while time.monotonic() < deadline:
            state["up"] = query('up{job="slawatch"} == 1')
            state["probed"] = {r["metric"]["service"] for r in query("slawatch_probes_total > 0")}
            with urllib.request.urlopen("http://127.0.0.1:9090/api/v1/rules", timeout=5) as response:
                groups = json.load(response)["data"]["groups"]
            state["rules"] = [rule for group in groups for rule in group["rules"]]
            state["bad_rules"] = [rule["name"] for rule in state["rules"] if rule["health"] == "err"]
            if state["up"] and state["probed"] == {"prometheus", "alertmanager", "slawatch"}:
                break
            time.sleep(2)

        assert state["up"], log.read_text()
        assert state["probed"] == {"prometheus", "alertmanager", "slawatch"}
        assert state["rules"]
        assert state["bad_rules"] == []
        assert query('slawatch_probe_success{service="prometheus"}')[0]["value"][1] == "1"
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise

    assert process.returncode == 0, log.read_text()
    assert "Stopped every process of the stack" in log.read_text()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(port_in_use(port) for port in PORTS):
        time.sleep(0.2)
    assert [port for port in PORTS if port_in_use(port)] == []


def test_stack_children_die_with_parent(tmp_path: Path):
    pid_file = tmp_path / "child.pid"
    parent_code = (
        "import subprocess, sys, time\n"
        "from slawatch.stack import _die_with_parent\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], "
        "start_new_session=True, preexec_fn=_die_with_parent)\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not pid_file.exists():
        time.sleep(0.1)
    child_pid = int(pid_file.read_text())

    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and process_alive(child_pid):
        time.sleep(0.1)

    assert not process_alive(child_pid)
