"""Allow and deny lists: users pinned to v2 or v1 whatever the percentage (pure: no Flask).

A careful canary starts with the team's own accounts on v2 at 0 %, and keeps
some users (a key account, a regulator's test login) on v1 throughout. A rollout
registered with ``allow=`` / ``deny=`` (user ids) or ``allow_if=`` / ``deny_if=``
(a host predicate taking the user id, such as "is staff") pins them; deny wins
over allow. Anonymous users are never pinned.

Listed users' calls are counted in arms of their own (``v2_allowed``, ``v1_denied``), not in
``v1`` / ``v2``: the gates, the rollback matrices, the alert rules and the
sample-ratio test compare users the bucket chose, so a hand-picked group cannot
bias them. Listed users are not shadowed either.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

Predicate = Callable[[str], object]

#: the arm a listed user's calls are counted in, by the version served
TARGETED_ARMS = {"v2": "v2_allowed", "v1": "v1_denied"}


@dataclass(frozen=True)
class Targeting:
    """Who is pinned to which version; empty lists and no predicates pin nobody."""

    allow: frozenset[str] = frozenset()
    deny: frozenset[str] = frozenset()
    allow_if: Predicate | None = None
    deny_if: Predicate | None = None

    #: anyone pinned at all (worked out once: the request path asks on every call)
    active: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "active", bool(self.allow or self.deny or self.allow_if or self.deny_if))

    def __bool__(self) -> bool:
        return self.active

    def version_for(self, user_id: str | None) -> str | None:
        """``"v1"`` (denied), ``"v2"`` (allowed) or None (the bucket decides)."""
        if user_id is None:
            return None
        if user_id in self.deny or (self.deny_if is not None and self.deny_if(user_id)):
            return "v1"
        if user_id in self.allow or (self.allow_if is not None and self.allow_if(user_id)):
            return "v2"
        return None


def make_targeting(*, allow: Iterable[object] | None, deny: Iterable[object] | None,
                   allow_if: Predicate | None, deny_if: Predicate | None) -> Targeting:
    """A validated :class:`Targeting`; ``TypeError`` / ``ValueError`` say what is wrong."""
    lists = {}
    for label, given in (("allow", allow), ("deny", deny)):
        if given is None:
            lists[label] = frozenset[str]()
            continue
        if isinstance(given, (str, bytes)):
            raise TypeError(f"{label} takes a collection of user ids, not one string")
        lists[label] = frozenset(str(u) for u in given)
    both = sorted(lists["allow"] & lists["deny"])
    if both:
        raise ValueError(f"user ids both allowed and denied: {both[:5]}")
    for label, predicate in (("allow_if", allow_if), ("deny_if", deny_if)):
        if predicate is not None and not callable(predicate):
            raise TypeError(f"{label} must be a callable taking the user id")
    return Targeting(lists["allow"], lists["deny"], allow_if, deny_if)
