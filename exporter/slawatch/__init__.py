"""slawatch: service-quality and support-latency monitoring for Prometheus."""

__version__ = "0.1.0"
