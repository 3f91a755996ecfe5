"""Local stand-ins for the DingTalk, Feishu and WeCom robot webhooks.

Each one checks the request the way the vendor documents it: access token or
key, signature, timestamp within an hour, size limit and 20 messages a
minute. The replies use the vendor's JSON fields, errcode/errmsg for DingTalk
and WeCom and code/msg/data for Feishu, with error texts those services
return.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections import deque
from dataclasses import dataclass, field

from aiohttp import web

TOKEN = "robot-token-0f3a9c"
SECRET = "SECrobot-signing-secret-7d2e"
WECOM_KEY = "6c1f1b2e-0000-4bc4-97a0-0ec2f1a5aaaa"


@dataclass
class Received:
    kind: str
    body: dict
    size: int


@dataclass
class FakeRobots:
    """One aiohttp app that serves all three robot APIs."""

    # How the robots reply: "ok", "http500", "hang" or "ratelimit".
    mode: str = "ok"
    per_minute: int = 20
    messages: list[Received] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    sent_times: dict[str, deque] = field(default_factory=dict)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/robot/send", self.dingtalk)
        app.router.add_post("/open-apis/bot/v2/hook/{token}", self.feishu)
        app.router.add_post("/cgi-bin/webhook/send", self.wecom)
        return app

    def of_kind(self, kind: str) -> list[Received]:
        return [message for message in self.messages if message.kind == kind]

    async def _forced(self) -> web.Response | None:
        if self.mode == "http500":
            return web.Response(status=500, text="Internal Server Error")
        if self.mode == "hang":
            await asyncio.sleep(30)
        return None

    def _over_rate(self, kind: str) -> bool:
        now = time.monotonic()
        sent = self.sent_times.setdefault(kind, deque())
        while sent and sent[0] <= now - 60:
            sent.popleft()
        if self.mode == "ratelimit" or len(sent) >= self.per_minute:
            return True
        sent.append(now)
        return False

    def _reject(self, kind: str, reason: str, reply: dict, status: int = 200) -> web.Response:
        self.rejected.append((kind, reason))
        return web.json_response(reply, status=status)

    async def dingtalk(self, request: web.Request) -> web.Response:
        forced = await self._forced()
        if forced:
            return forced
        raw = await request.read()
        if request.query.get("access_token") != TOKEN:
            return self._reject("dingtalk", "token", {"errcode": 300001, "errmsg": "token is not exist"})
        timestamp, sign = request.query.get("timestamp", ""), request.query.get("sign", "")
        if not timestamp.isdigit() or abs(int(timestamp) - time.time() * 1000) > 3600 * 1000:
            return self._reject("dingtalk", "timestamp", {"errcode": 310000, "errmsg": "invalid timestamp"})
        digest = hmac.new(SECRET.encode(), f"{timestamp}\n{SECRET}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(base64.b64encode(digest).decode(), sign):
            return self._reject("dingtalk", "sign", {"errcode": 310000, "errmsg": "sign not match"})
        if len(raw) > 20000:
            return self._reject("dingtalk", "size",
                                {"errcode": 460101, "errmsg": "message too long, exceed 20000 bytes"})
        if self._over_rate("dingtalk"):
            return self._reject("dingtalk", "rate",
                                {"errcode": 130101, "errmsg": "send too fast, exceed 20 times per minute"})
        self.messages.append(Received("dingtalk", json.loads(raw), len(raw)))
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    async def feishu(self, request: web.Request) -> web.Response:
        forced = await self._forced()
        if forced:
            return forced
        raw = await request.read()
        if request.match_info["token"] != TOKEN:
            return self._reject("feishu", "token", {"code": 19001, "data": {}, "msg": "param invalid: incoming webhook access token invalid"}, 400)
        body = json.loads(raw)
        timestamp = str(body.get("timestamp", ""))
        key = f"{timestamp}\n{SECRET}".encode()
        expected = base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()
        fresh = timestamp.isdigit() and abs(int(timestamp) - time.time()) <= 3600
        if not fresh or not hmac.compare_digest(expected, str(body.get("sign", ""))):
            return self._reject("feishu", "sign", {
                "code": 19021, "data": {},
                "msg": "sign match fail or timestamp is not within one hour from current time"})
        if len(raw) > 20 * 1024:
            return self._reject("feishu", "size", {"code": 9499, "data": {}, "msg": "Bad Request"}, 400)
        if self._over_rate("feishu"):
            return self._reject("feishu", "rate", {"code": 11232, "data": {}, "msg": "frequency limited"})
        self.messages.append(Received("feishu", body, len(raw)))
        return web.json_response({"StatusCode": 0, "StatusMessage": "success", "code": 0, "data": {},
                                  "msg": "success"})

    async def wecom(self, request: web.Request) -> web.Response:
        forced = await self._forced()
        if forced:
            return forced
        raw = await request.read()
        if request.query.get("key") != WECOM_KEY:
            return self._reject("wecom", "key", {"errcode": 93000, "errmsg": "invalid webhook url"})
        body = json.loads(raw)
        content = body.get("markdown", {}).get("content", "")
        if len(content.encode("utf-8")) > 4096:
            return self._reject("wecom", "size", {
                "errcode": 40058, "errmsg": "markdown.content exceed max length 4096. invalid Request Parameter"})
        if self._over_rate("wecom"):
            return self._reject("wecom", "rate", {"errcode": 45009, "errmsg": "api freq out of limit"})
        self.messages.append(Received("wecom", body, len(raw)))
        return web.json_response({"errcode": 0, "errmsg": "ok"})


def write_robot_secrets(folder, base_url: str, secret: str = SECRET) -> dict:
    """Write secret files for one robot of each kind; return the relay.robots config section."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "dingtalk-url": f"{base_url}/robot/send?access_token={TOKEN}\n",
        "feishu-url": f"{base_url}/open-apis/bot/v2/hook/{TOKEN}\n",
        "signing-secret": secret + "\n",
        "wecom-key": WECOM_KEY + "\n",
    }
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return {
        "support-dingtalk": {"kind": "dingtalk", "url_file": str(folder / "dingtalk-url"),
                             "secret_file": str(folder / "signing-secret")},
        "support-feishu": {"kind": "feishu", "url_file": str(folder / "feishu-url"),
                           "secret_file": str(folder / "signing-secret")},
        "support-wecom": {"kind": "wecom", "key_file": str(folder / "wecom-key"),
                          "url": f"{base_url}/cgi-bin/webhook/send"},
    }


class ThreadedServer:
    """Serve an aiohttp app on 127.0.0.1 from a background thread, for tests that block."""

    def __init__(self, app: web.Application, port: int):
        import threading

        self.app = app
        self.port = port
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=10)

    async def _start(self) -> None:
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"
