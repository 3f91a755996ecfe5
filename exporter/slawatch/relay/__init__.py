"""Chat relay: Alertmanager webhook in, signed DingTalk, Feishu or WeCom robot message out.

Alertmanager posts to `POST /api/v1/relay/{kind}/{robot}`, where `robot` names
an entry under `relay.robots` in slawatch.yml. The relay renders one message
per notification in `global.locale`, cuts it to the robot's size limit, keeps
to `relay.max_messages_per_minute` per robot and posts it.

Replies to Alertmanager: 200 when the robot took the message. Alertmanager
0.25 retries 5xx replies only, so the relay returns 5xx when a retry may
succeed: a full rate limit, a robot timeout, a robot 5xx or rate-limit error
code, or an unreadable secret file. A failure that a retry would repeat gets
a 4xx: an unknown robot, a bad payload, or a message or signature that the
robot rejected.

Robot URLs and keys are secrets: logs and metrics name the robot, never its URL.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from types import ModuleType

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter
from yarl import URL

from ..config import Config, RelayRobot
from . import dingtalk, feishu, wecom
from .limiter import RateLimiter
from .message import build_message

logger = logging.getLogger("slawatch.relay")

JSON_HEADERS = {"Content-Type": "application/json; charset=utf-8"}
KINDS: dict[str, ModuleType] = {module.KIND: module for module in (dingtalk, feishu, wecom)}


class Relay:
    """Per-robot rate limits, the HTTP client and the relay's metrics.

    `get_config` returns the running config, so a reload applies to the next message.
    """

    def __init__(self, registry: CollectorRegistry, get_config: Callable[[], Config], clock=time.time):
        self.get_config = get_config
        self.clock = clock
        self.limiters: dict[str, RateLimiter] = {}
        self.session: aiohttp.ClientSession | None = None
        self.messages = Counter(
            "slawatch_relay_messages", "Chat relay notifications by robot, kind and outcome "
            "(sent, rate_limited, retryable_error, rejected, bad_request).",
            ["robot", "kind", "outcome"], registry=registry)
        self.truncated = Counter(
            "slawatch_relay_truncated_messages", "Chat relay messages shortened to fit the robot's size limit.",
            ["robot", "kind"], registry=registry)

    def limiter(self, name: str, limit: int) -> RateLimiter:
        limiter = self.limiters.get(name)
        if limiter is None or limiter.limit != limit:
            previous = limiter.sent if limiter else []
            limiter = RateLimiter(limit)
            limiter.sent.extend(previous)
            self.limiters[name] = limiter
        return limiter

    async def start(self) -> None:
        self.session = aiohttp.ClientSession()

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()


def read_secrets(robot: RelayRobot) -> dict[str, str]:
    """Read the robot's secret files; raise OSError or ValueError naming the file."""
    secrets = {}
    for key, path in robot.secret_paths().items():
        with open(path, encoding="utf-8") as file:
            value = file.read().strip()
        if not value:
            raise ValueError(f"{key} {path} is empty")
        secrets[key] = value
    secrets["url"] = robot.url
    return secrets


def _reply(status: int, text: str, headers: dict | None = None) -> web.Response:
    return web.Response(status=status, text=text + "\n", headers=headers)


async def handle_relay(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    running = relay.get_config()
    config = running.relay
    kind, name = request.match_info["kind"], request.match_info["robot"]

    module = KINDS.get(kind)
    if module is None:
        return _reply(404, f"unknown chat kind {kind!r}: use one of {sorted(KINDS)}")
    robot = config.robots.get(name)
    if robot is None:
        return _reply(404, f"unknown robot {name!r}: add it under relay.robots in the slawatch config")
    if robot.kind != kind:
        return _reply(404, f"robot {name!r} is a {robot.kind} robot: post to /api/v1/relay/{robot.kind}/{name}")

    try:
        payload = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        relay.messages.labels(name, kind, "bad_request").inc()
        return _reply(400, "invalid JSON: expected an Alertmanager webhook payload")
    if not isinstance(payload, dict) or not isinstance(payload.get("alerts"), list):
        relay.messages.labels(name, kind, "bad_request").inc()
        return _reply(400, "missing field alerts: expected an Alertmanager webhook payload")

    locale = running.global_.locale
    try:
        message = build_message(payload, locale, module.MARKUP, lambda title, text: module.fits(title, text, locale))
    except ValueError as error:
        relay.messages.labels(name, kind, "rejected").inc()
        return _reply(422, str(error))
    if message.truncated:
        relay.truncated.labels(name, kind).inc()

    try:
        secrets = read_secrets(robot)
    except (OSError, ValueError) as error:
        relay.messages.labels(name, kind, "retryable_error").inc()
        logger.error("Error reading relay robot secrets robot=%s err=%s", name, error)
        return _reply(500, f"cannot read the secrets of robot {name!r}: check its files and the exporter log")

    limiter = relay.limiter(name, config.max_messages_per_minute)
    if not await limiter.acquire(config.queue_wait):
        relay.messages.labels(name, kind, "rate_limited").inc()
        wait = max(1, round(limiter.retry_after()))
        logger.warning("Relay rate limit reached, deferring to Alertmanager's retry robot=%s limit=%d/min retry_after=%ds",
                       name, config.max_messages_per_minute, wait)
        return _reply(503, f"robot {name!r} sent {config.max_messages_per_minute} messages in the last minute: "
                           f"retry in {wait}s", headers={"Retry-After": str(wait)})

    robot_request = module.build_request(secrets, message.title, message.text, locale, relay.clock())
    assert relay.session is not None
    try:
        # UTF-8 rather than \u escapes, because the size limits count the bytes sent.
        data = json.dumps(robot_request.body, ensure_ascii=False).encode("utf-8")
        async with relay.session.post(URL(robot_request.url, encoded=True), data=data, headers=JSON_HEADERS,
                                      timeout=aiohttp.ClientTimeout(total=config.timeout)) as response:
            status = response.status
            try:
                data = await response.json(content_type=None)
            except (json.JSONDecodeError, UnicodeDecodeError):
                data = None
    except (aiohttp.ClientError, asyncio.TimeoutError) as error:
        # str(error) can contain the URL and its key, so only the type is logged.
        relay.messages.labels(name, kind, "retryable_error").inc()
        logger.error("Error posting to chat robot robot=%s kind=%s err=%s", name, kind, type(error).__name__)
        return _reply(502, f"robot {name!r} failed: {type(error).__name__}")

    outcome = module.read(status, data)
    if outcome.delivered:
        relay.messages.labels(name, kind, "sent").inc()
        logger.info("Relayed notification robot=%s kind=%s status=%s alerts=%d omitted=%d", name, kind,
                    payload.get("status"), len(payload["alerts"]), message.omitted)
        return _reply(200, "ok")
    if outcome.retry:
        relay.messages.labels(name, kind, "retryable_error").inc()
        logger.error("Chat robot failed, Alertmanager will retry robot=%s kind=%s code=%s detail=%s",
                     name, kind, outcome.code, outcome.detail)
        return _reply(502, f"robot {name!r} failed with {outcome.code}: {outcome.detail}")
    relay.messages.labels(name, kind, "rejected").inc()
    logger.error("Chat robot rejected the message robot=%s kind=%s code=%s detail=%s",
                 name, kind, outcome.code, outcome.detail)
    return _reply(422, f"robot {name!r} rejected the message with {outcome.code}: {outcome.detail}")


RELAY = web.AppKey("relay", Relay)


def setup_relay(app: web.Application, registry: CollectorRegistry, get_config: Callable[[], Config]) -> None:
    """Add the relay routes and its HTTP client to `app`."""
    relay = Relay(registry, get_config)
    app[RELAY] = relay

    async def run_client(app: web.Application):
        await relay.start()
        yield
        await relay.stop()

    app.cleanup_ctx.append(run_client)
    app.router.add_post("/api/v1/relay/{kind}/{robot}", handle_relay)
