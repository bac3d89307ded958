"""What a firing alert rule does to the rollout, as data (pure: no Flask, no SQL).

A rule's ``rollback:`` key names the percentage it lowers the rollout to:

* a number ``N`` or ``{to: N}`` — that percentage (``0``: the runbook's emergency rollback);
* ``previous`` — the percentage the rollout ran at before it was last raised (the
  runbook's "roll back to the previous percentage"; 0 when it was never raised);
* ``halve`` — half the current percentage (the runbook's "reduce the percentage by 50 %");
* ``none`` — no automatic action.

Without the key a CRITICAL rule rolls back to 0 and the other severities do
nothing by themselves. ``enter_shadow: true|false`` says whether the rollback also
turns shadow mode on; without it a rollback that lands on 0 % does when
``V2ROLLOUT_ROLLBACK_ENTERS_SHADOW`` is on (the default: "back to shadow mode").

A rollback never raises the percentage: a target above the current one does nothing.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .conditions import Problem

Kind = Literal["to", "previous", "halve"]
WORDS = ("previous", "halve", "none")


@dataclass(frozen=True)
class RollbackAction:
    """A rule's rollback: to a fixed percentage, to the previous one, or to half the current one."""

    kind: Kind
    percentage: float = 0.0

    def target(self, current: float, previous: float) -> float:
        """The percentage this action lowers ``current`` to (never above ``current``)."""
        if self.kind == "to":
            wanted = self.percentage
        elif self.kind == "previous":
            wanted = previous
        else:  # flags hold two decimals: round down, so halving 0.01 % reaches 0
            wanted = math.floor(current * 50) / 100
        return min(current, wanted)

    def describe(self) -> str:
        return {"to": f"to {self.percentage:g} %", "previous": "to the previous percentage",
                "halve": "halve the percentage"}[self.kind]


EMERGENCY = RollbackAction("to", 0.0)


def action_from(item: Mapping[str, Any], label: str, severity: Any) -> tuple[RollbackAction | None,
                                                                               bool | None, list[Problem]]:
    """A rule mapping's ``rollback`` and ``enter_shadow`` keys → (action, enter_shadow, problems)."""
    problems: list[Problem] = []
    shadow = item.get("enter_shadow")
    if "enter_shadow" in item and not isinstance(shadow, bool):
        problems.append(Problem(label, "enter_shadow must be true or false", repr(shadow)))
        shadow = None
    if "rollback" not in item:
        return (EMERGENCY if severity == "CRITICAL" else None), shadow, problems
    raw = item["rollback"]
    if isinstance(raw, dict) and set(raw) == {"to"}:
        raw = raw["to"]
    if raw == "none":
        return None, shadow, problems
    if raw in ("previous", "halve"):
        return RollbackAction(raw), shadow, problems
    if isinstance(raw, (int, float)) and not isinstance(raw, bool) and 0 <= raw <= 100:
        return RollbackAction("to", float(raw)), shadow, problems
    problems.append(Problem(label, "rollback must be a percentage 0–100, {to: N}, previous, halve or none",
                            repr(item["rollback"])))
    return None, shadow, problems


def percentage_before(changes: Iterable[tuple[float | None, float]], current: float) -> float:
    """The percentage the rollout ran at before it was raised to (or past) ``current``.

    ``changes`` are the audited percentage changes ``(old, new)``, newest first: the
    first raise that started below ``current`` gives its starting point (0 when none).
    """
    for old, new in changes:
        before = old or 0.0
        if new > before and before < current:
            return float(before)
    return 0.0
