"""HMAC-SHA256 signatures on ticket webhooks.

The sender computes `hex(HMAC-SHA256(secret, timestamp + "." + body))` over
the raw request body and sends it with the Unix time it used:

    X-Slawatch-Timestamp: 1764842100
    X-Slawatch-Signature: sha256=5d41402abc4b2a76b9719d911017c592...

A request whose timestamp is more than `max_age` seconds away from the
receiver's clock is rejected, so a captured request cannot be replayed later.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from datetime import datetime
from pathlib import Path

TIMESTAMP_HEADER = "X-Slawatch-Timestamp"
SIGNATURE_HEADER = "X-Slawatch-Signature"
# Zendesk signs webhooks as base64(HMAC-SHA256(secret, timestamp + body)), with no separator
# (developer.zendesk.com/documentation/webhooks/verifying/).
ZENDESK_SIGNATURE_HEADER = "X-Zendesk-Webhook-Signature"
ZENDESK_TIMESTAMP_HEADER = "X-Zendesk-Webhook-Signature-Timestamp"


class SignatureError(ValueError):
    """A missing, invalid or stale webhook signature."""


def load_secret(secret_file: str | None, secret_env: str | None,
                file_key: str = "tickets.webhook.secret_file") -> bytes | None:
    """Read the shared secret from a file or an environment variable; None when neither is configured.

    Raises ValueError, starting with the config key, when the file cannot be read, the variable
    is not set, or the secret is empty. `file_key` names the config key that contains `secret_file`.
    """
    if secret_file:
        try:
            secret = Path(secret_file).read_bytes().strip()
        except OSError as error:
            raise ValueError(f"{file_key}: cannot read the webhook secret file {secret_file}: {error.strerror}: "
                             "check the path and the file's permissions") from None
        if not secret:
            raise ValueError(f"{file_key}: the webhook secret file {secret_file} is empty: write the secret into it")
        return secret
    if secret_env:
        if secret_env not in os.environ:
            raise ValueError(f"tickets.webhook.secret_env: environment variable {secret_env} is not set: set it to "
                             "the shared secret in the environment that runs slawatch")
        secret = os.environ[secret_env].encode().strip()
        if not secret:
            raise ValueError(f"tickets.webhook.secret_env: environment variable {secret_env} is empty: set it to "
                             "the shared secret")
        return secret
    return None


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify_signature(secret: bytes, timestamp: str | None, signature: str | None, body: bytes, now: float,
                     max_age: float) -> None:
    """Raise SignatureError unless `signature` signs `body` at a `timestamp` within max_age of now."""
    if not timestamp:
        raise SignatureError(f"missing {TIMESTAMP_HEADER} header: send the Unix time used in the signature")
    if not signature:
        raise SignatureError(f"missing {SIGNATURE_HEADER} header: send sha256=<hex HMAC of timestamp.body>")
    try:
        sent = int(timestamp)
    except ValueError:
        raise SignatureError(f"invalid {TIMESTAMP_HEADER} {timestamp!r}: send whole Unix seconds") from None
    _check_age(TIMESTAMP_HEADER, sent, now, max_age)
    expected = sign(secret, timestamp, body)
    if not hmac.compare_digest(expected, signature.strip()):
        raise SignatureError(f"invalid {SIGNATURE_HEADER}: it does not match the body and timestamp with the "
                             "shared secret")


def _check_age(header: str, sent: float, now: float, max_age: float) -> None:
    """Raise SignatureError when a signature's time is more than max_age from the receiver's clock."""
    if abs(now - sent) <= max_age:
        return
    if sent > now * 100:
        raise SignatureError(f"{header} {sent:.0f} looks like milliseconds: send whole Unix seconds")
    direction = "behind" if sent < now else "ahead of"
    raise SignatureError(f"{header} is {abs(now - sent):.0f}s {direction} the receiver's clock, more than "
                         f"tickets.webhook.max_age {max_age:.0f}s: sign each request when sending it and check "
                         "both clocks")


def sign_zendesk(secret: bytes, timestamp: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret, timestamp.encode() + body, hashlib.sha256).digest()).decode()


def verify_zendesk_signature(secret: bytes, timestamp: str | None, signature: str | None, body: bytes, now: float,
                             max_age: float) -> None:
    """Raise SignatureError unless a Zendesk webhook signature matches and its timestamp is fresh."""
    if not timestamp:
        raise SignatureError(f"missing {ZENDESK_TIMESTAMP_HEADER} header: send the request from a Zendesk webhook")
    if not signature:
        raise SignatureError(f"missing {ZENDESK_SIGNATURE_HEADER} header: send the request from a Zendesk webhook")
    try:
        sent = float(timestamp) if timestamp.isdigit() else datetime.fromisoformat(
            timestamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise SignatureError(f"invalid {ZENDESK_TIMESTAMP_HEADER} {timestamp!r}: expected an ISO 8601 time") from None
    _check_age(ZENDESK_TIMESTAMP_HEADER, sent, now, max_age)
    if not hmac.compare_digest(sign_zendesk(secret, timestamp, body), signature.strip()):
        raise SignatureError(f"invalid {ZENDESK_SIGNATURE_HEADER}: it does not match the body and timestamp with "
                             "the webhook's signing secret")
