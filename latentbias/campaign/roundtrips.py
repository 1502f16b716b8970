"""Round trips between basins of the frozen encoder's latent space: the converge phase's visit-counting condition.

Why. A basin free-energy difference from one biased run is only as good as the number of times the run went from
one basin to the other and back: for a two-state process with K committed transitions σ(ΔF) ≥ 2 kT/√K
(:func:`latentbias.analysis.uncertainty.two_state_error`), whatever the frame count. The drift criterion of
:mod:`latentbias.campaign.converge` measures stability and is met by a run that crossed a barrier once or twice
(the ala2 demo: converge phases with 2–6 C7ax visits stopped "converged", benchmarks/RESULTS.md). The sampler
must not be told the physical basins (no φ/ψ): the basins here are those of the *latent* free-energy surface.

What. When the converge round is planned (:func:`round_trip_cores_plan`), the frames of all rounds so far, with
the log-weights written after the last exploration round (``weights.csv``: z under that round's encoder, which
the converge phase freezes), give a reweighted latent FES on a ``_BINS``-per-dimension grid (smoothed by
``_SMOOTH`` grid spacings), and :func:`latentbias.analysis.paths.find_basins` its basins (steepest descent; a basin
shallower than ``core_kt`` kT below its lowest saddle is merged into the deeper neighbour: it is no metastable
state). Basins whose minimum lies above ``fes_cutoff`` are dropped; the rest are ordered by the free energy of
their minimum (0: the deepest). The *core* of basin k is the set of its sampled cells at least ``core_kt`` kT
below its lowest saddle, F ≤ F_saddle,k − ``core_kt`` kT: from a core the trajectory must climb ≥ ``core_kt`` kT to
leave the basin, cores of neighbouring basins are separated by a band ≥ 2 ``core_kt`` kT wide in free energy around
their saddle, and recrossings of a dividing surface do not count. (Cores within a few kT of each *minimum* were
tried first: on the ala2 demo the tanh encoder spreads C7ax over a wide latent region whose free energy rises
steadily away from its minimum, and such a core held 2–4 of the 40 × 40 grid cells and 11–26 of ~4500 converge
frames — 1 latent round trip counted where φ saw 94 C7ax entries.) A basin separated from the rest by unsampled
cells (an island) has its saddle at the unsampled cells' penalty height, so its core is the whole island. The
cores are fixed for the whole converge phase (stored in its ``plan.json`` under ``round_trip_cores``).

Counting (:func:`latent_round_trips`): each converge frame after the burn-in is assigned to the core its latent
coordinates fall in (or none); transitions between core 0 and core b are counted with hysteresis
(:func:`latentbias.analysis.uncertainty.transition_count`, every walker a separate series) and a round trip is two
transitions. With ``[converge] round_trip_basins`` = n the count is the smallest over the pairs (0, b),
b = 1 … n − 1 (default n = 2: the two deepest basins). Fewer than n basins give 0: the run cannot show it has
sampled a second state, and the converge phase runs to its budget (then the estimate carries a warning).

The stopping rule needs ``[converge] min_round_trips`` (default 13: 26 transitions, 2 kT/√26 = 0.98 kJ/mol at
300 K — the smallest error a two-state estimate from that many transitions can have) *and* the drift criterion;
``min_round_trips = 0`` switches the condition off. The umbrella converge method is not counted (its windows are
restrained; its error does not rest on spontaneous crossings).

Limits: the latent basins are those the exploration rounds' reweighted FES shows; a basin the exploration never
reached, or one the encoder projects onto another, is not counted. The two deepest latent basins need not be the
basins of the user's question: the count says how often the run crossed the latent space's main barrier.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..analysis.constants import kt_kjmol
from ..analysis.uncertainty import transition_count

if TYPE_CHECKING:
    from .loop import Campaign

logger = logging.getLogger(__name__)

__all__ = ["LatentCores", "latent_cores", "latent_round_trips", "round_trip_cores_plan"]

#: grid of the basin FES: bins per latent dimension and Gaussian smoothing in grid spacings (as the umbrella path)
_BINS, _SMOOTH = 40, 1.0
#: fewer frames with a finite log-weight than this: every frame counts equally
_MIN_WEIGHTED = 10


@dataclass
class LatentCores:
    """Core sets of the basins of a latent FES on a regular grid.

    Attributes
    ----------
    dims : list of int
        Latent dimensions of the grid (indices into z).
    edges : list of numpy.ndarray
        Bin edges per dimension, each shape=(bins + 1,), latent units.
    labels : numpy.ndarray of int, shape=(bins,) * len(dims)
        Core of every cell: basin index (0 = deepest minimum), −1 = in no core.
    minima : numpy.ndarray, shape=(n_basins, len(dims))
        Latent coordinates of the basins' minima.
    free_energies : numpy.ndarray, shape=(n_basins,)
        Smoothed FES at the minima, kJ/mol relative to the deepest.
    levels : numpy.ndarray, shape=(n_basins,)
        Height of each core's upper edge above its minimum (smoothed FES), kJ/mol.
    """

    dims: list[int]
    edges: list[np.ndarray]
    labels: np.ndarray
    minima: np.ndarray
    free_energies: np.ndarray
    levels: np.ndarray

    @property
    def n_basins(self) -> int:
        return len(self.free_energies)

    def assign(self, z: np.ndarray) -> np.ndarray:
        """Core index of every frame (−1: in no core or outside the grid). z: shape=(n, d) latent coordinates
        (all dimensions; ``dims`` are picked). Returns shape=(n,) int."""
        z = np.asarray(z, dtype=float)
        z = z.reshape(len(z), -1)[:, self.dims]
        inside = np.ones(len(z), dtype=bool)
        idx = []
        for k, e in enumerate(self.edges):
            i = np.searchsorted(e, z[:, k], side="right") - 1
            inside &= (i >= 0) & (i < len(e) - 1) & np.isfinite(z[:, k])
            idx.append(np.clip(i, 0, len(e) - 2))
        out = self.labels[tuple(idx)]
        return np.where(inside, out, -1).astype(np.int64)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (``plan.json``)."""
        return {"dims": list(self.dims), "edges": [e.tolist() for e in self.edges], "labels": self.labels.tolist(),
                "minima": self.minima.tolist(), "free_energies": self.free_energies.tolist(),
                "levels": self.levels.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LatentCores:
        """Inverse of :meth:`to_dict`."""
        dims = [int(i) for i in d["dims"]]
        return cls(dims, [np.asarray(e, dtype=float) for e in d["edges"]], np.asarray(d["labels"], dtype=np.int64),
                   np.asarray(d["minima"], dtype=float).reshape(-1, len(dims)),
                   np.asarray(d["free_energies"], dtype=float), np.asarray(d["levels"], dtype=float))


def latent_cores(z: np.ndarray, logw: np.ndarray, temperature: float, dims: Sequence[int] | None = None,
                 core_kt: float = 2.0, fes_cutoff: float = 25.0, bins: int = _BINS,
                 smooth: float = _SMOOTH) -> LatentCores:
    """Basins of the reweighted latent FES and their cores (module docstring).

    Parameters
    ----------
    z : numpy.ndarray, shape=(n, d)
        Latent coordinates of the frames.
    logw : numpy.ndarray, shape=(n,)
        Their log-weights in the unbiased ensemble (−inf: not in the estimate); with fewer than 10 finite ones,
        every frame counts equally.
    temperature : float
        K.
    dims : sequence of int, optional
        Latent dimensions to use (1 to 3 of them; default all).
    core_kt : float
        Cores lie at least this many kT below their basin's lowest saddle; basins shallower than this are merged
        into their deeper neighbour.
    fes_cutoff : float
        kJ/mol above the deepest minimum: basins whose minimum is higher are dropped.
    bins, smooth : int, float
        Grid bins per dimension; Gaussian smoothing in grid spacings.

    Returns
    -------
    LatentCores
    """
    from ..analysis.paths import prepared_fes, find_basins

    z = np.asarray(z, dtype=float)
    z = z.reshape(len(z), -1)
    logw = np.asarray(logw, dtype=float)
    if logw.shape != (len(z),):
        raise ValueError(f"logw must have shape ({len(z)},), got {logw.shape}")
    dims = list(range(z.shape[1])) if dims is None else [int(i) for i in dims]
    if not 1 <= len(dims) <= 3:
        raise ValueError(f"latent cores need 1 to 3 latent dimensions, got {len(dims)} ({dims})")
    if core_kt <= 0:
        raise ValueError(f"core_kt must be > 0 (kT), got {core_kt}")
    kt = kt_kjmol(temperature)
    ok = np.isfinite(logw) & np.all(np.isfinite(z[:, dims]), axis=1)
    if ok.sum() < _MIN_WEIGHTED:
        ok = np.all(np.isfinite(z[:, dims]), axis=1)
        logw = np.zeros(len(z))
    if ok.sum() < 2:
        raise ValueError(f"latent cores need at least 2 frames with finite latent coordinates, got {int(ok.sum())}")
    x = z[ok][:, dims]
    w = np.exp(logw[ok] - logw[ok].max())
    lo, hi = x.min(0), x.max(0)
    pad = 0.02 * np.maximum(hi - lo, 1e-12)
    edges = [np.linspace(lo[k] - pad[k], hi[k] + pad[k], bins + 1) for k in range(len(dims))]
    h, _ = np.histogramdd(x, bins=edges, weights=w)
    with np.errstate(divide="ignore"):
        raw = -kt * np.log(h / h.sum())
    raw[~np.isfinite(raw)] = np.nan
    sampled = np.isfinite(raw)
    grid = raw if len(dims) > 1 else np.repeat(raw[:, None], 4, axis=1)  # find_basins works on 2-D/3-D grids
    centers = [0.5 * (e[1:] + e[:-1]) for e in edges] + ([np.arange(4.0)] if len(dims) == 1 else [])
    basins = find_basins(grid, centers, smooth=smooth, min_depth=core_kt * kt)
    f = prepared_fes(grid, smooth, 10.0)
    labels, f = (basins.labels[:, 0], f[:, 0]) if len(dims) == 1 else (basins.labels, f)
    n = len(basins.free_energies)
    fmin = np.array([f[labels == k].min() for k in range(n)])
    saddle = np.full(n, np.inf)
    for axis in range(labels.ndim):  # lowest border cell pair between a basin and any other (max of the two)
        a = [slice(None)] * labels.ndim
        b = [slice(None)] * labels.ndim
        a[axis], b[axis] = slice(0, -1), slice(1, None)
        la, lb, fa, fb = labels[tuple(a)], labels[tuple(b)], f[tuple(a)], f[tuple(b)]
        border = la != lb
        hgt = np.maximum(fa, fb)[border]
        for k in range(n):
            touch = (la[border] == k) | (lb[border] == k)
            if touch.any():
                saddle[k] = min(saddle[k], float(hgt[touch].min()))
    levels = np.maximum(saddle - core_kt * kt - fmin, 0.0)
    core = np.full(labels.shape, -1, dtype=np.int64)
    for k in range(n):
        core[(labels == k) & (f <= fmin[k] + levels[k]) & sampled] = k
    keep = [k for k in range(n) if basins.free_energies[k] <= fes_cutoff and np.any(core == k)]
    remap = np.full(n + 1, -1, dtype=np.int64)
    remap[keep] = np.arange(len(keep))
    core = remap[core]  # index -1 maps to remap[-1] = -1
    minima = basins.minima[keep][:, :len(dims)]
    return LatentCores(dims, edges, core, minima, np.asarray(basins.free_energies)[keep], levels[keep])


def latent_round_trips(cores: LatentCores, z: np.ndarray, walker: np.ndarray | None = None,
                       n_basins: int = 2) -> dict[str, Any]:
    """Round trips between the deepest latent basin and each of the next ``n_basins`` − 1 (module docstring).

    Parameters
    ----------
    cores : LatentCores
    z : numpy.ndarray, shape=(n, d)
        Latent coordinates of the frames, in time order within each walker.
    walker : numpy.ndarray, shape=(n,), optional
        Walker of every frame (each walker's frames a separate series).
    n_basins : int
        Basins taking part (>= 2).

    Returns
    -------
    dict
        ``round_trips`` (the smallest count over the pairs; 0 with fewer than ``n_basins`` basins),
        ``transitions`` (per pair (0, b), b = 1 … n_basins − 1, as far as the basins exist), ``basins`` (number of
        latent basins), ``frames_in_cores`` (per basin).
    """
    if n_basins < 2:
        raise ValueError(f"n_basins must be >= 2, got {n_basins}")
    core = cores.assign(z)
    trans = [transition_count(core == 0, core == b, breaks=walker) for b in range(1, min(n_basins, cores.n_basins))]
    trips = min(t // 2 for t in trans) if cores.n_basins >= n_basins else 0
    return {"round_trips": int(trips), "transitions": [int(t) for t in trans], "basins": cores.n_basins,
            "frames_in_cores": [int(np.count_nonzero(core == k)) for k in range(cores.n_basins)]}


def round_trip_cores_plan(campaign: Campaign, variables: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``round_trip_cores`` entry of the converge round's plan: the cores of the latent FES of all frames so far,
    with the log-weights and latent coordinates of ``weights.csv`` (written after the last exploration round, z
    under the encoder the converge phase freezes), in the biased dimensions ``variables`` (their ``index``)."""
    from .estimate import final_weights

    cfg = campaign.cfg
    table = final_weights(campaign.run_dir.path)
    d = sum(1 for key in table if key.startswith("z") and key[1:].isdigit())
    z = np.column_stack([table[f"z{i}"] for i in range(d)])
    dims = [int(v["index"]) for v in variables][:3]
    cores = latent_cores(z, table["logweight"], cfg.md.temperature, dims, cfg.converge.core_kt,
                         cfg.converge.fes_cutoff)
    logger.info("converge phase: %d latent basins for the round-trip count (minima %s at %s kJ/mol; cores %s "
                "kJ/mol above them); the phase needs %d round trips between the deepest and the next %d",
                cores.n_basins, np.round(cores.minima, 3).tolist(), np.round(cores.free_energies, 2).tolist(),
                np.round(cores.levels, 2).tolist(), cfg.converge.min_round_trips,
                cfg.converge.round_trip_basins - 1)
    if cores.n_basins < cfg.converge.round_trip_basins:
        logger.warning("converge phase: the latent FES of the exploration rounds has %d basin(s), fewer than "
                       "[converge] round_trip_basins = %d: no round trip can be counted, so the converge phase runs "
                       "to its budget (max_steps)", cores.n_basins, cfg.converge.round_trip_basins)
    return cores.to_dict()
