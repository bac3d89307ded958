"""Extracting the compared number from a calculator's value (pure, no Flask)."""
from __future__ import annotations

from typing import Any, Callable

Extractor = Callable[[Any], Any]


def key_path(path: str) -> Extractor:
    """Extractor for a dotted path such as ``"edges.0.edge"`` (digits index lists)."""
    parts = [p for p in path.split(".") if p]
    if not parts:
        raise ValueError("key path must name at least one key")

    def extract(value: Any) -> Any:
        for part in parts:
            if isinstance(value, (list, tuple)) and part.lstrip("-").isdigit():
                value = value[int(part)]
            else:
                value = value[part]
        return value

    extract.__name__ = f"key_path({path!r})"
    return extract


def as_extractor(spec: str | Extractor | None) -> Extractor | None:
    """Accept a key path, a callable, or ``None``."""
    if spec is None or callable(spec):
        return spec
    if isinstance(spec, str):
        return key_path(spec)
    raise TypeError(f"expected a key path or a callable, got {type(spec).__name__}")


def number_of(extract: Extractor | None, value: Any) -> float | None:
    """The number ``extract`` finds in ``value``, or ``None`` when there is none."""
    if extract is None:
        candidate = value
    else:
        try:
            candidate = extract(value)
        except (KeyError, IndexError, TypeError, ValueError):
            return None
    if isinstance(candidate, bool) or not isinstance(candidate, (int, float)):
        return None
    return float(candidate)
