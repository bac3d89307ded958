"""Who may do what in the admin: viewers read, operators change, approvers also approve someone else's raise."""
from __future__ import annotations

from dataclasses import dataclass

VIEWER, OPERATOR, APPROVER = "viewer", "operator", "approver"
#: weakest first: each role may do what the ones before it may
ROLES = (VIEWER, OPERATOR, APPROVER)


@dataclass(frozen=True)
class Principal:
    """An admin caller: the actor audited for what they do, and their role."""

    actor: str
    role: str
