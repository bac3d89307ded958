"""The HTML dashboard: plain forms, POST-redirect-GET, flash messages — no JavaScript needed.

Every POST carries a Flask-WTF CSRF token; a refused change re-renders the page
with the reason and a 4xx status, so nothing is ever half-applied or hidden.
"""
from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from ..binding import RolloutAPI, binding
from ..errors import ApprovalRequired, RolloutError
from ..flags import FLAG_NAMES, PERCENTAGE, parse_flag_text
from ..roles import APPROVER, OPERATOR
from ..rules.gates import previous_percentage
from . import auth, inputs, wording
from .charts import RANGE_NAMES, RANGES, build_charts, guardrail_charts, markers
from .errors import AdminError, bad_input, from_rollout_error
from .svg import number

bp = Blueprint("views", __name__)

PUBLIC_ENDPOINTS = frozenset({"v2rollout.views.login"})
SIGN_OUT_ENDPOINTS = frozenset({"v2rollout.views.logout"})
APPROVE_ENDPOINTS = frozenset({"v2rollout.views.approve"})
#: a ``next`` longer than this is not one the dashboard made
MAX_NEXT = 2000
AUDIT_PER_PAGE = 50
RECENT_AUDIT = 8
#: flag changes and alerts read for the charts' markers
MARKER_ROWS = 200
#: points of each guardrail's difference-over-time chart
GUARDRAIL_POINTS = 24
#: the lower steps the rollback control offers (the runbook's path and the matrices' targets)
ROLLBACK_STEPS = (50.0, 25.0, 10.0, 5.0, 0.0)
#: sign-ins, sign-outs and refused credentials shown under the audit log
ACCESS_ROWS = 50
FLAG_LABELS = {
    PERCENTAGE: "Rollout percentage",
    "v2_shadow_mode_enabled": "Shadow mode",
    "v2_monitoring_enabled": "Monitoring",
    "v2_fallback_enabled": "Fallback to v1",
    "v2_autopilot_enabled": "Autopilot",
}
FLAG_HELP = {
    "v2_shadow_mode_enabled": "compute v2 beside v1 for v1 users, off the request path",
    "v2_monitoring_enabled": "structured JSONL logging of every call",
    "v2_fallback_enabled": "serve v1 when v2 raises or has too little data",
    "v2_autopilot_enabled": "advance when the gate says GO; step back as the rollback matrix says",
}
TOGGLES = tuple(flag for flag in FLAG_NAMES if flag != PERCENTAGE)


def _ext() -> RolloutAPI:
    return binding().rollout


# -- access ----------------------------------------------------------------------------


@bp.before_request
def _require_admin() -> Response | None:
    """CSRF on every POST (sign-in included), then an operator on every page but sign-in."""
    if request.method == "POST" and not auth.csrf_valid(request.form.get(auth.CSRF_FIELD)):
        raise AdminError(400, "csrf", "This form has expired or did not come from this dashboard. "
                                      "Reload the page and try again.")
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    principal = auth.html_principal()
    if principal is None:
        if request.method == "GET" and auth.token_enabled():
            return redirect(url_for(".login", next=request.full_path.rstrip("?")))
        raise AdminError(401, "unauthorized", "Sign in to use the rollout dashboard.")
    if request.method == "POST" and request.endpoint not in SIGN_OUT_ENDPOINTS:
        auth.require_role(principal, APPROVER if request.endpoint in APPROVE_ENDPOINTS else OPERATOR)
    g.v2rollout_actor, g.v2rollout_role = principal.actor, principal.role
    return None


@bp.context_processor
def _helpers() -> dict[str, Any]:
    return {
        "csrf_token": auth.csrf_token, "actor": g.get("v2rollout_actor"), "role": g.get("v2rollout_role"),
        "signed_in_with_token": auth.session_actor() is not None, "token_login": auth.token_enabled(),
        "pct": _pct, "num": number, "when": _when, "hours": wording.duration, "ago": wording.ago,
        "flag_value": _flag_value, "gate_value": _gate_value,
        "FLAG_LABELS": FLAG_LABELS, "FLAG_HELP": FLAG_HELP, "TOGGLES": TOGGLES,
    }


def _pct(value: Any) -> str:
    return "–" if value is None else f"{float(value):g} %"


def _flag_value(flag: str, value: Any) -> str:
    if flag == PERCENTAGE:
        return _pct(value)
    return {True: "on", False: "off"}.get(value, str(value))


def _gate_value(value: Any) -> str:
    """A criterion's measured value: a number, yes/no, or – for no data."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return f"{value:.4g}"
    return "–" if value is None else str(value)


def _when(stamp: Any) -> str:
    """ISO text or epoch seconds → ``2025-01-31 14:05:09 UTC``."""
    if isinstance(stamp, (int, float)):
        moment = dt.datetime.fromtimestamp(stamp, dt.UTC)
    else:
        try:
            moment = dt.datetime.fromisoformat(str(stamp))
        except ValueError:
            return str(stamp)
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@bp.errorhandler(AdminError)
def _admin_error(exc: AdminError) -> tuple[str, int, dict[str, str]]:
    headers = {} if exc.retry_after is None else {"Retry-After": str(exc.retry_after)}
    return render_template("v2rollout/error.html", failure=exc), exc.status, headers


@bp.errorhandler(RolloutError)
def _rollout_error(exc: RolloutError) -> tuple[str, int, dict[str, str]]:
    return _admin_error(from_rollout_error(exc))


# -- sign-in ---------------------------------------------------------------------------


def _safe_next(target: str | None) -> str:
    """Only a plain path inside the dashboard, never an open redirect; anything else is the dashboard.

    Refused: control characters and spaces (browsers drop a tab, so slash-tab-slash would read as ``//``),
    backslashes, ``//``, a scheme or host, ``.``/``..`` segments, and paths outside the prefix.
    """
    home = url_for(".index")
    if not target or len(target) > MAX_NEXT or not target.isascii() or not target.isprintable() or " " in target:
        return home
    parts = urlsplit(target)
    path_segments = parts.path.split("/")
    if (not target.startswith(home) or "\\" in target or "//" in parts.path or parts.scheme or parts.netloc
            or parts.fragment or "." in path_segments or ".." in path_segments):
        return home
    return target


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    if not auth.token_enabled():
        raise AdminError(404, "not_found", "Sign-in with a token is not configured.")
    target = _safe_next(request.values.get("next"))
    if request.method == "GET":
        if auth.session_actor() is not None:
            return redirect(target)
        return render_template("v2rollout/login.html", next=target)
    try:
        signed_in = auth.sign_in(request.form.get("token", ""))
    except AdminError as exc:
        if exc.retry_after is None:
            raise
        page = render_template("v2rollout/login.html", next=target, error=f"{exc.message}.")
        return page, exc.status, {"Retry-After": str(exc.retry_after)}
    if signed_in:
        return redirect(target, 303)
    return render_template("v2rollout/login.html", next=target, error="That token is not valid."), 401


@bp.post("/logout")
def logout() -> Response:
    auth.sign_out()
    flash("Signed out.", "success")
    return redirect(url_for(".login") if auth.token_enabled() else url_for(".index"), 303)


# -- pages -----------------------------------------------------------------------------


@bp.get("/")
def index() -> str:
    ext = _ext()
    return render_template("v2rollout/index.html", rollouts=[ext.status(n) for n in sorted(ext.rollouts)])


def _range() -> str:
    key = request.args.get("range", "1h")
    if key not in RANGES:
        raise bad_input(f"range must be one of {', '.join(RANGES)}", "range")
    return key


def _page(name: str, range_key: str) -> dict[str, Any]:
    """Everything the rollout page shows, read fresh for this request."""
    ext = _ext()
    window, bucket = RANGES[range_key]
    status = ext.status(name)
    gate = ext.gate(name)
    in_gate = {c["description"] for c in gate["criteria"]}
    checks = ext.checks(name)
    flag_state = ext.flag_state(name)  # flags and the version the forms send back, from one read
    flags = flag_state["flags"]
    percentage = float(flags[PERCENTAGE])
    now = ext.metrics(name, "5m")
    targets = wording.targets(gate["criteria"])
    rendered_at = time.time()
    marks = markers(ext.audit(name, limit=MARKER_ROWS), ext.alert_history(name, limit=MARKER_ROWS))
    history = ext.gate_history(name, points=GUARDRAIL_POINTS)
    guardrails = guardrail_charts(history, gate["criteria"])
    return {
        "name": name,
        "flag_version": flag_state["version"],
        "flags": flags,
        "gate": gate,
        "rows": [wording.row(c) for c in gate["criteria"]],
        "guardrails": guardrails,
        "guardrails_waiting": [wording.label(m) for m in history["metrics"]] if not guardrails else [],
        "targets": targets,
        "tiles": _tiles(now, targets),
        "next_action": wording.next_action(gate=gate, autopilot=status["autopilot"],
                                           autopilot_on=bool(flags.get("v2_autopilot_enabled")),
                                           percentage=percentage, now=rendered_at),
        "one_back": previous_percentage(percentage) if percentage > 0 else None,
        "lower_steps": [s for s in ROLLBACK_STEPS if s < percentage],
        "alerts": status["alerts"],
        "checks": [c for c in checks if c["description"] in in_gate],
        "other_checks": [c for c in checks if c["description"] not in in_gate],
        "audit": ext.audit(name, limit=RECENT_AUDIT),
        "approvals": [a for a in ext.approvals(name) if a["status"] == "pending"],
        "now": now,
        # the last minute of a series is still being counted: drawing it would show a false drop
        "charts": build_charts(ext.series(name, window)[:-1], bucket, markers=marks, targets=targets),
        "range_key": range_key,
        "ranges": RANGES,
        "range_names": RANGE_NAMES,
        "refresh_s": int(binding().settings.admin_refresh_s),
        "rendered_at": rendered_at,
    }


def _tiles(now: Any, targets: dict[str, wording.Target]) -> list[dict[str, Any]]:
    """The last five minutes' figures, each judged against its target (ok / bad / no data)."""
    v1, v2 = now["arms"]["v1"], now["arms"]["v2"]

    def tile(label: str, value: Any, unit: str, key: str | None, note: str = "") -> dict[str, Any]:
        target = targets.get(key) if key else None
        state = target.judge(value) if target is not None else None
        notes = [f"target {target.text}"] if target is not None else []
        return {"label": label, "value": number(value, unit), "state": state or "none",
                "note": " · ".join(notes + ([note] if note else []))}

    return [
        tile("v2 calculations / min", v2["per_min"], "", None, f"v1: {number(v1['per_min'])}"),
        tile("v2 p95", v2["p95_ms"], " ms", "p95", f"v1 {number(v1['p95_ms'], ' ms')}"),
        tile("v2 error rate", v2["error_rate_pct"], " %", "errors", f"v1 {number(v1['error_rate_pct'], ' %')}"),
        tile("v2 fallback rate", v2["fallback_rate_pct"], " %", "fallbacks"),
        tile("Shadow agreement", now["shadow"]["v2"]["agreement_rate_pct"], " %", "agreement"),
        tile("Availability", now["availability_pct"], " %", None, f"DB errors: {now['db_errors']}"
             + (f" · rows dropped: {now['quarantined']}" if now["quarantined"] else "")),
    ]


@bp.get("/rollouts/<name>")
def rollout(name: str) -> str:
    return render_template("v2rollout/rollout.html", **_page(name, _range()))


@bp.get("/rollouts/<name>/live")
def live(name: str) -> str:
    """The page's live panel alone, fetched by ``dashboard.js`` to refresh in place."""
    return render_template("v2rollout/_live.html", **_page(name, _range()))


@bp.get("/rollouts/<name>/audit")
def audit(name: str) -> str:
    page = inputs.bounded_int(request.args.get("page"), "page", default=1, low=1, high=inputs.MAX_PAGE)
    rows = _ext().audit(name, limit=AUDIT_PER_PAGE + 1, offset=(page - 1) * AUDIT_PER_PAGE)
    return render_template("v2rollout/audit.html", name=name, rows=rows[:AUDIT_PER_PAGE], page=page,
                           has_more=len(rows) > AUDIT_PER_PAGE, access=binding().access.events(limit=ACCESS_ROWS))


@bp.get("/rollouts/<name>/rollback")
def confirm_rollback(name: str) -> str:
    """The confirmation step of a rollback: a page of its own, so it works without JavaScript."""
    return _confirm_page(name, _target(request.args))


def _target(values: Any) -> float:
    return float(parse_flag_text(PERCENTAGE, values.get("target", "0")))


def _confirm_page(name: str, target: float, error: AdminError | None = None) -> str:
    current = _ext().flags(name, fresh=True)[PERCENTAGE]
    return render_template("v2rollout/rollback.html", name=name, current=current, target=target, refusal=error,
                           reason=request.form.get("reason", ""))


# -- changes -----------------------------------------------------------------------------


def _change(name: str, action: Callable[[], str], refused: Callable[[AdminError], str] | None = None) -> Any:
    """Run one change: success → flash and redirect (PRG); refusal → the page again, with why."""
    try:
        message = action()
    except ApprovalRequired as pending:
        flash(f"{name}: {pending}.", "success")
        return redirect(url_for(".rollout", name=name), 303)
    except (AdminError, RolloutError) as exc:
        error = exc if isinstance(exc, AdminError) else from_rollout_error(exc)
        if error.status == 404:
            raise error from None
        if refused is not None:
            return refused(error), error.status
        return render_template("v2rollout/rollout.html", refusal=error, **_page(name, "1h")), error.status
    flash(message, "success")
    return redirect(url_for(".rollout", name=name), 303)


def _form_reason() -> str | None:
    return inputs.reason(request.form.get("reason"))


def _summary(name: str, made: list[Any]) -> str:
    if not made:
        return f"{name}: nothing to change."
    changes = ", ".join(
        f"{FLAG_LABELS.get(c.flag, c.flag)} {_flag_value(c.flag, c.old)} → {_flag_value(c.flag, c.new)}" for c in made
    )
    return f"{name}: {changes}."


@bp.post("/rollouts/<name>/percentage")
def set_percentage(name: str) -> Any:
    def action() -> str:
        value = parse_flag_text(PERCENTAGE, request.form.get("value", ""))
        made = _ext().set_flag(name, PERCENTAGE, value, actor=g.v2rollout_actor, reason=_form_reason(),
                               expected_version=inputs.version(request.form.get("version")))
        return _summary(name, made)

    return _change(name, action)


@bp.post("/rollouts/<name>/toggle")
def toggle(name: str) -> Any:
    def action() -> str:
        flag = request.form.get("flag", "")
        if flag not in TOGGLES:
            raise bad_input(f"flag must be one of {', '.join(TOGGLES)}", "flag")
        value = inputs.form_bool(request.form.get("value"), "value")
        made = _ext().set_flag(name, flag, value, actor=g.v2rollout_actor, reason=_form_reason(),
                               expected_version=inputs.version(request.form.get("version")))
        return _summary(name, made)

    return _change(name, action)


@bp.post("/rollouts/<name>/rollback")
def rollback(name: str) -> Any:
    target = _target(request.form)
    if request.form.get("confirm") != "yes":
        error = bad_input("Confirm the rollback with the button on this page.", "confirm")
        return _confirm_page(name, target, error), 400

    def action() -> str:
        made = _ext().rollback(name, target=target, actor=g.v2rollout_actor, reason=_form_reason())
        return _summary(name, made)

    return _change(name, action, lambda error: _confirm_page(name, target, error))


@bp.post("/rollouts/<name>/advance")
def advance(name: str) -> Any:
    def action() -> str:
        return _summary(name, _ext().advance(name, actor=g.v2rollout_actor, reason=_form_reason()))

    return _change(name, action)


@bp.post("/rollouts/<name>/checks")
def record_check(name: str) -> Any:
    def action() -> str:
        check = request.form.get("check", "").strip()
        if not check:
            raise bad_input("choose a check", "check")
        passed = inputs.form_bool(request.form.get("passed"), "passed")
        note = inputs.reason(request.form.get("note"), "note", inputs.MAX_NOTE)
        _ext().record_check(name, check, passed, actor=g.v2rollout_actor, note=note)
        return f"{name}: check {check!r} recorded as {'passed' if passed else 'failed'}."

    return _change(name, action)


@bp.post("/rollouts/<name>/approvals/<int:approval_id>/approve")
def approve(name: str, approval_id: int) -> Any:
    def action() -> str:
        return _summary(name, _ext().approve(name, approval_id, actor=g.v2rollout_actor))

    return _change(name, action)
