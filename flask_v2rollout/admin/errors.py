"""One error shape for the admin surface, and how extension errors map onto it.

Every refusal — bad input, missing credentials, unknown rollout, a lost write
race — becomes an :class:`AdminError` with an HTTP status, a stable ``code``
that clients can branch on, and the input ``field`` at fault, so the JSON API
and the HTML forms report the same thing the same way.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ApprovalError, ConflictError, FlagError, RolloutError, StoreFileError, UnknownRollout


@dataclass
class AdminError(Exception):
    """A request the admin surface refuses; nothing was changed."""

    status: int
    code: str
    message: str
    field: str | None = None
    #: seconds for a ``Retry-After`` header (429)
    retry_after: int | None = None

    def __str__(self) -> str:
        return self.message

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "field": self.field}}


def bad_input(message: str, field: str | None = None) -> AdminError:
    return AdminError(400, "bad_request", message, field)


def from_rollout_error(exc: RolloutError) -> AdminError:
    """Map the extension's errors: invalid input 400, unknown rollout 404, conflicts 409, lost store 503."""
    if isinstance(exc, UnknownRollout):
        return AdminError(404, "unknown_rollout", str(exc), "rollout")
    if isinstance(exc, FlagError):
        return AdminError(400, "invalid", str(exc), exc.field)
    if isinstance(exc, ApprovalError):
        return AdminError(exc.status, "approval", str(exc), "approval")
    if isinstance(exc, ConflictError):
        return AdminError(409, "conflict", str(exc), "version")
    if isinstance(exc, StoreFileError):
        return AdminError(503, "store_unavailable", str(exc))
    # GateError and any later RolloutError: the rollout's state forbids the operation now.
    return AdminError(409, _snake(type(exc).__name__), str(exc))


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() and i else c.lower() for i, c in enumerate(name))
