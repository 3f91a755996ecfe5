"""Shared fixtures: free loopback ports, config files and real binaries."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

try:
    import uvloop
except ImportError:  # uvloop has no Windows build
    uvloop = None


def pytest_asyncio_loop_factories(config, item):
    """Run async tests marked `both_loops` on the default asyncio loop and on uvloop, the rest on asyncio only.

    `slawatch serve` runs on uvloop when it is installed, so the probers and
    the /probe route are tested on both loops. pytest-asyncio 1.4 added this hook.
    """
    if item.get_closest_marker("both_loops") and uvloop is not None:
        return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def require_binary(*names: str) -> str:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip(f"{' or '.join(names)} is not on PATH (Debian packages prometheus, prometheus-alertmanager)")


def wait_http(url: str, timeout: float = 30.0, process: subprocess.Popen | None = None) -> None:
    """Wait until `url` returns 200; fail with the last error after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"process exited with {process.returncode} before {url} was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError) as error:
            last = str(error)
        time.sleep(0.2)
    raise AssertionError(f"{url} not ready after {timeout}s: {last}")


def icmp_allowed(family: int = socket.AF_INET) -> bool:
    """Return whether this process may open a datagram or raw ICMP socket of `family`."""
    protocol = socket.IPPROTO_ICMPV6 if family == socket.AF_INET6 else socket.IPPROTO_ICMP
    for kind in (socket.SOCK_DGRAM, socket.SOCK_RAW):
        try:
            socket.socket(family, kind, protocol).close()
            return True
        except PermissionError:
            continue
        except OSError:
            return False  # no IPv6 on this host
    return False


def write_config(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def minimal_config(tmp_path: Path, **overrides) -> dict:
    """A small valid config whose ticket database lives in tmp_path."""
    data = {
        "global": {"location": "test"},
        "modules": {
            "http_2xx": {"prober": "http", "timeout": "2s"},
            "tcp_connect": {"prober": "tcp", "timeout": "2s"},
        },
        "targets": [],
        "tickets": {"database": str(tmp_path / "tickets.db")},
        "slos": [],
    }
    data.update(overrides)
    return data


@pytest.fixture
def stop_processes():
    """Collect subprocesses and stop them when the test ends."""
    processes: list[subprocess.Popen] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
