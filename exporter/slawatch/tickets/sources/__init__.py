"""Helpdesk pollers: one module per helpdesk, each turning the vendor's data into ticket events."""
