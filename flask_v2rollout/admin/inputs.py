"""Validation of what an operator sends, shared by the JSON API and the HTML forms.

Everything a client controls is checked here before it reaches the extension, so
odd input (huge numbers, NaN, wrong types) is a 400 with the field named, never
an exception deeper down.
"""
from __future__ import annotations

from typing import Any

from ..errors import FlagError
from ..flags import MAX_NOTE, MAX_REASON, validate_text
from ..metrics.recorder import parse_window
from .errors import bad_input

__all__ = ["MAX_NOTE", "MAX_REASON"]
#: flag versions are SQL BIGINTs
MAX_VERSION = 2**63 - 1
MAX_PAGE = 1_000_000
MAX_PER_PAGE = 200
#: points of a gate history (each is one window read)
MAX_POINTS = 200


def reason(value: Any, field: str = "reason", limit: int = MAX_REASON) -> str | None:
    """An optional free-text reason: a string, stripped; blank means none (the limits are the flag store's)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_input(f"{field} must be a string", field)
    try:
        text = validate_text(value.strip(), field, limit)
    except FlagError as exc:
        raise bad_input(str(exc), field) from None
    return text or None


def version(value: Any, field: str = "version") -> int | None:
    """An optional expected flag version (an integer, or its decimal text from a form or header)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        text = value.strip().strip('"')
        if not (text.isascii() and text.isdigit() and len(text) <= 19):
            raise bad_input(f"{field} must be a non-negative integer", field)
        value = int(text)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_VERSION:
        raise bad_input(f"{field} must be a non-negative integer", field)
    return value


def bounded_int(text: str | None, field: str, *, default: int, low: int, high: int) -> int:
    """A query-string integer such as ``page`` within [low, high]."""
    if text is None or text == "":
        return default
    if not (text.isascii() and text.isdigit() and len(text) <= 9) or not low <= int(text) <= high:
        raise bad_input(f"{field} must be an integer from {low} to {high}", field)
    return int(text)


def window(text: str | None, default: str = "5m") -> str:
    """A metrics window such as ``5m``; rejects what ``parse_window`` rejects."""
    value = default if text is None else text
    try:
        parse_window(value)
    except ValueError as exc:
        raise bad_input(str(exc), "window") from None
    return value


def json_bool(value: Any, field: str) -> bool:
    """A JSON boolean; strings and numbers are refused (``"false"`` is truthy in too many places)."""
    if not isinstance(value, bool):
        raise bad_input(f"{field} must be true or false", field)
    return value


def form_bool(text: str | None, field: str) -> bool:
    """A form's ``true``/``false`` (or ``yes``/``no``) as a boolean."""
    word = (text or "").strip().lower()
    if word not in ("true", "false", "yes", "no"):
        raise bad_input(f"{field} must be true or false", field)
    return word in ("true", "yes")
