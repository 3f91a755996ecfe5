"""The exporter's aiohttp application: /probe, /metrics, ticket events, reload and health."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections import deque
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Info, disable_created_metrics
from prometheus_client.exposition import choose_encoder
from prometheus_client.aiohttp import make_aiohttp_handler

from .. import __version__, names
from ..config import Config, ConfigError, Module, check_target, load_config
from ..probers import PROBERS, ProbeResult
from ..probers.result import printable, redact_url
from ..relay import setup_relay
from ..scheduler import ProbeMetrics, Scheduler
from ..status import StatusStore, StatusTracker
from ..tickets import (EventError, SignatureError, SourceMetrics, TicketCollector, build_store, load_secret,
                       parse_event, verify_signature)
from ..tickets.webhook import (SIGNATURE_HEADER, TIMESTAMP_HEADER, ZENDESK_SIGNATURE_HEADER, ZENDESK_TIMESTAMP_HEADER,
                               verify_zendesk_signature)
from ..tickets.writer import GroupWriter
from .guard import ProbeGuard
from .status import add_status_routes, run_flusher
from .probe_output import CONTENT_TYPE as PROBE_CONTENT_TYPE
from .probe_output import render_probe_result

logger = logging.getLogger("slawatch.web")

# Seconds kept back from Prometheus's scrape timeout so the reply arrives in
# time; blackbox_exporter's default timeout_offset is the same 0.5 s.
TIMEOUT_OFFSET = 0.5
MAX_EVENT_BATCH = 5000
MAX_BODY_BYTES = 8 * 1024 * 1024
# Maximum length of a request line the server reads. aiohttp's default of 8190 bytes is
# shorter than the targets blackbox_exporter accepts (Go allows 1 MiB of headers).
MAX_REQUEST_LINE = 64 * 1024
SECRET_HEADERS = {"authorization", "proxy-authorization", "cookie", "x-api-key"}
# Label values of slawatch_probe_denied_total; ProbeGuard returns the first
# three, handle_probe adds not_configured for probe.only_configured_targets.
DENIAL_REASONS = ("not_allowed", "link_local", "unspecified", "invalid_address", "not_configured")


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

        self.probe_metrics = ProbeMetrics(self.registry, config.global_.probe_duration_buckets,
                                          config.global_.transfer_speed_buckets)
        self.scheduler: Scheduler | None = None
        self.store, self.calendars = build_store(config.tickets)
        self.ticket_sources = SourceMetrics()
        self.ticket_pollers: list[asyncio.Task] = []
        self.ticket_writer = GroupWriter(self.store)
        self.webhook_secret = load_secret(config.tickets.webhook.secret_file, config.tickets.webhook.secret_env)
        self.zendesk_secret = load_secret(config.tickets.webhook.zendesk_secret_file, None,
                                          "tickets.webhook.zendesk_secret_file")
        self.ticket_collector = TicketCollector(self.store, self.calendars, self.ticket_sources,
                                                baseline=ticket_baseline(config))
        self.registry.register(self.ticket_collector)
        self.status: StatusTracker | None = None
        if config.status.enabled:
            status_db = config.status.database_path(config.tickets.database)
            self.status = StatusTracker(config, StatusStore(status_db))
        self._status_flusher: asyncio.Task | None = None

        self.reload_success = Gauge(names.CONFIG_LAST_RELOAD_SUCCESS,
                                    "Whether the last config load or reload succeeded (1) or failed (0).",
                                    registry=self.registry)
        self.reload_time = Gauge(names.CONFIG_LAST_RELOAD_TIME, "Unix time of the last successful config load.",
                                 registry=self.registry)
        self.probe_requests = Counter("slawatch_probe_requests", "Requests to /probe, by module and outcome.",
                                      ["module", "outcome"], registry=self.registry)
        self.probe_denied = Counter("slawatch_probe_denied", "Requests to /probe denied by probe.allow, by reason.",
                                    ["reason"], registry=self.registry)
        for reason in DENIAL_REASONS:
            self.probe_denied.labels(reason)
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
        observers = [self.status.observe] if self.status is not None else []
        self.scheduler = Scheduler(self.probe_metrics, self.config, observers)
        await self.scheduler.start()
        if self.status is not None:
            self._status_flusher = asyncio.create_task(run_flusher(self.status), name="status flush")
        if self.config.tickets.sources.rt is not None:
            from ..tickets.sources.rt import RTPoller

            poller = RTPoller(self.config.tickets, self.store, self.ticket_sources)
            self.ticket_pollers.append(asyncio.create_task(poller.run()))
        if self.config.tickets.sources.jira is not None:
            from ..tickets.sources.jira import JiraPoller

            poller = JiraPoller(self.config.tickets, self.store, self.ticket_sources)
            self.ticket_pollers.append(asyncio.create_task(poller.run()))
        if self.config.tickets.sources.zammad is not None:
            from ..tickets.sources.zammad import ZammadPoller

            poller = ZammadPoller(self.config.tickets, self.store, self.ticket_sources)
            self.ticket_pollers.append(asyncio.create_task(poller.run()))
        if self.config.tickets.sources.zendesk is not None:
            from ..tickets.sources.zendesk import ZendeskPoller

            poller = ZendeskPoller(self.config.tickets, self.store, self.ticket_sources)
            self.ticket_pollers.append(asyncio.create_task(poller.run()))

    async def stop(self) -> None:
        if self.scheduler is not None:
            await self.scheduler.stop()
        if self._status_flusher is not None:
            self._status_flusher.cancel()
            await asyncio.gather(self._status_flusher, return_exceptions=True)
        if self.status is not None:
            self.status.store.close()
        for task in self.ticket_pollers:
            task.cancel()
        await asyncio.gather(*self.ticket_pollers, return_exceptions=True)
        await self.ticket_writer.close()
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
            except Exception as error:  # an unexpected bug must still count as a failed reload
                self.reload_success.set(0)
                logger.exception("Error reloading config, keeping the running config")
                return f"unexpected error while loading the config: {error!r}"

            self.config = config
            self.guard = ProbeGuard(config)
            self.ticket_collector.baseline = ticket_baseline(config)
            if self.scheduler is not None:
                self.scheduler.apply(config)
            if self.status is not None:
                self.status.apply(config)
            self.reload_success.set(1)
            self.reload_time.set(time.time())
            logger.info("Loaded config file file=%s", self.config_path or "<embedded default config>")
            return None

    def _restart_needed(self, config: Config) -> str | None:
        old = self.config
        if config.global_.probe_duration_buckets != old.global_.probe_duration_buckets:
            return "global.probe_duration_buckets changed: restart the exporter to apply new buckets"
        if config.global_.transfer_speed_buckets != old.global_.transfer_speed_buckets:
            return "global.transfer_speed_buckets changed: restart the exporter to apply new buckets"
        # The ticket store's buckets, calendars, policy and secret are fixed at start-up.
        new_tickets = config.tickets.model_dump(exclude={"channels", "priorities"})
        old_tickets = old.tickets.model_dump(exclude={"channels", "priorities"})
        changed = sorted(key for key in new_tickets if new_tickets[key] != old_tickets[key])
        if changed:
            keys = ", ".join(f"tickets.{key}" for key in changed)
            return f"{keys} changed: restart the exporter to apply it"
        if (config.status.enabled, config.status.database_path(config.tickets.database)) != (
                old.status.enabled, old.status.database_path(old.tickets.database)):
            return "status.enabled or status.database changed: restart the exporter to apply it"
        return None


def ticket_baseline(config: Config) -> list[tuple[str, str, str, str]]:
    """Return the webhook label sets of every configured channel and priority, for zero-valued series."""
    team = config.tickets.default_team
    return [("webhook", channel, priority, team)
            for channel in config.tickets.channels for priority in config.tickets.priorities]


EXPORTER = web.AppKey("exporter", Exporter)


def create_app(exporter: Exporter, middlewares: list | None = None) -> web.Application:
    """Build the aiohttp application; the scheduler runs while the app runs."""
    # The *_created series double the exposition and no blackbox dashboard uses them.
    disable_created_metrics()
    # handler_args reach every server that runs the app: cli's AppRunner and the test servers alike.
    app = web.Application(middlewares=middlewares or [], client_max_size=MAX_BODY_BYTES,
                          handler_args={"max_line_size": MAX_REQUEST_LINE})
    app[EXPORTER] = exporter

    async def run_scheduler(app: web.Application):
        await exporter.start()
        yield
        await exporter.stop()

    app.cleanup_ctx.append(run_scheduler)
    app.router.add_get("/", handle_index)
    app.router.add_get("/metrics", handle_metrics)
    app.router.add_get("/probe", handle_probe)
    app.router.add_get("/-/healthy", handle_healthy)
    app.router.add_get("/-/ready", handle_healthy)
    app.router.add_post("/-/reload", handle_reload)
    app.router.add_get("/config", handle_config)
    app.router.add_post("/api/v1/ticket-events", handle_ticket_events)
    app.router.add_post("/api/v1/ticket-events/zendesk", handle_zendesk_ticket_events)
    app.router.add_post("/api/v1/alertmanager/webhook", handle_alertmanager_webhook)
    app.router.add_get("/api/v1/alertmanager/notifications", handle_notifications)
    app.router.add_get("/runbooks/{name}", handle_runbook)
    add_status_routes(app, EXPORTER)
    setup_relay(app, exporter.registry, lambda: exporter.config)
    return app


async def handle_index(request: web.Request) -> web.Response:
    links = ["/status", "/metrics", "/probe?target=http://127.0.0.1:9090/-/healthy&module=http_2xx", "/config", "/-/healthy"]
    items = "".join(f'<li><a href="{link}">{link}</a></li>' for link in links)
    return web.Response(text=f"<!doctype html><title>slawatch</title><h1>slawatch</h1><ul>{items}</ul>",
                        content_type="text/html")


async def handle_metrics(request: web.Request) -> web.Response:
    """Serve /metrics; the ticket families take a faster formatter than prometheus_client's generic one."""
    exporter = request.app[EXPORTER]
    if "name[]" in request.query:
        return await make_aiohttp_handler(exporter.registry)(request)

    encoder, content_type = choose_encoder(",".join(request.headers.getall("Accept", [])))
    openmetrics = content_type.startswith("application/openmetrics-text")
    with exporter.ticket_collector.excluded():
        body = encoder(exporter.registry)
    tickets = exporter.ticket_collector.render(openmetrics).encode()
    if openmetrics:
        body = body.removesuffix(b"# EOF\n") + tickets + b"# EOF\n"
    else:
        body += tickets
    response = web.Response(body=body, headers={"Content-Type": content_type})
    response.enable_compression()
    return response


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
    """Replace secrets in a module's JSON form; SecretStr fields already dump as "**********"."""
    http = module.get("http", {})
    headers = http.get("headers", {})
    for name in headers:
        if name.lower() in SECRET_HEADERS:
            headers[name] = "<secret>"
    proxy = http.get("proxy_url")
    if proxy and "@" in proxy:
        scheme, _, rest = proxy.partition("://")
        http["proxy_url"] = f"{scheme}://<secret>@{rest.rpartition('@')[2]}"
    return module


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
    # As blackbox_exporter: a missing or empty module means http_2xx.
    module_name = request.query.get("module") or "http_2xx"
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

    if config.probe.only_configured_targets and target not in {t.url for t in config.targets}:
        return _deny(exporter, module_name, target, "not_configured",
                     f"{target} is not a configured target and probe.only_configured_targets is on")

    hostname = request.query.get("hostname", "")
    if hostname:
        module = with_hostname(module, hostname)
    timeout = probe_timeout(request, module.timeout)
    result = await PROBERS[module.prober](target, module, timeout, exporter.guard)
    if result.reason == "denied":
        return _deny(exporter, module_name, target, result.denied_reason or "not_allowed", result.error)
    exporter.probe_requests.labels(module_name, "success" if result.success else "failure").inc()

    location = config.global_.location if config.global_.probe_location_label else None
    text = render_probe_result(result, config.global_.location, location)
    if request.query.get("debug", "").lower() == "true":
        return _debug_response(target, module_name, module.model_dump(mode="json"), result, text)
    return web.Response(body=text.encode(), headers={"Content-Type": PROBE_CONTENT_TYPE})


def _deny(exporter: Exporter, module_name: str, target: str, reason: str, message: str) -> web.Response:
    exporter.probe_requests.labels(module_name, "denied").inc()
    exporter.probe_denied.labels(reason).inc()
    logger.warning("Denied probe target=%s reason=%s err=%s", printable(redact_url(target)), reason,
                   printable(redact_url(message)))
    return web.Response(status=403, text=f"Target denied ({reason}): {redact_url(message)}\n")


def with_hostname(module: Module, hostname: str) -> Module:
    """Return `module` with the Host header and TLS server name set to `hostname`, as blackbox's parameter.

    The http prober gets both, the tcp prober the TLS server name; other probers ignore it, as in blackbox.
    """
    if module.prober == "http":
        headers = {name: value for name, value in module.http.headers.items() if name.lower() != "host"}
        headers["Host"] = hostname
        tls = module.http.tls_config.model_copy(update={"server_name": hostname})
        return module.model_copy(update={"http": module.http.model_copy(update={"headers": headers,
                                                                                "tls_config": tls})})
    if module.prober == "tcp":
        tls = module.tcp.tls_config.model_copy(update={"server_name": hostname})
        return module.model_copy(update={"tcp": module.tcp.model_copy(update={"tls_config": tls})})
    return module


def _debug_response(target: str, module_name: str, module: dict, result: ProbeResult, metrics: str) -> web.Response:
    text = "\n".join([
        f"Logs for the probe of {printable(redact_url(target))} with module {module_name}:",
        *result.log_lines,
        "",
        "Metrics that would have been returned:",
        metrics,
        "Module configuration:",
        json.dumps(_redact_module(module), indent=2),
        "",
    ])
    return web.Response(text=text)


async def handle_zendesk_ticket_events(request: web.Request) -> web.Response:
    """Accept ticket events from a Zendesk webhook, verified with Zendesk's signature scheme."""
    exporter = request.app[EXPORTER]
    if exporter.zendesk_secret is None:
        return _json_error(404, "(route)", "Zendesk webhooks are off: set tickets.webhook.zendesk_secret_file")
    raw = await _read_events_body(request, exporter, "zendesk")
    if isinstance(raw, web.Response):
        return raw
    try:
        verify_zendesk_signature(exporter.zendesk_secret, request.headers.get(ZENDESK_TIMESTAMP_HEADER),
                                 request.headers.get(ZENDESK_SIGNATURE_HEADER), raw, time.time(),
                                 exporter.config.tickets.webhook.max_age)
    except SignatureError as error:
        exporter.ticket_sources.error("zendesk", "signature")
        logger.warning("Rejected Zendesk ticket events remote=%s err=%s", request.remote, error)
        return _json_error(401, "(signature)", str(error))
    return await _ingest_ticket_events(exporter, raw, "zendesk")


async def handle_ticket_events(request: web.Request) -> web.Response:
    exporter = request.app[EXPORTER]
    raw = await _read_events_body(request, exporter, "webhook")
    if isinstance(raw, web.Response):
        return raw
    if exporter.webhook_secret is not None:
        try:
            verify_signature(exporter.webhook_secret, request.headers.get(TIMESTAMP_HEADER),
                             request.headers.get(SIGNATURE_HEADER), raw, time.time(),
                             exporter.config.tickets.webhook.max_age)
        except SignatureError as error:
            exporter.ticket_sources.error("webhook", "signature")
            logger.warning("Rejected ticket events remote=%s err=%s", request.remote, error)
            return _json_error(401, "(signature)", str(error))
    return await _ingest_ticket_events(exporter, raw, "webhook")


async def _read_events_body(request: web.Request, exporter: Exporter, source: str) -> bytes | web.Response:
    """Return the request body, or a JSON 413 response when the body is larger than the exporter accepts."""
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        exporter.ticket_sources.error(source, "invalid")
        return _json_error(413, "(body)", f"the body is larger than {MAX_BODY_BYTES // (1024 * 1024)} MiB: send "
                                          f"the events in several requests of at most {MAX_EVENT_BATCH} events")


async def _ingest_ticket_events(exporter: Exporter, raw: bytes, source: str) -> web.Response:
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        exporter.ticket_sources.error(source, "invalid")
        return _json_error(400, "(body)", "invalid JSON: send one event object, a list, or {\"events\": [...]}")

    if isinstance(body, dict) and "events" in body and "id" not in body:
        items, prefix = body["events"], "events"
    elif isinstance(body, list):
        items, prefix = body, ""
    else:
        items, prefix = [body], None
    if not isinstance(items, list) or not items:
        exporter.ticket_sources.error(source, "invalid")
        return _json_error(400, prefix or "(body)", "expected a non-empty list of events")
    if len(items) > MAX_EVENT_BATCH:
        exporter.ticket_sources.error(source, "invalid")
        return _json_error(413, prefix or "(body)", f"{len(items)} events in one request: send at most {MAX_EVENT_BATCH}")

    config = exporter.config.tickets
    latest = time.time() + config.webhook.max_future
    events = []
    try:
        for index, item in enumerate(items):
            if prefix is None:
                item_prefix = ""
            elif prefix:
                item_prefix = f"{prefix}[{index}]."
            else:
                item_prefix = f"[{index}]."
            event = parse_event(item, config.channels, config.priorities, item_prefix, latest)
            # Events from a named route count under that source unless they name one themselves.
            events.append(event if event.source or source == "webhook" else dataclasses.replace(event, source=source))
    except EventError as error:
        exporter.ticket_sources.error(source, "invalid")
        logger.info("Rejected ticket events field=%s err=%s", error.field, error)
        return _json_error(400, error.field, str(error))

    result = await exporter.ticket_writer.ingest(events)
    exporter.ticket_sources.success(source, lag=time.time() - max(event.time for event in events))
    if result.conflict_ids:
        logger.warning("Kept the stored ticket events, different events reuse their ids source=%s ids=%s", source,
                       ",".join(result.conflict_ids[:10]))
    return web.json_response({"accepted": result.accepted, "duplicates": result.duplicates,
                              "conflicts": len(result.conflict_ids)})


def _json_error(status: int, field: str, message: str) -> web.Response:
    return web.json_response({"error": message, "field": field}, status=status)


async def handle_alertmanager_webhook(request: web.Request) -> web.Response:
    exporter = request.app[EXPORTER]
    receiver = request.query.get("receiver", "unknown")
    try:
        payload = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return web.Response(status=400, text="invalid JSON: expected an Alertmanager webhook payload\n")
    if not isinstance(payload, dict) or not isinstance(payload.get("alerts"), list):
        return web.Response(status=400, text="missing field alerts: expected an Alertmanager webhook payload\n")

    status = str(payload.get("status", "unknown"))
    alerts = [alert for alert in payload["alerts"] if isinstance(alert, dict)]
    exporter.notifications.labels(receiver, status).inc()
    exporter.recent_notifications.append({"receiver": receiver, "status": status, "received": time.time(),
                                          "alerts": alerts, "groupLabels": payload.get("groupLabels", {})})
    if exporter.status is not None:
        await asyncio.get_running_loop().run_in_executor(None, exporter.status.record_alerts, alerts)
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
