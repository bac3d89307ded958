"""Blinker signals of Flask-V2Rollout.

Every signal is sent with the Flask app as sender
(``current_app._get_current_object()`` or the app the work runs for), so a
receiver can ``connect_via(app)``.
"""
from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

#: A flag's value was changed and audited.
#: kwargs: ``rollout`` (str), ``flag`` (str), ``old`` , ``new``, ``actor`` (str),
#: ``reason`` (str | None)
flag_changed = _signals.signal("v2rollout-flag-changed")

#: A request's user was assigned a version for a rollout (once per rollout per request).
#: kwargs: ``rollout`` (str), ``user_id`` (str), ``version`` ("v1" | "v2"),
#: ``percentage`` (float)
version_assigned = _signals.signal("v2rollout-version-assigned")

#: A ``calculate()`` call finished and served a value.
#: kwargs: ``rollout`` (str), ``outcome`` (:class:`~flask_v2rollout.dispatch.Outcome`)
calculation_completed = _signals.signal("v2rollout-calculation-completed")

#: v2 was assigned but v1 was served (v2 raised ``Fallback`` or an exception).
#: kwargs: ``rollout`` (str), ``reason`` (str), ``outcome`` (Outcome)
fallback_used = _signals.signal("v2rollout-fallback-used")

#: A business conversion was recorded for a user.
#: kwargs: ``rollout`` (str), ``user_id`` (str | None), ``version`` ("v1" | "v2")
conversion_tracked = _signals.signal("v2rollout-conversion-tracked")

#: A shadow run finished and was compared with the served value.
#: kwargs: ``rollout`` (str), ``version`` (the version run off the path: "v2", or "v1" in a dual run),
#: ``comparison`` (:class:`~flask_v2rollout.compare.Comparison`), ``outcome`` (the served Outcome),
#: ``duration_ms`` (float)
shadow_compared = _signals.signal("v2rollout-shadow-compared")

#: An alert rule started firing (after its ``for`` duration).
#: kwargs: ``rollout`` (str), ``rule`` (str), ``severity`` (CRITICAL/HIGH/MEDIUM/LOW), ``values``
#: (dict of the metrics it read), ``action`` (str), ``description`` (str), ``sev`` (the runbook's SEV-1 … SEV-4),
#: ``response`` (its response target), ``applied`` (the rollback this rule's firing made, or None)
alert_fired = _signals.signal("v2rollout-alert-fired")

#: A firing alert rule stopped firing. kwargs as :data:`alert_fired`.
alert_resolved = _signals.signal("v2rollout-alert-resolved")

#: The autopilot decided: advance, roll back or hold.
#: kwargs: ``rollout`` (str), ``action`` ("advance" | "rollback" | "hold"), ``reason`` (str),
#: ``target`` (float | None: the new percentage)
autopilot_acted = _signals.signal("v2rollout-autopilot-acted")
