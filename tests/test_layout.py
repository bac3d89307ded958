"""The package's layout rules, checked on its source: no import cycles, pure logic without Flask,
no reading of another module's private attributes, no domain words in the core."""
from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "flask_v2rollout"
PURE = ("bucketing", "compare", "stats", "settings", "registry", "flags", "clock", "dispatch",
        "rules.alerts", "rules.gates", "rules.actions", "rules.windows", "targeting", "decisions.notify",
        "metrics.recorder")


def modules() -> dict[str, ast.Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = ast.parse(path.read_text(encoding="utf-8"))
    return found


def imports(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """Package modules ``name`` imports, ``TYPE_CHECKING`` blocks included."""
    package = name.split(".") if name in known and (PACKAGE / name.replace(".", "/")).is_dir() else name.split(".")[:-1]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1] if node.level > 1 else package
                prefix = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("flask_v2rollout"):
                prefix = node.module.removeprefix("flask_v2rollout").lstrip(".")
            else:
                continue
            for alias in node.names:
                candidate = f"{prefix}.{alias.name}".lstrip(".")
                out.add(candidate if candidate in known else prefix)
    return {m for m in out if m in known and m != name}


def test_no_import_cycles_not_even_for_type_checking() -> None:
    trees = modules()
    graph = {name: imports(name, tree, set(trees)) for name, tree in trees.items()}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        for nxt in graph[node]:
            if nxt in path:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in done:
                visit(nxt, path + [nxt])
        done.add(node)

    done: set[str] = set()
    for start in graph:
        if start not in done:
            visit(start, [start])
    # a package's __init__ re-exporting its children is not a cycle of concepts
    real = [c for c in cycles if not any(a == "" or b.startswith(a + ".") for a, b in zip(c, c[1:], strict=False))]
    assert real == []


def test_pure_logic_imports_no_flask() -> None:
    trees = modules()
    for name in PURE:
        for node in ast.walk(trees[name]):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(n == "flask" or n.startswith("flask.") for n in names), name


#: third-party names that are public despite the underscore: Werkzeug documents ``_get_current_object()`` as the
#: way to reach the object behind a proxy (one context lookup where each read through the proxy is another)
PUBLIC_UNDERSCORED = {"_get_current_object"}


def test_no_module_reads_another_modules_private_attributes() -> None:
    offenders = []
    for name, tree in modules().items():
        own = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))}
        own |= {t.attr for n in ast.walk(tree) if isinstance(n, (ast.Assign, ast.AnnAssign))
                for t in (n.targets if isinstance(n, ast.Assign) else [n.target]) if isinstance(t, ast.Attribute)}
        own |= {a.arg for n in ast.walk(tree) if isinstance(n, ast.arguments) for a in n.kwonlyargs + n.args}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
                    and node.attr not in own and node.attr not in PUBLIC_UNDERSCORED):
                offenders.append(f"{name}:{node.lineno} .{node.attr}")
    assert offenders == []


def test_the_core_knows_no_football() -> None:
    words = re.compile(r"qb|game.?log|touchdown|edge|matchup|V2_CONFIG", re.IGNORECASE)
    hits = [f"{path.relative_to(PACKAGE)}:{n}" for path in PACKAGE.rglob("*") if path.is_file()
            and path.suffix in (".py", ".yaml", ".html", ".js", ".css")
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if words.search(line)]
    assert hits == []
