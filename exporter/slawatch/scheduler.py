"""Scheduled probes of the configured targets, feeding counters and a histogram.

SLIs come from `rate()` over the counters, so a missed scrape loses no probe.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from . import names
from .config import DEFAULT_TRANSFER_SPEED_BUCKETS, Config, Module, Target
from .probers import PROBERS, ProbeResult

logger = logging.getLogger("slawatch.scheduler")

LABELS = ("service", "module", "location")
PHASES = ("resolve", "connect", "tls", "processing", "transfer")
# Bytes per second, from 10 kB/s to 1 GB/s.

# Called with each scheduled probe's target and result, after the metrics are updated.
ProbeObserver = Callable[[Target, ProbeResult], None]


class ProbeMetrics:
    """Scheduled-probe metrics, registered on an injected registry."""

    def __init__(self, registry: CollectorRegistry, buckets: list[float],
                 transfer_speed_buckets: list[float] | None = None):
        self.buckets = list(buckets)
        # Reasons seen per target, so remove_target can drop their series.
        self._reasons: dict[tuple[str, str, str], set[str]] = {}
        self.probes = Counter(names.PROBES_TOTAL.removesuffix("_total"), "Scheduled probes run.",
                              LABELS, registry=registry)
        self.failures = Counter(names.PROBE_FAILURES_TOTAL.removesuffix("_total"), "Scheduled probes that failed.",
                                LABELS, registry=registry)
        self.skipped = Counter(names.PROBE_SKIPPED_TOTAL.removesuffix("_total"),
                               "Scheduled probes not started because the previous one was still running.",
                               LABELS, registry=registry)
        self.failure_reasons = Counter(names.PROBE_FAILURE_REASONS_TOTAL.removesuffix("_total"),
                                       "Scheduled probes that failed, by bounded failure reason.",
                                       LABELS + ("reason",), registry=registry)
        self.transfer_speed = Histogram(names.PROBE_TRANSFER_SPEED,
                                        "Response body bytes per second over the transfer phase of scheduled probes.",
                                        LABELS, buckets=transfer_speed_buckets or DEFAULT_TRANSFER_SPEED_BUCKETS,
                                        registry=registry)
        self.duration = Histogram(names.PROBE_DURATION, "Duration of scheduled probes in seconds.",
                                  LABELS, buckets=self.buckets, registry=registry)
        self.success = Gauge(names.PROBE_SUCCESS, "Whether the last scheduled probe succeeded (1) or failed (0).",
                             LABELS, registry=registry)
        self.last_run = Gauge(names.PROBE_LAST_RUN, "Unix time when the last scheduled probe finished.",
                              LABELS, registry=registry)
        self.phase = Gauge(names.PROBE_HTTP_PHASE, "Duration of each HTTP phase of the last scheduled probe.",
                           LABELS + ("phase",), registry=registry)
        self.http_responses = Counter(names.PROBE_HTTP_RESPONSES_TOTAL.removesuffix("_total"),
                                      "HTTP responses of scheduled probes by status code.",
                                      LABELS + ("code",), registry=registry)
        # Status codes seen per target, so that remove_target can drop their series.
        self._codes: dict[tuple[str, str, str], set[str]] = {}
        self.cert_expiry = Gauge(names.PROBE_SSL_EXPIRY,
                                 "Unix time when the earliest certificate of the last scheduled probe expires.",
                                 LABELS, registry=registry)

    def register_target(self, labels: tuple[str, str, str]) -> None:
        """Create the zero-valued series of a target so rate() has a starting point."""
        self.probes.labels(*labels)
        self.failures.labels(*labels)
        self.skipped.labels(*labels)
        self.duration.labels(*labels)

    def remove_target(self, labels: tuple[str, str, str]) -> None:
        for metric in (self.probes, self.failures, self.skipped, self.duration, self.success, self.last_run,
                       self.cert_expiry, self.transfer_speed):
            try:
                metric.remove(*labels)
            except KeyError:
                pass
        for phase in PHASES:
            try:
                self.phase.remove(*labels, phase)
            except KeyError:
                pass
        for reason in self._reasons.pop(labels, ()):
            self.failure_reasons.remove(*labels, reason)
        for code in self._codes.pop(labels, set()):
            self.http_responses.remove(*labels, code)

    def observe(self, labels: tuple[str, str, str], result: ProbeResult) -> None:
        self.probes.labels(*labels).inc()
        if not result.success:
            self.failures.labels(*labels).inc()
            reason = result.reason or "unknown"
            self.failure_reasons.labels(*labels, reason).inc()
            self._reasons.setdefault(labels, set()).add(reason)
        if result.transfer_rate is not None:
            self.transfer_speed.labels(*labels).observe(result.transfer_rate)
        self.duration.labels(*labels).observe(result.duration)
        self.success.labels(*labels).set(1 if result.success else 0)
        self.last_run.labels(*labels).set(time.time())
        if result.status_code:
            code = str(result.status_code)
            self.http_responses.labels(*labels, code).inc()
            self._codes.setdefault(labels, set()).add(code)
        for phase in PHASES:
            if phase in result.phases:
                self.phase.labels(*labels, phase).set(result.phases[phase])
            else:
                try:
                    self.phase.remove(*labels, phase)
                except KeyError:
                    pass
        if result.cert_expiry is not None:
            self.cert_expiry.labels(*labels).set(result.cert_expiry)


def first_run_delay(url: str, interval: float) -> float:
    """Return seconds to wait before a target's first probe, in [0, interval).

    The delay spreads targets over the interval. It is stable per URL, so a
    restart keeps the spacing, with up to 10 % random jitter on top.
    """
    offset = (zlib.crc32(url.encode()) % 1000) / 1000 * interval
    return offset * random.uniform(0.9, 1.0)


@dataclass(frozen=True)
class _Job:
    target: Target
    # The module's JSON form, so that a changed module restarts the job.
    module_key: str
    labels: tuple[str, str, str]
    module: Module = field(compare=False, hash=False)


class Scheduler:
    """Runs every configured target on its interval, with jitter and a concurrency bound.

    A probe's timeout is the module timeout, which the config loader keeps
    below the interval. When a probe is still running at its next start, the
    start is skipped and counted, so slow targets never stack up probes.
    """

    def __init__(self, metrics: ProbeMetrics, config: Config, observers: list[ProbeObserver] | None = None):
        self.metrics = metrics
        self.observers = list(observers or [])
        self._tasks: dict[_Job, asyncio.Task] = {}
        self._semaphore = asyncio.Semaphore(config.global_.max_concurrent_probes)
        self._config = config
        self._last_success: dict[tuple[str, str, str], bool] = {}

    def _jobs(self, config: Config) -> set[_Job]:
        location = config.global_.location
        return {
            _Job(target, config.modules[target.module].model_dump_json(), (target.service, target.module, location),
                 config.modules[target.module])
            for target in config.targets
        }

    async def start(self) -> None:
        self.apply(self._config)

    def apply(self, config: Config) -> None:
        """Switch to the targets of `config`, keeping jobs that did not change."""
        if config.global_.max_concurrent_probes != self._config.global_.max_concurrent_probes:
            # Probes already waiting keep the old semaphore; new starts use the new bound.
            self._semaphore = asyncio.Semaphore(config.global_.max_concurrent_probes)
        wanted = self._jobs(config)
        for job in list(self._tasks):
            if job not in wanted:
                self._tasks.pop(job).cancel()
                if not any(other.labels == job.labels for other in wanted):
                    self.metrics.remove_target(job.labels)
        for job in wanted:
            if job not in self._tasks:
                self.metrics.register_target(job.labels)
                self._tasks[job] = asyncio.create_task(self._loop(job), name=f"probe {job.target.url}")
        self._config = config
        logger.info("Scheduled probes configured targets=%d", len(self._tasks))

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _loop(self, job: _Job) -> None:
        interval = job.target.interval
        await asyncio.sleep(first_run_delay(job.target.url, interval))
        running: asyncio.Task | None = None
        next_start = time.monotonic()
        while True:
            if running is not None and not running.done():
                self.metrics.skipped.labels(*job.labels).inc()
                logger.warning("Skipped probe because the previous one is still running target=%s", job.target.url)
            else:
                running = asyncio.create_task(self._probe(job))
            next_start += interval
            await asyncio.sleep(max(0.0, next_start - time.monotonic()))

    def _log_state_change(self, job: _Job, result: ProbeResult) -> None:
        previous = self._last_success.get(job.labels)
        self._last_success[job.labels] = result.success
        if previous is None and result.success or previous == result.success:
            return
        if result.success:
            logger.info("Target recovered service=%s target=%s", job.target.service, job.target.url)
        else:
            logger.warning("Target probe failing service=%s target=%s reason=%s err=%s", job.target.service,
                           job.target.url, result.reason or "unknown", result.error)

    async def _probe(self, job: _Job) -> None:
        prober = PROBERS[job.module.prober]
        async with self._semaphore:
            try:
                result = await prober(job.target.url, job.module, job.module.timeout, None)
            except Exception:
                logger.exception("Prober raised an unexpected error target=%s", job.target.url)
                result = ProbeResult(reason="internal")
        self.metrics.observe(job.labels, result)
        self._log_state_change(job, result)
        for observer in self.observers:
            try:
                observer(job.target, result)
            except Exception:
                logger.exception("Probe observer raised an error target=%s", job.target.url)
        logger.debug("Probe finished target=%s success=%s duration_seconds=%.3f", job.target.url, result.success,
                     result.duration)
