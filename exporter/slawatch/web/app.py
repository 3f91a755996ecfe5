"""The exporter's aiohttp application: /probe, /metrics, ticket events, reload and health."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Info, disable_created_metrics
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .. import __version__, names
from ..config import Config, ConfigError, check_target, load_config
from ..probers import PROBERS, ProbeResult
from ..relay import setup_relay
from ..scheduler import ProbeMetrics, Scheduler
from ..tickets import EventError, TicketCollector, TicketStore, parse_event
from .guard import ProbeGuard

logger = logging.getLogger("slawatch.web")

# Seconds kept back from Prometheus's scrape timeout so the reply arrives in
# time; blackbox_exporter's default timeout_offset is the same 0.5 s.
TIMEOUT_OFFSET = 0.5
MAX_EVENT_BATCH = 5000
MAX_BODY_BYTES = 8 * 1024 * 1024
SECRET_HEADERS = {"authorization", "proxy-authorization", "cookie", "x-api-key"}


class Exporter:
    """The running exporter's state: config, registry, scheduler and ticket store.

    Usage:

        exporter = Exporter(load_config(path), config_path=path)
        web.run_app(create_app(exporter))
    """

    def __init__(self, config: Config, config_path: str | None = None, registry: CollectorRegistry | None = None,
                 runbooks_dir: Path | None = None):
        self.config = config
        self.config_path = config_path
        self.registry = registry if registry is not None else CollectorRegistry()
        self.runbooks_dir = runbooks_dir
        self.guard = ProbeGuard(config)

        self.probe_metrics = ProbeMetrics(self.registry, config.global_.probe_duration_buckets)
        self.scheduler: Scheduler | None = None
        self.store = TicketStore(config.tickets.database, config.tickets.first_response_buckets)
        self.ticket_collector = TicketCollector(self.store, config.tickets.channels, config.tickets.priorities)
        self.registry.register(self.ticket_collector)

        self.reload_success = Gauge(names.CONFIG_LAST_RELOAD_SUCCESS,
                                    "Whether the last config load or reload succeeded (1) or failed (0).",
                                    registry=self.registry)
        self.reload_time = Gauge(names.CONFIG_LAST_RELOAD_TIME, "Unix time of the last successful config load.",
                                 registry=self.registry)
        self.probe_requests = Counter("slawatch_probe_requests", "Requests to /probe, by module and outcome.",
                                      ["module", "outcome"], registry=self.registry)
        self.notifications = Counter("slawatch_alertmanager_notifications",
                                     "Alertmanager webhook notifications received, by receiver and status.",
                                     ["receiver", "status"], registry=self.registry)
        Info(names.BUILD_INFO.removesuffix("_info"), "slawatch version.",
             registry=self.registry).info({"version": __version__})
        self.recent_notifications: deque[dict] = deque(maxlen=100)
        self.reload_success.set(1)
        self.reload_time.set(time.time())
        self._reload_lock = asyncio.Lock()

    async def start(self) -> None:
        self.scheduler = Scheduler(self.probe_metrics, self.config)
        await self.scheduler.start()

    async def stop(self) -> None:
        if self.scheduler is not None:
            await self.scheduler.stop()
        self.store.close()

    async def reload(self) -> str | None:
        """Reload the config file; return the error and keep the running config if it is invalid."""
        async with self._reload_lock:
            try:
                config = load_config(self.config_path)
                problem = self._restart_needed(config)
                if problem:
                    raise ConfigError(self.config_path or "<embedded default config>", [problem])
            except ConfigError as error:
                self.reload_success.set(0)
                logger.error("Error reloading config, keeping the running config err=%s", error)
                return str(error)

            self.config = config
            self.guard = ProbeGuard(config)
            self.ticket_collector.channels = config.tickets.channels
            self.ticket_collector.priorities = config.tickets.priorities
            if self.scheduler is not None:
                self.scheduler.apply(config)
            self.reload_success.set(1)
            self.reload_time.set(time.time())
            logger.info("Loaded config file file=%s", self.config_path or "<embedded default config>")
            return None

    def _restart_needed(self, config: Config) -> str | None:
        old = self.config
        if config.global_.probe_duration_buckets != old.global_.probe_duration_buckets:
            return "global.probe_duration_buckets changed: restart the exporter to apply new buckets"
        if config.tickets.first_response_buckets != old.tickets.first_response_buckets:
            return "tickets.first_response_buckets changed: restart the exporter to apply new buckets"
        if config.tickets.database != old.tickets.database:
            return "tickets.database changed: restart the exporter to open another database"
        return None


EXPORTER = web.AppKey("exporter", Exporter)


def create_app(exporter: Exporter, middlewares: list | None = None) -> web.Application:
    """Build the aiohttp application; the scheduler runs while the app runs."""
    # The *_created series double the exposition and no blackbox dashboard uses them.
    disable_created_metrics()
    app = web.Application(middlewares=middlewares or [], client_max_size=MAX_BODY_BYTES)
    app[EXPORTER] = exporter

    async def run_scheduler(app: web.Application):
        await exporter.start()
        yield
        await exporter.stop()

    app.cleanup_ctx.append(run_scheduler)
    app.router.add_get("/", handle_index)
    app.router.add_get("/metrics", make_aiohttp_handler(exporter.registry))
    app.router.add_get("/probe", handle_probe)
    app.router.add_get("/-/healthy", handle_healthy)
    app.router.add_get("/-/ready", handle_healthy)
    app.router.add_post("/-/reload", handle_reload)
    app.router.add_get("/config", handle_config)
    app.router.add_post("/api/v1/ticket-events", handle_ticket_events)
    app.router.add_post("/api/v1/alertmanager/webhook", handle_alertmanager_webhook)
    app.router.add_get("/api/v1/alertmanager/notifications", handle_notifications)
    app.router.add_get("/runbooks/{name}", handle_runbook)
    setup_relay(app, exporter.registry, lambda: exporter.config)
    return app


async def handle_index(request: web.Request) -> web.Response:
    links = ["/metrics", "/probe?target=http://127.0.0.1:9090/-/healthy&module=http_2xx", "/config", "/-/healthy"]
    items = "".join(f'<li><a href="{link}">{link}</a></li>' for link in links)
    return web.Response(text=f"<!doctype html><title>slawatch</title><h1>slawatch</h1><ul>{items}</ul>",
                        content_type="text/html")


async def handle_healthy(request: web.Request) -> web.Response:
    return web.Response(text="Healthy\n")


async def handle_reload(request: web.Request) -> web.Response:
    error = await request.app[EXPORTER].reload()
    if error:
        return web.Response(status=500, text=f"failed to reload config: {error}\n")
    return web.Response(text="Config reloaded\n")


async def handle_config(request: web.Request) -> web.Response:
    config = request.app[EXPORTER].config
    data = config.model_dump(mode="json", by_alias=True)
    for module in data.get("modules", {}).values():
        _redact_module(module)
    return web.Response(text=json.dumps(data, indent=2, ensure_ascii=False) + "\n", content_type="application/json")


def _redact_module(module: dict) -> dict:
    headers = module.get("http", {}).get("headers", {})
    for name in headers:
        if name.lower() in SECRET_HEADERS:
            headers[name] = "<secret>"
    return module


class _ResultCollector(Collector):
    def __init__(self, result: ProbeResult):
        self.result = result

    def collect(self):
        for gauge in self.result.gauges.values():
            label_names = sorted({key for labels in gauge.samples for key, _ in labels})
            family = GaugeMetricFamily(gauge.name, gauge.help, labels=label_names)
            for labels, value in gauge.samples.items():
                values = dict(labels)
                family.add_metric([values.get(name, "") for name in label_names], value)
            yield family
        yield GaugeMetricFamily("probe_duration_seconds", "Returns how long the probe took to complete in seconds",
                                value=self.result.duration)
        yield GaugeMetricFamily("probe_success", "Displays whether or not the probe was a success",
                                value=1 if self.result.success else 0)


def probe_timeout(request: web.Request, module_timeout: float) -> float:
    """Return the probe deadline: the scrape timeout less an offset, capped by the module timeout."""
    header = request.headers.get("X-Prometheus-Scrape-Timeout-Seconds")
    if not header:
        return module_timeout
    try:
        scrape_timeout = float(header)
    except ValueError:
        return module_timeout
    if scrape_timeout <= 0:
        return module_timeout
    available = scrape_timeout - TIMEOUT_OFFSET if scrape_timeout > 2 * TIMEOUT_OFFSET else scrape_timeout / 2
    return min(module_timeout, available)


async def handle_probe(request: web.Request) -> web.Response:
    exporter = request.app[EXPORTER]
    config = exporter.config
    module_name = request.query.get("module", "http_2xx")
    module = config.modules.get(module_name)
    if module is None:
        exporter.probe_requests.labels("unknown", "bad_request").inc()
        return web.Response(status=400, text=f'Unknown module "{module_name}": use one of {sorted(config.modules)}\n')

    target = request.query.get("target", "")
    if not target:
        exporter.probe_requests.labels(module_name, "bad_request").inc()
        return web.Response(status=400, text="Target parameter is missing: add ?target=<url or host:port>\n")
    problem = check_target(target, module.prober)
    if problem:
        exporter.probe_requests.labels(module_name, "bad_request").inc()
        return web.Response(status=400, text=f"Invalid target: {problem}\n")

    timeout = probe_timeout(request, module.timeout)
    result = await PROBERS[module.prober](target, module, timeout, exporter.guard)
    if result.reason == "denied":
        exporter.probe_requests.labels(module_name, "denied").inc()
        logger.warning("Denied probe target=%s reason=%s", target, result.error)
        return web.Response(status=403, text=f"Target denied: {result.error}\n")
    exporter.probe_requests.labels(module_name, "success" if result.success else "failure").inc()

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ResultCollector(result))
    if request.query.get("debug", "").lower() == "true":
        return _debug_response(target, module_name, module.model_dump(mode="json"), result, registry)
    return await make_aiohttp_handler(registry, disable_compression=True)(request)


def _debug_response(target: str, module_name: str, module: dict, result: ProbeResult,
                    registry: CollectorRegistry) -> web.Response:
    from prometheus_client import generate_latest

    text = "\n".join([
        f"Logs for the probe of {target} with module {module_name}:",
        *result.log_lines,
        "",
        "Metrics that would have been returned:",
        generate_latest(registry).decode(),
        "Module configuration:",
        json.dumps(_redact_module(module), indent=2),
        "",
    ])
    return web.Response(text=text)


async def handle_ticket_events(request: web.Request) -> web.Response:
    exporter = request.app[EXPORTER]
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _json_error(400, "(body)", "invalid JSON: send one event object, a list, or {\"events\": [...]}")

    if isinstance(body, dict) and "events" in body and "id" not in body:
        items, prefix = body["events"], "events"
    elif isinstance(body, list):
        items, prefix = body, ""
    else:
        items, prefix = [body], None
    if not isinstance(items, list) or not items:
        return _json_error(400, prefix or "(body)", "expected a non-empty list of events")
    if len(items) > MAX_EVENT_BATCH:
        return _json_error(413, prefix or "(body)", f"{len(items)} events in one request: send at most {MAX_EVENT_BATCH}")

    config = exporter.config.tickets
    events = []
    try:
        for index, item in enumerate(items):
            item_prefix = "" if prefix is None else f"{prefix}[{index}]." if prefix else f"[{index}]."
            events.append(parse_event(item, config.channels, config.priorities, item_prefix))
    except EventError as error:
        logger.info("Rejected ticket events field=%s err=%s", error.field, error)
        return _json_error(400, error.field, str(error))

    result = await asyncio.get_running_loop().run_in_executor(None, exporter.store.ingest, events)
    return web.json_response({"accepted": result.accepted, "duplicates": result.duplicates})


def _json_error(status: int, field: str, message: str) -> web.Response:
    return web.json_response({"error": message, "field": field}, status=status)


async def handle_alertmanager_webhook(request: web.Request) -> web.Response:
    exporter = request.app[EXPORTER]
    receiver = request.query.get("receiver", "unknown")
    try:
        payload = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return web.Response(status=400, text="invalid JSON: expected an Alertmanager webhook payload\n")
    if not isinstance(payload, dict) or not isinstance(payload.get("alerts"), list):
        return web.Response(status=400, text="missing field alerts: expected an Alertmanager webhook payload\n")

    status = str(payload.get("status", "unknown"))
    alerts = [alert for alert in payload["alerts"] if isinstance(alert, dict)]
    exporter.notifications.labels(receiver, status).inc()
    exporter.recent_notifications.append({"receiver": receiver, "status": status, "received": time.time(),
                                          "alerts": alerts, "groupLabels": payload.get("groupLabels", {})})
    logger.info("Received Alertmanager notification receiver=%s status=%s alerts=%s", receiver, status,
                ",".join(str(a.get("labels", {}).get("alertname", "")) for a in alerts))
    return web.Response(text="ok\n")


async def handle_notifications(request: web.Request) -> web.Response:
    return web.json_response(list(request.app[EXPORTER].recent_notifications))


async def handle_runbook(request: web.Request) -> web.Response:
    runbooks = request.app[EXPORTER].runbooks_dir
    name = request.match_info["name"]
    if runbooks is None or "/" in name or name.startswith(".") or not name.endswith(".md"):
        raise web.HTTPNotFound(text="runbook not found\n")
    path = runbooks / name
    if not path.is_file():
        raise web.HTTPNotFound(text=f"runbook {name} not found\n")
    return web.Response(text=path.read_text(encoding="utf-8"), content_type="text/markdown", charset="utf-8")
