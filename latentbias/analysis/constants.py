"""Physical constants and the thermal energy kT in OpenMM's md units (kJ/mol, K)."""

from __future__ import annotations

import math
from typing import Any

from ..validation import strip_unit

__all__ = ["GAS_CONSTANT_KJ_PER_MOL_K", "kt_kjmol", "temperature_kelvin"]

#: Molar gas constant R = N_A k_B in kJ/(mol K) (CODATA 2018, exact), the value OpenMM uses.
GAS_CONSTANT_KJ_PER_MOL_K: float = 0.00831446261815324


def temperature_kelvin(temperature: Any, name: str = "temperature") -> float:
    """Return ``temperature`` as a positive, finite float in **K**.

    Parameters
    ----------
    temperature : float or openmm.unit.Quantity
        A plain number is taken to be in kelvin; a Quantity must have temperature units.
    name : str
        Name used in error messages.

    Raises
    ------
    ValueError
        Not a number, not a temperature, not finite or not positive.
    """
    from openmm import unit

    try:
        value = strip_unit(temperature, unit.kelvin)
    except TypeError:
        raise ValueError(f"{name} must be in kelvin or a Quantity with temperature units, got {temperature!r}") from None
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in K or an openmm.unit.Quantity, got {temperature!r}") from None
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"{name} must be a positive, finite temperature in K, got {value!r}")
    return value


def kt_kjmol(temperature: Any) -> float:
    """Thermal energy kT = R T in **kJ/mol**.

    Parameters
    ----------
    temperature : float or openmm.unit.Quantity
        Temperature in **K** (a plain float) or a Quantity with temperature units.

    Returns
    -------
    float
        kT in kJ/mol (2.494 kJ/mol at 300 K).
    """
    return GAS_CONSTANT_KJ_PER_MOL_K * temperature_kelvin(temperature)
