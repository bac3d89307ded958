"""What a host registers on a ``V2Rollout``: rollouts, probes, verify checks, loaders, admin callable.

One registry belongs to one ``V2Rollout`` object and is shared by every app it is
initialised on; each app's runtime reads it and is told when a rollout is added.
"""
from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .compare import Comparator, Extractor, as_extractor
from .dispatch import Calculator
from .errors import FlagError, UnknownRollout
from .flags import validate_flags
from .jsonlog import validate_log_fields
from .targeting import Targeting

UserLoader = Callable[[], Any]
Probe = Callable[[], Any]
VerifyCheck = Callable[[], Any]
AdminCallable = Callable[[], Any]

OFFLINE_FIGURES = frozenset({"agreement_rate", "fallback_rate"})


@dataclass(frozen=True)
class Rollout:
    """A registered migration of one calculation."""

    name: str
    v1: Calculator
    v2: Calculator
    compare: Comparator | None = None
    #: bucketing seed; ``make_rollout`` defaults it to the name (``""``: the runbook's unsalted md5)
    salt: str = ""
    subject: Callable[..., Any] | None = None
    extract: Extractor | None = None
    metadata: Callable[[Any], Mapping[str, Any]] | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    dual_run: bool = False
    #: offline validation figures (fractions): {"agreement_rate": 0.90, "fallback_rate": 0.125}
    offline: Mapping[str, float] = field(default_factory=dict)
    #: v2's deadline on the request path; v1 is served when it misses it (None: no deadline)
    v2_timeout_ms: float | None = None
    #: JSONL names of the records' ``subject`` / ``value`` fields (``{"subject": "player_name"}``)
    log_fields: Mapping[str, str] = field(default_factory=dict)
    #: keep every call's inputs (redacted) in SQL for ``flask v2rollout replay``
    record_inputs: bool = False
    #: ``{"args": [...], "kwargs": {...}}`` → what is stored (drop or mask personal data here)
    redact_inputs: Callable[[dict[str, Any]], Mapping[str, Any]] | None = None
    #: users pinned to v2 or v1 whatever the percentage, counted apart (``targeting.py``)
    targeting: Targeting = field(default_factory=Targeting)

    def subject_of(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str | None:
        if self.subject is None:
            return None
        label = self.subject(*args, **kwargs)
        return None if label is None else str(label)


def make_rollout(
    name: str, *, v1: Calculator, v2: Calculator, compare: Comparator | None, salt: str | None,
    subject: Callable[..., Any] | None, extract: str | Extractor | None,
    metadata: Callable[[Any], Mapping[str, Any]] | None, defaults: Mapping[str, Any] | None, dual_run: bool,
    offline: Mapping[str, float] | None, v2_timeout_ms: float | None = None,
    log_fields: Mapping[str, str] | None = None, record_inputs: bool = False,
    redact_inputs: Callable[[dict[str, Any]], Mapping[str, Any]] | None = None,
    targeting: Targeting | None = None,
) -> Rollout:
    """A validated :class:`Rollout`; ``ValueError``/``TypeError`` say what is wrong."""
    if not isinstance(name, str) or not name or len(name) > 100:
        raise ValueError("rollout name must be a non-empty string of at most 100 characters")
    if not callable(v1) or not callable(v2):
        raise TypeError("v1 and v2 must be callables")
    try:
        checked = validate_flags(defaults) if defaults else {}
    except FlagError as exc:
        raise ValueError(f"defaults of rollout {name!r}: {exc}") from None
    if offline is not None and (set(offline) - OFFLINE_FIGURES or not all(
            isinstance(v, (int, float)) and 0 <= v <= 1 for v in offline.values())):
        raise ValueError(f"offline of rollout {name!r} takes fractions 0–1 for {sorted(OFFLINE_FIGURES)}")
    if v2_timeout_ms is not None and (isinstance(v2_timeout_ms, bool) or not isinstance(v2_timeout_ms, (int, float))
                                      or not 0 < v2_timeout_ms < 3_600_000):
        raise ValueError(f"v2_timeout_ms of rollout {name!r} must be a number of milliseconds > 0")
    if salt is not None and not isinstance(salt, str):
        raise TypeError(f"salt of rollout {name!r} must be a string (\"\" for the runbook's unsalted md5)")
    try:
        fields = validate_log_fields(log_fields)
    except ValueError as exc:
        raise ValueError(f"log_fields of rollout {name!r}: {exc}") from None
    if redact_inputs is not None and not callable(redact_inputs):
        raise TypeError(f"redact_inputs of rollout {name!r} must be a callable")
    return Rollout(name, v1, v2, compare, name if salt is None else salt, subject, as_extractor(extract), metadata,
                   checked, bool(dual_run), dict(offline or {}),
                   None if v2_timeout_ms is None else float(v2_timeout_ms), fields, bool(record_inputs),
                   redact_inputs, targeting or Targeting())


class Registry:
    """Registrations of one ``V2Rollout``; runtimes subscribe to new rollouts."""

    def __init__(self) -> None:
        self.rollouts: dict[str, Rollout] = {}
        self.probes: dict[str, Probe] = {}
        self.verify_checks: dict[str, VerifyCheck] = {}
        self.user_loader: UserLoader | None = None
        self.admin_required: AdminCallable | None = None
        self._listeners: list[weakref.WeakMethod[Callable[[Rollout], None]]] = []

    def add(self, rollout: Rollout) -> None:
        if rollout.name in self.rollouts:
            raise ValueError(f"rollout {rollout.name!r} is already registered")
        self.rollouts[rollout.name] = rollout
        for ref in list(self._listeners):
            listener = ref()
            if listener is None:
                self._listeners.remove(ref)
            else:
                listener(rollout)

    def on_add(self, listener: Callable[[Rollout], None]) -> None:
        """Call the bound method ``listener`` for every rollout registered so far and from now on.

        Held weakly: an app's runtime that is gone stops listening.
        """
        self._listeners.append(weakref.WeakMethod(listener))
        for rollout in list(self.rollouts.values()):
            listener(rollout)

    def get(self, name: str) -> Rollout:
        try:
            return self.rollouts[name]
        except KeyError:
            raise UnknownRollout(name, list(self.rollouts)) from None

    def names(self) -> list[str]:
        return list(self.rollouts)
