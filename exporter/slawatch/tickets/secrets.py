"""Credential files of the helpdesk pollers, and a check of every secret that the ticket code reads.

`slawatch serve` reads the webhook secrets once at start-up and stops when one
is unusable. Each poller reads its token or password file before every poll,
so a rotated file applies, and every poll fails while the file is unusable.
`slawatch check` calls `ticket_secret_problems` to report both kinds with the
messages that serve prints or logs.
"""

from __future__ import annotations

from pathlib import Path

from ..config import TicketSources, TicketsConfig
from .webhook import load_secret

# Keys of a helpdesk source that name a credential file.
SOURCE_SECRET_KEYS = ("password_file", "token_file", "oauth_token_file")


def read_secret_file(path: str, key: str) -> str:
    """Read a credential file and return its text without surrounding whitespace.

    Raises ValueError, starting with the config key `key`, when the file cannot be read or is empty.
    """
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except OSError as error:
        raise ValueError(f"{key}: cannot read {path}: {error.strerror or error}: check the path and the file's "
                         "permissions") from None
    except UnicodeDecodeError:
        raise ValueError(f"{key}: {path} is not UTF-8 text: write the secret into it as text") from None
    if not text:
        raise ValueError(f"{key}: {path} is empty: write the secret into it")
    return text


def ticket_secret_problems(tickets: TicketsConfig) -> list[str]:
    """Return a problem for each webhook secret and helpdesk credential file that serve cannot use."""
    problems = []
    webhook = tickets.webhook
    secrets = [(webhook.secret_file, webhook.secret_env, "tickets.webhook.secret_file"),
               (webhook.zendesk_secret_file, None, "tickets.webhook.zendesk_secret_file")]
    for secret_file, secret_env, file_key in secrets:
        try:
            load_secret(secret_file, secret_env, file_key)
        except ValueError as error:
            problems.append(str(error))

    for name in TicketSources.model_fields:
        source = getattr(tickets.sources, name)
        if source is None:
            continue
        for key in SOURCE_SECRET_KEYS:
            path = getattr(source, key, None)
            if not path:
                continue
            try:
                read_secret_file(path, f"tickets.sources.{name}.{key}")
            except ValueError as error:
                problems.append(str(error))
    return problems
