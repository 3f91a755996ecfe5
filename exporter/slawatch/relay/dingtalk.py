"""DingTalk custom robot: markdown messages, signed in the URL.

Signing, as DingTalk documents it for custom robots with "加签" turned on:
the URL gets `timestamp`, the current time in milliseconds, and `sign`, the
URL-encoded Base64 of HMAC-SHA256 keyed with the secret over
"<timestamp>\\n<secret>". DingTalk rejects a timestamp more than an hour off
with errcode 310000.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from urllib.parse import urlencode

from .message import MARKDOWN
from .robot import Outcome, RobotRequest, read_reply

KIND = "dingtalk"
MARKUP = MARKDOWN
# DingTalk rejects a larger request body with errcode 460101
# "message too long, exceed 20000 bytes".
MAX_BODY_BYTES = 20000
# 130101: "send too fast, exceed 20 times per minute". DingTalk then blocks
# the robot for 10 minutes.
RATE_LIMIT_CODES = frozenset({130101})


def sign(secret: str, timestamp_ms: int) -> str:
    """Return the Base64 signature, before URL encoding."""
    digest = hmac.new(secret.encode("utf-8"), f"{timestamp_ms}\n{secret}".encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def body(title: str, text: str, locale: str) -> dict:
    # DingTalk markdown starts a new line only after two trailing spaces.
    return {"msgtype": "markdown", "markdown": {"title": title, "text": f"### {title}\n\n{text}".replace("\n", "  \n")}}


def fits(title: str, text: str, locale: str) -> bool:
    return len(json.dumps(body(title, text, locale), ensure_ascii=False).encode("utf-8")) <= MAX_BODY_BYTES


def build_request(secrets: dict[str, str], title: str, text: str, locale: str, now: float) -> RobotRequest:
    url = secrets["url_file"]
    secret = secrets.get("secret_file")
    if secret:
        timestamp = int(now * 1000)
        separator = "&" if "?" in url else "?"
        url = f"{url}{separator}{urlencode({'timestamp': timestamp, 'sign': sign(secret, timestamp)})}"
    return RobotRequest(url, body(title, text, locale))


def read(status: int, data: object) -> Outcome:
    return read_reply(status, data, "errcode", "errmsg", RATE_LIMIT_CODES)
