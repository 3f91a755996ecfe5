"""Types shared by the chat kind modules, and the classification of robot replies."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RobotRequest:
    # Contains the robot's access token or key: never log it.
    url: str
    body: dict


@dataclass(frozen=True)
class Outcome:
    """The result of a robot request: delivered, worth a retry, or rejected for good."""

    delivered: bool
    retry: bool
    # The vendor's error code, or the HTTP status when the body has none.
    code: str
    detail: str


def read_reply(status: int, data: object, code_key: str, message_key: str,
               rate_limit_codes: frozenset[int]) -> Outcome:
    """Classify a robot reply whose JSON body carries an error code, 0 for success.

    HTTP 5xx and 429 are worth a retry, and so are the vendor codes that mean
    the robot's rate limit was hit. Any other error is final, because sending
    the same message again would fail the same way.
    """
    if status >= 500 or status == 429:
        return Outcome(False, True, str(status), f"HTTP {status}")
    if not isinstance(data, dict) or not isinstance(data.get(code_key), int):
        return Outcome(False, False, str(status), f"HTTP {status} without a {code_key} field")
    code = data[code_key]
    detail = str(data.get(message_key, ""))[:200]
    if code == 0 and 200 <= status < 300:
        return Outcome(True, False, "0", detail)
    return Outcome(False, code in rate_limit_codes, str(code), detail)
