"""Benchmark slawatch's /probe against Debian's prometheus-blackbox-exporter, side by side.

Both exporters are pinned to the same single CPU core (taskset), nginx and
wrk to the other, and both probe the same loopback nginx under the same wrk
load on /probe. The script then runs slawatch's scheduled mode with many
targets on one core. Everything listens on 127.0.0.1 only.

Usage:
    PYTHONPATH=exporter python benchmarks/probe_bench.py [--duration 20] [--connections 32]
        [--targets 10000] [--interval 15] [--scheduled-duration 60] [--uvloop]

Needs nginx, wrk, taskset and prometheus-blackbox-exporter on PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

EXPORTER_CPU = "1"
LOAD_CPU = "0"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not return 200 within {timeout}s")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_nginx(workdir: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    (workdir / "logs").mkdir()
    config = workdir / "nginx.conf"
    config.write_text(f"""
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 "ok\\n"; }}
    }}
}}
""")
    process = subprocess.Popen(["taskset", "-c", LOAD_CPU, "nginx", "-p", str(workdir), "-c", str(config),
                                "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/")
    return process, port


def run_wrk(url: str, duration: int, connections: int) -> dict:
    output = subprocess.run(["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{connections}", f"-d{duration}s",
                             "--timeout", "10s", "--latency", url], capture_output=True, text=True, check=True).stdout
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)

    def percentile(label: str) -> float:
        value, unit = re.search(rf"\s{label}\s+([\d.]+)(us|ms|s)", output).groups()
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    return {"requests": requests, "rate": rate, "p50_ms": percentile("50%"), "p99_ms": percentile("99%"),
            "non_2xx": int(errors.group(1)) if errors else 0,
            "socket_errors": socket_errors.group(1) if socket_errors else ""}


def measure(name: str, pid: int, url: str, args) -> dict:
    # A short warm-up, then the measured run.
    run_wrk(url, 2, args.connections)
    cpu_before = cpu_seconds(pid)
    load = run_wrk(url, args.duration, args.connections)
    cpu = cpu_seconds(pid) - cpu_before
    return {"exporter": name, **load, "cpu_seconds": cpu,
            "cpu_s_per_1000": cpu / load["requests"] * 1000 if load["requests"] else float("nan"),
            "peak_rss_mib": peak_rss_mib(pid)}


def slawatch_command(config: Path, port: int, use_uvloop: bool) -> list[str]:
    return ["taskset", "-c", EXPORTER_CPU, sys.executable, "-m", "slawatch", "serve", f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
            f"--event-loop={'uvloop' if use_uvloop else 'asyncio'}"]


def probe_benchmark(workdir: Path, nginx_port: int, args) -> list[dict]:
    modules = {"http_2xx": {"prober": "http", "timeout": "5s", "http": {"preferred_ip_protocol": "ip4"}}}
    (workdir / "blackbox.yml").write_text(yaml.safe_dump({"modules": modules}))
    slawatch_config = {"modules": modules, "targets": [], "probe": {"allow": ["127.0.0.0/8"]},
                       "tickets": {"database": str(workdir / "tickets.db")}}
    (workdir / "slawatch.yml").write_text(yaml.safe_dump(slawatch_config))
    target = f"http://127.0.0.1:{nginx_port}/"
    results = []

    blackbox_port = free_port()
    blackbox = subprocess.Popen(["taskset", "-c", EXPORTER_CPU, "prometheus-blackbox-exporter",
                                 f"--config.file={workdir / 'blackbox.yml'}",
                                 f"--web.listen-address=127.0.0.1:{blackbox_port}", "--log.level=warn"],
                                env={**os.environ, "GOMAXPROCS": "1"}, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    slawatch_port = free_port()
    slawatch = subprocess.Popen(slawatch_command(workdir / "slawatch.yml", slawatch_port, args.uvloop),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for name, process, port in (("blackbox_exporter 0.23", blackbox, blackbox_port),
                                    ("slawatch" + (" (uvloop)" if args.uvloop else ""), slawatch, slawatch_port)):
            wait_http(f"http://127.0.0.1:{port}/-/healthy")
            url = f"http://127.0.0.1:{port}/probe?module=http_2xx&target={target}"
            with urllib.request.urlopen(url, timeout=10) as response:
                if b"probe_success 1" not in response.read():
                    raise SystemExit(f"{name}: the probe of {target} did not succeed")
            results.append(measure(name, process.pid, url, args))
    finally:
        for process in (blackbox, slawatch):
            process.terminate()
            process.wait(timeout=10)
    return results


def scheduled_benchmark(workdir: Path, nginx_port: int, args) -> dict:
    targets = [{"service": f"svc{i % 100}", "url": f"http://127.0.0.1:{nginx_port}/t{i}", "module": "http_2xx",
                "interval": f"{args.interval}s"} for i in range(args.targets)]
    config = {"global": {"max_concurrent_probes": args.max_concurrent},
              "modules": {"http_2xx": {"prober": "http", "timeout": "5s", "http": {"preferred_ip_protocol": "ip4"}}},
              "targets": targets, "probe": {"allow": ["127.0.0.0/8"]},
              "tickets": {"database": str(workdir / "tickets-scheduled.db")}}
    path = workdir / "scheduled.yml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(slawatch_command(path, port, args.uvloop), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/-/healthy", timeout=120)
        # One full interval spreads the first runs, then the measured window starts.
        time.sleep(args.interval)
        before = scrape_totals(port)
        cpu_before = cpu_seconds(process.pid)
        started = time.monotonic()
        time.sleep(args.scheduled_duration)
        elapsed = time.monotonic() - started
        after = scrape_totals(port)
        cpu = cpu_seconds(process.pid) - cpu_before
        scrape_seconds, scrape_bytes = [], 0
        for _ in range(5):
            mark = time.monotonic()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as response:
                scrape_bytes = len(response.read())
            scrape_seconds.append(time.monotonic() - mark)
        due = args.targets * elapsed / args.interval
        probes = after["probes"] - before["probes"]
        return {"targets": args.targets, "interval_s": args.interval, "window_s": round(elapsed, 1),
                "probes_due": round(due), "probes_run": probes, "skipped": after["skipped"] - before["skipped"],
                "failures": after["failures"] - before["failures"],
                "on_time_share": min(1.0, (probes - (after["failures"] - before["failures"])) / due),
                "cpu_share_of_core": cpu / elapsed, "peak_rss_mib": peak_rss_mib(process.pid),
                "scrape_p50_s": sorted(scrape_seconds)[2], "scrape_bytes": scrape_bytes}
    finally:
        process.terminate()
        process.wait(timeout=30)


def scrape_totals(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as response:
        text = response.read().decode()
    totals = {"probes": 0.0, "failures": 0.0, "skipped": 0.0}
    for line in text.splitlines():
        for key, name in (("probes", "slawatch_probes_total{"), ("failures", "slawatch_probe_failures_total{"),
                          ("skipped", "slawatch_probe_skipped_total{")):
            if line.startswith(name):
                totals[key] += float(line.rsplit(" ", 1)[1])
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=20, help="seconds of wrk load per exporter")
    parser.add_argument("--connections", type=int, default=32, help="concurrent wrk connections")
    parser.add_argument("--targets", type=int, default=10000, help="scheduled-mode targets")
    parser.add_argument("--interval", type=int, default=15, help="scheduled-mode interval in seconds")
    parser.add_argument("--scheduled-duration", type=int, default=60, help="scheduled-mode window in seconds")
    parser.add_argument("--max-concurrent", type=int, default=256, help="global.max_concurrent_probes")
    parser.add_argument("--uvloop", action="store_true",
                        help="run slawatch on uvloop (default: asyncio's default loop, as in the recorded runs)")
    parser.add_argument("--skip-scheduled", action="store_true")
    args = parser.parse_args()
    for binary in ("nginx", "wrk", "taskset", "prometheus-blackbox-exporter"):
        if shutil.which(binary) is None:
            raise SystemExit(f"{binary} is not on PATH: install it (Debian packages nginx, wrk, util-linux, "
                             "prometheus-blackbox-exporter)")

    with tempfile.TemporaryDirectory(prefix="probe-bench-") as temp:
        workdir = Path(temp)
        nginx, nginx_port = start_nginx(workdir)
        try:
            report = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                                 f"Python {platform.python_version()}, {platform.platform()}",
                      "args": vars(args), "probe": probe_benchmark(workdir, nginx_port, args)}
            if not args.skip_scheduled:
                report["scheduled"] = scheduled_benchmark(workdir, nginx_port, args)
        finally:
            nginx.terminate()
            nginx.wait(timeout=10)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
