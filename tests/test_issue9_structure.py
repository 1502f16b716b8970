"""Issue 9 item 7 ("no private reach-ins across modules"): besides ``obj._name`` (tests/test_structure.py), no
module imports another module's private ``_name``; helpers shared across modules are public."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "latentbias"


def test_no_module_imports_private_names_of_another():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "_native" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                offenders += [f"{path.relative_to(PACKAGE)}:{node.lineno}: from {'.' * node.level}{node.module or ''} "
                              f"import {a.name}" for a in node.names
                              if a.name.startswith("_") and not a.name.startswith("__")]
    assert offenders == []
