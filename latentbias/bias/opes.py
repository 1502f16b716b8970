r"""OPES (on-the-fly probability enhanced sampling) on 1-3 latent coordinates, shaped like LatentMetadynamics.

Two variants (``explore=False``: OPES-METAD, Invernizzi & Parrinello, J. Phys. Chem. Lett. 11, 2731 (2020);
``explore=True``: OPES-explore, Invernizzi & Parrinello, J. Chem. Theory Comput. 18, 3988 (2022)). Notation:
β = 1/kT, s = the biased latent components z, ΔE = ``barrier``.

Bias (JPCL 2020, the OPES bias for the well-tempered target p^tg ∝ P^{1/γ}; JCTC 2022, its explore form)

.. math:: V_n(s) = \frac{\alpha}{\beta}\,\ln\!\left(\frac{P_n(s)}{Z_n} + \epsilon\right),\qquad
          \alpha = 1 - 1/\gamma \;\text{(METAD)},\quad \alpha = \gamma - 1 \;\text{(explore)},

with the bias factor γ = βΔE unless given, and ε = exp(−βΔE/α) so that the bias starts flat at −ΔE and never
falls more than ΔE below its maximum (JPCL 2020, choice of ε; PLUMED's ``BARRIER``). ``Z_n = (1/K) Σ_k P_n(c_k)``
is the mean of the estimate over the K (compressed) kernel centres (JPCL 2020's normalisation over the explored
CV space; PLUMED's ``zed``).

Probability estimate, kernels deposited every ``pace`` steps at s_t (JPCL 2020 reweighted KDE; JCTC 2022 plain KDE):

* METAD: ``P_n(s) = Σ_t w_t G(s; s_t, σ_t) / Σ_t w_t`` with ``w_t = exp(βV_{t−1}(s_t))``: a reweighted estimate
  of the *unbiased* distribution; the sampled distribution converges to the well-tempered ``P^{1/γ}``.
* explore: ``p^WT_n(s) = Σ_t G(s; s_t, σ_t) / n``: a plain estimate of the *sampled* distribution, which the bias
  drives towards ``P^{1/γ}`` (faster exploration, slower convergence of the free energy).

G is a normalised diagonal Gaussian (minimum image along periodic components). Kernel widths (JPCL 2020 SI):
``σ_t = σ0 · (N_eff (d+2)/4)^{−1/(d+4)}`` (Silverman's rule; off with ``shrinkSigma=False``), with the effective
sample size ``N_eff = (1+Σw)²/(1+Σw²)`` (METAD; Σw starts from the fictitious sample exp(−βΔE), as in PLUMED) or
the number of kernels deposited (explore). σ0 is each variable's ``biasWidth`` (PLUMED's ``SIGMA``), or adaptive
(``adaptiveSigmaStride``, PLUMED's ``ADAPTIVE_SIGMA_STRIDE``): the CV is sampled every ``sigmaSampleInterval``
steps into a Welford variance about an exponentially decaying mean (time constant ``adaptiveSigmaStride``
steps); no kernel is deposited before ``adaptiveSigmaStride`` steps; σ0 = sqrt(var/f) with f = γ (METAD: the
biased run samples a γ-times broader distribution) or 1 (explore), and the variance gathered before the first
deposit (unbiased) is multiplied by f once, exactly as PLUMED's ``OPESmetad.cpp`` does.

Kernel compression (JPCL 2020 SI): see :mod:`latentbias.bias.kernels` (``compressionThreshold``, in σ units).

Free energy (from the bias, both papers): in both variants, once converged,

.. math:: F(s) = -\frac{1}{1 - 1/\gamma}\, V(s) + \text{const}

(:meth:`LatentOPES.getFreeEnergy`). Reweighting: a frame sampled at time t under ``V_t`` has log-weight
``β (V_t(s_t) + W(s_t) − c(t))`` (W: edge walls), with ``c(t) = −kT ln⟨e^{−βV_t}⟩`` over the unbiased estimate
``P_n`` on the grid (METAD), or ``c(t) = kT ln⟨e^{βV_t}⟩`` over the sampled estimate ``p^WT_n`` (explore). The
running estimate PLUMED prints, ``rct = kT ln(Σw / n)`` (with the fictitious first sample), is recorded too and
available as a convergence diagnostic / alternative, and so is PLUMED's recommended ``REWEIGHT_BIAS`` weight βV_t
(plain, valid once the bias is quasi-static; :meth:`LatentOPES.getLogWeights`).

The bias is tabulated on the grid of the LatentVariables and applied through the same backend as
:class:`~latentbias.bias.metadynamics.LatentMetadynamics` — the native fused ``LatentBiasForce`` when the plugin is
built, else a CustomCVForce — with harmonic walls beyond non-periodic grid edges. With the native plugin and
``contextUpdate="hermite"`` (what ``"auto"``, the default, takes) the Context's table holds the kernel sum with its
exact node derivatives and the force interpolates (α/β) ln(max(P, 0)/Z + ε) by Hermite patches through its exact
node values and derivatives, Z a Context parameter, so a deposit changes the table only on the kernel's support
(:mod:`latentbias.bias.densitygrid`; ``"local"``: the same with OpenMM's spline of the kernel sum); with
``"refit"`` (or without the native plugin) the table holds V on the grid and is replaced after every deposit
(``setGridValues``: a full spline refit). The acting bias is the interpolated bias
(what the sampling feels, and what weights a kernel; the walls do not enter kernel weights, so P_n estimates the
wall-restricted distribution, which is the same inside the grid); the routes agree at the grid nodes and
differ between them by their interpolation errors (``benchmarks/RESULTS.md``); keep the grid spacing no coarser
than the shrunk σ (``getSigma()``).

Multiple walkers (``biasDir`` + ``saveFrequency``): every walker writes its own kernels and weight sums to
``biasDir/opes_<walkerId>.npz`` (atomically) and adds the latest files of all other walkers to its estimate; the
kernels of different walkers are not merged with each other. Each walker keeps its own adaptive σ statistics.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import uuid
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..analysis.constants import kt_kjmol
from ..export import LatentModelFile
from ..forces import as_model_file
from ..io import ChecksumError, load_npz, require_keys, save_npz, write_json
from ..validation import strip_unit
from .backends import GridBiasBackend
from .fused import default_grid_backend
from .grid import BiasGrid, LatentVariable, check_variables
from .statefile import read_state_record
from .trajectory import DepositTrajectory
from .kernels import KernelDensity
from .cutoff import opes_default_cutoff
from .densitygrid import DensityGridLink, supports_density_grid, supports_hermite_grid

logger = logging.getLogger(__name__)

__all__ = ["LatentOPES", "OPES_COLUMNS"]

#: Columns of the per-deposition record (after step, time_ps, z<i>...).
OPES_COLUMNS = ("step", "time_ps", "bias_kjmol", "wall_kjmol", "ct_kjmol", "rct_kjmol", "logweight")

_STATE_VERSION = 1
_WALKER_FILE = re.compile(r"^opes_(?P<id>[A-Za-z0-9_-]+)\.npz$")


class LatentOPES:
    """OPES-METAD / OPES-explore along latent coordinates of an exported model.

    Parameters
    ----------
    system : openmm.System
        The bias force is created and added to it (create the Simulation afterwards).
    model : path or LatentModelFile
        Exported latent model (``latentbias.save_model`` / ``save_cv_module``).
    variables : sequence of LatentVariable or int, or None
        1-3 latent components: grid range and size, periodicity, and ``biasWidth`` = σ0 (fixed-σ runs).
        A latent index alone (``int``), or ``None`` for every latent dimension, takes the grid from the model's
        stored training range of z plus 30 % on each side (:meth:`LatentVariable.fromModel`; logged).
    temperature : float (K) or Quantity
    barrier : float (kJ/mol) or Quantity
        ΔE, the free-energy barrier to overcome; sets γ = βΔE (default) and ε = exp(−βΔE/α).
    pace : int
        Steps between kernel depositions.
    biasFactor : float, optional
        γ > 1 (default βΔE).
    explore : bool
        OPES-explore instead of OPES-METAD.
    adaptiveSigmaStride : int, optional
        Adaptive σ0 measured from the CV fluctuations (steps; PLUMED default would be 10·pace). None: fixed σ0 =
        ``biasWidth``.
    sigmaSampleInterval : int, optional
        Steps between CV samples for the adaptive variance (a divisor of ``pace``; default pace // 10, at least 1).
    shrinkSigma : bool
        Shrink kernels with the effective sample size (PLUMED's default; False = PLUMED's ``FIXED_SIGMA``).
    compressionThreshold : float
        Merge a new kernel into the nearest one closer than this many σ (0: no compression).
    saveFrequency : int, optional
        Steps between syncs with ``biasDir`` (a multiple of ``pace``).
    biasDir : str or path-like, optional
        Shared folder for multiple walkers.
    wallForceConstant : float
        kJ/mol per (unit of z)² beyond non-periodic grid edges.
    walkerId : str, optional
        Name of this walker's file in ``biasDir`` (default: random).
    recordFile : str or path-like, optional
        CSV receiving one row per deposition: ``step,time_ps,z<i>...,bias_kjmol,wall_kjmol,ct_kjmol,rct_kjmol,
        logweight`` (a ``#`` line states units). An existing file is appended to only if ``appendRecord``.
    appendRecord : bool
    trajectoryFile : str or path-like, optional
        DCD file receiving the positions at every deposition (frame i ↔ record i).
    forceGroup : int, optional
        Force group of the bias (default: the highest free one).
    backend : GridBiasBackend class, optional
        Default: the native fused ``LatentBiasForce`` when built, else :class:`CustomCVBackend`.
    kernelCutoff : float, None or "default"
        Kernel truncation, a Mahalanobis distance in σ (PLUMED's ``KERNEL_CUTOFF``): every kernel is cut there and
        shifted down by its value at the cutoff (:mod:`latentbias.bias.kernels`), so a deposit changes the
        estimate only near its centre. ``"default"``: PLUMED's default √(2βΔE/α) (explore: √(2βΔE)), at which the
        shifted-away value e^{−c²/2} is ε, the regularisation of ln(P/Z + ε). None: untruncated Gaussians, as
        openmm-opes.
    contextUpdate : {"auto", "hermite", "local", "refit"}, default "auto"
        How a deposit reaches the Context. ``"hermite"``: the native force's table holds the kernel sum S with its
        exact node derivatives (``LatentBiasForce.setGridInterpolation("hermite")``;
        :mod:`latentbias.bias.densitygrid`): a deposit adds its kernels' exact values and derivatives on their supports only, Z is a Context parameter,
        and the force interpolates V = (α/β) ln(max(S, 0)/Z + ε) by cubic Hermite patches through V's exact node
        values and derivatives (no fit anywhere). ``"local"``: the table holds S as OpenMM's cubic spline (its
        global node derivatives updated along whole axes) and the force takes the logarithm of the interpolated S.
        ``"refit"``: the table holds V on the grid, pushed as a whole after every deposit (``setGridValues``, a full
        spline refit; every backend). ``"auto"``: ``"hermite"`` when the backend supports it (the native plugin of
        this version), else ``"refit"``. All agree at the grid nodes; between nodes ``"hermite"`` is the most
        accurate (ala2, d = 3, σ ≈ 0.9–1 grid spacing, 12–30 kernels: rms error against the exact kernel-sum V
        0.004–0.013 kJ/mol, refit 0.018–0.046, local 0.13–0.27; ``benchmarks/RESULTS.md``, section "Hermite tables
        with exact node derivatives") and the cheapest (a d = 3 deposit ~0.6 ms, refit ~4 ms, local ~1.2 ms).
        Either way frames are weighted with the bias the Context applied.
    coupledBias : MultithermalOPES, optional
        An adaptive bias acting beside this one and sharing its pace (:mod:`latentbias.bias.multithermal`): at
        every deposition step it observes the configuration with this bias's acting energy less c(t) as its extra
        bias (PLUMED's ``EXTRA_BIAS`` on its side). Its energy does not enter this bias's kernel weights (PLUMED's
        default): P_n then estimates the distribution of z in the ensemble the coupled bias makes (the
        multithermal one), and this bias flattens that; with it in the weights, P_n would estimate the unbiased
        distribution and this bias would enhance along z again what the coupled bias already enhances (on a 2-D
        three-well potential, the latent bias on x and 300-900 K beside it, the effective sample size fell
        seven-fold: ``tests/test_multithermal.py``). Its state is saved and restored with this one's, and
        :meth:`getLogWeights` includes it.
    """

    def __init__(
        self,
        system: Any,
        model: str | os.PathLike | LatentModelFile,
        variables: Sequence[LatentVariable | int] | None,
        temperature: Any,
        barrier: Any,
        pace: int,
        biasFactor: float | None = None,
        explore: bool = False,
        adaptiveSigmaStride: int | None = None,
        sigmaSampleInterval: int | None = None,
        shrinkSigma: bool = True,
        compressionThreshold: float = 1.0,
        saveFrequency: int | None = None,
        biasDir: str | os.PathLike | None = None,
        wallForceConstant: float = 1000.0,
        walkerId: str | None = None,
        recordFile: str | os.PathLike | None = None,
        appendRecord: bool = False,
        trajectoryFile: str | os.PathLike | None = None,
        forceGroup: int | None = None,
        backend: type[GridBiasBackend] | None = None,
        kernelCutoff: float | str | None = "default",
        contextUpdate: str = "auto",
        coupledBias: Any | None = None,
    ):
        from openmm import unit

        self.model = as_model_file(model)
        self.model.check_system(system)
        self.variables = check_variables(self.model, variables)
        self.temperature = float(strip_unit(temperature, unit.kelvin))
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive (K), got {temperature}")
        self._kt = kt_kjmol(self.temperature)
        self.barrier = float(strip_unit(barrier, unit.kilojoule_per_mole))
        if not (self.barrier > 0 and math.isfinite(self.barrier)):
            raise ValueError(f"barrier must be a positive energy (kJ/mol), got {barrier}")
        self.biasFactor = self.barrier / self._kt if biasFactor is None else float(biasFactor)
        if not (self.biasFactor > 1.0 and math.isfinite(self.biasFactor)):
            raise ValueError(f"biasFactor must be finite and > 1 (default barrier/kT = {self.barrier / self._kt:.3g}); "
                             f"got {self.biasFactor}: raise the barrier or give biasFactor")
        self.explore = bool(explore)
        self._alpha = (self.biasFactor - 1.0) if self.explore else (1.0 - 1.0 / self.biasFactor)
        self._logEpsilon = -self.barrier / (self._alpha * self._kt)
        self._epsilon = math.exp(self._logEpsilon)  # 0.0 where it underflows (c(t) then uses ln r, as logaddexp does)
        self.pace = int(pace)
        if self.pace <= 0:
            raise ValueError(f"pace must be a positive number of steps, got {pace}")
        self.adaptiveSigmaStride = None if adaptiveSigmaStride is None else int(adaptiveSigmaStride)
        if self.adaptiveSigmaStride is not None and self.adaptiveSigmaStride <= 0:
            raise ValueError(f"adaptiveSigmaStride must be a positive number of steps, got {adaptiveSigmaStride}")
        interval = max(1, self.pace // 10) if sigmaSampleInterval is None else int(sigmaSampleInterval)
        if interval <= 0 or self.pace % interval:
            raise ValueError(f"sigmaSampleInterval must divide pace={self.pace}, got {sigmaSampleInterval}")
        self.sigmaSampleInterval = interval
        self.shrinkSigma = bool(shrinkSigma)
        if (saveFrequency is None) != (biasDir is None):
            raise ValueError("give both saveFrequency and biasDir, or neither")
        if saveFrequency is not None and (saveFrequency < self.pace or saveFrequency % self.pace):
            raise ValueError("saveFrequency must be a multiple of pace")
        self.saveFrequency = None if saveFrequency is None else int(saveFrequency)
        self.biasDir = None if biasDir is None else Path(biasDir)
        if self.biasDir is not None:
            self.biasDir.mkdir(parents=True, exist_ok=True)
        self.walkerId = walkerId or uuid.uuid4().hex[:12]
        if not re.fullmatch(r"[A-Za-z0-9_-]+", self.walkerId):
            raise ValueError(f"walkerId may contain only letters, digits, '_' and '-', got {self.walkerId!r}")

        self.grid = BiasGrid(self.variables)
        if isinstance(kernelCutoff, str):
            if kernelCutoff != "default":
                raise ValueError(f"kernelCutoff must be a number of widths, None or 'default', got {kernelCutoff!r}")
            kernelCutoff = opes_default_cutoff(self.barrier / self._kt, self._alpha, self.explore)
        self.kde = KernelDensity(self.grid, compressionThreshold, cutoff=kernelCutoff)
        self._coarseGridWarned = False
        self._spacing: np.ndarray | None = None  # grid spacings, for the coarse-grid warning
        d = self.grid.ndim
        # own weight sums (w = exp(βV) of every deposited sample) and number of depositions
        self._sumW, self._sumW2, self._count = 0.0, 0.0, 0
        self._others: dict[str, dict[str, Any]] = {}
        # adaptive σ statistics (Welford about an exponentially decaying mean, as PLUMED)
        self._avCV = np.zeros(d)
        self._avM2 = np.zeros(d)
        self._adaptiveCounter = 0
        self._sigma0 = np.array([v.biasWidth for v in self.variables], dtype=float)
        self._sigma0Set = self.adaptiveSigmaStride is None
        self._nDeposits = 0
        self._biasGrid = np.full(self.grid.shape, -self.barrier)
        self.records: dict[str, list] = {name: [] for name in OPES_COLUMNS}
        self.records["z"] = []
        self._recordPath = None if recordFile is None else Path(recordFile)
        if self._recordPath is not None:
            exists = self._recordPath.exists() and self._recordPath.stat().st_size > 0
            if exists and not appendRecord:
                raise FileExistsError(f"{self._recordPath} exists; pass appendRecord=True to continue it")
            if not exists:
                header = ["step", "time_ps"] + [f"z{v.index}" for v in self.variables] + list(OPES_COLUMNS[2:])
                with open(self._recordPath, "w") as fh:
                    fh.write(f"# latent OPES{'-explore' if self.explore else '-METAD'} depositions; T={self.temperature}"
                             f" K, barrier={self.barrier} kJ/mol, biasFactor={self.biasFactor:.6g}; z in model units, "
                             "bias, wall, c(t), rct in kJ/mol, logweight = (bias + wall - ct)/kT\n")
                    fh.write(",".join(header) + "\n")
        self._trajectory = None if trajectoryFile is None else DepositTrajectory(trajectoryFile, appendRecord)
        backend_cls = default_grid_backend() if backend is None else backend
        self.backend = backend_cls(self.model, system, self.grid, wallForceConstant, forceGroup)
        if contextUpdate not in ("auto", "hermite", "local", "refit"):
            raise ValueError(f"contextUpdate must be 'auto', 'hermite', 'local' or 'refit', got {contextUpdate!r}")
        # ε = exp(−βΔE/α) must be a normal double for the force's ln(P/Z + ε) (it underflows only for extreme
        # settings, e.g. a temperature of a few K); the refit route works with ln ε alone
        epsilon_ok = self._logEpsilon > math.log(1e-300)
        local = supports_density_grid(self.backend) and epsilon_ok
        if contextUpdate == "hermite" and not (local and supports_hermite_grid(self.backend)):
            raise ValueError("contextUpdate='hermite' needs the native LatentBiasForce with setGridInterpolation "
                             "(build the plugin of this version)" + ("" if epsilon_ok else
                             f" and epsilon = exp(-barrier/(alpha kT)) = exp({self._logEpsilon:.4g}) above 1e-300")
                             + "; use 'refit' or 'auto'")
        if contextUpdate == "local" and not local:
            raise ValueError("contextUpdate='local' needs the native LatentBiasForce with setGridLogTransform (build "
                             "the plugin of this version)" + ("" if epsilon_ok else
                             f" and epsilon = exp(-barrier/(alpha kT)) = exp({self._logEpsilon:.4g}) above 1e-300")
                             + "; use 'refit' or 'auto'")
        #: "hermite" / "local" (the Context's table holds the kernel sum, deposits are local) or "refit" (a table of V)
        if contextUpdate == "auto":
            self.contextUpdate = "hermite" if (local and supports_hermite_grid(self.backend)) else "refit"
        else:
            self.contextUpdate = contextUpdate
        self._densityLink = (DensityGridLink(self.backend, self.kde, self._alpha * self._kt, math.exp(self._logEpsilon),
                                             "hermite" if self.contextUpdate == "hermite" else "spline")
                             if self.contextUpdate in ("local", "hermite") else None)
        self._biasGridCurrent = True
        self._contextStale = True
        #: set False to stop depositing kernels (the bias is frozen but still acts); records continue
        self.depositionEnabled = True
        if coupledBias is not None and getattr(coupledBias, "pace", None) != self.pace:
            raise ValueError(f"coupledBias must share this OPES's pace ({self.pace} steps), got "
                             f"{getattr(coupledBias, 'pace', None)}")
        #: the bias observed at every deposition step, included in getLogWeights (None: none)
        self.coupledBias = coupledBias
        if self._syncWithDisk(write=False):
            self._refreshBias()

    # ------------------------------------------------------------------------------------------------ estimate

    @property
    def _totalSumW(self) -> float:
        """Σw over all walkers, with PLUMED's fictitious first sample exp(−βΔE)."""
        return math.exp(-self.barrier / self._kt) + self._sumW + sum(o["sumW"] for o in self._others.values())

    @property
    def _totalSumW2(self) -> float:
        return math.exp(-2.0 * self.barrier / self._kt) + self._sumW2 + sum(o["sumW2"] for o in self._others.values())

    @property
    def _totalCount(self) -> int:
        return 1 + self._count + sum(int(o["count"]) for o in self._others.values())

    def _refreshBias(self) -> None:
        """The kernel sums changed: recompute V on the grid (Eq. 7) — at once for the refit route, which pushes it,
        when next needed for the local route — and mark the Context stale."""
        if self._densityLink is None:
            self._biasGrid = self._computeBiasGrid()
        else:
            self._biasGridCurrent = False
        self._contextStale = True

    def _normalization(self) -> float:
        """Σw·Z_n, the mean of the kernel sum over the kernel centres (1 before the first kernel)."""
        sums = self.kde.center_sum
        # np.mean's arithmetic (the sum, then / n), without its wrapper
        return float(np.add.reduce(sums) / len(sums)) if self.kde.num_kernels else 1.0

    def _biasFromSums(self, sums: np.ndarray, zed: float) -> np.ndarray:
        """V = (α/β) ln(max(S, 0)/zed + ε) of kernel sums S (any shape), kJ/mol."""
        ratio = np.maximum(sums, 0.0) / zed
        return self._alpha * self._kt * np.logaddexp(np.log(np.maximum(ratio, 1e-300)), self._logEpsilon)

    @property
    def _biasAtZero(self) -> float:
        """V where the kernel sum is 0 (or below), as :meth:`_biasFromSums` computes it there, kJ/mol."""
        return float(self._biasFromSums(np.zeros(1), 1.0)[0])

    def _computeBiasGrid(self) -> np.ndarray:
        if self.kde.num_kernels == 0:
            return np.full(self.grid.shape, -self.barrier)
        # V = _biasFromSums(S) on the whole grid (the normalisation Σw cancels in P/Z), evaluated only on the box
        # outside which S is exactly 0 (KernelDensity.occupied_box); beyond it V is its value at S = 0, the same
        # double for every node (max(S, 0)/Z = 0 is clamped to 1e-300 whatever Z is)
        box = self.kde.occupied_box()
        values = np.full(self.grid.shape, self._biasAtZero)
        values[box] = self._biasFromSums(self.kde.grid_sum[box], self._normalization())
        return values

    def _currentBiasGrid(self) -> np.ndarray:
        """V on the grid (kJ/mol), recomputed if the kernels changed since."""
        if not self._biasGridCurrent:
            self._biasGrid = self._computeBiasGrid()
            self._biasGridCurrent = True
        return self._biasGrid

    def getBias(self) -> np.ndarray:
        """OPES bias V on the grid (all walkers), kJ/mol, shape=grid shape, natural index order; −ΔE before the
        first kernel."""
        return self._currentBiasGrid().copy()

    def getGridAxes(self) -> list[np.ndarray]:
        """Grid points of each variable (units of z)."""
        return self.grid.axes

    def getFreeEnergy(self):
        """Free energy F = −V/(1 − 1/γ) on the grid (both variants), ``openmm.unit.Quantity`` in kJ/mol."""
        from openmm import unit

        return -self._currentBiasGrid() / (1.0 - 1.0 / self.biasFactor) * unit.kilojoule_per_mole

    def getProbability(self) -> np.ndarray:
        """The kernel estimate on the grid, normalised to sum 1 over the distinct grid nodes: the unbiased P_n
        (METAD) or the sampled p^WT_n (explore). Shape=grid shape."""
        p = np.maximum(self.kde.grid_sum, 0.0)
        total = p[self._uniqueNodes()].sum()
        return p / total if total > 0 else np.full(self.grid.shape, np.nan)

    def _uniqueNodes(self) -> tuple:
        return tuple(slice(0, -1) if v.periodic else slice(None) for v in self.variables)

    def biasAt(self, z: Any) -> np.ndarray:
        """Current bias (kJ/mol) at latent points z, shape=(n, d) -> (n,), by linear grid interpolation."""
        return self.grid.interpolate(z, self._currentBiasGrid())

    def ct(self) -> float:
        """c(t) (kJ/mol) of the current bias: −kT ln⟨e^{−βV}⟩ over P_n (METAD) or kT ln⟨e^{βV}⟩ over p^WT_n
        (explore), on the grid; −ΔE (the flat initial bias) before the first kernel."""
        if self.kde.num_kernels == 0:
            return -self.barrier
        # the distinct nodes where the estimate is > 0, in the grid's order: only the box outside which it is exactly
        # 0 (KernelDensity.occupied_box) is looked at, which leaves out zeros only
        box = tuple(slice(b.start, min(b.stop, n - 1)) if v.periodic else b
                    for b, n, v in zip(self.kde.occupied_box(), self.grid.shape, self.variables))
        p = np.maximum(self.kde.grid_sum[box], 0.0).ravel()
        p = p[p > 0]
        # βV = α ln(max(S/Z, 1e-300) + ε) only where the estimate is non-zero: _biasFromSums / kT to rounding, with
        # ln(r + ε) for its logaddexp(ln r, ln ε) (a scalar loop; equal to rounding: tests/test_opes_fastpath.py)
        v = p / self._normalization()
        np.maximum(v, 1e-300, out=v)
        v += self._epsilon
        np.log(v, out=v)
        v *= self._alpha
        logp = np.log(p) - np.log(p.sum())
        x = logp + v if self.explore else logp - v
        if len(x) == 0:
            lse = float(np.logaddexp.reduce(x))
        else:
            # ln Σ e^x as max + ln Σ e^{x − max}: one vectorised pass, equal to np.logaddexp.reduce(x) (a sequential
            # loop, ~30 ns per node) to rounding (tests/test_opes_fastpath.py: 1e-12 relative)
            top = float(x.max())
            lse = top + math.log(float(np.exp(x - top).sum()))
        return float(self._kt * lse) if self.explore else float(-self._kt * lse)

    def rct(self) -> float:
        """PLUMED's running c(t) estimate, kT ln(Σw / n) over all deposited samples (kJ/mol)."""
        return float(self._kt * (math.log(self._totalSumW) - math.log(self._totalCount)))

    def getNeff(self) -> float:
        """Effective sample size used to shrink σ: (1+Σw)²/(1+Σw²) (METAD) or the number of samples (explore)."""
        if self.explore:
            return float(self._totalCount)
        return (1.0 + self._totalSumW) ** 2 / (1.0 + self._totalSumW2)

    def getSigma(self) -> np.ndarray:
        """Width σ of the next kernel (units of z), shape=(d,)."""
        sigma = self._sigma0.copy()
        if self.adaptiveSigmaStride is not None and self._sigma0Set:
            sigma = np.sqrt(self._avM2 / self._adaptiveCounter / self._sigmaFactor)
        if self.shrinkSigma:
            d = self.grid.ndim
            sigma = sigma * (self.getNeff() * (d + 2) / 4.0) ** (-1.0 / (d + 4))
        return sigma

    @property
    def _sigmaFactor(self) -> float:
        return 1.0 if self.explore else self.biasFactor

    @property
    def numKernels(self) -> int:
        """Kernels in the (compressed) estimate, all walkers."""
        return self.kde.num_kernels

    @property
    def numDeposits(self) -> int:
        """Samples this walker has deposited."""
        return self._nDeposits

    def setBiasScale(self, context: Any, scale: float) -> None:
        """Scale the acting OPES bias (walls excepted) in ``context``: 1 normal, 0 off. Kernel weights keep using
        the unscaled V."""
        if not scale >= 0:
            raise ValueError(f"scale must be >= 0, got {scale}")
        self.backend.set_scale(scale, context)

    @property
    def biasScale(self) -> float:
        """Factor on the acting OPES bias (walls excepted) set by :meth:`setBiasScale`."""
        return self.backend.scale

    def getBiasEnergy(self, context: Any) -> float:
        """Bias energy acting in ``context`` now (scale · V(z) + walls), kJ/mol."""
        return self.backend.energy(context)

    def getCollectiveVariables(self, simulation: Any) -> np.ndarray:
        """Current values of the biased latent components in a Simulation, shape=(d,)."""
        return self.backend.latent_values(simulation.context)

    def updateContext(self, context: Any) -> None:
        """Bring ``context`` up to the current bias: the kernel changes since the last update and Z (local route), or
        the whole table of V (``setGridValues`` + ``updateParametersInContext``, refit route)."""
        if self._densityLink is not None:
            self._densityLink.push(self._normalization(), context)
        else:
            self.backend.set_grid(self._biasGrid, context)
        if self.coupledBias is not None:
            self.coupledBias.initialize(context)
            self.coupledBias.updateContext(context)
        self._contextStale = False

    # ------------------------------------------------------------------------------------------------- run

    @property
    def _interval(self) -> int:
        return self.sigmaSampleInterval if self.adaptiveSigmaStride is not None else self.pace

    def step(self, simulation: Any, steps: int) -> None:
        """Advance ``simulation`` by ``steps`` steps, depositing a kernel every ``pace`` steps."""
        if self.coupledBias is not None:
            self.coupledBias.initialize(simulation.context)
        if self._contextStale:
            self.updateContext(simulation.context)
        to_go = int(steps)
        interval = self._interval
        while to_go > 0:
            n = min(to_go, interval - simulation.currentStep % interval)
            simulation.step(n)
            to_go -= n
            step = simulation.currentStep
            if step % interval:
                continue
            ready = True
            if self.adaptiveSigmaStride is not None:
                ready = self._updateVariance(self.backend.latent_values(simulation.context))
            if step % self.pace == 0 and ready:
                self._deposit(simulation)
            if self.saveFrequency is not None and step % self.saveFrequency == 0:
                if self._syncWithDisk(write=True):
                    self._refreshBias()
            if self._contextStale:
                self.updateContext(simulation.context)

    def _updateVariance(self, z: np.ndarray) -> bool:
        """Fold a CV sample into the adaptive variance; True once kernels may be deposited."""
        if not self.depositionEnabled:
            return self._sigma0Set
        self._adaptiveCounter += 1
        tau = max(1, self.adaptiveSigmaStride // self.sigmaSampleInterval)
        tau = min(tau, self._adaptiveCounter)
        diff = self.kde.displacement(self._avCV, z)
        self._avCV = self.kde.wrap(self._avCV + diff / tau)
        self._avM2 += diff * self.kde.displacement(self._avCV, z)
        return self._sigma0Set or self._adaptiveCounter * self.sigmaSampleInterval >= self.adaptiveSigmaStride

    def _deposit(self, simulation: Any) -> None:
        from openmm import unit

        context = simulation.context
        # z, and scale * V(z) + walls exactly as the force applies it, from one (last or new) evaluation
        z, acting = self.backend.latent_values_and_energy(context)
        wall = self.backend.wall_energy(z)
        scale = self.backend.scale
        bias = (acting - wall) / scale if scale > 0 else float(self.biasAt(z[None])[0])
        ct = self.ct()
        if self.coupledBias is not None:
            # it sees this bias as acting now, normalised with c(t) as the frames' weights are; never the reverse
            self.coupledBias.observe(context, simulation.currentStep, acting - ct, update=self.depositionEnabled)
        state = context.getState(getPositions=True) if self._trajectory is not None else None
        time_ps = (context.getTime() if state is None else state.getTime()).value_in_unit(unit.picosecond)
        self._record(simulation.currentStep, time_ps, z, bias, wall, ct, self.rct())
        if self._trajectory is not None:
            self._trajectory.write(simulation, state, self.pace)
        if not self.depositionEnabled:
            return
        if not self._sigma0Set:  # first deposit with adaptive σ: the samples so far were unbiased
            self._avM2 = self._avM2 * self._sigmaFactor
            self._sigma0 = np.sqrt(self._avM2 / self._adaptiveCounter / self._sigmaFactor)
            self._sigma0Set = True
            if not np.all(self._sigma0 > 0):
                raise RuntimeError(f"adaptive sigma is zero ({self._sigma0}); the CV did not move, give a fixed sigma")
        w = math.exp(bias / self._kt)
        self._sumW += w
        self._sumW2 += w * w
        self._count += 1
        sigma = self.getSigma()  # N_eff counts the new sample, as in PLUMED
        self._warnIfGridTooCoarse(sigma)
        self.kde.add(z, sigma, 1.0 if self.explore else w)
        self._nDeposits += 1
        self._refreshBias()
        self.updateContext(context)

    def _warnIfGridTooCoarse(self, sigma: np.ndarray) -> None:
        """Warn once when the shrinking kernels become narrower than the grid spacing: from then on the acting bias
        (the spline through the grid values) smooths single kernels away. Reweighting stays exact — frames are
        weighted by the bias that acted — but the bias no longer follows the OPES estimate at the σ scale."""
        if self._coarseGridWarned:
            return
        if self._spacing is None:
            self._spacing = np.array([a[1] - a[0] for a in self.grid.axes])
        spacing = self._spacing
        if (sigma < spacing).any():
            axes = self.grid.axes
            self._coarseGridWarned = True
            needed = [int(np.ceil((a[-1] - a[0]) / sk)) + 1 for a, sk in zip(axes, sigma)]
            logger.warning("OPES kernel width %s is now below the grid spacing %s after %d deposits: the acting bias "
                           "(interpolated between the grid nodes) no longer resolves single kernels, so it follows the "
                           "OPES estimate only coarsely (reweighting is unaffected). Use more grid points (about %s "
                           "per variable for the current width; kernels keep shrinking as N_eff grows).",
                           np.array2string(sigma, precision=3), np.array2string(spacing, precision=3),
                           self._nDeposits, needed)

    def _record(self, step: int, time_ps: float, z: np.ndarray, bias: float, wall: float, ct: float,
                rct: float) -> None:
        logweight = (bias + wall - ct) / self._kt
        for name, value in zip(OPES_COLUMNS, (step, time_ps, bias, wall, ct, rct, logweight)):
            self.records[name].append(value)
        self.records["z"].append(np.asarray(z, dtype=float))
        if self._recordPath is not None:
            with open(self._recordPath, "a") as fh:
                fh.write(",".join([str(int(step)), f"{time_ps:.6f}"] + [f"{x:.10g}" for x in z]
                                  + [f"{x:.10g}" for x in (bias, wall, ct, rct, logweight)]) + "\n")

    def getRecords(self) -> dict[str, np.ndarray]:
        """Per-deposition records as arrays: ``step``, ``time_ps``, ``z`` (n, d), ``bias_kjmol`` (V acting on the
        frame), ``wall_kjmol``, ``ct_kjmol``, ``rct_kjmol``, ``logweight`` (= (bias + wall − ct)/kT)."""
        out = {k: np.asarray(v) for k, v in self.records.items() if k != "z"}
        out["z"] = np.asarray(self.records["z"]).reshape(-1, len(self.variables))
        return out

    def getLogWeights(self, method: str = "ct") -> np.ndarray:
        """Log-weights of the recorded frames for unbiased averages (normalise before use).

        Parameters
        ----------
        method : {"ct", "rct", "bias", "final"}
            ``"ct"``: β(V_t(z_t) + W(z_t) − c(t)) with c(t) of the bias acting then; ``"rct"``: the same with PLUMED's
            running rct; ``"bias"``: β(V_t(z_t) + W(z_t)), PLUMED's ``REWEIGHT_BIAS`` (discard the early frames);
            ``"final"``: β(V_final(z_t) + W(z_t)) with the final bias grid (linear interpolation),
            valid once the bias is quasi-static (discard the early frames).

        Returns
        -------
        numpy.ndarray, shape=(n_records,)
        """
        rec = self.getRecords()
        # the coupled bias acted on every recorded frame too (its records are one per deposition step)
        extra = 0.0 if self.coupledBias is None else self.coupledBias.getRecords()["bias_kjmol"] / self._kt
        if method == "ct":
            return rec["logweight"] + extra
        if method == "rct":
            return (rec["bias_kjmol"] + rec["wall_kjmol"] - rec["rct_kjmol"]) / self._kt + extra
        if method == "bias":
            return (rec["bias_kjmol"] + rec["wall_kjmol"]) / self._kt + extra
        if method == "final":
            if len(rec["z"]) == 0:
                return np.zeros(0)
            return (self.biasAt(rec["z"]) + rec["wall_kjmol"]) / self._kt + extra
        raise ValueError(f"method must be 'ct', 'rct', 'bias' or 'final', got {method!r}")

    # ---------------------------------------------------------------------------------------- multiple walkers

    def _walkerFile(self, walker: str) -> Path:
        assert self.biasDir is not None
        return self.biasDir / f"opes_{walker}.npz"

    def _ownArrays(self) -> dict[str, np.ndarray]:
        k = self.kde
        return {"centers": k.centers, "sigmas": k.sigmas, "weights": k.weights, "counts": k.counts,
                "sums": np.array([self._sumW, self._sumW2, float(self._count)]),
                "settings": np.array([float(self.explore), self.barrier, self.biasFactor, self.temperature]),
                "shape": np.asarray(self.grid.shape)}

    def _syncWithDisk(self, write: bool) -> bool:
        """Write this walker's kernels; load the latest kernels of every other walker. True if they changed."""
        if self.biasDir is None:
            return False
        if write:
            save_npz(self._walkerFile(self.walkerId), checksum=True, **self._ownArrays())
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
            mine = self._ownArrays()
            if (tuple(data["shape"]) != self.grid.shape or not np.allclose(data["settings"], mine["settings"])
                    or data["centers"].shape[1:] != (self.grid.ndim,)):
                raise ValueError(f"{path} comes from an OPES run with different settings (explore, barrier, "
                                 "biasFactor, temperature or grid): walkers sharing a biasDir need identical ones")
            old = self._others.get(match["id"])
            if old is None or old["count"] != data["sums"][2] or not np.array_equal(old["weights"], data["weights"]):
                self._others[match["id"]] = {"centers": data["centers"], "sigmas": data["sigmas"],
                                             "weights": data["weights"], "sumW": float(data["sums"][0]),
                                             "sumW2": float(data["sums"][1]), "count": int(data["sums"][2])}
                changed = True
        if changed:
            self._setFixedKernels()
        return changed

    def walkerContribution(self) -> dict[str, np.ndarray]:
        """This walker's own kernels and weight sums, as written to its ``biasDir`` file. Give it to the other
        walkers' :meth:`setOtherWalkers` when the walkers exchange kernels through a driver instead of a shared
        folder."""
        return {k: np.array(v, copy=True) for k, v in self._ownArrays().items()}

    def setOtherWalkers(self, walkers: dict[str, dict[str, np.ndarray]]) -> None:
        """Replace the other walkers' kernels and weight sums by the given :meth:`walkerContribution` of each
        (walker id -> arrays; this walker's own id is ignored) and recompute the bias; the Context is updated at
        the next :meth:`step`. What each walker sees is then fixed by the caller, not by the timing of file
        writes."""
        mine = self._ownArrays()
        others: dict[str, dict[str, Any]] = {}
        for walker, data in sorted(walkers.items()):
            if walker == self.walkerId:
                continue
            if (tuple(np.asarray(data["shape"])) != self.grid.shape
                    or not np.allclose(data["settings"], mine["settings"])
                    or np.asarray(data["centers"]).shape[1:] != (self.grid.ndim,)):
                raise ValueError(f"walker {walker!r} comes from an OPES run with different settings (explore, "
                                 "barrier, biasFactor, temperature or grid): walkers sharing a bias need identical ones")
            sums = np.asarray(data["sums"], dtype=float)
            others[walker] = {"centers": np.asarray(data["centers"], dtype=float),
                              "sigmas": np.asarray(data["sigmas"], dtype=float),
                              "weights": np.asarray(data["weights"], dtype=float), "sumW": float(sums[0]),
                              "sumW2": float(sums[1]), "count": int(sums[2])}
        self._others = others
        self._setFixedKernels()
        self._refreshBias()

    def _setFixedKernels(self) -> None:
        d = self.grid.ndim
        others = [self._others[k] for k in sorted(self._others)]
        self.kde.set_fixed(np.concatenate([o["centers"] for o in others]) if others else np.zeros((0, d)),
                           np.concatenate([o["sigmas"] for o in others]) if others else np.zeros((0, d)),
                           np.concatenate([o["weights"] for o in others]) if others else np.zeros(0))

    # ---------------------------------------------------------------------------------------- save / restore

    def _settings(self) -> dict[str, Any]:
        return {
            "variables": [v.toDict() for v in self.variables],
            "temperature": self.temperature,
            "barrier": self.barrier,
            "biasFactor": self.biasFactor,
            "explore": self.explore,
            "pace": self.pace,
            "adaptiveSigmaStride": self.adaptiveSigmaStride,
            "sigmaSampleInterval": self.sigmaSampleInterval,
            "shrinkSigma": self.shrinkSigma,
            "compressionThreshold": self.kde.threshold,
            "kernelCutoff": self.kde.cutoff,
            "wallForceConstant": self.backend.wall_force_constant,
            "model_training_data_hash": self.model.metadata.get("training_data_hash"),
            "coupledBias": None if self.coupledBias is None else self.coupledBias.settings(),
        }

    def saveState(self, prefix: str | os.PathLike) -> tuple[Path, Path]:
        """Save the state to ``<prefix>.npz`` (kernels, sums, σ statistics, records) and ``<prefix>.json``
        (settings, SHA-256 of the npz), atomically, the JSON last (a pair torn by a crash is detected). On the local
        route the next :meth:`step` replaces the Context's table as a whole (one full refit), as a run restored from
        this state does, so that the restored run continues bit for bit."""
        prefix = Path(prefix)
        npz, meta = prefix.with_name(prefix.name + ".npz"), prefix.with_name(prefix.name + ".json")
        if self._densityLink is not None:
            # the next step pushes the whole table, as a run restored from this state does: an exact continuation
            self._densityLink.resync()
            self._contextStale = True
        rec = self.getRecords()
        others = sorted(self._others)
        arrays = {f"own_{k}": v for k, v in self._ownArrays().items()}
        for i, name in enumerate(others):
            o = self._others[name]
            arrays.update({f"other{i}_centers": o["centers"], f"other{i}_sigmas": o["sigmas"],
                           f"other{i}_weights": o["weights"],
                           f"other{i}_sums": np.array([o["sumW"], o["sumW2"], float(o["count"])])})
        arrays.update(avCV=self._avCV, avM2=self._avM2, sigma0=self._sigma0,
                      counters=np.array([self._adaptiveCounter, int(self._sigma0Set), self._nDeposits]),
                      kde_grid_sum=self.kde.grid_sum, kde_center_sum=self.kde.center_sum,
                      kde_updates=np.array(self.kde.updates_since_rebuild))
        arrays.update({f"record_{k}": v for k, v in rec.items()})
        if self.coupledBias is not None:
            arrays.update({f"coupled_{k}": v for k, v in self.coupledBias.stateArrays().items()})
        save_npz(npz, **arrays)
        digest = hashlib.sha256(npz.read_bytes()).hexdigest()
        write_json(meta, {"format": "latentbias-opes-state", "version": _STATE_VERSION, "walkerId": self.walkerId,
                          "otherWalkers": others, "numDeposits": self._nDeposits, "numKernels": self.numKernels,
                          "settings": self._settings(), "npz_sha256": digest}, checksum=True)
        return npz, meta

    def loadState(self, prefix: str | os.PathLike) -> None:
        """Restore a state written by :meth:`saveState` (settings must match); the Context is updated at the
        next :meth:`step`."""
        info, npz, fix = read_state_record(prefix, "OPES", "latentbias-opes-state")
        theirs = dict(info["settings"])
        if "kernelCutoff" not in theirs and self.kde.cutoff is not None:
            # a state saved before kernels could be truncated holds untruncated kernel sums: continue it exactly as
            # it was run (so that a campaign started with an older latentbias resumes), with untruncated kernels
            logger.warning("%s was saved before OPES kernels were truncated: continuing it with untruncated "
                           "kernels (kernelCutoff=None), as it was run", Path(prefix).with_name(Path(prefix).name + ".json"))
            self.kde = KernelDensity(self.grid, self.kde.threshold, self.kde.rebuild_interval, cutoff=None)
            if self._densityLink is not None:
                self._densityLink.attach(self.kde)
        theirs.setdefault("kernelCutoff", None)
        theirs.setdefault("coupledBias", None)
        mine = self._settings()
        diff = [k for k in mine if k != "model_training_data_hash" and mine[k] != theirs.get(k)]
        if diff:
            raise ValueError(f"saved state has different settings for {diff}; build LatentOPES with the same "
                             "variables, temperature, barrier, biasFactor, mode, pace, sigma and wall settings")
        arrays = ["own_sums", "own_centers", "own_sigmas", "own_weights", "own_counts", "kde_grid_sum",
                  "kde_center_sum", "kde_updates", "avCV", "avM2", "sigma0", "counters", "record_z",
                  *(f"record_{k}" for k in OPES_COLUMNS),
                  *(f"other{i}_{k}" for i in range(len(info["otherWalkers"]))
                    for k in ("centers", "sigmas", "weights", "sums"))]
        data = require_keys(load_npz(npz), arrays, npz, fix=fix)
        self._sumW, self._sumW2, count = (float(x) for x in data["own_sums"])
        self._count = int(count)
        self._others = {}
        for i, name in enumerate(info["otherWalkers"]):
            s = data[f"other{i}_sums"]
            self._others[name] = {"centers": data[f"other{i}_centers"], "sigmas": data[f"other{i}_sigmas"],
                                  "weights": data[f"other{i}_weights"], "sumW": float(s[0]), "sumW2": float(s[1]),
                                  "count": int(s[2])}
        d = self.grid.ndim
        others = [self._others[k] for k in sorted(self._others)]
        self.kde.fixed_centers = np.concatenate([o["centers"] for o in others]) if others else np.zeros((0, d))
        self.kde.fixed_sigmas = np.concatenate([o["sigmas"] for o in others]) if others else np.zeros((0, d))
        self.kde.fixed_weights = np.concatenate([o["weights"] for o in others]) if others else np.zeros(0)
        self.kde.set_own(data["own_centers"], data["own_sigmas"], data["own_weights"], data["own_counts"])
        # the incrementally updated sums as they were (a rebuild differs in the last bits: exact continuation)
        self.kde.grid_sum, self.kde.center_sum = data["kde_grid_sum"].copy(), data["kde_center_sum"].copy()
        self.kde.updates_since_rebuild = int(data["kde_updates"])
        self._avCV, self._avM2, self._sigma0 = data["avCV"].copy(), data["avM2"].copy(), data["sigma0"].copy()
        counters = data["counters"]
        self._adaptiveCounter, self._sigma0Set, self._nDeposits = int(counters[0]), bool(counters[1]), int(counters[2])
        self.walkerId = info["walkerId"]  # continue writing the same walker file, never count it twice
        self.records = {k: list(data[f"record_{k}"]) for k in OPES_COLUMNS}
        self.records["z"] = list(data["record_z"])
        if self.coupledBias is not None:
            coupled = {k[len("coupled_"):]: v for k, v in data.items() if k.startswith("coupled_")}
            self.coupledBias.restoreStateArrays(
                require_keys(coupled, ["sums", "logsum", "record_step", "record_energy_kjmol", "record_bias_kjmol",
                                       "record_extra_kjmol"], npz, fix=fix))
        self._refreshBias()
        logger.info("restored OPES state %s (%d depositions, %d kernels)", prefix, self._nDeposits, self.numKernels)
