"""What the admin blueprint and the CLI serve on one app: the extension's public API, registry, settings.

Both are module-level objects shared by every app, so ``init_app`` hands each app's
binding in at registration (``app.extensions["v2rollout.binding"]``); they call the
public API only.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from flask import current_app

from .access import AccessStore
from .flags import FlagChange
from .registry import AdminCallable, Registry
from .settings import Settings


class RolloutAPI(Protocol):
    """The part of ``V2Rollout``'s public surface the admin uses (and nothing else)."""

    @property
    def rollouts(self) -> Mapping[str, Any]: ...
    def status(self, name: str) -> Any: ...
    def flags(self, name: str, *, fresh: bool = False) -> dict[str, Any]: ...
    def flag_state(self, name: str) -> dict[str, Any]: ...
    def set_flag(self, name: str, flag: str, value: Any, *, actor: str, reason: str | None = None,
                 expected_version: int | None = None) -> list[FlagChange]: ...
    def set_flags(self, name: str, changes: Mapping[str, Any], *, actor: str, reason: str | None = None,
                  expected_version: int | None = None) -> list[FlagChange]: ...
    def rollback(self, name: str, target: float = 0, *, actor: str, reason: str | None = None
                 ) -> list[FlagChange]: ...
    def advance(self, name: str, *, actor: str, reason: str | None = None) -> list[FlagChange]: ...
    def approvals(self, name: str) -> list[dict[str, Any]]: ...
    def approve(self, name: str, approval_id: int, *, actor: str) -> list[FlagChange]: ...
    def gate(self, name: str) -> Any: ...
    def gate_history(self, name: str, *, points: int = 24) -> Any: ...
    def alert_history(self, name: str | None = None, *, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]: ...
    def alerts(self, name: str | None = None) -> list[dict[str, Any]]: ...
    def checks(self, name: str) -> list[dict[str, Any]]: ...
    def record_check(self, name: str, check: str, passed: bool, *, actor: str, note: str | None = None
                     ) -> dict[str, Any]: ...
    def metrics(self, name: str, window: str | int = "5m", *, now: float | None = None) -> Any: ...
    def series(self, name: str, window: str | int = "1h", *, now: float | None = None) -> Any: ...
    def audit(self, name: str | None = None, *, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]: ...
    def audit_count(self, name: str | None = None) -> int: ...


@dataclass(frozen=True)
class Binding:
    KEY: ClassVar[str] = "v2rollout.binding"

    rollout: RolloutAPI
    registry: Registry
    settings: Settings
    access: AccessStore

    @property
    def admin_required(self) -> AdminCallable | None:
        return self.registry.admin_required


def binding() -> Binding:
    """The current app's binding; ``RuntimeError`` when V2Rollout is not initialised on it."""
    found: Binding | None = current_app.extensions.get(Binding.KEY)
    if found is None:
        raise RuntimeError("V2Rollout is not initialised on this app (call rollout.init_app(app)).")
    return found
