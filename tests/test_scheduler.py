"""Scheduled probes: the concurrency bound and overruns that are counted, not stacked."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from slawatch.config import parse_config
from slawatch.scheduler import ProbeMetrics, Scheduler


async def test_concurrency_bound_and_overruns_counted():
    active = 0
    peak = 0
    connections = 0

    async def stall(reader, writer):
        nonlocal active, peak, connections
        connections += 1
        active += 1
        peak = max(peak, active)
        try:
            # Read the request and never reply. The read ends when the prober
            # drops the connection at its timeout.
            await asyncio.wait_for(reader.read(), 5)
        except (asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            active -= 1
            writer.close()

    server = await asyncio.start_server(stall, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = parse_config({
        "global": {"max_concurrent_probes": 1},
        "modules": {"slow": {"prober": "http", "timeout": "900ms"}},
        "targets": [{"service": f"s{i}", "url": f"http://127.0.0.1:{port}/{i}", "module": "slow", "interval": "1s"}
                    for i in range(3)],
    })
    registry = CollectorRegistry()
    scheduler = Scheduler(ProbeMetrics(registry, [0.5, 1.0]), config)

    await scheduler.start()
    try:
        await asyncio.sleep(4.5)
    finally:
        await scheduler.stop()
        server.close()

    def total(name: str) -> float:
        return sum(registry.get_sample_value(name, {"service": f"s{i}", "module": "slow", "location": "default"}) or 0
                   for i in range(3))

    # One probe at a time, each stopped by its 0.9 s timeout: at most about
    # five in 4.5 s, while three targets at 1 s would want about twelve.
    assert peak == 1
    assert 1 <= total("slawatch_probes_total") <= 6
    assert total("slawatch_probe_skipped_total") >= 1
    assert total("slawatch_probe_failures_total") == total("slawatch_probes_total")
    assert connections <= total("slawatch_probes_total") + 1
    reasons = registry.get_sample_value("slawatch_probe_failure_reasons_total",
                                        {"service": "s0", "module": "slow", "location": "default",
                                         "reason": "timeout"})
    assert reasons is None or reasons >= 1


def test_first_runs_spread_over_interval():
    import random

    from slawatch.scheduler import first_run_delay

    random.seed(1)
    delays = [first_run_delay(f"http://127.0.0.1:8080/t{i}", 15.0) for i in range(1000)]
    # Count targets per 1.5 s tenth of the interval.
    per_tenth = [0] * 10
    for delay in delays:
        per_tenth[int(delay // 1.5)] += 1

    assert all(0 <= delay < 15.0 for delay in delays)
    # 100 per tenth if even; the jitter moves some delays into the tenth below.
    assert min(per_tenth) >= 30
    assert max(per_tenth) <= 170

    # The same URL always lands in the same place, give or take the 10 % jitter.
    repeats = [first_run_delay("http://127.0.0.1:8080/t7", 15.0) for _ in range(20)]
    assert max(repeats) - min(repeats) <= 0.1 * max(repeats)
