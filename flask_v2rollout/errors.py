"""Exceptions of Flask-V2Rollout."""
from __future__ import annotations

from typing import Any

from sqlalchemy.exc import SQLAlchemyError


class Fallback(Exception):
    """Raised inside v2 to serve v1 instead; ``reason`` is recorded with the outcome."""

    def __init__(self, reason: str = "fallback") -> None:
        super().__init__(reason)
        self.reason = str(reason)


class RolloutError(Exception):
    """Base class of the errors an operator or host can cause."""


class UnknownRollout(RolloutError, KeyError):
    """No rollout of that name is registered."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(name)
        self.name = name
        self.known = known

    def __str__(self) -> str:
        known = ", ".join(sorted(self.known)) or "none registered"
        return f"unknown rollout {self.name!r} (known: {known})"


class FlagError(RolloutError, ValueError):
    """A flag name or value is invalid; nothing was changed."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ConflictError(RolloutError):
    """Another writer changed the rollout's flags first; nothing was changed."""

    def __init__(self, rollout: str, expected: int | None, actual: int | None) -> None:
        super().__init__(
            f"flags of rollout {rollout!r} were changed concurrently "
            f"(expected version {expected}, found {actual}); read them again and retry"
        )
        self.rollout = rollout
        self.expected = expected
        self.actual = actual


class StaleDecisionError(ConflictError):
    """A decision was made on flags that changed before it could be written (an advance after its gate)."""

    def __init__(self, rollout: str, expected: int | None, actual: int | None, what: str = "the gate") -> None:
        super().__init__(rollout, expected, actual)
        RolloutError.__init__(self, f"the rollout changed since {what} was read (flags version {expected}, "
                                    f"now {actual}); read {what} again")


class GateError(RolloutError):
    """The gate does not allow the requested move (not GO); nothing was changed."""


class StoreFileError(RolloutError, SQLAlchemyError):
    """The SQLite file of the flag store was deleted, replaced or never created; nothing was written.

    It is also a ``SQLAlchemyError`` so every part that survives a store outage (flag refresh, metrics
    flush, evaluator) treats it as one: counted, last-known flags kept, metric batches kept for retry.
    """

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(
            f"flag store {path} {problem}; refusing to put a new, empty database in its place "
            "(docs/operations.md: 'Flag store unhealthy')"
        )
        self.path = path
class MissingTablesError(RolloutError, SQLAlchemyError):
    """``V2ROLLOUT_CREATE_TABLES`` is off and the ``v2rollout_*`` tables were never migrated; nothing was done.

    A ``SQLAlchemyError`` too, like :class:`StoreFileError`: the parts that survive a store outage keep
    last-known flags and queued metrics until the migration runs.
    """

    def __init__(self, missing: list[str]) -> None:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        super().__init__(f"the v2rollout tables are missing ({shown}): run the migration (`flask db upgrade`) "
                         "or set V2ROLLOUT_CREATE_TABLES=True (docs/configuration.md, 'Tables')")
        self.missing = missing


class ApprovalRequired(RolloutError):
    """The change raises the rollout above ``V2ROLLOUT_APPROVAL_ABOVE``: it waits, as ``approval``, for a second person.

    Nothing was changed yet; raised rather than returned so that no caller can mistake it for an applied change.
    """

    def __init__(self, approval: dict[str, Any]) -> None:
        super().__init__(f"the change waits for approval #{approval['id']} by another approver "
                         f"(expires in {approval['expires_in_s']:.0f} s)")
        self.approval = approval


class ApprovalError(RolloutError):
    """An approval cannot be given (unknown, expired, decided, or asked by the same person); nothing changed."""

    def __init__(self, message: str, *, status: int = 409) -> None:
        super().__init__(message)
        self.status = status
