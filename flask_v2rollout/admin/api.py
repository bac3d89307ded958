"""The admin JSON API (``<prefix>/api``): read a rollout's state, change it, audited.

Every answer is JSON; every refusal is ``{"error": {"code", "message", "field"}}``
with a 4xx status and changes nothing. Writes record the caller (see ``auth``).
"""
from __future__ import annotations

import decimal
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.routing import RoutingException

from ..binding import RolloutAPI, binding
from ..errors import ApprovalRequired, FlagError, RolloutError
from ..flags import PERCENTAGE, validate_flag
from ..roles import APPROVER, OPERATOR
from . import auth, inputs
from .errors import AdminError, bad_input, from_rollout_error

bp = Blueprint("api", __name__, url_prefix="/api")

MAX_BODY = 64 * 1024
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _ext() -> RolloutAPI:
    return binding().rollout


@bp.before_request
def _authenticate() -> None:
    """Who is calling; a viewer may only read."""
    write = request.method not in READ_METHODS
    principal = auth.api_principal(write=write)
    if write:
        auth.require_role(principal, OPERATOR)
    g.v2rollout_actor, g.v2rollout_principal = principal.actor, principal


# -- errors ------------------------------------------------------------------------


def _error_response(error: AdminError) -> Response:
    response = jsonify(error.body())
    response.status_code = error.status
    if error.status == 401 and auth.token_enabled():
        response.headers["WWW-Authenticate"] = 'Bearer realm="v2rollout"'
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    return response


@bp.errorhandler(AdminError)
def _admin_error(exc: AdminError) -> Response:
    return _error_response(exc)


@bp.errorhandler(RolloutError)
def _rollout_error(exc: RolloutError) -> Response:
    return _error_response(from_rollout_error(exc))


@bp.errorhandler(ApprovalRequired)
def _approval_required(exc: ApprovalRequired) -> tuple[dict[str, Any], int]:
    """Accepted, not applied: the change waits for a second approver."""
    return {"approval": exc.approval, "message": str(exc)}, 202


def _http_error(exc: HTTPException) -> Response:
    code = (exc.name or "error").lower().replace(" ", "_")
    return _error_response(AdminError(exc.code or 500, code, exc.description or exc.name))


# Registered per status too: the host's own handler for, say, NotFound would
# otherwise win over a blueprint's handler for the HTTPException base class.
for _code in (400, 401, 403, 404, 405, 413, 415):
    bp.register_error_handler(_code, _http_error)
bp.register_error_handler(HTTPException, _http_error)


# -- input ---------------------------------------------------------------------------


def _body(allowed: frozenset[str]) -> dict[str, Any]:
    """The JSON object sent (``{}`` for an empty body), refusing unknown keys."""
    raw = request.stream.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise AdminError(413, "too_large", f"the body is larger than {MAX_BODY} bytes")
    if not raw.strip():
        return {}
    if not request.is_json:
        raise AdminError(415, "unsupported_media_type", "send the body as Content-Type: application/json")
    try:
        # decimals exactly as sent: 1e-400 must not arrive as 0.0, nor 12.5000000000000001 as 12.5
        data = current_app.json.loads(raw, parse_float=decimal.Decimal)
    except (ValueError, RecursionError):
        raise AdminError(400, "invalid_json", "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise bad_input("the body must be a JSON object")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise bad_input(f"unknown field {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}", unknown[0])
    return data


def _expected_version(body: dict[str, Any]) -> int | None:
    """``version`` in the body or an ``If-Match`` header: the flag version the client last read."""
    in_body = inputs.version(body.get("version"))
    header = request.headers.get("If-Match")
    in_header = None if header is None or header.strip() == "*" else inputs.version(header, "If-Match")
    if in_body is not None and in_header is not None and in_body != in_header:
        raise bad_input("version and If-Match disagree", "version")
    return in_body if in_body is not None else in_header


def _flags_of(name: str) -> dict[str, Any]:
    state = _ext().flag_state(name)  # flags and version from one read
    return {"rollout": name, "flags": state["flags"], "flag_version": state["version"]}


def _changes(made: list[Any]) -> list[dict[str, Any]]:
    return [{"flag": c.flag, "old": c.old, "new": c.new} for c in made]


# -- reads ---------------------------------------------------------------------------


@bp.get("/rollouts")
def list_rollouts() -> Any:
    ext = _ext()
    return {"rollouts": [ext.status(name) for name in sorted(ext.rollouts)]}


@bp.get("/rollouts/<name>")
def get_rollout(name: str) -> Any:
    return _ext().status(name)


@bp.get("/rollouts/<name>/flags")
def get_flags(name: str) -> Any:
    data = _flags_of(name)
    response = jsonify(data)
    response.set_etag(str(data["flag_version"]))
    return response


@bp.get("/rollouts/<name>/metrics")
def get_metrics(name: str) -> Any:
    return _ext().metrics(name, inputs.window(request.args.get("window")))


@bp.get("/rollouts/<name>/gate")
def get_gate(name: str) -> Any:
    return _ext().gate(name)


@bp.get("/rollouts/<name>/gate/history")
def get_gate_history(name: str) -> Any:
    points = inputs.bounded_int(request.args.get("points"), "points", default=24, low=1, high=inputs.MAX_POINTS)
    return _ext().gate_history(name, points=points)


@bp.get("/rollouts/<name>/checks")
def get_checks(name: str) -> Any:
    return {"rollout": name, "checks": _ext().checks(name)}


@bp.get("/alerts")
def get_alerts() -> Any:
    return {"alerts": _ext().alerts(request.args.get("rollout") or None)}


@bp.get("/audit")
def get_audit() -> Any:
    page = inputs.bounded_int(request.args.get("page"), "page", default=1, low=1, high=inputs.MAX_PAGE)
    per_page = inputs.bounded_int(request.args.get("per_page"), "per_page", default=50, low=1,
                                  high=inputs.MAX_PER_PAGE)
    rollout = request.args.get("rollout") or None
    rows = _ext().audit(rollout, limit=per_page + 1, offset=(page - 1) * per_page)
    return {"items": rows[:per_page], "page": page, "per_page": per_page, "has_more": len(rows) > per_page,
            "total": _ext().audit_count(rollout)}


# -- writes --------------------------------------------------------------------------


@bp.patch("/rollouts/<name>/flags")
def patch_flags(name: str) -> Any:
    """One flag ``{"flag", "value"}`` or several at once ``{"flags": {…}}``, all or nothing."""
    body = _body(frozenset({"flag", "value", "flags", "reason", "version"}))
    if ("flag" in body) == ("flags" in body):
        raise bad_input('send either "flag" with "value", or "flags"', "flags" if "flags" in body else "flag")
    if "flag" in body:
        if not isinstance(body["flag"], str):
            raise bad_input("flag must be a string", "flag")
        if "value" not in body:
            raise bad_input("value is required with flag", "value")
        changes = {body["flag"]: body["value"]}
    else:
        if "value" in body:
            raise bad_input('"value" goes with "flag"; with "flags" give a mapping', "value")
        if not isinstance(body["flags"], dict):
            raise bad_input("flags must be an object of flag names to values", "flags")
        changes = body["flags"]
    made = _ext().set_flags(name, changes, actor=g.v2rollout_actor, reason=inputs.reason(body.get("reason")),
                            expected_version=_expected_version(body))
    return {**_flags_of(name), "changes": _changes(made)}


@bp.post("/rollouts/<name>/rollback")
def post_rollback(name: str) -> Any:
    body = _body(frozenset({"target", "reason"}))
    try:
        target = validate_flag(PERCENTAGE, body.get("target", 0))
    except FlagError as exc:
        raise bad_input(str(exc).replace(PERCENTAGE, "target"), "target") from None
    made = _ext().rollback(name, target=target, actor=g.v2rollout_actor, reason=inputs.reason(body.get("reason")))
    return {**_flags_of(name), "changes": _changes(made)}


@bp.post("/rollouts/<name>/advance")
def post_advance(name: str) -> Any:
    body = _body(frozenset({"reason"}))
    made = _ext().advance(name, actor=g.v2rollout_actor, reason=inputs.reason(body.get("reason")))
    return {**_flags_of(name), "changes": _changes(made)}


@bp.post("/rollouts/<name>/checks")
def post_check(name: str) -> Any:
    body = _body(frozenset({"check", "passed", "note"}))
    check = body.get("check")
    if not isinstance(check, str) or not check.strip():
        raise bad_input("check must be the name of a manual check", "check")
    passed = inputs.json_bool(body.get("passed"), "passed")
    note = inputs.reason(body.get("note"), "note", inputs.MAX_NOTE)
    _ext().record_check(name, check.strip(), passed, actor=g.v2rollout_actor, note=note)
    return {"rollout": name, "checks": _ext().checks(name)}


@bp.get("/rollouts/<name>/approvals")
def get_approvals(name: str) -> Any:
    return {"rollout": name, "approvals": _ext().approvals(name)}


@bp.post("/rollouts/<name>/approvals/<int:approval_id>/approve")
def post_approve(name: str, approval_id: int) -> Any:
    """Apply someone else's pending change (approvers only)."""
    _body(frozenset())
    auth.require_role(g.v2rollout_principal, APPROVER)
    made = _ext().approve(name, approval_id, actor=g.v2rollout_actor)
    return {**_flags_of(name), "changes": _changes(made)}


# -- anything else under /api ------------------------------------------------------


@bp.route("/", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
@bp.route("/<path:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def unmatched(rest: str = "") -> Any:
    """Unknown paths and wrong methods answer in the API's error format, not the host's HTML."""
    allowed = _methods_elsewhere()
    if not allowed:
        raise AdminError(404, "not_found", "no such API endpoint")
    response = _error_response(
        AdminError(405, "method_not_allowed", f"{request.method} is not allowed here; use {', '.join(allowed)}")
    )
    response.headers["Allow"] = ", ".join(allowed)
    return response


def _methods_elsewhere() -> list[str]:
    adapter = current_app.create_url_adapter(request)
    allowed = []
    for method in ("GET", "POST", "PATCH"):
        try:
            endpoint, _ = adapter.match(method=method)  # type: ignore[union-attr]
        except (HTTPException, RoutingException):
            continue
        if endpoint != request.endpoint:
            allowed.append(method)
    return allowed
