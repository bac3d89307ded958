"""A small host app, written the way a team adopting Flask-V2Rollout would."""
from __future__ import annotations

from flask import Flask, jsonify, request

from flask_v2rollout import Fallback, V2Rollout

rollout = V2Rollout()


def price_v1(item: str) -> float:
    return 10.0


def price_v2(item: str) -> float:
    if item == "rare":
        raise Fallback("no price history")
    return 10.5


rollout.register("pricing", v1=price_v1, v2=price_v2, subject=lambda item: item)


@rollout.user_loader
def current_user_id() -> str | None:
    return request.args.get("user")


def create_app(instance_path: str) -> Flask:
    app = Flask(__name__, instance_path=instance_path)
    # V2ROLLOUT_FLAG_READ_BUDGET_MS: the host's tests assert what the very first request sees.
    app.config.update(SECRET_KEY="host", V2ROLLOUT_DEFAULTS={"v2_shadow_mode_enabled": True},
                      V2ROLLOUT_FLAG_READ_BUDGET_MS=10_000)
    rollout.init_app(app)

    @app.get("/price/<item>")
    def price(item: str):
        outcome = rollout.calculate("pricing", item)
        return jsonify(price=outcome.value, version=outcome.version)

    @app.post("/buy")
    def buy():
        rollout.track_conversion("pricing")
        return "", 204

    return app
