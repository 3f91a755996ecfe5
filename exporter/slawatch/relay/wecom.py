"""WeCom (WeChat Work) group robot: markdown messages, the key in the URL.

WeCom replies HTTP 200 with a non-zero errcode for most errors, so the reply
body decides the outcome, not the status.
"""

from __future__ import annotations

from urllib.parse import urlencode

from .message import MARKDOWN
from .robot import Outcome, RobotRequest, read_reply

KIND = "wecom"
MARKUP = MARKDOWN
# markdown.content may hold at most 4,096 bytes of UTF-8; WeCom rejects more
# with errcode 40058.
MAX_CONTENT_BYTES = 4096
# 45009: the API call frequency limit was hit (20 messages a minute per robot).
RATE_LIMIT_CODES = frozenset({45009})


def content(title: str, text: str) -> str:
    return f"**{title}**\n\n{text}"


def body(title: str, text: str, locale: str) -> dict:
    return {"msgtype": "markdown", "markdown": {"content": content(title, text)}}


def fits(title: str, text: str, locale: str) -> bool:
    return len(content(title, text).encode("utf-8")) <= MAX_CONTENT_BYTES


def build_request(secrets: dict[str, str], title: str, text: str, locale: str, now: float) -> RobotRequest:
    """Build the request to `secrets["url"]`, the webhook address, with the key from key_file."""
    return RobotRequest(f"{secrets['url']}?{urlencode({'key': secrets['key_file']})}", body(title, text, locale))


def read(status: int, data: object) -> Outcome:
    return read_reply(status, data, "errcode", "errmsg", RATE_LIMIT_CODES)
