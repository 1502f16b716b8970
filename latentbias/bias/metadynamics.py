"""Well-tempered metadynamics on 1-3 latent coordinates, shaped like ``openmm.app.Metadynamics``.

Differences from OpenMM's class, all deliberate:

* collective variables come from an exported latent model (``LatentVariable(index, ...)`` instead of
  ``BiasVariable(force, ...)``);
* restoring walls act beyond non-periodic grid edges (OpenMM's bias force is zero there, issue 3805);
* the bias state can be saved and restored exactly (:meth:`LatentMetadynamics.saveState` /
  :meth:`LatentMetadynamics.loadState`: ``.npz`` + ``.json``, atomic writes);
* every deposition is recorded (step, time, z, instantaneous bias V(z,t), edge-wall energy W(z), c(t),
  log-weight) for reweighting, optionally streamed to a CSV file;
* grids are indexed in natural order ``[i0, i1, i2]``;
* Gaussians are truncated by default, as PLUMED's (``kernelCutoff``, :mod:`latentbias.bias.cutoff`), so that a
  deposit changes only the grid near its centre; ``kernelCutoff=None`` deposits OpenMM's untruncated Gaussians.

Multiple walkers: give every process the same ``biasDir`` and a ``saveFrequency``. Each writes its own
deposited bias to ``biasDir/bias_<walkerId>.npz`` (atomically) and adds the latest files of all other walkers
to its total bias, exactly like OpenMM's Metadynamics. Restarting with a new walker id in the same ``biasDir``
also picks up the earlier run's bias.

Reweighting (Tiwary & Parrinello, JPCB 119, 736 (2015)): a frame sampled at time t under the acting bias
B(z, t) = s·V(z, t) + W(z) (s: :meth:`LatentMetadynamics.setBiasScale`, 1 normally; W: edge walls) gets the
log-weight β (B(z, t) − c_s(t)), where B is read from the Context (so it is exactly the energy the force applied,
walls included) and c_s(t) = kT ln[Σ_grid e^{γ/(γ−1) βV} / Σ_grid e^{γ/(γ−1) βV − s βV}] is c(t) of the acting
bias (the usual c(t) for s = 1, 0 for s = 0). The walls act only beyond the grid, where c(t) has no estimate of
the free energy; they do not enter c.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import uuid
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..analysis.constants import kt_kjmol
from ..analysis.reweight import well_tempered_ct
from ..export import LatentModelFile
from ..forces import as_model_file
from ..io import ChecksumError, load_npz, require_keys, save_npz, write_json
from ..validation import strip_unit
from .backends import GridBiasBackend
from .ctcache import RunningCt
from .cutoff import METAD_DEFAULT_CUTOFF
from .fused import default_grid_backend
from .grid import BiasGrid, LatentVariable, check_variables
from .statefile import read_state_record
from .trajectory import DepositTrajectory

logger = logging.getLogger(__name__)

__all__ = ["LatentMetadynamics", "DEPOSIT_COLUMNS"]

#: Columns of the per-deposition record (and of the CSV file).
DEPOSIT_COLUMNS = ("step", "time_ps", "bias_kjmol", "wall_kjmol", "ct_kjmol", "logweight")

_STATE_VERSION = 1
_WALKER_FILE = re.compile(r"^bias_(?P<id>[A-Za-z0-9_-]+)\.npz$")


class LatentMetadynamics:
    """Well-tempered metadynamics along latent coordinates of an exported model.

    Parameters
    ----------
    system : openmm.System
        The bias force is created and added to it (create the Simulation afterwards).
    model : path or LatentModelFile
        Exported latent model (``latentbias.save_model`` / ``save_cv_module``).
    variables : sequence of LatentVariable or int, or None
        1-3 latent components with grid range, Gaussian width and periodicity.
        A latent index alone (``int``), or ``None`` for every latent dimension, takes the grid from the model's
        stored training range of z plus 30 % on each side (:meth:`LatentVariable.fromModel`; logged).
    temperature : float (K) or Quantity
    biasFactor : float
        γ > 1; CVs are sampled as if at temperature·γ.
    height : float (kJ/mol) or Quantity
        Initial Gaussian height.
    frequency : int
        Steps between depositions.
    saveFrequency : int, optional
        Steps between syncs with ``biasDir`` (a multiple of ``frequency``).
    biasDir : str or path-like, optional
        Shared folder for multiple walkers / continuation.
    wallForceConstant : float, default 1000.0
        kJ/mol per (unit of z)² beyond non-periodic grid edges.
    walkerId : str, optional
        Name of this walker's file in ``biasDir`` (default: 12 random hexadecimal digits, 48 bits, so walkers
        started without an id do not overwrite each other's files).
    recordFile : str or path-like, optional
        CSV file receiving one row per deposition (columns
        ``step,time_ps,z<i>...,bias_kjmol,wall_kjmol,ct_kjmol,logweight``; a ``#`` line states units). An existing file is appended to only if ``appendRecord`` is True.
    appendRecord : bool
    trajectoryFile : str or path-like, optional
        DCD file receiving the positions at every deposition, so frame i matches record i (reweight any CV
        computed from it with :meth:`getLogWeights`). Appended to when ``appendRecord`` is True.
    forceGroup : int, optional
        Force group of the bias (default: the highest free one).
    backend : GridBiasBackend class, optional
        Implementation of the bias force. Default: the native fused ``LatentBiasForce``
        (:class:`~latentbias.bias.fused.FusedBackend`, one encoder pass per step) when the plugin is built, else
        :class:`CustomCVBackend` (a CustomCVForce over d TorchForces).
    kernelCutoff : float or None, default 3.5355339059327378
        Truncation of the deposited Gaussians, in widths along each axis (the default is √12.5, PLUMED's METAD
        cutoff ½u² < 6.25): each axis factor is cut there and stretched to fall to zero continuously
        (:mod:`latentbias.bias.cutoff`: the bias differs from untruncated Gaussians by at most d·0.19 % of one
        height per kernel, near its edge), so a deposit changes only the grid near its centre and costs little
        whatever the grid's size. None: untruncated Gaussians, exactly as ``openmm.app.Metadynamics``.
    """

    def __init__(
        self,
        system: Any,
        model: str | os.PathLike | LatentModelFile,
        variables: Sequence[LatentVariable | int] | None,
        temperature: Any,
        biasFactor: float,
        height: Any,
        frequency: int,
        saveFrequency: int | None = None,
        biasDir: str | os.PathLike | None = None,
        wallForceConstant: float = 1000.0,
        walkerId: str | None = None,
        recordFile: str | os.PathLike | None = None,
        appendRecord: bool = False,
        trajectoryFile: str | os.PathLike | None = None,
        forceGroup: int | None = None,
        backend: type[GridBiasBackend] | None = None,
        kernelCutoff: float | None = METAD_DEFAULT_CUTOFF,
    ):
        from openmm import unit

        self.model = as_model_file(model)
        self.model.check_system(system)
        self.variables = check_variables(self.model, variables)
        self.temperature = float(strip_unit(temperature, unit.kelvin))
        self.biasFactor = float(biasFactor)
        if not self.biasFactor > 1.0:
            raise ValueError(f"biasFactor must be > 1, got {biasFactor}")
        self.height = float(strip_unit(height, unit.kilojoule_per_mole))
        if not self.height > 0:
            raise ValueError(f"height must be positive (kJ/mol), got {height}")
        self.frequency = int(frequency)
        if self.frequency <= 0:
            raise ValueError(f"frequency must be a positive number of steps, got {frequency}")
        if (saveFrequency is None) != (biasDir is None):
            raise ValueError("give both saveFrequency and biasDir, or neither")
        if saveFrequency is not None and (saveFrequency < self.frequency or saveFrequency % self.frequency):
            raise ValueError("saveFrequency must be a multiple of frequency")
        self.saveFrequency = None if saveFrequency is None else int(saveFrequency)
        self.biasDir = None if biasDir is None else Path(biasDir)
        if self.biasDir is not None:
            self.biasDir.mkdir(parents=True, exist_ok=True)
        self.walkerId = walkerId or uuid.uuid4().hex[:12]
        if not re.fullmatch(r"[A-Za-z0-9_-]+", self.walkerId):
            raise ValueError(f"walkerId may contain only letters, digits, '_' and '-', got {self.walkerId!r}")
        self._deltaT = self.temperature * (self.biasFactor - 1.0)
        self._kt = kt_kjmol(self.temperature)
        self._ktDeltaT = kt_kjmol(self._deltaT)

        self.grid = BiasGrid(self.variables, kernelCutoff=kernelCutoff)
        self._selfBias = np.zeros(self.grid.shape)
        self._otherBias: dict[str, np.ndarray] = {}
        # c(t) at each deposit, updated on the window the previous deposit changed (see latentbias.bias.ctcache)
        self._runningCt = RunningCt(self.temperature, self.biasFactor)
        self._scratch = np.empty(self.grid.shape)
        self._nDeposits = 0
        self.records: dict[str, list] = {name: [] for name in DEPOSIT_COLUMNS}
        self.records["z"] = []
        self._recordPath = None if recordFile is None else Path(recordFile)
        if self._recordPath is not None:
            exists = self._recordPath.exists() and self._recordPath.stat().st_size > 0
            if exists and not appendRecord:
                raise FileExistsError(f"{self._recordPath} exists; pass appendRecord=True to continue it")
            if not exists:
                header = ["step", "time_ps"] + [f"z{v.index}" for v in self.variables] + list(DEPOSIT_COLUMNS[2:])
                with open(self._recordPath, "w") as fh:
                    fh.write(f"# latent metadynamics depositions; T={self.temperature} K, biasFactor={self.biasFactor};"
                             " z in model units, bias V (unscaled), wall and c(t) in kJ/mol,"
                             " logweight = (scale*bias + wall - c)/kT\n")
                    fh.write(",".join(header) + "\n")
        self._appendRecord = bool(appendRecord)
        self._trajectory = None if trajectoryFile is None else DepositTrajectory(trajectoryFile, appendRecord)
        backend_cls = default_grid_backend() if backend is None else backend
        self.backend = backend_cls(self.model, system, self.grid, wallForceConstant, forceGroup)
        self._contextStale = True
        #: set False to stop depositing Gaussians (the bias is frozen but still acts); records continue
        self.depositionEnabled = True
        self._syncWithDisk(write=False)

    # ------------------------------------------------------------------------------------------------- bias

    @property
    def _totalBias(self) -> np.ndarray:
        total = self._selfBias.copy()
        for other in self._otherBias.values():
            total += other
        return total

    def getBias(self) -> np.ndarray:
        """Total bias on the grid (this walker + others), kJ/mol, shape=grid shape, natural index order."""
        return self._totalBias

    def getGridAxes(self) -> list[np.ndarray]:
        """Grid points of each variable (units of z)."""
        return self.grid.axes

    def getFreeEnergy(self):
        """Free energy −((T + ΔT)/ΔT) V on the grid, as an ``openmm.unit.Quantity`` in kJ/mol (like OpenMM)."""
        from openmm import unit

        return -((self.temperature + self._deltaT) / self._deltaT) * self._totalBias * unit.kilojoule_per_mole

    def addBias(self, values: np.ndarray) -> None:
        """Add a fixed grid (kJ/mol, shape=grid shape) to this walker's bias, e.g. a bias carried over from an
        earlier run; the Context is updated at the next :meth:`step`."""
        v = np.asarray(values, dtype=float)
        if v.shape != self.grid.shape or not np.all(np.isfinite(v)):
            raise ValueError(f"bias values must be finite with shape {self.grid.shape}, got {v.shape}")
        self._selfBias = self._selfBias + v
        self._runningCt.invalidate()
        self._contextStale = True

    def updateContext(self, context: Any) -> None:
        """Push the whole bias grid to ``context`` now (a full refit of its interpolant).

        Deposits update the Context's copy locally (see :meth:`GridBiasBackend.add_gaussian`), which equals the
        refit up to rounding. :meth:`saveState` and :meth:`loadState` both schedule a refit at the next
        :meth:`step`, so a run restored from a saved state holds the same table, bit for bit, as the run that
        went on after saving.
        """
        self.backend.set_grid(self._totalBias, context)
        self._contextStale = False

    def setBiasScale(self, context: Any, scale: float) -> None:
        """Scale the acting metadynamics bias (walls excepted) in ``context``: 1 normal, 0 off. Depositions keep
        using the unscaled bias V for their heights."""
        if not scale >= 0:
            raise ValueError(f"scale must be >= 0, got {scale}")
        self.backend.set_scale(scale, context)

    @property
    def biasScale(self) -> float:
        """Factor on the acting metadynamics bias (walls excepted) set by :meth:`setBiasScale`."""
        return self.backend.scale

    def getBiasEnergy(self, context: Any) -> float:
        """Bias energy acting in ``context`` now (scale · V(z) + walls), kJ/mol."""
        return self.backend.energy(context)

    def getCollectiveVariables(self, simulation: Any) -> np.ndarray:
        """Current values of the biased latent components in a Simulation, shape=(d,)."""
        return self.backend.latent_values(simulation.context)

    def ct(self) -> float:
        """Current c(t) (kJ/mol) of the total bias (Tiwary & Parrinello 2015)."""
        return well_tempered_ct(self._totalBias, self.temperature, self.biasFactor)

    @property
    def numDeposits(self) -> int:
        """Gaussians this walker has deposited."""
        return self._nDeposits

    # ------------------------------------------------------------------------------------------------- run

    def step(self, simulation: Any, steps: int) -> None:
        """Advance ``simulation`` by ``steps`` steps, depositing a Gaussian every ``frequency`` steps."""
        if self._contextStale:
            self.backend.set_grid(self._totalBias, simulation.context)
            self._contextStale = False
        to_go = int(steps)
        while to_go > 0:
            n = min(to_go, self.frequency - simulation.currentStep % self.frequency)
            simulation.step(n)
            to_go -= n
            if simulation.currentStep % self.frequency == 0:
                self._deposit(simulation)
            if self.saveFrequency is not None and simulation.currentStep % self.saveFrequency == 0:
                if self._syncWithDisk(write=True):
                    self._runningCt.invalidate()
                    self.backend.set_grid(self._totalBias, simulation.context)

    def _deposit(self, simulation: Any) -> None:
        from openmm import unit

        context = simulation.context
        # z, and scale * V(z) + walls exactly as the force applies it
        z, acting = self.backend.latent_values_and_energy(context)
        scale = self.backend.scale
        wall = self.backend.wall_energy(z)
        bias = (acting - wall) / scale if scale > 0 else float(self.biasAt(z[None])[0])
        # c_s(t) of the acting bias, equal to well_tempered_ct(total, T, γ, scale) to rounding, from the terms
        # the previous deposit updated on its window only (the total is this walker's grid when alone: no copy)
        total = self._totalBias if self._otherBias else self._selfBias
        ct = self._runningCt.value(total, scale)
        state = context.getState(getPositions=True) if self._trajectory is not None else None
        time_ps = (context.getTime() if state is None else state.getTime()).value_in_unit(unit.picosecond)
        self._record(simulation.currentStep, time_ps, z, bias, wall, ct, acting)
        if self._trajectory is not None:
            self._trajectory.write(simulation, state, self.frequency)
        if not self.depositionEnabled:
            return
        height = self.height * np.exp(-bias / self._ktDeltaT)
        # self._selfBias += height * self.grid.gaussian(z), bit for bit, without grid-sized temporaries
        _, window = self.grid.deposit(self._selfBias, z, height, self._scratch)
        self._nDeposits += 1
        # a truncated Gaussian changed exactly its support; an untruncated one, below 1e-14 beyond RunningCt.window
        if window is None:
            window = self._runningCt.window(self.grid, z, height)
        self._runningCt.update(self._totalBias if self._otherBias else self._selfBias, window, height)
        self.backend.add_gaussian(z, height, lambda: self._totalBias, context)

    def _record(self, step: int, time_ps: float, z: np.ndarray, bias: float, wall: float, ct: float,
                acting: float) -> None:
        logweight = (acting - ct) / self._kt
        for name, value in zip(DEPOSIT_COLUMNS, (step, time_ps, bias, wall, ct, logweight)):
            self.records[name].append(value)
        self.records["z"].append(np.asarray(z, dtype=float))
        if self._recordPath is not None:
            with open(self._recordPath, "a") as fh:
                fh.write(",".join([str(int(step)), f"{time_ps:.6f}"] + [f"{x:.10g}" for x in z]
                                  + [f"{bias:.10g}", f"{wall:.10g}", f"{ct:.10g}", f"{logweight:.10g}"]) + "\n")

    def getLogWeights(self, method: str = "ct") -> np.ndarray:
        """Log-weights of the recorded frames for unbiased averages (normalise before use).

        Parameters
        ----------
        method : {"ct", "final"}
            ``"ct"``: β (s V(z_t, t) + W(z_t) − c_s(t)) (Tiwary & Parrinello 2015; the bias acting when the frame
            was sampled, read from the Context, edge walls W included; see the module docstring). ``"final"``:
            β (V_final(z_t) + W(z_t)) with the final bias grid (linear interpolation), valid once the bias is
            quasi-static (discard the early frames).

        Returns
        -------
        numpy.ndarray, shape=(n_records,)
        """
        from ..analysis.reweight import metad_final_bias_logweights

        rec = self.getRecords()
        if method == "ct":
            return rec["logweight"]
        if method == "final":
            return metad_final_bias_logweights(self.biasAt(rec["z"]) + self.wallEnergy(rec["z"]), self.temperature)
        raise ValueError(f"method must be 'ct' or 'final', got {method!r}")

    def biasAt(self, z: Any) -> np.ndarray:
        """Current total bias (kJ/mol) at latent points z, shape=(n, d) -> (n,), by linear grid interpolation."""
        return self.grid.interpolate(z, self._totalBias)

    def wallEnergy(self, z: Any) -> np.ndarray:
        """Edge-wall energy (kJ/mol) at latent points z, shape=(n, d) -> (n,): ½ k_wall (distance beyond the grid)²
        summed over non-periodic variables, as the bias force applies it."""
        pts = np.atleast_2d(np.asarray(z, dtype=float))
        if pts.shape[1] != len(self.variables):
            raise ValueError(f"z must have shape (n, {len(self.variables)}), got {pts.shape}")
        e = np.zeros(len(pts))
        for j, v in enumerate(self.variables):
            if not v.periodic:
                over = np.clip(pts[:, j] - v.maxValue, 0, None) + np.clip(v.minValue - pts[:, j], 0, None)
                e += 0.5 * self.backend.wall_force_constant * over**2
        return e

    def getRecords(self) -> dict[str, np.ndarray]:
        """Per-deposition records as arrays: ``step``, ``time_ps``, ``z`` (n, d), ``bias_kjmol`` (V(z, t), the
        unscaled metadynamics bias), ``wall_kjmol`` (edge walls W(z)), ``ct_kjmol`` (c(t) of the acting bias),
        ``logweight`` (= (s·V + W − c)/kT, the c(t) reweighting log-weight of the frame)."""
        out = {k: np.asarray(v) for k, v in self.records.items() if k != "z"}
        out["z"] = np.asarray(self.records["z"]).reshape(-1, len(self.variables))
        return out

    # ---------------------------------------------------------------------------------------- multiple walkers

    def _walkerFile(self, walker: str) -> Path:
        assert self.biasDir is not None
        return self.biasDir / f"bias_{walker}.npz"

    def _syncWithDisk(self, write: bool) -> bool:
        """Write this walker's bias; load the latest bias of every other walker. True if the total changed."""
        if self.biasDir is None:
            return False
        if write:
            save_npz(self._walkerFile(self.walkerId), checksum=True, selfBias=self._selfBias,
                     nDeposits=self._nDeposits, shape=np.asarray(self.grid.shape))
        changed = False
        for path in sorted(self.biasDir.iterdir()):
            match = _WALKER_FILE.match(path.name)
            if match is None or match["id"] == self.walkerId:
                continue
            try:
                data = load_npz(path)
            except ChecksumError as exc:  # written atomically, so damaged on disk: never used, and said loudly
                logger.warning("%s; this walker's bias is left out until its walker rewrites the file (delete or "
                               "restore a damaged file of a walker that no longer runs)", exc)
                continue
            except (OSError, ValueError) as exc:  # a file being replaced right now: the next sync gets it
                logger.debug("skipping walker file %s: %s", path, exc)
                continue
            bias = data["selfBias"]
            if bias.shape != self.grid.shape:
                raise ValueError(f"{path} holds a bias grid of shape {bias.shape}, this run uses {self.grid.shape}: "
                                 "walkers sharing a biasDir need identical LatentVariables")
            old = self._otherBias.get(match["id"])
            if old is None or not np.array_equal(old, bias):
                self._otherBias[match["id"]] = bias
                changed = True
        return changed

    def walkerContribution(self) -> dict[str, np.ndarray]:
        """This walker's own share of the bias, as written to its ``biasDir`` file: ``selfBias`` (kJ/mol, grid
        shape), ``nDeposits`` and ``shape``. Give it to the other walkers' :meth:`setOtherWalkers` when the
        walkers exchange deposits through a driver instead of a shared folder."""
        return {"selfBias": self._selfBias.copy(), "nDeposits": np.asarray(self._nDeposits),
                "shape": np.asarray(self.grid.shape)}

    def setOtherWalkers(self, walkers: dict[str, dict[str, np.ndarray]]) -> None:
        """Replace the other walkers' biases by the given :meth:`walkerContribution` of each (walker id ->
        arrays; this walker's own id is ignored). The Context is updated at the next :meth:`step`.

        Unlike the ``biasDir`` protocol, what each walker sees is then fixed by the caller, not by the timing
        of file writes: walkers that exchange at agreed points give the same bias whatever their speed."""
        others: dict[str, np.ndarray] = {}
        for walker, data in sorted(walkers.items()):
            if walker == self.walkerId:
                continue
            bias = np.asarray(data["selfBias"], dtype=float)
            if bias.shape != self.grid.shape:
                raise ValueError(f"walker {walker!r} holds a bias grid of shape {bias.shape}, this run uses "
                                 f"{self.grid.shape}: walkers sharing a bias need identical LatentVariables")
            others[walker] = bias.copy()
        self._otherBias = others
        self._runningCt.invalidate()
        self._contextStale = True

    # ---------------------------------------------------------------------------------------- save / restore

    def _settings(self) -> dict[str, Any]:
        return {
            "variables": [v.toDict() for v in self.variables],
            "temperature": self.temperature,
            "biasFactor": self.biasFactor,
            "height": self.height,
            "frequency": self.frequency,
            "wallForceConstant": self.backend.wall_force_constant,
            "kernelCutoff": self.grid.kernelCutoff,
            "model_training_data_hash": self.model.metadata.get("training_data_hash"),
        }

    @property
    def kernelCutoff(self) -> float | None:
        """Truncation of the deposited Gaussians in widths (None: untruncated)."""
        return self.grid.kernelCutoff

    def saveState(self, prefix: str | os.PathLike) -> tuple[Path, Path]:
        """Save the bias state to ``<prefix>.npz`` (grids, records) and ``<prefix>.json`` (settings), atomically.

        The JSON is written last and carries the SHA-256 of the npz, so a pair torn by a crash is detected. The
        Context's table is refitted from the saved grid at the next :meth:`step`, as after :meth:`loadState`, so
        that a run restored from this state continues exactly as this one does.
        """
        self._contextStale = True
        # like the Context's refit: the running c(t) is evaluated afresh at the next deposit, in this run and in a
        # run restored from this state alike, so both record the same c(t) bit for bit
        self._runningCt.invalidate()
        prefix = Path(prefix)
        npz, meta = prefix.with_name(prefix.name + ".npz"), prefix.with_name(prefix.name + ".json")
        rec = self.getRecords()
        others = sorted(self._otherBias)
        save_npz(npz, selfBias=self._selfBias,
                 otherBias=np.stack([self._otherBias[k] for k in others]) if others else np.zeros((0,) + self.grid.shape),
                 **{f"record_{k}": v for k, v in rec.items()})
        digest = hashlib.sha256(npz.read_bytes()).hexdigest()
        write_json(meta, {"format": "latentbias-metadynamics-state", "version": _STATE_VERSION,
                          "walkerId": self.walkerId, "otherWalkers": others, "numDeposits": self._nDeposits,
                          "settings": self._settings(), "npz_sha256": digest}, checksum=True)
        return npz, meta

    def loadState(self, prefix: str | os.PathLike) -> None:
        """Restore a state written by :meth:`saveState` (settings must match this object's).

        The Context is updated at the next :meth:`step`.
        """
        info, npz, fix = read_state_record(prefix, "metadynamics", "latentbias-metadynamics-state")
        mine = self._settings()
        theirs = info["settings"]
        # states saved before kernels could be truncated have no kernelCutoff: their grid stays as it is and the
        # deposits from now on use this object's kernels
        diff = [k for k in mine if k != "model_training_data_hash" and (k in theirs or k != "kernelCutoff")
                and mine[k] != theirs.get(k)]
        if diff:
            raise ValueError(f"saved state has different settings for {diff}; build LatentMetadynamics with the same "
                             "variables, temperature, biasFactor, height, frequency, wall constant and kernelCutoff")
        data = require_keys(load_npz(npz), ("selfBias", "otherBias", "record_z"), npz, fix=fix)
        self._selfBias = data["selfBias"].copy()
        self._otherBias = {k: data["otherBias"][i].copy() for i, k in enumerate(info["otherWalkers"])}
        self._nDeposits = int(info["numDeposits"])
        self._runningCt.invalidate()
        self.walkerId = info["walkerId"]  # continue writing the same walker file, never count it twice
        self.records = {k: list(data[f"record_{k}"]) for k in DEPOSIT_COLUMNS if f"record_{k}" in data}
        self.records["z"] = list(data["record_z"])
        if "record_wall_kjmol" not in data:  # state written before walls were recorded: add them (scale 1 assumed)
            z = np.asarray(self.records["z"]).reshape(-1, len(self.variables))
            wall = self.wallEnergy(z) if len(z) else np.zeros(0)
            self.records["wall_kjmol"] = list(wall)
            self.records["logweight"] = list(np.asarray(self.records["logweight"], dtype=float) + wall / self._kt)
            logger.warning("%s predates the wall_kjmol record: edge-wall energies recomputed from z and added to "
                           "the log-weights", npz)
        self._contextStale = True
        logger.info("restored metadynamics state %s (%d depositions)", prefix, self._nDeposits)
