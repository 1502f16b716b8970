"""API contract of the physics modules: every numeric default of a public function, method or constructor is
stated in its numpydoc ``Parameters`` entry (``n_bootstrap : int, default 200``) and equals the signature's, and
every documented parameter can be passed by its documented name (none is positional-only).

A default such as a bootstrap count, a seed, a bin count or a wall force constant is part of the documented
interface: a changed signature that the docstring does not follow (or the reverse) is doc drift, and a slip in
the number (``200`` → ``201``) is a silent change of every caller's result. Issue 15 (mutation testing): these
"arbitrary default" mutants survive every physics test by design; this contract kills them.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re

import pytest

#: The modules of issue 15's mutation sessions (featurizers, geometry, bias, analysis, campaign weights).
MODULES = [
    "latentbias.features",
    "latentbias.geometry",
    "latentbias.bias.grid",
    "latentbias.bias.restraint",
    "latentbias.bias.backends",
    "latentbias.bias.fused",
    "latentbias.bias.metadynamics",
    "latentbias.bias.umbrella",
    "latentbias.analysis.fes",
    "latentbias.analysis.reweight",
    "latentbias.analysis.constants",
    "latentbias.analysis.barriers",
    "latentbias.analysis.paths",
    "latentbias.analysis.pockets",
    "latentbias.campaign.weights",
    "latentbias.analysis.uncertainty",
    "latentbias.bias.statefile",
    "latentbias.bias.ctcache",
    "latentbias.bias.trajectory",
    "latentbias.sampleweights",
]

_DEFAULT = re.compile(r"(?:^|[,;(]\s*)default(?:\s*[:=]\s*|\s+)")


def parameters_section(doc: str | None) -> dict[str, str]:
    """``{name: type spec}`` of a numpydoc ``Parameters`` section (``a, b : int`` gives both names)."""
    lines = inspect.cleandoc(doc or "").splitlines()
    out: dict[str, str] = {}
    for i in range(len(lines) - 1):
        if lines[i].strip() == "Parameters" and set(lines[i + 1].strip()) == {"-"}:
            for j in range(i + 2, len(lines)):
                line = lines[j]
                if j + 1 < len(lines) and line.strip() and set(lines[j + 1].strip()) == {"-"}:
                    break  # the next section's title
                if line and not line.startswith(" ") and ":" in line:
                    names, _, spec = line.partition(":")
                    for name in names.split(","):
                        out[name.strip().lstrip("*")] = spec.strip()
            break
    return out


def documented_default(spec: str):
    """The value after ``default`` in a type spec (``int, default 200``; ``float, default: 1e-6``), or
    ``inspect.Parameter.empty`` when the spec states none."""
    found = list(_DEFAULT.finditer(spec))
    if not found:
        return inspect.Parameter.empty
    text = spec[found[-1].end():].replace("`", "").strip()
    for candidate in (text, text.split()[0].rstrip(",;")):  # a literal, or a literal followed by words
        try:
            return ast.literal_eval(candidate)
        except (ValueError, SyntaxError):
            pass
    raise AssertionError(f"cannot read the default stated in {spec!r}: write a Python literal after 'default'")


def public_callables(module_name: str):
    """``(qualified name, callable, docstring)`` of the public functions, classes (constructor with the class
    docstring, as numpydoc documents it) and public methods defined in the module. Dataclass-generated
    constructors are left out (their fields are attributes, documented as such)."""
    mod = importlib.import_module(module_name)
    for name, obj in sorted(vars(mod).items()):
        if name.startswith("_") or getattr(obj, "__module__", None) != module_name:
            continue
        if inspect.isfunction(obj):
            yield name, obj, obj.__doc__
        elif inspect.isclass(obj):
            if not dataclasses.is_dataclass(obj) and "__init__" in vars(obj):
                yield name, obj.__init__, obj.__doc__
            for attr, member in sorted(vars(obj).items()):
                if isinstance(member, (staticmethod, classmethod)):
                    member = member.__func__
                if not attr.startswith("_") and inspect.isfunction(member):
                    yield f"{name}.{attr}", member, member.__doc__


def _numeric(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _cases():
    for module_name in MODULES:
        for qualname, func, doc in public_callables(module_name):
            yield pytest.param(module_name, qualname, func, doc, id=f"{module_name.split('.')[-1]}.{qualname}")


@pytest.mark.parametrize("module_name, qualname, func, doc", list(_cases()))
def test_documented_defaults_equal_the_signature(module_name, qualname, func, doc):
    """Documented defaults equal the signature's; numeric defaults are documented; documented names are
    keywords."""
    sig = inspect.signature(func)
    documented = parameters_section(doc)
    problems = []
    for p in sig.parameters.values():
        if p.kind is inspect.Parameter.POSITIONAL_ONLY and p.name in documented:
            problems.append(f"{p.name} is documented by name but positional-only")
        if p.name not in documented:
            if _numeric(p.default):
                problems.append(f"{p.name}={p.default!r} has no numpydoc entry")
            continue
        stated = documented_default(documented[p.name])
        if stated is inspect.Parameter.empty:
            if _numeric(p.default):
                problems.append(f"{p.name}={p.default!r}: the entry {documented[p.name]!r} states no default")
            continue
        if p.default is inspect.Parameter.empty:
            problems.append(f"{p.name}: documented default {stated!r} but the parameter is required")
        elif _numeric(stated) and _numeric(p.default):
            if float(stated) != float(p.default):
                problems.append(f"{p.name}: documented default {stated!r}, signature {p.default!r}")
        elif stated != p.default:
            problems.append(f"{p.name}: documented default {stated!r}, signature {p.default!r}")
    assert not problems, f"{module_name}.{qualname}: " + "; ".join(problems)


def test_the_contract_sees_the_defaults_it_guards():
    """The parser is not vacuous: it reads known entries, and the known numeric defaults are covered."""
    assert documented_default("int, default 200") == 200
    assert documented_default("float, default: 1e-6") == 1e-6
    assert documented_default("int or None, default ``0``") == 0
    assert documented_default("float or array_like, default 1000.0 (kJ/mol per unit of z squared)") == 1000.0
    assert documented_default("int, optional") is inspect.Parameter.empty
    assert documented_default("sequence of two int, default (0, 1)") == (0, 1)
    assert documented_default('{"asymptotic", "bootstrap"}, default "asymptotic"') == "asymptotic"
    spec = parameters_section("""Summary.

    Parameters
    ----------
    a, b : int, default 3
        Text: with a colon.
    c : float

    Returns
    -------
    x : int
    """)
    assert spec == {"a": "int, default 3", "b": "int, default 3", "c": "float"}
    n_numeric = sum(
        _numeric(p.default)
        for m in MODULES for _, f, _ in public_callables(m) for p in inspect.signature(f).parameters.values())
    assert n_numeric >= 45  # 50 when written (2026-11-30): bootstrap counts, seeds, bins, wall constants, ...
