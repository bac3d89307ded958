"""Who the current user is, for bucketing.

Order: the host's ``@rollout.user_loader``; else Flask-Login's
``current_user`` when installed and authenticated; else a sticky anonymous id
kept in Flask's signed session, so an anonymous visitor keeps one version
across requests. Request headers are never trusted unless the host's loader
chooses to read them.
"""
from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from flask import current_app, session

log = logging.getLogger("flask_v2rollout.identity")

UserLoader = Callable[[], Any]

try:  # optional
    from flask_login import current_user as _login_user
except ImportError:  # pragma: no cover - depends on the environment
    _login_user = None


def resolve_user_id(loader: UserLoader | None, *, use_login: bool, session_key: str) -> str | None:
    """The user id of the current request, or ``None`` when none can be kept sticky."""
    if loader is not None:
        uid = loader()
        if uid is not None:
            return str(uid)
    # Flask-Login keeps its manager on app.login_manager, not in app.extensions.
    if use_login and _login_user is not None and hasattr(current_app, "login_manager"):
        if getattr(_login_user, "is_authenticated", False):
            return str(_login_user.get_id())
    return _anonymous_id(session_key)


def _anonymous_id(session_key: str) -> str | None:
    if not current_app.secret_key:
        return None
    uid = session.get(session_key)
    if not isinstance(uid, str) or not uid:
        uid = "anon:" + uuid.uuid4().hex
        session[session_key] = uid
    return uid
