"""Support tickets: the event format, the durable store and the metrics derived from it."""

from .events import EventError, TicketEvent, parse_event
from .store import TicketCollector, TicketStore

__all__ = ["EventError", "TicketCollector", "TicketEvent", "TicketStore", "parse_event"]
