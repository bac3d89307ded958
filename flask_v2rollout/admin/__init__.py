"""The admin blueprint: the HTML dashboard and the JSON API under ``V2ROLLOUT_URL_PREFIX``.

Closed by default — every admin URL answers 404 until the host configures a
token or ``@rollout.admin_required`` — and every answer carries headers that
keep it out of caches and frames and forbid inline script.
"""
from __future__ import annotations

from flask import Blueprint, Flask, Response, abort

from ..binding import Binding
from . import api, auth, views

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
}

#: under the prefix, and named so that even an empty prefix cannot collide with the host's ``/static``
STATIC_PATH = "/v2rollout-assets"

bp = Blueprint("v2rollout", __name__, static_folder="static", static_url_path=STATIC_PATH,
               template_folder="templates")
bp.register_blueprint(api.bp)
bp.register_blueprint(views.bp)


@bp.before_request
def _closed_until_configured() -> None:
    if not auth.configured():
        abort(404)


@bp.after_request
def _security_headers(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


def register_admin(app: Flask, binding: Binding) -> None:
    """Mount the admin surface on ``app`` at ``V2ROLLOUT_URL_PREFIX``, serving ``binding``'s extension."""
    app.register_blueprint(bp, url_prefix=binding.settings.url_prefix)
