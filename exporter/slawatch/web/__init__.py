"""The exporter's HTTP side: routes, the /probe guard and the web config."""

from .app import EXPORTER, Exporter, create_app

__all__ = ["EXPORTER", "Exporter", "create_app"]
