"""Text that people read, in English and Simplified Chinese.

Each part of slawatch that shows text to a person keeps its own `Catalog`
next to its code, so a message and its translation are edited together:

    TEXT = Catalog({
        "overview.title": {"en": "Service quality", "zh-CN": "服务质量"},
    })
    TEXT.get("overview.title", "zh-CN")
"""

from __future__ import annotations

LOCALES = ("en", "zh-CN")


class Catalog:
    """Messages keyed by id, each with one text per locale."""

    def __init__(self, messages: dict[str, dict[str, str]]):
        for key, texts in messages.items():
            missing = [locale for locale in LOCALES if locale not in texts]
            if missing:
                raise ValueError(f"message {key!r} has no text for locale(s) {missing}: add them")
        self.messages = messages

    def get(self, key: str, locale: str, **values: object) -> str:
        """Return the message for `locale` with `values` formatted in."""
        if locale not in LOCALES:
            raise ValueError(f"unknown locale {locale!r}: use one of {list(LOCALES)}")
        return self.messages[key][locale].format(**values)
