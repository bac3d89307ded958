"""One calculation: run the assigned version, fall back to v1, build the Outcome."""
from __future__ import annotations

from dataclasses import dataclass
from time import perf_counter
from typing import Any, Callable, Mapping

from .errors import Fallback

Calculator = Callable[..., Any]


@dataclass(slots=True)
class Outcome:
    """What one ``calculate()`` call produced."""

    rollout: str
    value: Any
    #: version whose value was served: "v1" or "v2"
    version: str
    #: version the user was assigned
    assigned: str
    #: why v1 was served to a v2-assigned user (``Fallback`` reason or ``exception:<Type>``)
    fallback_reason: str | None
    duration_ms: float
    #: qualified class name of the v2 exception that caused a fallback
    error_type: str | None = None
    user_id: str | None = None
    #: the v2 exception itself (for telemetry); never re-raised once v1 was served
    error: BaseException | None = None
    #: the exception that must reach the caller (v1's, or v2's with fallback off)
    raised: Exception | None = None

    @property
    def fell_back(self) -> bool:
        return self.fallback_reason is not None


def qualified_name(exc: BaseException) -> str:
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def run(
    name: str,
    v1: Calculator,
    v2: Calculator,
    assigned: str,
    fallback_enabled: bool,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    user_id: str | None,
) -> Outcome:
    """Serve ``assigned``; on a v2 failure serve v1 when fallback is enabled.

    Never raises for a calculator's exception: the returned Outcome carries it in
    ``raised`` (v1's exceptions, and v2's when fallback is off) so the caller can
    count the call before re-raising it unchanged.
    """
    start = perf_counter()
    reason = error_type = error = None
    if assigned == "v2":
        try:
            value = v2(*args, **kwargs)
        except Fallback as fb:
            if not fallback_enabled:
                return _failed(name, "v2", assigned, start, fb, user_id)
            reason = fb.reason
        except Exception as exc:
            if not fallback_enabled:
                return _failed(name, "v2", assigned, start, exc, user_id)
            reason, error_type, error = f"exception:{type(exc).__name__}", qualified_name(exc), exc
        else:
            return Outcome(name, value, "v2", "v2", None, (perf_counter() - start) * 1000.0, user_id=user_id)
    try:
        value = v1(*args, **kwargs)
    except Exception as exc:
        return _failed(name, "v1", assigned, start, exc, user_id, reason=reason, v2_error=error)
    return Outcome(
        name, value, "v1", assigned, reason, (perf_counter() - start) * 1000.0,
        error_type=error_type, user_id=user_id, error=error,
    )


def _failed(
    name: str, version: str, assigned: str, start: float, exc: Exception, user_id: str | None,
    *, reason: str | None = None, v2_error: BaseException | None = None,
) -> Outcome:
    error = v2_error if v2_error is not None else exc
    return Outcome(
        name, None, version, assigned, reason, (perf_counter() - start) * 1000.0,
        error_type=qualified_name(error), user_id=user_id, error=error, raised=exc,
    )
