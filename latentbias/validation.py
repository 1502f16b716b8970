"""Input validation helpers: one place that turns bad input into a clear error (mdtraj's ``ensure_type`` style)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def strip_unit(value: Any, unit: Any | None = None) -> Any:
    """Return ``value`` as a plain number/array in OpenMM's md unit system.

    Parameters
    ----------
    value : float, array or openmm.unit.Quantity
        A plain value is assumed to already be in md units (nm, ps, kJ/mol, K).
    unit : openmm.unit.Unit, optional
        Unit to convert a Quantity to. If omitted, the Quantity is converted to the md unit system.
    """
    try:
        from openmm import unit as u
    except ImportError:  # pragma: no cover - openmm is a hard dependency
        return value
    if u.is_quantity(value):
        if unit is not None:
            return value.value_in_unit(unit)
        return value.value_in_unit_system(u.md_unit_system)
    return value


def ensure_positions(
    positions: Any,
    n_atoms: int | None = None,
    *,
    name: str = "positions",
    allow_frames: bool = True,
) -> np.ndarray:
    """Validate positions and return them as float64 numpy, in nm.

    Parameters
    ----------
    positions : array_like or Quantity, shape=(n_atoms, 3) or (n_frames, n_atoms, 3)
        Cartesian coordinates in **nm** (or an ``openmm.unit.Quantity`` of length).
    n_atoms : int, optional
        Required number of atoms.
    name : str
        Name used in error messages.
    allow_frames : bool
        Whether a leading frame dimension is accepted.

    Returns
    -------
    numpy.ndarray, shape=(n_atoms, 3) or (n_frames, n_atoms, 3), dtype float64

    Raises
    ------
    ValueError
        Wrong shape, wrong atom count or non-finite values.
    """
    arr = np.asarray(strip_unit(positions), dtype=np.float64)
    ok_ndim = (2, 3) if allow_frames else (2,)
    if arr.ndim not in ok_ndim or arr.shape[-1] != 3:
        want = "(n_atoms, 3) or (n_frames, n_atoms, 3)" if allow_frames else "(n_atoms, 3)"
        raise ValueError(f"{name} must have shape {want} in nm, got shape {arr.shape}")
    if n_atoms is not None and arr.shape[-2] != n_atoms:
        raise ValueError(
            f"{name} has {arr.shape[-2]} atoms but the model expects {n_atoms}: pass full-system positions of the "
            "system the model was trained for (the model picks its atoms itself)"
        )
    if not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise ValueError(f"{name} contains {bad} non-finite values (NaN or inf); the simulation may have exploded")
    return arr


def ensure_box(box: Any, n_frames: int | None = None, *, name: str = "box") -> np.ndarray | None:
    """Validate periodic box vectors, shape=(3, 3) or (n_frames, 3, 3), **nm**; ``None`` passes through."""
    if box is None:
        return None
    arr = np.asarray(strip_unit(box), dtype=np.float64)
    if arr.shape[-2:] != (3, 3) or arr.ndim not in (2, 3):
        raise ValueError(f"{name} must be box vectors of shape (3, 3) or (n_frames, 3, 3) in nm, got {arr.shape}")
    if n_frames is not None and arr.ndim == 3 and arr.shape[0] != n_frames:
        raise ValueError(f"{name} has {arr.shape[0]} frames but positions have {n_frames}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite values")
    diag = np.diagonal(arr, axis1=-2, axis2=-1)
    if np.any(diag <= 0):
        raise ValueError(f"{name} must have positive diagonal entries (OpenMM reduced form), got {diag}")
    return arr


def ensure_index_array(
    indices: Any, *, n_atoms: int | None = None, width: int | None = None, name: str = "atom indices"
) -> np.ndarray:
    """Validate integer atom indices.

    Parameters
    ----------
    indices : array_like of int, shape=(n,) or (n, width)
    n_atoms : int, optional
        Indices must be < n_atoms.
    width : int, optional
        Required size of the last dimension (2 for pairs, 4 for dihedrals).

    Returns
    -------
    numpy.ndarray of int64
    """
    arr = np.asarray(indices)
    if arr.size == 0:
        raise ValueError(f"{name} is empty: the selection matched no atoms; check the selection string")
    if not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise TypeError(f"{name} must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if width is not None and (arr.ndim != 2 or arr.shape[1] != width):
        raise ValueError(f"{name} must have shape (n, {width}), got {arr.shape}")
    if width is None and arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D list of atom indices, got shape {arr.shape}")
    if np.any(arr < 0):
        raise ValueError(f"{name} contains negative indices")
    if n_atoms is not None and np.any(arr >= n_atoms):
        raise ValueError(f"{name} contains index {int(arr.max())} but the system has only {n_atoms} atoms")
    return arr


def ensure_positive_int(value: Any, name: str) -> int:
    """Return ``value`` as a positive int or raise a ValueError naming the parameter."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def ensure_sequence_of_ints(values: Sequence[Any], name: str) -> list[int]:
    """Return a list of positive ints (e.g. hidden-layer widths)."""
    try:
        items = list(values)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of positive integers, got {values!r}") from None
    return [ensure_positive_int(v, f"{name}[{i}]") for i, v in enumerate(items)]


def ensure_mdtraj_topology(topology: Any, name: str = "topology"):
    """An mdtraj.Topology from an mdtraj or OpenMM Topology or a topology file (PDB, prmtop, ...).

    Raises
    ------
    ValueError
        The file cannot be read.
    TypeError
        Anything else.
    """
    import os

    import mdtraj as md

    if isinstance(topology, md.Topology):
        return topology
    if isinstance(topology, (str, os.PathLike)):
        try:
            return md.load_topology(str(topology))
        except Exception as exc:
            raise ValueError(f"{name}: cannot read topology file {topology}: {exc}") from exc
    if hasattr(topology, "atoms") and hasattr(topology, "residues") and hasattr(topology, "chains"):
        return md.Topology.from_openmm(topology)
    raise TypeError(f"{name} must be an mdtraj/OpenMM Topology or a topology file, got {type(topology).__name__}")


def deprecated_alias(new: str, old: str, kind: str = "method"):
    """A method ``old`` that warns (DeprecationWarning) and calls the method ``new`` of the same object (or class,
    ``kind="classmethod"``): keeps code written against an earlier name working while the public API moves to one
    casing."""
    import warnings

    def alias(self, *args, **kwargs):
        owner = self.__name__ if kind == "classmethod" else type(self).__name__
        warnings.warn(f"{owner}.{old} is deprecated; use {owner}.{new} {DEPRECATION_TAG}", DeprecationWarning,
                      stacklevel=2)
        return getattr(self, new)(*args, **kwargs)

    alias.__name__ = old
    alias.__doc__ = f"Deprecated alias of :meth:`{new}` (warns)."
    return classmethod(alias) if kind == "classmethod" else alias


#: Ends every DeprecationWarning of a renamed name; the test suite turns these warnings into errors
#: (pyproject.toml ``filterwarnings``), so no caller inside the project can keep using an old name.
DEPRECATION_TAG = "(latentbias API casing)"


def deprecated_attribute(new: str, old: str) -> property:
    """A property ``old`` that warns (DeprecationWarning) and reads/writes the attribute ``new``."""
    import warnings

    def _warn(self) -> None:
        warnings.warn(f"{type(self).__name__}.{old} is deprecated; use {type(self).__name__}.{new}"
                      f" {DEPRECATION_TAG}", DeprecationWarning, stacklevel=3)

    def fget(self):
        _warn(self)
        return getattr(self, new)

    def fset(self, value) -> None:
        _warn(self)
        setattr(self, new, value)

    return property(fget, fset, doc=f"Deprecated alias of :attr:`{new}` (warns).")


def renamed_keywords(**renames: str):
    """Decorator: keyword arguments renamed ``old=new`` keep working under their old name with a DeprecationWarning.

    Passing both names is a TypeError. The decorated function keeps its signature (``inspect.signature``).

    Examples
    --------
    >>> class Restraint:
    ...     @renamed_keywords(force_group="forceGroup")
    ...     def __init__(self, forceGroup=None): ...
    """
    import functools
    import warnings

    def decorate(func):
        where = func.__qualname__.removesuffix(".__init__")

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            used = [old for old in renames if old in kwargs]
            for old in used:
                new = renames[old]
                if new in kwargs:
                    raise TypeError(f"{where}() got both {old}= and {new}=; pass only {new}= ({old} is its "
                                    "deprecated name)")
                kwargs[new] = kwargs.pop(old)
            if used:  # one warning per call, naming every old keyword it used
                olds = ", ".join(f"{old}=..." for old in used)
                news = ", ".join(f"{renames[old]}=..." for old in used)
                warnings.warn(f"{where}({olds}) is deprecated; use {where}({news}) {DEPRECATION_TAG}",
                              DeprecationWarning, stacklevel=2)
            return func(*args, **kwargs)

        wrapper.renamed_keywords = dict(renames)
        return wrapper

    return decorate
