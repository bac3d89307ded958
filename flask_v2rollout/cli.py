"""``flask v2rollout …``: the operator's commands (registered through ``flask.commands``)."""
from __future__ import annotations

import getpass
import json
from typing import Any, Callable

import click
from flask import current_app
from flask.cli import with_appcontext

from .errors import RolloutError
from .flags import parse_flag_text


def _ext() -> Any:
    state = current_app.extensions.get("v2rollout")
    if state is None:
        raise click.ClickException("V2Rollout is not initialised on this app (call rollout.init_app(app)).")
    return state.ext


def _rollout_name(name: str | None) -> str:
    known = sorted(_ext().rollouts)
    if name is None:
        if len(known) == 1:
            return known[0]
        raise click.UsageError(f"--rollout is required: several rollouts are registered ({', '.join(known)})"
                               if known else "no rollout is registered")
    if name not in known:
        raise click.UsageError(f"unknown rollout {name!r} (known: {', '.join(known) or 'none'})")
    return name


def _actor(actor: str | None) -> str:
    if actor:
        return actor
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _emit(data: Any, as_json: bool, text: Callable[[Any], str]) -> None:
    click.echo(json.dumps(data, indent=2, default=str) if as_json else text(data))


def _operator_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the extension's errors into a clear message and exit status 1."""
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RolloutError as exc:
            raise click.ClickException(str(exc)) from None
    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    return wrapper


rollout_option = click.option("--rollout", "rollout_name", help="Rollout name (optional when only one exists).")
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
reason_option = click.option("--reason", help="Why; stored in the audit log.")
actor_option = click.option("--actor", help="Who; stored in the audit log (default: cli:<login>).")


@click.group("v2rollout")
def cli() -> None:
    """Flask-V2Rollout: flags, rollback and health of v1 → v2 rollouts."""


def _status_text(rows: list[dict[str, Any]]) -> str:
    lines = []
    for row in rows:
        f = row["flags"]
        lines.append(
            f"{row['rollout']}: {f['v2_rollout_percentage']:g}% v2 "
            f"(shadow {'on' if f['v2_shadow_mode_enabled'] else 'off'}, "
            f"monitoring {'on' if f['v2_monitoring_enabled'] else 'off'}, "
            f"fallback {'on' if f['v2_fallback_enabled'] else 'off'}) version {row['flag_version']}"
        )
    return "\n".join(lines)


@cli.command("status")
@rollout_option
@json_option
@with_appcontext
@_operator_errors
def status(rollout_name: str | None, as_json: bool) -> None:
    """Flags of every rollout (or one)."""
    ext = _ext()
    names = [_rollout_name(rollout_name)] if rollout_name else sorted(ext.rollouts)
    rows = [{"rollout": n, "flags": ext.flags(n, fresh=True), "flag_version": ext.flag_version(n)} for n in names]
    _emit(rows, as_json, _status_text)


@cli.command("set-flag")
@click.option("--flag", required=True, help="v2_rollout_percentage, v2_shadow_mode_enabled, …")
@click.option("--value", required=True, help="A number 0–100 for the percentage; true/false for the others.")
@rollout_option
@reason_option
@actor_option
@with_appcontext
@_operator_errors
def set_flag(flag: str, value: str, rollout_name: str | None, reason: str | None, actor: str | None) -> None:
    """Change one flag (validated and audited)."""
    name = _rollout_name(rollout_name)
    changes = _ext().set_flag(name, flag, parse_flag_text(flag, value), actor=_actor(actor), reason=reason)
    click.echo(f"{name}: {flag} {changes[0].old} -> {changes[0].new}" if changes else f"{name}: {flag} unchanged")


@cli.command("rollback")
@click.option("--target", default="0", show_default=True, help="Percentage to roll back to.")
@rollout_option
@reason_option
@actor_option
@with_appcontext
@_operator_errors
def rollback(target: str, rollout_name: str | None, reason: str | None, actor: str | None) -> None:
    """Lower the v2 percentage (emergency: --target 0)."""
    name = _rollout_name(rollout_name)
    value = parse_flag_text("v2_rollout_percentage", target)
    changes = _ext().rollback(name, target=value, actor=_actor(actor), reason=reason)
    click.echo(f"{name}: rolled back {changes[0].old:g}% -> {changes[0].new:g}%" if changes
               else f"{name}: already at {value:g}%")


@cli.command("audit")
@rollout_option
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@json_option
@with_appcontext
@_operator_errors
def audit(rollout_name: str | None, limit: int, as_json: bool) -> None:
    """Recent flag changes, newest first."""
    ext = _ext()
    rows = ext.audit(_rollout_name(rollout_name) if rollout_name else None, limit=limit)
    _emit(rows, as_json, lambda rs: "\n".join(
        f"{r['created_at']}  {r['rollout']}  {r['flag']}: {r['old_value']} -> {r['new_value']}  "
        f"by {r['actor']}" + (f"  ({r['reason']})" if r["reason"] else "") for r in rs) or "no changes")


@cli.command("metrics")
@rollout_option
@click.option("--window", default="5m", show_default=True, help="30s, 5m, 1h, 24h, 7d …")
@json_option
@with_appcontext
@_operator_errors
def metrics(rollout_name: str | None, window: str, as_json: bool) -> None:
    """Merged metrics of every worker over a window."""
    from .metrics import parse_window

    try:
        parse_window(window)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--window") from None
    name = _rollout_name(rollout_name)
    data = _ext().metrics(name, window)

    def text(m: dict[str, Any]) -> str:
        def fmt(v: Any, unit: str = "") -> str:
            return "–" if v is None else f"{v:.2f}{unit}"
        out = [f"{name} over {window}:"]
        for arm in ("v1", "v2"):
            a = m["arms"][arm]
            out.append(f"  {arm}: {a['calculations']} calcs ({a['per_min']:.1f}/min), p95 {fmt(a['p95_ms'], ' ms')}, "
                       f"errors {fmt(a['error_rate_pct'], '%')}, fallback {fmt(a['fallback_rate_pct'], '%')}, "
                       f"conversion {fmt(a['conversion_rate_pct'], '%')}")
        s = m["shadow"]["v2"]
        out.append(f"  shadow: {s['compared']} compared, agreement {fmt(s['agreement_rate_pct'], '%')}, "
                   f"drops {s['drops']}, timeouts {s['timeouts']}")
        return "\n".join(out)

    _emit(data, as_json, text)
