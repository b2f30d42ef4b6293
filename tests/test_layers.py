"""The package's layers: no module imports a layer above its own (issue 14).

Units are the top-level modules and packages of ``edgeproof`` (``report.charts``, the drawing
library the checks use, counts apart from the rest of ``report``). Imports anywhere in a module
count, inside functions too; imports under ``if TYPE_CHECKING:`` do not (they never run).
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import edgeproof

SRC = Path(edgeproof.__file__).resolve().parent

#: lowest first; a unit may import only units before it
ORDER: tuple[str, ...] = (
    # foundation: errors, values, files
    "errors", "_version", "_lazy", "_torch_version", "limits", "serialize", "structured",
    "zipfiles", "extras", "options", "outputs", "atomic", "results", "spec",
    # where work runs, data, drawing
    "runtime", "execute", "data", "report.charts",
    # models, then the algorithms over them
    "models", "testing", "methods", "integrity", "certify",
    # checks, results on disk, the one audit loop
    "checks", "report", "scan_results", "runner", "policy",
    # what is built on the audit loop
    "compress", "audit_many", "explain", "demo", "scan",
    # the shells
    "cli", "__main__", "(package)",
)  # fmt: skip


def _unit(parts: list[str]) -> str:
    if not parts:
        return "(package)"
    if parts[:2] == ["report", "charts"]:
        return "report.charts"
    return parts[0]


def _imports(path: Path, package: list[str]) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        test = node.test if isinstance(node, ast.If) else None
        name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
        if name == "TYPE_CHECKING":
            skip.update(id(n) for n in ast.walk(node))
    out: list[str] = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            if module == "edgeproof":  # ``from edgeproof import limits``: edgeproof.limits
                out.extend(f"edgeproof.{a.name}" for a in node.names)
            else:
                out.append(module)
        elif isinstance(node, ast.Import):
            out.extend(a.name for a in node.names)
    return [m for m in out if m == "edgeproof" or m.startswith("edgeproof.")]


@functools.cache
def _edges() -> frozenset[tuple[str, str, str]]:
    edges = set()
    for path in sorted(SRC.rglob("*.py")):
        rel = list(path.relative_to(SRC).with_suffix("").parts)
        parts = rel[:-1] if rel[-1] == "__init__" else rel
        package = ["edgeproof", *(parts if path.name == "__init__.py" else parts[:-1])]
        for mod in _imports(path, package):
            dst = _unit(mod.split(".")[1:])
            if dst != _unit(parts):
                edges.add((_unit(parts), dst, path.relative_to(SRC).as_posix()))
    return frozenset(edges)


def test_every_unit_has_a_place_in_the_layer_order() -> None:
    units = {src for src, _, _ in _edges()} | {dst for _, dst, _ in _edges()}
    assert units <= set(ORDER), f"add to ORDER in tests/test_layers.py: {units - set(ORDER)}"


def test_no_module_imports_a_layer_above_its_own() -> None:
    rank = {u: i for i, u in enumerate(ORDER)}
    upward = sorted(
        f"{where} ({src}) imports {dst}"
        for src, dst, where in _edges()
        if src in rank and dst in rank and rank[dst] > rank[src]
    )
    assert not upward, "upward imports: " + "; ".join(upward)
