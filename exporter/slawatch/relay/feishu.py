"""Feishu (Lark) custom bot: rich-text "post" messages, signed in the body.

Signing, as Feishu documents it for custom bots with signature verification
turned on: the body gets `timestamp`, the current time in seconds as a
string, and `sign`, the Base64 of HMAC-SHA256 keyed with
"<timestamp>\\n<secret>" over an empty message. Feishu rejects a mismatch or
a timestamp more than an hour off with code 19021.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

from .message import PLAIN
from .robot import Outcome, RobotRequest, read_reply

KIND = "feishu"
MARKUP = PLAIN
# Feishu documents a 20 KB limit on the request body. 20,000 bytes stays
# within it whether KB means 1,000 or 1,024 bytes.
MAX_BODY_BYTES = 20000
# 11232: the bot's frequency limit (100 a minute, 5 a second) was hit.
RATE_LIMIT_CODES = frozenset({11232})
LANGUAGES = {"en": "en_us", "zh-CN": "zh_cn"}
# Timestamp and sign fields of maximum length, counted when checking the size limit.
SIGNATURE_FIELDS = {"timestamp": "1" * 10, "sign": "A" * 44}


def sign(secret: str, timestamp: int) -> str:
    key = f"{timestamp}\n{secret}".encode("utf-8")
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode("ascii")


def body(title: str, text: str, locale: str) -> dict:
    paragraphs = [[{"tag": "text", "text": line}] for line in text.split("\n")]
    post = {LANGUAGES.get(locale, "en_us"): {"title": title, "content": paragraphs}}
    return {"msg_type": "post", "content": {"post": post}}


def fits(title: str, text: str, locale: str) -> bool:
    signed = {**SIGNATURE_FIELDS, **body(title, text, locale)}
    return len(json.dumps(signed, ensure_ascii=False).encode("utf-8")) <= MAX_BODY_BYTES


def build_request(secrets: dict[str, str], title: str, text: str, locale: str, now: float) -> RobotRequest:
    message = body(title, text, locale)
    secret = secrets.get("secret_file")
    if secret:
        timestamp = int(now)
        message = {"timestamp": str(timestamp), "sign": sign(secret, timestamp), **message}
    return RobotRequest(secrets["url_file"], message)


def read(status: int, data: object) -> Outcome:
    return read_reply(status, data, "code", "msg", RATE_LIMIT_CODES)
