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


def test_openmm_facing_classes_use_one_casing():
    """OpenMM's camelCase on the classes that take an OpenMM System/Simulation (issue 9 item 7): constructor
    keywords and public methods/properties have no underscore, except the deprecated snake_case aliases of earlier
    releases (which warn). The grid backends' methods are the snake_case GridBiasBackend plug-in interface; their
    constructors follow the bias classes that pass keywords through them."""
    import inspect

    from latentbias import LatentReporter
    from latentbias.bias import (CustomCVBackend, LatentMetadynamics, LatentOPES, LatentRestraint,
                                 LatentUmbrellaSampling, LatentVariable)
    from latentbias.bias.fused import FusedBackend

    offenders = []
    for cls in (LatentRestraint, LatentUmbrellaSampling, LatentMetadynamics, LatentOPES, LatentReporter,
                LatentVariable, FusedBackend, CustomCVBackend):
        offenders += [f"{cls.__name__}({p}=)" for p in inspect.signature(cls).parameters if "_" in p]
        if cls in (FusedBackend, CustomCVBackend):
            continue
        for name, member in vars(cls).items():
            if name.startswith("_") or "_" not in name:
                continue
            doc = (member.__doc__ if isinstance(member, property) else inspect.getdoc(member)) or ""
            if not doc.startswith("Deprecated alias"):
                offenders.append(f"{cls.__name__}.{name}")
        for name, method in inspect.getmembers(cls, inspect.isfunction):
            if not name.startswith("_"):
                offenders += [f"{cls.__name__}.{name}({p}=)" for p in inspect.signature(method).parameters
                              if "_" in p and not p.startswith("_")]
    assert not offenders, f"snake_case names on OpenMM-facing classes: {offenders}"
