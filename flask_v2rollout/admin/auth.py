"""Who may use the admin surface, and as whom their changes are audited.

Two ways in, both opt-in (until one is configured the surface answers 404):

* ``V2ROLLOUT_ADMIN_TOKEN``: a Bearer token for the JSON API, compared in
  constant time; the dashboard's sign-in form exchanges it for a mark in the
  signed session (HTML only — the JSON API never reads that mark).
* ``@rollout.admin_required``: a host callable returning the actor (e.g. from
  Flask-Login) or None. It usually rests on a cookie, so a JSON *write*
  authorised by it must also carry a CSRF token (``X-CSRFToken``): a cookie
  alone never authorises a JSON write.
"""
from __future__ import annotations

import hashlib
import hmac
from typing import Any

from flask import current_app, request, session
from flask_wtf.csrf import generate_csrf, validate_csrf
from wtforms.validators import ValidationError

from ..binding import binding
from .errors import AdminError

SESSION_KEY = "v2rollout_admin"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRFToken"
MAX_ACTOR = 200  # the audit table's actor column


def _token() -> str | None:
    return binding().settings.admin_token or None


def _loader() -> Any:
    return binding().admin_required


def configured() -> bool:
    """True once the host said who may enter (a token or an ``admin_required`` callable)."""
    return _token() is not None or _loader() is not None


def token_enabled() -> bool:
    return _token() is not None


def token_actor() -> str:
    return (binding().settings.admin_token_actor or "token")[:MAX_ACTOR]


def _same(candidate: str, token: str) -> bool:
    return hmac.compare_digest(candidate.encode("utf-8", "surrogatepass"), token.encode("utf-8", "surrogatepass"))


def bearer_actor() -> str | None:
    """The token's actor for a valid ``Authorization: Bearer``; None when no Bearer is sent.

    Other schemes (a proxy's Basic auth) are left alone; a wrong Bearer is a 401,
    never a fall-through to the cookie-based callable.
    """
    token = _token()
    scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
    if token is None or scheme.lower() != "bearer":
        return None
    if not _same(credential.strip(), token):
        raise AdminError(401, "unauthorized", "invalid bearer token")
    return token_actor()


def loader_actor() -> str | None:
    """What the host's ``admin_required`` callable says, as audit text; None refuses."""
    func = _loader()
    if func is None:
        return None
    actor = func()
    if actor is None or actor is False:
        return None
    return str(actor).strip()[:MAX_ACTOR] or None


def _session_mark(token: str) -> str:
    """Binds a sign-in to the current token (rotating it signs everyone out) without storing it."""
    key = str(current_app.secret_key or "").encode()
    return hmac.new(key, b"v2rollout-admin:" + token.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def session_actor() -> str | None:
    token, saved = _token(), session.get(SESSION_KEY)
    if token is None or not isinstance(saved, dict) or not isinstance(saved.get("mark"), str):
        return None
    if not hmac.compare_digest(saved["mark"], _session_mark(token)):
        return None
    return str(saved.get("actor") or token_actor())


def sign_in(candidate: str) -> bool:
    """Exchange the token typed into the sign-in form for a mark in the signed session."""
    token = _token()
    if token is None or not _same(candidate.strip(), token):
        return False
    session[SESSION_KEY] = {"actor": token_actor(), "mark": _session_mark(token)}
    return True


def sign_out() -> None:
    session.pop(SESSION_KEY, None)


def html_actor() -> str | None:
    """The dashboard's operator: signed in with the token, else the host's callable."""
    return session_actor() or loader_actor()


def api_actor(*, write: bool) -> str:
    """The JSON API's caller: Bearer token, else the host's callable (+ CSRF header for writes)."""
    actor = bearer_actor()
    if actor is not None:
        return actor
    actor = loader_actor()
    if actor is None:
        hint = "send Authorization: Bearer <token>" if _token() else "the host's admin_required refused"
        raise AdminError(401, "unauthorized", f"authentication required: {hint}")
    if write and not csrf_valid(request.headers.get(CSRF_HEADER)):
        raise AdminError(403, "csrf", f"a write authorised by a session needs a valid {CSRF_HEADER} header")
    return actor


def csrf_token() -> str:
    return str(generate_csrf())


def csrf_valid(value: str | None) -> bool:
    try:
        validate_csrf(value)
    except ValidationError:
        return False
    return True
