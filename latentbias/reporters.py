"""OpenMM reporters for latent coordinates."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np
from openmm import unit

from .forces import as_model_file

__all__ = ["LatentReporter"]


class LatentReporter:
    """Write the latent coordinates z of a running Simulation to a CSV file (an OpenMM reporter).

    Columns: ``step``, ``time_ps``, ``z0`` ... ``z{d-1}``. The header line states the units. z is evaluated with the
    exported model in Python on the reported frames (no extra force in the System).

    Parameters
    ----------
    file : str or path-like
        CSV path. An existing file is never overwritten unless ``append=True`` (then rows are added).
    reportInterval : int
        Steps between reports.
    model : str, path-like or LatentModelFile
        Exported latent model.
    append : bool
        Append to an existing file (e.g. after a restart) instead of refusing to touch it.
    """

    def __init__(self, file: str | os.PathLike, reportInterval: int, model: Any, append: bool = False):
        self._path = Path(file)
        self._interval = int(reportInterval)
        if self._interval <= 0:
            raise ValueError(f"reportInterval must be a positive number of steps, got {reportInterval!r}")
        self._model = as_model_file(model)
        exists = self._path.exists() and self._path.stat().st_size > 0
        if exists and not append:
            raise FileExistsError(f"{self._path} exists; pass append=True to add rows to it")
        self._handle = open(self._path, "a", newline="")
        self._writer = csv.writer(self._handle)
        if not exists:
            self._writer.writerow(["step", "time_ps"] + [f"z{i}" for i in range(self._model.latent_dim)])
        self.values: list[np.ndarray] = []

    def describeNextReport(self, simulation: Any) -> dict[str, Any]:  # OpenMM >= 8.1 dict form
        steps = self._interval - simulation.currentStep % self._interval
        return {"steps": steps, "periodic": None, "include": ["positions"]}

    def report(self, simulation: Any, state: Any) -> None:
        xyz = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        box = None
        if simulation.system.usesPeriodicBoundaryConditions():
            box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
        z = self._model.encode(xyz, box)
        self.values.append(z)
        time_ps = state.getTime().value_in_unit(unit.picosecond)
        self._writer.writerow([simulation.currentStep, f"{time_ps:.6f}"] + [f"{v:.8g}" for v in z])
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()

    def __del__(self) -> None:
        try:
            self._handle.close()
        except Exception:
            pass
