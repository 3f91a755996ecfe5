"""Support tickets: the event format, calendars, the durable store and the metrics derived from it."""

from .build import build_store
from .collector import SourceMetrics, TicketCollector
from .events import EventError, TicketEvent, parse_event
from .store import TicketStore
from .webhook import SignatureError, load_secret, verify_signature

__all__ = ["EventError", "SignatureError", "SourceMetrics", "TicketCollector", "TicketEvent", "TicketStore",
           "build_store", "load_secret", "parse_event", "verify_signature"]
