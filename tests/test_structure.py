"""Package structure (issue 9 item 7): no import cycle among the bias modules, and no module reaching into
another object's private members."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "latentbias"


def _intra_imports(path: Path, package: str) -> set[str]:
    """Modules of ``package`` (e.g. "latentbias.bias") that the file imports anywhere (module or function level)."""
    out = set()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            out.add(f"{package}.{node.module.split('.')[0]}")
        elif isinstance(node, ast.ImportFrom) and node.level == 1 and node.module is None:
            out.update(f"{package}.{a.name}" for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith(package + "."):
            out.add(".".join(node.module.split(".")[:3]))
    return out


def test_bias_modules_import_each_other_without_a_cycle():
    folder = PACKAGE / "bias"
    graph = {f"latentbias.bias.{p.stem}": _intra_imports(p, "latentbias.bias") for p in folder.glob("*.py")
             if p.stem != "__init__"}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            assert state.get(nxt) != 1, "import cycle: " + " -> ".join(path + [nxt])
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_no_private_reach_ins_across_objects():
    """``obj._name`` only on ``self``/``cls`` (a module's own names like ``_helper`` are fine)."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if "_native" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: .{node.attr}")
    assert offenders == []
