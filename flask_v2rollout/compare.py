"""Shadow comparison: extracting numbers and classifying agreement (pure, no Flask)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Extractor = Callable[[Any], Any]


def key_path(path: str) -> Extractor:
    """Extractor for a dotted path such as ``"items.0.score"`` (digits index lists)."""
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


EXACT = "EXACT"
CLOSE = "CLOSE"
MODERATE = "MODERATE"
V2_ERROR = "v2_error"
FALLBACK = "fallback"
INCOMPARABLE = "incomparable"
#: Classes that count as agreement in the agreement rate.
AGREEING = frozenset({EXACT, CLOSE})

Comparator = Callable[[Any, Any], str]


@dataclass(frozen=True)
class Comparison:
    """One shadow comparison of a v1 value with a v2 value."""

    agreement: str
    v1_number: float | None = None
    v2_number: float | None = None

    @property
    def difference(self) -> float | None:
        if self.v1_number is None or self.v2_number is None:
            return None
        return abs(self.v2_number - self.v1_number)

    @property
    def difference_pct(self) -> float | None:
        """The runbook's ``difference / v1 × 100``, 0 when v1 ≤ 0."""
        diff = self.difference
        if diff is None or self.v1_number is None:
            return None
        return diff / self.v1_number * 100.0 if self.v1_number > 0 else 0.0


def classify(difference: float, *, exact: float = 1.0, close: float = 3.0) -> str:
    """EXACT (|Δ| < 1), CLOSE (< 3) or MODERATE, the runbook's classes."""
    if difference < exact:
        return EXACT
    if difference < close:
        return CLOSE
    return MODERATE


def compare_values(
    v1_value: Any, v2_value: Any, *, extract: Extractor | None = None, comparator: Comparator | None = None
) -> Comparison:
    """Classify a v1/v2 pair: the host's comparator if given, else by the extracted numbers."""
    v1_number = number_of(extract, v1_value)
    v2_number = number_of(extract, v2_value)
    if comparator is not None:
        return Comparison(str(comparator(v1_value, v2_value)), v1_number, v2_number)
    if v1_number is None or v2_number is None:
        return Comparison(INCOMPARABLE, v1_number, v2_number)
    return Comparison(classify(abs(v2_number - v1_number)), v1_number, v2_number)
