"""The DCD of the frames at which a bias deposits (``trajectoryFile`` of LatentMetadynamics and LatentOPES).

Frame i of the file belongs to row i of the bias's record file; the file is opened lazily at the first deposit
and appended to (never overwritten) when continuing a run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["DepositTrajectory"]


class DepositTrajectory:
    """Positions (and box) of every deposit frame, written to a DCD file.

    Parameters
    ----------
    path : str or path-like
    append : bool
        Continue an existing file; without it an existing file is refused (never overwritten).
    """

    def __init__(self, path: str | os.PathLike, append: bool):
        self.path = Path(path)
        if self.path.exists() and not append:
            raise FileExistsError(f"{self.path} exists; pass appendRecord=True to continue it")
        self._dcd = None
        self._handle = None

    def write(self, simulation: Any, state: Any, interval: int) -> None:
        """Append the positions of ``state`` (``interval``: steps between frames, stored in the DCD header)."""
        from openmm import app

        if self._dcd is None:
            append = self.path.exists() and self.path.stat().st_size > 0
            self._handle = open(self.path, "r+b" if append else "wb")
            self._dcd = app.DCDFile(self._handle, simulation.topology, simulation.integrator.getStepSize(),
                                    simulation.currentStep, interval, append=append)
        self._dcd.writeModel(state.getPositions(), periodicBoxVectors=state.getPeriodicBoxVectors())
        self._handle.flush()
