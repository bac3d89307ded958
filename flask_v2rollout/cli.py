"""``flask v2rollout …``: the operator's commands (registered through ``flask.commands``)."""
from __future__ import annotations

import getpass
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import click
from flask import current_app
from flask.cli import with_appcontext

from .binding import Binding
from .errors import ApprovalRequired, RolloutError
from .extension import V2Rollout
from .flags import MAX_ACTOR, MAX_NOTE, MAX_REASON, parse_flag_text
from .storefile import existing_store_only


class StrictText(click.ParamType[str, Any]):
    """Text that decodes as UTF-8: undecodable bytes are refused here, not as a traceback at the database."""

    name = "text"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = value if isinstance(value, str) else os.fsdecode(value)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # the undecodable bytes became lone surrogates (os.fsdecode)
            self.fail("is not valid UTF-8 (check the terminal's or the script's encoding)", param, ctx)
        return text


class AsciiInt(click.ParamType[int, Any]):
    """A whole number in ASCII digits (``int()`` would take ``1_0`` and other scripts' digits)."""

    name = "integer"

    def __init__(self, low: int, high: int) -> None:
        self.low, self.high = low, high

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip()
        if not (text.isascii() and text.isdigit() and len(text) <= 9) or not self.low <= int(text) <= self.high:
            self.fail(f"must be a whole number from {self.low} to {self.high}", param, ctx)
        return int(text)


TEXT = StrictText()


def _ext() -> V2Rollout:
    found = current_app.extensions.get(Binding.KEY)
    if found is None:
        raise click.ClickException("V2Rollout is not initialised on this app (call rollout.init_app(app)).")
    rollout = found.rollout
    assert isinstance(rollout, V2Rollout)
    return rollout


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


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def _emit(data: Any, as_json: bool, text: Callable[[Any], str]) -> None:
    click.echo(json.dumps(data, indent=2, default=str) if as_json else text(data))


#: exit status of a change that was accepted but waits for a second approver
PENDING_APPROVAL = 3


def _operator_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the extension's errors into a clear message and exit status 1 (3: waiting for approval)."""
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ApprovalRequired as pending:
            click.echo(f"{pending}; approve with: flask v2rollout approve {pending.approval['id']}")
            raise SystemExit(PENDING_APPROVAL) from None
        except RolloutError as exc:
            raise click.ClickException(str(exc)) from None
    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    return wrapper


rollout_option = click.option("--rollout", "rollout_name", type=TEXT,
                              help="Rollout name (optional when only one exists).")
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
reason_option = click.option("--reason", type=TEXT,
                             help=f"Why; stored in the audit log (at most {MAX_REASON} characters).")
actor_option = click.option("--actor", type=TEXT,
                            help=f"Who; stored in the audit log (default: cli:<login>; at most {MAX_ACTOR} chars).")


@click.group("v2rollout")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Flask-V2Rollout: flags, rollback and health of v1 → v2 rollouts."""
    # An operator acts on the store the running app uses: a missing SQLite file means it was deleted or
    # moved, and a new empty one here would take the command while the workers keep the old one.
    ctx.with_resource(existing_store_only())


def _status_text(rows: list[dict[str, Any]]) -> str:
    lines = []
    for row in rows:
        f = row["flags"]
        lines.append(
            f"{row['rollout']}: {f['v2_rollout_percentage']:g}% v2 "
            f"(shadow {'on' if f['v2_shadow_mode_enabled'] else 'off'}, "
            f"monitoring {'on' if f['v2_monitoring_enabled'] else 'off'}, "
            f"fallback {'on' if f['v2_fallback_enabled'] else 'off'}, "
            f"autopilot {'on' if f['v2_autopilot_enabled'] else 'off'}) version {row['flag_version']}"
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
@click.option("--flag", required=True, type=TEXT, help="v2_rollout_percentage, v2_shadow_mode_enabled, …")
@click.option("--value", required=True, type=TEXT,
              help="A number 0–100 for the percentage; true/false for the others.")
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
@click.option("--target", default="0", show_default=True, type=TEXT, help="Percentage to roll back to.")
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
@click.option("--limit", default=20, show_default=True, type=AsciiInt(1, 1000))
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
@click.option("--window", default="5m", show_default=True, type=TEXT, help="30s, 5m, 1h, 24h, 7d …")
@json_option
@with_appcontext
@_operator_errors
def metrics(rollout_name: str | None, window: str, as_json: bool) -> None:
    """Merged metrics of every worker over a window."""
    from .metrics.recorder import parse_window

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


def _gate_text(g: dict[str, Any]) -> str:
    lines = [f"{g['rollout']}: stage {g['stage']} -> {g['to_stage'] or '(last)'}: gate {g['gate']} {g['decision']}"]
    for c in g["criteria"]:
        value = "–" if c["value"] is None else c["value"]
        lines.append(f"  [{c['verdict']:>12}] {c['kind']:7} {c['description']}: {value}"
                     + (f" (threshold {c['threshold']})" if c["threshold"] else ""))
    lines += [f"  reason: {r}" for r in g["reasons"]]
    m = g["matrix"]
    lines.append(f"  rollback matrix: {m['severity']} — {m['action']}"
                 + (f" ({'; '.join(m['signals'])})" if m["signals"] else ""))
    return "\n".join(lines)


@cli.command("gate")
@rollout_option
@json_option
@with_appcontext
@_operator_errors
def gate(rollout_name: str | None, as_json: bool) -> None:
    """The current gate's decision with every criterion (exit 0 whatever it says)."""
    _emit(_ext().gate(_rollout_name(rollout_name)), as_json, _gate_text)


@cli.command("advance")
@rollout_option
@reason_option
@actor_option
@with_appcontext
@_operator_errors
def advance(rollout_name: str | None, reason: str | None, actor: str | None) -> None:
    """Move to the next stage; refused unless the gate says GO."""
    name = _rollout_name(rollout_name)
    changes = _ext().advance(name, actor=_actor(actor), reason=reason)
    click.echo(f"{name}: " + ", ".join(f"{c.flag} {c.old} -> {c.new}" for c in changes))


@cli.command("alerts")
@rollout_option
@click.option("--history", is_flag=True, help="Past transitions instead of active alerts.")
@json_option
@with_appcontext
@_operator_errors
def alerts(rollout_name: str | None, history: bool, as_json: bool) -> None:
    """Active (pending/firing) alerts, or their history."""
    ext = _ext()
    name = _rollout_name(rollout_name) if rollout_name else None
    rows = ext.alert_history(name) if history else ext.alerts(name)
    if history:
        _emit(rows, as_json, lambda rs: "\n".join(
            f"{_iso(r['at'])}  {r['rollout']}  {r['rule']} {r['event']} ({r['severity']})" for r in rs)
            or "no alerts yet")
    else:
        _emit(rows, as_json, lambda rs: "\n".join(
            f"{r['rollout']}  {r['severity']}  {r['rule']}: {r['state']} — {r['action']}"
            + (f" (last evaluated {_iso(r['evaluated_at'])})" if r.get("evaluated_at") else "") for r in rs
        ) or "no active alerts")


@cli.command("evaluate")
@json_option
@with_appcontext
@_operator_errors
def evaluate_cmd(as_json: bool) -> None:
    """Flush, then evaluate alerts, auto-rollback and autopilot now."""
    report = _ext().evaluate()
    if report is None:
        raise click.ClickException("another process is evaluating (lease held); try again shortly")
    _emit(report, as_json, lambda r: "\n".join(
        f"{name}: {len(v['transitions'])} alert transition(s)"
        + (", rolled back to 0 %" if v["auto_rollback"] else "")
        + (f", autopilot {v['autopilot']['kind']}: {v['autopilot']['reason']}" if v["autopilot"] else "")
        for name, v in r.items()))


@cli.command("test-alert")
@actor_option
@with_appcontext
@_operator_errors
def test_alert(actor: str | None) -> None:
    """Send a test alert through every configured channel; exits 1 if one is not delivered."""
    _ext().send_test_alert(actor=_actor(actor))
    click.echo("test alert delivered")


@cli.command("check")
@click.argument("check_name", type=TEXT)
@click.option("--pass/--fail", "passed", default=None, help="The verdict (required).")
@click.option("--note", type=TEXT, help=f"Free text stored with the check (at most {MAX_NOTE} characters).")
@rollout_option
@actor_option
@json_option
@with_appcontext
@_operator_errors
def check(check_name: str, passed: bool | None, note: str | None, rollout_name: str | None, actor: str | None,
          as_json: bool) -> None:
    """Record a manual gate criterion, e.g. `check team_confident --pass`."""
    if passed is None:
        raise click.UsageError("say --pass or --fail")
    name = _rollout_name(rollout_name)
    ext = _ext()
    in_gate = [c["check"] for c in ext.checks(name) if c["in_gate"]]
    if check_name not in in_gate:
        gate = ext.gate(name)
        raise click.UsageError(
            f"{check_name!r} is not a manual check of the current gate ({gate['gate']}, stage {gate['stage']}); "
            + (f"its manual checks: {', '.join(in_gate)}" if in_gate else "that gate reads no manual check")
            + " (flask v2rollout checks); nothing was recorded")
    row = ext.record_check(name, check_name, passed, actor=_actor(actor), note=note)
    _emit(row, as_json, lambda r: f"{name}: {r['check']} {'PASS' if r['passed'] else 'FAIL'} by {r['actor']}")


def _checks_text(d: dict[str, Any]) -> str:
    rows = d["checks"]
    where = f"{d['rollout']}: gate {d['gate']} (stage {d['stage']})"
    if not rows:
        return f"{where} reads no manual check"
    width = max(len(r["check"]) for r in rows)
    lines = [f"{where}, manual checks:"]
    for r in rows:
        state = "pending" if r["passed"] is None else "PASS" if r["passed"] else "FAIL"
        by = f"  by {r['actor']} at {_iso(r['at'])}" if r["passed"] is not None else ""
        note = f" ({r['note']})" if r.get("note") else ""
        lines.append(f"  {state:7}  {r['check']:{width}}  {r['description']}{by}{note}")
    return "\n".join(lines)


@cli.command("checks")
@rollout_option
@json_option
@with_appcontext
@_operator_errors
def checks(rollout_name: str | None, as_json: bool) -> None:
    """The current gate's manual checks with their state in this stage (pending, PASS, FAIL)."""
    name = _rollout_name(rollout_name)
    ext = _ext()
    rows = [c for c in ext.checks(name) if c["in_gate"]]
    gate = ext.gate(name)
    _emit({"rollout": name, "stage": gate["stage"], "gate": gate["gate"], "checks": rows}, as_json, _checks_text)


@cli.command("verify")
@json_option
@with_appcontext
@_operator_errors
def verify(as_json: bool) -> None:
    """The pre-deployment checklist; exits 1 if any check FAILs."""
    results = _ext().verify()
    _emit(results, as_json, lambda rs: "\n".join(f"{r['status']}  {r['check']}: {r['detail']}" for r in rs))
    if any(r["status"] == "FAIL" for r in results):
        raise SystemExit(1)


@cli.command("approvals")
@rollout_option
@json_option
@with_appcontext
@_operator_errors
def approvals(rollout_name: str | None, as_json: bool) -> None:
    """Changes waiting for a second approver, and recently decided ones."""
    rows = _ext().approvals(_rollout_name(rollout_name))
    _emit(rows, as_json, lambda rs: "\n".join(
        f"#{r['id']}  {r['status']}  {r['changes']}  asked by {r['requested_by']} at {_iso(r['requested_at'])}"
        + (f", decided by {r['decided_by']}" if r["decided_by"] else "") for r in rs) or "no approvals")


@cli.command("approve")
@click.argument("approval_id", type=AsciiInt(1, 2**31 - 1))
@rollout_option
@actor_option
@with_appcontext
@_operator_errors
def approve(approval_id: int, rollout_name: str | None, actor: str | None) -> None:
    """Apply someone else's pending change (the four-eyes rule: not your own)."""
    name = _rollout_name(rollout_name)
    changes = _ext().approve(name, approval_id, actor=_actor(actor))
    click.echo(f"{name}: approved #{approval_id}: " + ", ".join(f"{c.flag} {c.old} -> {c.new}" for c in changes))


def _window_seconds(window: str) -> int:
    from .metrics.recorder import parse_window

    try:
        return parse_window(window)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--window") from None


def _num(value: Any, unit: str = "", signed: bool = False) -> str:
    return "–" if value is None else f"{value:+.2f}{unit}" if signed else f"{value:.2f}{unit}"


def _compare_text(r: dict[str, Any], output: str | None, top: int) -> str:
    o = r["overall"]
    classes = ", ".join(f"{k} {v}" for k, v in o["agreement"].items()) or "none"
    lines = [
        f"{r['rollout']}: {o['comparisons']} shadow comparisons from {_iso(r['from'])} to {_iso(r['to'])}",
        f"  overall: v1 avg {_num(o['v1_avg'])}, v2 avg {_num(o['v2_avg'])}, difference avg "
        f"{_num(o['difference_avg'], signed=True)}, |difference| avg {_num(o['abs_difference_avg'])}, "
        f"agreement {_num(o['agreement_rate_pct'], ' %')} ({classes})",
        f"  outliers (|difference| > {r['outlier_threshold']:g}): {len(r['outliers'])}",
    ]
    for x in r["outliers"][:5]:
        lines.append(f"    {x['subject']}: v1 {_num(x['v1_value'])}, v2 {_num(x['v2_value'])}, "
                     f"difference {_num(x['difference'], signed=True)}")
    lines.append(f"  {'subject':<28} {'n':>6} {'v1 avg':>8} {'v2 avg':>8} {'diff':>8} {'agree':>8}")
    for s in r["subjects"][:top]:
        lines.append(f"  {str(s['subject'])[:28]:<28} {s['comparisons']:>6} {_num(s['v1_avg']):>8} "
                     f"{_num(s['v2_avg']):>8} {_num(s['difference_avg'], signed=True):>8} "
                     f"{_num(s['agreement_rate_pct'], '%'):>8}")
    if len(r["subjects"]) > top:
        lines.append(f"  … {len(r['subjects']) - top} more subject(s)" + (f" in {output}" if output else ""))
    if output:
        lines.append(f"wrote {output}")
    return "\n".join(lines)


@cli.command("compare")
@rollout_option
@click.option("--window", default="24h", show_default=True, type=TEXT, help="30m, 24h, 7d …")
@click.option("--outlier", default=5.0, show_default=True, type=click.FloatRange(min=0),
              help="A pair whose values differ by more than this is an outlier.")
@click.option("--output", type=click.Path(dir_okay=False, writable=True), help="Write the full report as JSON.")
@click.option("--top", default=20, show_default=True, type=AsciiInt(1, 100000), help="Subjects printed.")
@json_option
@with_appcontext
@_operator_errors
def compare(rollout_name: str | None, window: str, outlier: float, output: str | None, top: int,
            as_json: bool) -> None:
    """v1 against v2 per subject, from the shadow comparisons recorded in SQL (every worker's)."""
    seconds = _window_seconds(window)
    report = _ext().comparisons(_rollout_name(rollout_name), seconds, outlier=outlier)
    if output:
        with open(output, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=2, default=str)
    _emit(report, as_json, lambda r: _compare_text(r, output, top))


@cli.command("inputs")
@rollout_option
@click.option("--window", default="24h", show_default=True, type=TEXT, help="30m, 24h, 7d …")
@click.option("--output", required=True, type=click.Path(dir_okay=False, writable=True),
              help="JSONL file for `flask v2rollout replay --from`.")
@with_appcontext
@_operator_errors
def inputs(rollout_name: str | None, window: str, output: str) -> None:
    """Export the recorded inputs (record_inputs=True) of a window, one JSON object a line."""
    seconds = _window_seconds(window)
    name = _rollout_name(rollout_name)
    rows = _ext().recorded_inputs(name, seconds)
    with open(output, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps({**row, "inputs": json.loads(row["inputs"])}, separators=(",", ":")) + "\n")
    click.echo(f"{name}: wrote {len(rows)} recorded input(s) of the last {window} to {output}")


def _read_inputs(path: str, name: str) -> list[dict[str, Any]]:
    records = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise click.ClickException(f"{path}:{n}: not JSON ({exc}); nothing was replayed") from None
            if not isinstance(record, dict) or "inputs" not in record:
                raise click.ClickException(f"{path}:{n}: a record needs 'inputs'; nothing was replayed")
            if record.get("rollout", name) == name:
                records.append(record)
    return records


@cli.command("replay")
@rollout_option
@click.option("--from", "source", required=True, type=click.Path(exists=True, dir_okay=False),
              help="JSONL written by `flask v2rollout inputs`.")
@click.option("--min-agreement", default=60.0, show_default=True, type=click.FloatRange(0, 100))
@click.option("--max-agreement", default=85.0, show_default=True, type=click.FloatRange(0, 100))
@click.option("--max-fallback", default=20.0, show_default=True, type=click.FloatRange(0, 100))
@click.option("--max-errors", default=1.0, show_default=True, type=click.FloatRange(0, 100),
              help="Percent of inputs on which v2 may raise.")
@json_option
@with_appcontext
@_operator_errors
def replay(rollout_name: str | None, source: str, min_agreement: float, max_agreement: float,
           max_fallback: float, max_errors: float, as_json: bool) -> None:
    """Re-run the current v2 and v1 offline on recorded inputs; exit 1 unless the figures allow a resume."""
    name = _rollout_name(rollout_name)
    records = _read_inputs(source, name)
    try:
        report = _ext().replay(name, records)
    except ValueError as exc:
        raise click.ClickException(f"{source}: {exc}; nothing was replayed") from None
    problems = []
    rate, fallback, errors = report["agreement_rate_pct"], report["fallback_rate_pct"], report["v2_error_rate_pct"]
    if not report["inputs"]:
        problems.append("no recorded inputs")
    if rate is not None and not min_agreement <= rate <= max_agreement:
        problems.append(f"agreement {rate:.2f} % outside {min_agreement:g}–{max_agreement:g} %")
    if fallback is not None and fallback >= max_fallback:
        problems.append(f"fallback {fallback:.2f} % not below {max_fallback:g} %")
    if errors is not None and errors >= max_errors:
        problems.append(f"v2 errors {errors:.2f} % not below {max_errors:g} %")
    report["verdict"] = "NO-GO" if problems else "GO"
    report["problems"] = problems

    def text(r: dict[str, Any]) -> str:
        classes = ", ".join(f"{k} {v}" for k, v in r["agreement"].items()) or "none"
        reasons = ", ".join(f"{k} {v}" for k, v in r["fallback_reasons"].items()) or "none"
        return "\n".join([
            f"{name}: replayed {r['inputs']} recorded input(s) from {source}",
            f"  agreement {_num(r['agreement_rate_pct'], ' %')} ({classes}); |difference| avg "
            f"{_num(r['abs_difference_avg'])}",
            f"  fallback {_num(r['fallback_rate_pct'], ' %')} ({r['fallbacks']}: {reasons})",
            f"  v2 errors {_num(r['v2_error_rate_pct'], ' %')} ({r['v2_errors']}"
            + (": " + ", ".join(f"{k} {v}" for k, v in r["v2_errors_by_type"].items()) if r["v2_errors"] else "")
            + ")" + (f"; v1 failed on {sum(r['v1_errors'].values())}" if r["v1_errors"] else ""),
            f"  {r['verdict']}" + (": " + "; ".join(r["problems"]) if r["problems"] else ""),
        ])

    _emit(report, as_json, text)
    if problems:
        raise SystemExit(1)
