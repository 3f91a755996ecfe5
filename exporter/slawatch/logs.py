"""Log formatters: one logfmt or JSON record per line.

Messages follow the form "Capitalised phrase key=value ...". The formatters
keep the whole message in `msg`, quoted and escaped, so every line parses
with standard logfmt and JSON tools.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _quote(value: str) -> str:
    if value and all(c.isalnum() or c in "-._:/@" for c in value):
        return value
    return json.dumps(value, ensure_ascii=False)


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = {"ts": _timestamp(record), "level": record.levelname.lower(), "logger": record.name,
                  "msg": record.getMessage()}
        if record.exc_info:
            fields["exc"] = self.formatException(record.exc_info)
        return " ".join(f"{key}={_quote(value)}" for key, value in fields.items())


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = {"ts": _timestamp(record), "level": record.levelname.lower(), "logger": record.name,
                  "msg": record.getMessage()}
        if record.exc_info:
            fields["exc"] = self.formatException(record.exc_info)
        return json.dumps(fields, ensure_ascii=False)


def setup_logging(level: str, log_format: str) -> None:
    """Send the slawatch logs to stderr in `log_format` ("logfmt" or "json") at `level`."""
    handler = logging.StreamHandler()
    handler.setFormatter(JSONFormatter() if log_format == "json" else LogfmtFormatter())
    levels = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}
    logging.basicConfig(level=levels[level], handlers=[handler], force=True)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("mail.log").setLevel(logging.WARNING)
