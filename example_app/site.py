"""The landing page and the health check."""
from __future__ import annotations

import sqlite3

from flask import Blueprint, Response, jsonify

from .db import get_db

bp = Blueprint("site", __name__)

_LANDING = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>QB TD edges — Flask-V2Rollout example</title></head>
<body>
<h1>QB touchdown edges</h1>
<p>The example app of Flask-V2Rollout: the <code>qb_td</code> calculator moves from v1 to v2.</p>
<h2>API</h2>
<pre>curl -s -X POST http://HOST/api/edges -H 'Content-Type: application/json' \\
     -H 'X-User-Id: user-42' -d '{"player": "Patrick Mahomes", "opponent": "LAC"}'
curl -s -X POST http://HOST/api/convert -H 'X-User-Id: user-42'</pre>
<p>Read <code>.calculator_version</code> and <code>.metadata</code> in the answer.</p>
<ul>
  <li><a href="/v2rollout/">Rollout admin</a> (needs the admin token)</li>
  <li><a href="/healthz">Health check</a></li>
</ul>
</body></html>
"""


@bp.get("/")
def landing() -> Response:
    return Response(_LANDING, mimetype="text/html")


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    """200 when the domain database answers, 503 otherwise (for load balancers)."""
    try:
        get_db().execute("SELECT 1 FROM player_game_log LIMIT 1").fetchall()
    except sqlite3.Error as exc:
        return jsonify(status="unavailable", detail=str(exc)), 503
    return jsonify(status="ok"), 200
