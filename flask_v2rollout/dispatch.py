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

    v1's exceptions propagate unchanged; so do v2's when fallback is off.
    """
    start = perf_counter()
    if assigned != "v2":
        value = v1(*args, **kwargs)
        return Outcome(name, value, "v1", "v1", None, (perf_counter() - start) * 1000.0, user_id=user_id)
    try:
        value = v2(*args, **kwargs)
    except Fallback as fb:
        if not fallback_enabled:
            raise
        reason, error_type, error = fb.reason, None, None
    except Exception as exc:
        if not fallback_enabled:
            raise
        reason, error_type, error = f"exception:{type(exc).__name__}", qualified_name(exc), exc
    else:
        return Outcome(name, value, "v2", "v2", None, (perf_counter() - start) * 1000.0, user_id=user_id)
    value = v1(*args, **kwargs)
    return Outcome(
        name, value, "v1", "v2", reason, (perf_counter() - start) * 1000.0,
        error_type=error_type, user_id=user_id, error=error,
    )
