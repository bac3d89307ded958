"""The runbook as data: the packaged ``runbook.yaml``, overlaid by the host's file, validated whole.

:func:`load_runbook` reads the packaged file, then the host's file if one is
given (``V2ROLLOUT_RUNBOOK_FILE``), merges them and validates the result:
either a complete :class:`Runbook` or one :class:`AlertRuleError` listing every
problem with its file, rule (``gate/criterion``, ``matrix/SEVERITY``) and
column — nothing is half-loaded. YAML is read with a ``SafeLoader`` that also refuses aliases, nesting
deeper than 32 levels, files over 1 MB and numbers that are infinite or beyond 2^53.

Sections (every one optional in a host file; unknown keys are refused):

``stages``
    list of ``{name, percentage, shadow, min_duration}``. A host entry names an
    existing stage and changes any of the other keys; stages cannot be added.
``probes``
    list of ``{name, unit, description}`` (unit ``%``, ``ms``, ``s``, ``h`` or
    ``count``): host-measured metrics, no data until a probe supplies them. Same
    name replaces, a new name adds.
``manual_checks``
    mapping ``key: description``; same key replaces the description, a new key adds.
``gates``
    list of ``{name, from, to, shoulds_required, latency, criteria}``. A host
    entry names an existing gate and may change ``shoulds_required`` and list
    ``criteria``: a criterion with an existing name has the given keys replaced
    (e.g. only ``condition``), a new name is appended (``kind`` and
    ``condition`` required). A criterion states either ``condition`` or both
    ``pass`` and ``fail`` (see :mod:`.gates`); a host's ``condition`` replaces a
    packaged ``pass``/``fail`` pair. ``label`` names the measured value in
    reasons. Gates cannot be added.
``matrices``
    mapping ``name: {rows, otherwise}``. A host row with an existing severity
    replaces that row, a new severity is added (rows stay worst first);
    ``otherwise`` replaces. A new matrix name adds a matrix for that stage.
``rules``
    alert rules (see :mod:`.alerts`). Same name replaces the whole rule, a new
    name is appended.
``severities``
    mapping ``SEVERITY: {label, response}`` — the incident label (``SEV-1``) and
    response target every alert of that severity carries in its payload. A host
    entry replaces the given keys of that severity.

Conditions may read the metrics catalogue's names, the declared probes and
``check_<key>`` for each manual check; anything else is refused.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any, cast

from ..metrics.catalogue import BY_NAME, DEFAULT_MINIMUMS, INTERVALS, UNITS, MinimumName, Minimums
from .alerts import NAME, SEVERITIES, RuleSet, Severity, rules_from
from .conditions import (
    UNIT_NAMES,
    AlertRuleError,
    Condition,
    MinSample,
    Problem,
    Unit,
    load_yaml,
    parse_condition,
    parse_duration,
    shown,
)
from .gates import (
    CHECK_PREFIX,
    KINDS,
    Criterion,
    Gate,
    Kind,
    Matrix,
    MatrixRow,
    Signal,
    Stage,
)

PACKAGED_FILE = "runbook.yaml"
SECTIONS = ("stages", "probes", "manual_checks", "gates", "matrices", "rules", "severities")
_STAGE_KEYS = ("name", "percentage", "shadow", "min_duration")
_PROBE_KEYS = ("name", "unit", "description")
_GATE_KEYS = ("name", "from", "to", "shoulds_required", "latency", "criteria")
_CRITERION_KEYS = ("name", "kind", "description", "condition", "pass", "fail", "label")
_ROW_KEYS = ("severity", "signals", "action", "target")
_SEVERITY_KEYS = ("label", "response")


@dataclass(frozen=True)
class Probe:
    name: str
    unit: Unit
    description: str


@dataclass(frozen=True)
class Incident:
    """The runbook's incident class of an alert severity: its label (``SEV-1``) and response target."""

    label: str
    response: str


@dataclass(frozen=True)
class Runbook:
    """Stages, gates, matrices and alert rules, fully validated; ``sources`` are the files merged, in order."""

    stages: tuple[Stage, ...]
    gates: tuple[Gate, ...]
    matrices: Mapping[str, Matrix]
    rules: RuleSet
    probes: Mapping[str, Probe]
    manual_checks: Mapping[str, str]
    sources: tuple[str, ...]
    #: severity → incident label and response target (every severity has one)
    severities: Mapping[str, Incident]

    @property
    def metrics(self) -> Mapping[str, Unit]:
        """Every name a condition may read, with its unit."""
        return known_metrics(self.probes, self.manual_checks)


def known_metrics(probes: Mapping[str, Probe], checks: Mapping[str, str]) -> dict[str, Unit]:
    return {**UNITS, **{p.name: p.unit for p in probes.values()},
            **{CHECK_PREFIX + key: UNIT_NAMES["count"] for key in checks}}


def load_runbook(
    host_file: str | Path | None = None, *, minimums: Minimums | None = None, alert_min_calculations: float = 20,
) -> Runbook:
    """The packaged runbook overlaid by ``host_file``.

    ``minimums`` are the samples gates and matrices need; alert rules need
    ``alert_min_calculations`` (or their own ``min_sample:``) in the alert window.
    """
    packaged = resources.files(__package__).joinpath(PACKAGED_FILE).read_text(encoding="utf-8")
    documents = [(PACKAGED_FILE, packaged)]
    if host_file is not None:
        path = Path(host_file)
        try:
            documents.append((str(path), path.read_text(encoding="utf-8")))
        except OSError as exc:
            raise AlertRuleError([Problem(None, f"cannot read the runbook file: {exc}", file=str(path))],
                                 str(path)) from None
    return parse_runbook(documents, minimums=minimums, alert_min_calculations=alert_min_calculations)


def parse_runbook(
    documents: list[tuple[str, str]], *, minimums: Minimums | None = None, alert_min_calculations: float = 20,
) -> Runbook:
    """Merge ``(file name, YAML text)`` documents in order, then validate the result."""
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    problems: list[Problem] = []
    for file, text in documents:
        data, found = _read(file, text)
        problems += found
        if data is not None:
            problems += _merge(merged, data, origin, file, first=not merged)
    if problems:
        raise AlertRuleError(problems, documents[-1][0])
    needed: dict[MinimumName, float] = {**DEFAULT_MINIMUMS, **(minimums or {})}
    return _Builder(merged, origin, needed, documents[0][0], alert_min_calculations).build(
        tuple(f for f, _ in documents))


def _read(file: str, text: str) -> tuple[dict[str, Any] | None, list[Problem]]:
    try:
        data = load_yaml(text)
    except ValueError as exc:
        return None, [Problem(None, str(exc), file=file)]
    if data is None:
        return {}, []
    if not isinstance(data, dict):
        return None, [Problem(None, f"expected a mapping with the sections {', '.join(SECTIONS)}", file=file)]
    unknown = sorted(str(k) for k in data if k not in SECTIONS)
    if unknown:
        return None, [Problem(None, f"unknown top-level key(s) {unknown}; sections are {list(SECTIONS)}", file=file)]
    return data, []


# --------------------------------------------------------------------------- merging


def _merge(merged: dict[str, Any], data: dict[str, Any], origin: dict[str, str], file: str, *,
           first: bool) -> list[Problem]:
    """Overlay one document onto ``merged``; ``origin`` remembers which file each item came from."""
    problems: list[Problem] = []
    lists: dict[str, str] = {"stages": "name", "probes": "name", "gates": "name", "rules": "name"}
    for section, value in data.items():
        origin[section] = file  # section-wide problems (stage order, the general matrix) point at the last file
        if section in lists and not isinstance(value, list):
            problems.append(Problem(None, f"'{section}' must be a list", file=file))
            continue
        if section in ("manual_checks", "matrices", "severities") and not isinstance(value, dict):
            problems.append(Problem(None, f"'{section}' must be a mapping", file=file))
            continue
        if section == "manual_checks":
            merged.setdefault(section, {}).update(value)
            origin.update({f"check:{k}": file for k in value})
        elif section == "severities":
            for key, entry in value.items():
                current = merged.setdefault(section, {}).setdefault(key, {})
                if isinstance(entry, dict) and isinstance(current, dict):
                    current.update(entry)
                else:
                    merged[section][key] = entry
                origin[f"severity:{key}"] = file
        elif section == "matrices":
            problems += _merge_matrices(merged.setdefault(section, {}), value, origin, file)
        elif section == "rules":
            problems += _merge_rules(merged.setdefault(section, []), value, origin, file, first=first)
        else:
            problems += _merge_named(section, merged.setdefault(section, []), value, origin, file, first=first)
    return problems


def _merge_rules(current: list[Any], items: list[Any], origin: dict[str, str], file: str, *,
                 first: bool) -> list[Problem]:
    """Same name replaces the rule in place, a new name appends (the packaged file's duplicates stay, to be refused)."""
    problems, seen = [], set()
    for item in items:
        name = item.get("name") if isinstance(item, dict) else None
        found = next((i for i, r in enumerate(current) if isinstance(r, dict) and r.get("name") == name), None)
        index = len(current)
        if not first and name in seen:
            problems.append(Problem(str(name), "duplicate rule name", file=file))
        elif name is not None and found is not None and not first:
            current[found] = item
            index = found
        else:
            current.append(item)
        seen.add(name)
        origin[f"rule:{name}"] = origin[f"rule:#{index + 1}"] = file
    return problems


def _merge_named(section: str, current: list[Any], items: list[Any], origin: dict[str, str], file: str, *,
                 first: bool) -> list[Problem]:
    problems = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            problems.append(Problem(None, f"each entry of '{section}' needs a name", repr(item), file=file))
            continue
        name = item["name"]
        existing = next((c for c in current if c.get("name") == name), None)
        if first or section == "probes":
            if existing is not None and first:
                problems.append(Problem(name, f"duplicate {section[:-1]} name", file=file))
            elif existing is not None:
                existing.clear()
                existing.update(item)
            else:
                current.append(copy.deepcopy(item))
            origin[f"{section}:{name}"] = file
        elif existing is None:
            problems.append(Problem(name, f"no {section[:-1]} named {shown(name)} to change; "
                                    f"{section} are {[c.get('name') for c in current]}", file=file))
        elif section == "gates":
            problems += _merge_gate(existing, item, origin, file)
        else:
            existing.update(item)
            origin[f"{section}:{name}"] = file
    return problems


def _merge_gate(gate: dict[str, Any], item: dict[str, Any], origin: dict[str, str], file: str) -> list[Problem]:
    name = item["name"]
    allowed = ("name", "shoulds_required", "criteria")
    unknown = sorted(str(k) for k in item if k not in allowed)
    if unknown:
        return [Problem(name, f"a host file may change only {list(allowed[1:])} of a gate; unknown {unknown}",
                        file=file)]
    if "shoulds_required" in item:
        gate["shoulds_required"] = item["shoulds_required"]
        origin[f"gates:{name}"] = file
    criteria = gate.setdefault("criteria", [])
    items = item.get("criteria", [])
    if not isinstance(items, list):
        return [Problem(name, "criteria must be a list", file=file)]
    problems = []
    for crit in items:
        if not isinstance(crit, dict) or not isinstance(crit.get("name"), str):
            problems.append(Problem(name, "each criterion needs a name", repr(crit), file=file))
            continue
        existing = next((c for c in criteria if c.get("name") == crit["name"]), None)
        if existing is None:
            criteria.append(dict(crit))
        else:
            # a host's condition replaces a packaged pass/fail pair, and the other way round
            for given, replaced in (("condition", ("pass", "fail")), ("pass", ("condition",)),
                                    ("fail", ("condition",))):
                if given in crit:
                    for k in replaced:
                        existing.pop(k, None)
            existing.update(crit)
        origin[f"criterion:{name}/{crit['name']}"] = file
    return problems


def _merge_matrices(current: dict[str, Any], matrices: dict[str, Any], origin: dict[str, str],
                    file: str) -> list[Problem]:
    problems = []
    for name, matrix in matrices.items():
        if not isinstance(matrix, dict) or not isinstance(matrix.get("rows", []), list):
            problems.append(Problem(f"matrix {name}", "a matrix is a mapping of rows (a list) and otherwise",
                                    file=file))
            continue
        unknown = sorted(str(k) for k in matrix if k not in ("rows", "otherwise"))
        if unknown:
            problems.append(Problem(f"matrix {name}", f"unknown key(s) {unknown}", file=file))
            continue
        if name not in current:
            origin[f"matrix:{name}"] = file
        target = current.setdefault(name, {"rows": []})
        if "otherwise" in matrix:
            target["otherwise"] = matrix["otherwise"]
            origin[f"matrix:{name}"] = file
        for row in matrix.get("rows", []):
            severity = row.get("severity") if isinstance(row, dict) else None
            rows = target.setdefault("rows", [])
            index = next((i for i, r in enumerate(rows) if isinstance(r, dict) and r.get("severity") == severity), None)
            if index is None:
                rows.append(row)
            else:
                rows[index] = row
            origin[f"row:{name}/{severity}"] = file
        rank = {s: i for i, s in enumerate(SEVERITIES)}
        target["rows"].sort(key=lambda r: rank.get(str(r.get("severity")) if isinstance(r, dict) else "", len(rank)))
    return problems


# --------------------------------------------------------------------------- validation


class _Builder:
    """Validates the merged data and builds the Runbook, collecting every problem with its file."""

    def __init__(self, data: dict[str, Any], origin: dict[str, str], minimums: Minimums,
                 default_file: str, alert_min_calculations: float = 20) -> None:
        self.data = data
        self.origin = origin
        self.minimums = minimums
        self.alert_min_calculations = alert_min_calculations
        self.default_file = default_file
        self.problems: list[Problem] = []
        self.known: dict[str, Unit] = {}

    def problem(self, key: str, rule: str | None, message: str, text: str | None = None) -> None:
        self.problems.append(Problem(rule, message, text, file=self.origin.get(key, self.default_file)))

    def build(self, sources: tuple[str, ...]) -> Runbook:
        probes = self.probes()
        checks = self.checks()
        self.known = known_metrics(probes, checks)
        stages = self.stages()
        gates = self.gates(stages, checks)
        matrices = self.matrices()
        rules, found = rules_from(self.data.get("rules", []), self.known, intervals=INTERVALS)
        rules = [replace(rule, min_samples=self.min_samples(rule.condition, {
            "calculations": self.alert_min_calculations if rule.min_sample is None else rule.min_sample,
            "users": self.minimums["users"],
        })) for rule in rules]
        self.problems += [replace(p, file=self.origin.get(f"rule:{p.rule}", self.default_file)) for p in found]
        severities = self.severities()
        if self.problems:
            raise AlertRuleError(self.problems, sources[-1])
        return Runbook(stages, gates, matrices, RuleSet(tuple(rules), " + ".join(sources)), probes, checks, sources,
                       severities)

    def severities(self) -> dict[str, Incident]:
        out = {}
        given = self.data.get("severities", {})
        for key in sorted(set(given) - set(SEVERITIES), key=str):
            self.problem(f"severity:{key}", f"severity {key}", f"severity must be one of {', '.join(SEVERITIES)}")
        for severity in SEVERITIES:
            item = given.get(severity)
            key, label = f"severity:{severity}", f"severity {severity}"
            if item is None:
                self.problem("severities", label, "every severity needs its label and response")
                continue
            if not self._keys(key, label, item, _SEVERITY_KEYS, _SEVERITY_KEYS):
                continue
            if not all(isinstance(item[k], str) and item[k].strip() for k in _SEVERITY_KEYS):
                self.problem(key, label, "label and response must be non-empty text")
                continue
            out[severity] = Incident(item["label"].strip(), " ".join(item["response"].split()))
        return out

    def _keys(self, key: str, label: str, item: Any, allowed: tuple[str, ...], required: tuple[str, ...]) -> bool:
        if not isinstance(item, dict):
            self.problem(key, label, "must be a mapping of " + ", ".join(allowed), repr(item))
            return False
        ok = True
        unknown = sorted(str(k) for k in item if k not in allowed)
        if unknown:
            self.problem(key, label, f"unknown key(s) {unknown}")
            ok = False
        missing = [k for k in required if k not in item]
        if missing:
            self.problem(key, label, f"missing key(s) {missing}")
            ok = False
        return ok

    def probes(self) -> dict[str, Probe]:
        out = {}
        for item in self.data.get("probes", []):
            name = item["name"]
            key = f"probes:{name}"
            if not self._keys(key, f"probe {name}", item, _PROBE_KEYS, _PROBE_KEYS):
                continue
            if not NAME.fullmatch(name) or name in UNITS:
                self.problem(key, f"probe {name}", "a probe needs a new name (letters, digits, '_') "
                             "that is not a catalogue metric", repr(name))
            elif item["unit"] not in UNIT_NAMES:
                self.problem(key, f"probe {name}", f"unit must be one of {list(UNIT_NAMES)}", repr(item["unit"]))
            else:
                out[name] = Probe(name, UNIT_NAMES[item["unit"]], str(item["description"]))
        return out

    def checks(self) -> dict[str, str]:
        out = {}
        for key, text in self.data.get("manual_checks", {}).items():
            if not (isinstance(key, str) and NAME.fullmatch(key) and isinstance(text, str) and text.strip()):
                self.problem(f"check:{key}", f"check {key}", "a manual check is key: description (text)",
                             repr(text))
            else:
                out[key] = text.strip()
        return out

    def stages(self) -> tuple[Stage, ...]:
        out = []
        for item in self.data.get("stages", []):
            name = item["name"]
            key = f"stages:{name}"
            if not self._keys(key, f"stage {name}", item, _STAGE_KEYS, _STAGE_KEYS):
                continue
            pct, shadow = item["percentage"], item["shadow"]
            try:
                duration = parse_duration(str(item["min_duration"]))
            except ValueError as exc:
                self.problem(key, f"stage {name}", f"min_duration: {exc}")
                continue
            if isinstance(pct, bool) or not isinstance(pct, (int, float)) or not 0 <= pct <= 100:
                self.problem(key, f"stage {name}", "percentage must be a number 0–100", repr(pct))
            elif not isinstance(shadow, bool):
                self.problem(key, f"stage {name}", "shadow must be true or false", repr(shadow))
            else:
                out.append(Stage(name, float(pct), duration, shadow))
        if [s.percentage for s in out] != sorted(s.percentage for s in out):
            self.problem("stages", None, "stages must be listed in rising percentage")
        return tuple(out)

    def condition(self, key: str, label: str, text: Any) -> Condition | None:
        if not (isinstance(text, str) and text.strip()):
            self.problem(key, label, "condition must be non-empty text", repr(text))
            return None
        try:
            return parse_condition(" ".join(text.split()), self.known, intervals=INTERVALS)
        except AlertRuleError as exc:
            file = self.origin.get(key, self.default_file)
            self.problems += [replace(p, rule=label, file=file) for p in exc.problems]
            return None

    def min_samples(self, condition: Condition, minimums: Minimums | None = None) -> tuple[MinSample, ...]:
        """The samples a condition's catalogue metrics declare, with their minimums (the gates' by default)."""
        needed = self.minimums if minimums is None else minimums
        needs = {}
        for name in sorted(condition.metrics):
            metric = BY_NAME.get(name)
            if metric is not None and metric.sample is not None:
                needs[metric.sample.metric] = MinSample(metric.sample.metric, needed[metric.sample.minimum])
        return tuple(needs.values())

    def gates(self, stages: tuple[Stage, ...], checks: Mapping[str, str]) -> tuple[Gate, ...]:
        names = {s.name for s in stages}
        out = []
        for item in self.data.get("gates", []):
            name = item["name"]
            key = f"gates:{name}"
            if not self._keys(key, f"gate {name}", item, _GATE_KEYS, ("name", "from", "to", "shoulds_required",
                                                                        "criteria")):
                continue
            if item["from"] not in names or (item["to"] is not None and item["to"] not in names):
                self.problem(key, f"gate {name}", f"from/to must be stages {sorted(names)}")
            required = item["shoulds_required"]
            if isinstance(required, bool) or not isinstance(required, int) or required < 0:
                self.problem(key, f"gate {name}", "shoulds_required must be a whole number >= 0", repr(required))
                continue
            latency = item.get("latency")
            if latency is not None and not (isinstance(latency, list) and len(latency) == 2):
                self.problem(key, f"gate {name}", "latency must name two histograms, e.g. [v2, v1]", repr(latency))
            criteria = [c for c in (self.criterion(name, c, checks) for c in item["criteria"]) if c is not None]
            if len({c.name for c in criteria}) != len(criteria):
                self.problem(key, f"gate {name}", "criterion names must be unique")
            if required > sum(c.kind == "should" for c in criteria):
                self.problem(key, f"gate {name}", "shoulds_required is more than the gate's should criteria")
            out.append(Gate(name, item["from"], item["to"], tuple(criteria), required,
                            cast(tuple[str, str], tuple(latency)) if latency else None))
        return tuple(out)

    def criterion(self, gate: str, item: Any, checks: Mapping[str, str]) -> Criterion | None:
        name = item.get("name") if isinstance(item, dict) else None
        label, key = f"{gate}/{name}", f"criterion:{gate}/{name}"
        if not self._keys(key, label, item, _CRITERION_KEYS, ("name", "kind")):
            return None
        if item["kind"] not in KINDS:
            self.problem(key, label, f"kind must be one of {', '.join(KINDS)}", repr(item["kind"]))
            return None
        sides = [k for k in ("pass", "fail") if k in item]
        if ("condition" in item) == bool(sides) or len(sides) == 1:
            self.problem(key, label, "a criterion needs either condition, or both pass and fail")
            return None
        condition = self.condition(key, label, item["condition"] if "condition" in item else item["pass"])
        fail = self.condition(key, label, item["fail"]) if sides else None
        if condition is None or (sides and fail is None):
            return None
        metrics = condition.metrics | (fail.metrics if fail else frozenset())
        description = item.get("description")
        read = [m[len(CHECK_PREFIX):] for m in metrics if m.startswith(CHECK_PREFIX)]
        if description is None and len(read) == 1 and len(metrics) == 1:
            description = checks[read[0]]
        if not (isinstance(description, str) and description.strip()):
            self.problem(key, label, "description must be non-empty text (optional only for one manual check)",
                         repr(description))
            return None
        samples = {s.metric: s for c in (condition, fail) if c is not None for s in self.min_samples(c)}
        return Criterion(str(name), cast(Kind, item["kind"]), description.strip(), condition,
                         tuple(samples.values()), fail, str(item.get("label", "")))

    def matrices(self) -> dict[str, Matrix]:
        out = {}
        for name, matrix in self.data.get("matrices", {}).items():
            rows = [r for r in (self.row(name, row) for row in matrix.get("rows", [])) if r is not None]
            otherwise = matrix.get("otherwise")
            if not (isinstance(otherwise, str) and otherwise.strip()):
                self.problem(f"matrix:{name}", f"matrix {name}", "otherwise must be non-empty text", repr(otherwise))
                continue
            out[name] = Matrix(name, tuple(rows), otherwise.strip())
        if "general" not in out:
            self.problem("matrices", None, "a 'general' matrix is required (it applies to every other stage)")
        return out

    def row(self, matrix: str, item: Any) -> MatrixRow | None:
        severity = item.get("severity") if isinstance(item, dict) else None
        label, key = f"{matrix}/{severity}", f"row:{matrix}/{severity}"
        if not self._keys(key, label, item, _ROW_KEYS, _ROW_KEYS):
            return None
        target = item["target"]
        if severity not in SEVERITIES:
            self.problem(key, label, f"severity must be one of {', '.join(SEVERITIES)}", repr(severity))
        elif isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 <= target <= 100:
            self.problem(key, label, "target must be a percentage 0–100", repr(target))
        elif not (isinstance(item["signals"], list) and item["signals"]):
            self.problem(key, label, "signals must be a non-empty list of conditions", repr(item["signals"]))
        elif not (isinstance(item["action"], str) and item["action"].strip()):
            self.problem(key, label, "action must be non-empty text", repr(item["action"]))
        else:
            signals = [s for s in (self.signal(key, label, text) for text in item["signals"]) if s is not None]
            if len(signals) == len(item["signals"]):
                return MatrixRow(cast(Severity, severity), tuple(signals), item["action"].strip(), float(target))
        return None

    def signal(self, key: str, label: str, text: Any) -> Signal | None:
        condition = self.condition(key, label, text)
        if condition is None:
            return None
        simple = condition.comparison()
        metric = BY_NAME.get(simple[0]) if simple else None
        unit = "" if metric is None else {"ms": " ms", "%": "%"}.get(metric.unit.label, "")
        return Signal(condition, self.min_samples(condition), metric.label if metric else "", unit)

