"""Who may use the admin surface, and as whom their changes are audited.

Two ways in, both opt-in (until one is configured the surface answers 404):

* ``V2ROLLOUT_ADMIN_TOKEN``: a Bearer token for the JSON API, compared in
  constant time; the dashboard's sign-in form exchanges it for a server-side
  session (SQL) whose random id the signed cookie carries (HTML only — the JSON
  API never reads it). Refused credentials are limited per client address and
  overall (429 + ``Retry-After``), counted in SQL so every worker agrees.
* ``@rollout.admin_required``: a host callable returning the actor (e.g. from
  Flask-Login) or None. It usually rests on a cookie, so a JSON *write*
  authorised by it must also carry a CSRF token (``X-CSRFToken``): a cookie
  alone never authorises a JSON write.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Mapping
from typing import Any

from flask import current_app, g, request, session
from flask_wtf.csrf import generate_csrf, validate_csrf
from wtforms.validators import ValidationError

from ..access import BEARER, SIGN_IN, SIGN_OUT, AccessStore
from ..binding import binding
from ..flags import MAX_ACTOR
from ..roles import APPROVER, ROLES, Principal
from .errors import AdminError

log = logging.getLogger("flask_v2rollout")

SESSION_KEY = "v2rollout_admin"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRFToken"


def _token() -> str | None:
    return binding().settings.admin_secret or None


def _access() -> AccessStore:
    return binding().access


def client_address() -> str:
    """The caller's address as the WSGI server saw it (behind a proxy: configure ProxyFix)."""
    return request.remote_addr or "unknown"


def _not_limited() -> None:
    """Refuse before comparing anything while this address, or everyone, has too many refusals."""
    wait = _access().retry_after(client_address())
    if wait is not None:
        raise AdminError(429, "too_many_attempts",
                         f"too many refused credentials; try again in {wait} s", retry_after=wait)


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
    _not_limited()
    if not _same(credential.strip(), token):
        _access().record(BEARER, failed=True, address=client_address(), detail="invalid bearer token")
        raise AdminError(401, "unauthorized", "invalid bearer token")
    return token_actor()


def loader_principal() -> Principal | None:
    """What the host's ``admin_required`` callable says; None (or False) refuses.

    It returns an actor (full rights, as before roles existed), ``(actor, role)`` or
    ``{"actor": …, "role": …}``; an unknown role refuses with 403 (fail closed).
    """
    func = _loader()
    if func is None:
        return None
    said = func()
    if said is None or said is False:
        return None
    if isinstance(said, tuple) and len(said) == 2:
        actor, role = said
    elif isinstance(said, Mapping):
        actor, role = said.get("actor"), said.get("role")
    else:
        actor, role = said, APPROVER
    if role not in ROLES:
        log.error("v2rollout: admin_required returned the unknown role %r (roles: %s)", role, ", ".join(ROLES))
        raise AdminError(403, "forbidden", f"unknown role; roles are {', '.join(ROLES)}")
    text = "" if actor is None else str(actor).strip()[:MAX_ACTOR]
    return Principal(text, role) if text else None


def _session_mark(token: str) -> str:
    """Binds a sign-in to the current token (rotating it signs everyone out) without storing it."""
    key = str(current_app.secret_key or "").encode()
    return hmac.new(key, b"v2rollout-admin:" + token.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def session_actor() -> str | None:
    """The dashboard operator of a live server-side session (checked once per request)."""
    if "v2rollout_session_actor" not in g:
        g.v2rollout_session_actor = _live_session()
    found: str | None = g.v2rollout_session_actor
    return found


def _live_session() -> str | None:
    token, saved = _token(), session.get(SESSION_KEY)
    if token is None or not isinstance(saved, dict) or not isinstance(saved.get("sid"), str):
        return None
    return _access().session_actor(saved["sid"], _session_mark(token))


def sign_in(candidate: str) -> bool:
    """Exchange the token typed into the sign-in form for a new server-side session; audited either way."""
    token = _token()
    if token is None:
        return False
    _not_limited()
    address = client_address()
    if not _same(candidate.strip(), token):
        _access().record(SIGN_IN, failed=True, address=address, detail="invalid token")
        return False
    actor = token_actor()
    session[SESSION_KEY] = {"sid": _access().open_session(actor=actor, token_mark=_session_mark(token),
                                                          address=address)}
    g.v2rollout_session_actor = actor
    _access().record(SIGN_IN, failed=False, address=address, actor=actor)
    return True


def sign_out() -> None:
    """Revoke the session server-side: a copy of the cookie is worthless from now on."""
    actor = session_actor()
    saved = session.pop(SESSION_KEY, None)
    if isinstance(saved, dict) and isinstance(saved.get("sid"), str):
        _access().revoke(saved["sid"])
        _access().record(SIGN_OUT, failed=False, address=client_address(), actor=actor)
    g.v2rollout_session_actor = None


def html_principal() -> Principal | None:
    """The dashboard's user: signed in with the token (full rights), else the host's callable."""
    actor = session_actor()
    return Principal(actor, APPROVER) if actor is not None else loader_principal()


def api_principal(*, write: bool) -> Principal:
    """The JSON API's caller: Bearer token (full rights), else the host's callable (+ CSRF header for writes)."""
    actor = bearer_actor()
    if actor is not None:
        return Principal(actor, APPROVER)
    found = loader_principal()
    if found is None:
        hint = "send Authorization: Bearer <token>" if _token() else "the host's admin_required refused"
        raise AdminError(401, "unauthorized", f"authentication required: {hint}")
    if write and not csrf_valid(request.headers.get(CSRF_HEADER)):
        raise AdminError(403, "csrf", f"a write authorised by a session needs a valid {CSRF_HEADER} header")
    return found


def require_role(principal: Principal, role: str) -> None:
    """403 unless ``principal`` holds ``role`` or a higher one."""
    if ROLES.index(principal.role) < ROLES.index(role):
        raise AdminError(403, "forbidden", f"{principal.actor} is a {principal.role}; this needs the {role} role")


def csrf_token() -> str:
    return str(generate_csrf())


def csrf_valid(value: str | None) -> bool:
    try:
        validate_csrf(value)
    except ValidationError:
        return False
    return True
