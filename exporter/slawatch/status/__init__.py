"""The public status page: daily roll-ups, service states, incidents and announcements."""

from .inputs import AnnouncementError, parse_announcement
from .page import StatusView, choose_locale, public_document, render_html
from .store import Incident, StatusStore
from .tracker import StatusTracker, public_services

__all__ = ["AnnouncementError", "Incident", "StatusStore", "StatusTracker", "StatusView", "choose_locale",
           "parse_announcement", "public_document", "public_services", "render_html"]
