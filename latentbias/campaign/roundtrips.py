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
coordinates fall in (or none). Per walker, the frames in no core are dropped and repeats merged (hysteresis: a
frame outside every core keeps the last core visited, so recrossings of a dividing surface do not count), which
leaves the sequence of committed core-to-core transitions; ``pair[i, j]`` counts the direct ones between cores i
and j. The count the rule uses is the **minimum cut** of that transition graph: the smallest number of
transitions between any set of latent basins S and the rest,

    C = min over S of sum_{i in S, j not in S} pair[i, j]     (Stoer & Wagner 1997; exact, O(n^3) for n basins),

and a round trip is two of them (``round_trips`` = C // 2; ``bottleneck`` = the basins on the side of the cut
without basin 0).

Why the minimum cut. A basin free energy the user will ask for is, as far as the latent space resolves it, a
union S of latent basins against the rest. Its estimate from a (reweighted) trajectory is a ratio of the time
spent in S and outside S; cutting the trajectory at its returns to S gives independent cycles (a regenerative
process: Athreya & Fuh 1992, as :func:`latentbias.analysis.uncertainty.regenerative_error`), so the error of
the population of S scales as 1/√(number of cycles) = 1/√(C_S / 2) — for exponential dwell and excursion times
σ(F_S − F_rest) = 2 kT/√C_S (:func:`~latentbias.analysis.uncertainty.two_state_error`), where C_S is the number
of transitions into and out of S. Requiring C_S ≥ 2K for *every* S is exactly requiring the minimum cut ≥ 2K: no
union of latent basins — whichever the user's states turn out to be — rests on fewer than K independent
visits. Two simpler rules fall short on the systems this is for: round trips between the two deepest basins
(the previous default) miss a shallow basin whose exchange with the rest is slow — ala2's C7ax when the encoder
splits C7eq/C5 into several deep latent basins (benchmarks/RESULTS.md, demo8: 21–46 latent round trips, 2–6
φ transitions); and visits per basin (each basin against the rest) miss a slow split between two *groups* of
basins that each exchange quickly inside (two latent basins of C7ax flipping between themselves count as visits
to each, not as visits to C7ax). The minimum cut covers both: a single basin, a pair and a group are all sets S.
Checked on a 3-state Markov jump process whose deep pair exchanges fast and whose shallow state (population 0.07)
exchanges slowly (tests/test_roundtrips_mincut.py): stopped at a minimum cut of 26, the spread of ΔF(shallow −
rest) over 400 replicas is 0.99–1.05 × 2 kT/√26 (1σ covers the truth in 66–69 %, 2σ in 94–96 %; five generator
seeds), while stopped at 26 transitions of the deep pair, 24–32 % of the replicas never visited the shallow state.

Which basins take part. All latent basins except those that carry no weight or are noise, so that they do not
hold the run to its budget for nothing (of those, only the n deepest with ``[converge] round_trip_basins`` = n > 0;
n = 2 is the previous rule, round trips between the two deepest; default 0 = all): a basin whose population in the
exploration rounds' reweighted latent FES (all its grid cells) is below exp(−``fes_cutoff``/kT) (the drift's
cutoff: 25 kJ/mol, 4·10⁻⁵ at 300 K), or whose core held fewer than ``basin_min_frames`` exploration frames
(default 10: the histogram count n of a core fluctuates by √n, i.e. its free energy by kT/√n = 0.32 kT at 10
frames, while a core lies ≥ ``core_kt`` = 2 kT below its saddle; with fewer frames a "basin" is as likely a
histogram fluctuation as a state). Frames in a basin left out count as in no core (hysteresis). A basin that does
take part and is never reached in the converge phase keeps the count at 0: the budget (``max_steps``) ends the
run and the estimate carries a warning naming the bottleneck basins. Fewer than 2 basins taking part give 0 too
(one latent basin: the run cannot show it has sampled a second state).

The stopping rule needs ``[converge] min_round_trips`` (default 13: 26 transitions, 2 kT/√26 = 0.98 kJ/mol at
300 K — the smallest error a two-state estimate from that many transitions can have) *and* the drift criterion;
``min_round_trips = 0`` switches the condition off. The umbrella converge method is not counted (its windows are
restrained; its error does not rest on spontaneous crossings).

Limits: the latent basins are those the exploration rounds' reweighted FES shows; a basin the exploration never
reached, or one the encoder projects onto another (ala2's C7ax under some demo encoders), is not counted, and a
user state that cuts through a latent basin is only as well sampled as the cut through that basin, which the
latent count does not see. Then only a count on the user's own state definitions helps (not implemented: the
configuration has no state definitions, and the demo keeps φ/ψ out of the sampler).
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

__all__ = ["LatentCores", "latent_cores", "latent_round_trips", "min_cut", "round_trip_cores_plan",
           "transition_pairs"]

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
    populations : numpy.ndarray, shape=(n_basins,), optional
        Reweighted population of each basin (all of its grid cells, not only the core) in the frames the cores
        were built from; None for cores stored before it was recorded (every basin then takes part).
    core_frames : numpy.ndarray of int, shape=(n_basins,), optional
        Frames (unweighted) in each core among the frames the cores were built from; None as above.
    """

    dims: list[int]
    edges: list[np.ndarray]
    labels: np.ndarray
    minima: np.ndarray
    free_energies: np.ndarray
    levels: np.ndarray
    populations: np.ndarray | None = None
    core_frames: np.ndarray | None = None

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
        out = {"dims": list(self.dims), "edges": [e.tolist() for e in self.edges], "labels": self.labels.tolist(),
               "minima": self.minima.tolist(), "free_energies": self.free_energies.tolist(),
               "levels": self.levels.tolist()}
        if self.populations is not None:
            out["populations"] = self.populations.tolist()
        if self.core_frames is not None:
            out["core_frames"] = [int(n) for n in self.core_frames]
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LatentCores:
        """Inverse of :meth:`to_dict`."""
        dims = [int(i) for i in d["dims"]]
        return cls(dims, [np.asarray(e, dtype=float) for e in d["edges"]], np.asarray(d["labels"], dtype=np.int64),
                   np.asarray(d["minima"], dtype=float).reshape(-1, len(dims)),
                   np.asarray(d["free_energies"], dtype=float), np.asarray(d["levels"], dtype=float),
                   np.asarray(d["populations"], dtype=float) if "populations" in d else None,
                   np.asarray(d["core_frames"], dtype=np.int64) if "core_frames" in d else None)

    def taking_part(self, temperature: float, fes_cutoff: float, min_frames: int, n_deepest: int = 0) -> list[int]:
        """The basins the round-trip count uses (module docstring): of the basins whose population is at least
        exp(−``fes_cutoff``/kT) and whose core held at least ``min_frames`` frames (both tests skipped for cores
        stored without populations/frame counts), the ``n_deepest`` deepest (0: all). Returns basin indices,
        ascending."""
        keep = list(range(self.n_basins))
        if self.populations is not None:
            floor = np.exp(-fes_cutoff / kt_kjmol(temperature))
            keep = [k for k in keep if self.populations[k] >= floor]
        if self.core_frames is not None:
            keep = [k for k in keep if self.core_frames[k] >= min_frames]
        return keep if n_deepest <= 0 else keep[:n_deepest]


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
    # reweighted population of every kept basin (all its cells) and the frames in its core
    cell = tuple(np.clip(np.searchsorted(e, x[:, k], side="right") - 1, 0, len(e) - 2) for k, e in enumerate(edges))
    populations = np.array([h[labels == k].sum() for k in keep]) / h.sum()
    frame_core = core[cell]
    core_frames = np.array([np.count_nonzero(frame_core == i) for i in range(len(keep))], dtype=np.int64)
    return LatentCores(dims, edges, core, minima, np.asarray(basins.free_energies)[keep], levels[keep],
                       populations, core_frames)


def min_cut(weights: np.ndarray) -> tuple[int, np.ndarray]:
    """Global minimum cut of an undirected graph with non-negative integer edge weights (Stoer & Wagner 1997).

    Parameters
    ----------
    weights : numpy.ndarray, shape=(n, n)
        Symmetric; ``weights[i, j]`` = transitions between basins i and j (the diagonal is ignored).

    Returns
    -------
    (int, numpy.ndarray of bool, shape=(n,))
        The smallest total weight between a non-empty set of nodes and its complement, and that set (the side
        without node 0). For n < 2: (0, all False).
    """
    w = np.array(weights, dtype=np.int64)
    n = len(w)
    if w.shape != (n, n) or np.any(w != w.T) or np.any(w < 0):
        raise ValueError(f"weights must be a symmetric non-negative square matrix, got shape {w.shape}")
    if n < 2:
        return 0, np.zeros(n, dtype=bool)
    np.fill_diagonal(w, 0)
    groups = [[i] for i in range(n)]  # original nodes merged into each super-node
    active = list(range(n))
    best, best_set = None, None
    while len(active) > 1:
        # maximum adjacency ordering from the first active node
        added = [active[0]]
        conn = w[active[0], :].copy()
        rest = set(active[1:])
        while rest:
            nxt = max(rest, key=lambda v: (conn[v], -v))
            rest.remove(nxt)
            added.append(nxt)
            conn += w[nxt, :]
        s_node, t_node = added[-2], added[-1]
        cut = int(sum(w[t_node, v] for v in active if v != t_node))  # cut of the phase: t against the rest
        if best is None or cut < best:
            best, best_set = cut, list(groups[t_node])
        groups[s_node] += groups[t_node]  # merge t into s
        w[s_node, :] += w[t_node, :]
        w[:, s_node] += w[:, t_node]
        w[s_node, s_node] = 0
        active.remove(t_node)
    side = np.zeros(n, dtype=bool)
    side[best_set] = True
    if side[0]:
        side = ~side
    return int(best), side


def transition_pairs(core: np.ndarray, walker: np.ndarray | None = None, n_basins: int | None = None,
                     basins: Sequence[int] | None = None) -> np.ndarray:
    """Committed transitions between every pair of cores along a time series (hysteresis: frames in no core, or
    in a core not in ``basins``, keep the last core visited).

    Parameters
    ----------
    core : numpy.ndarray of int, shape=(n,)
        Core of every frame (−1: none), in time order within each walker.
    walker : numpy.ndarray, shape=(n,), optional
        Walker of every frame; each walker's frames are a separate series (a jump between walkers is no transition).
    n_basins : int, optional
        Size of the result (default: the largest core index + 1).
    basins : sequence of int, optional
        Cores taking part (default all).

    Returns
    -------
    numpy.ndarray of int, shape=(n_basins, n_basins)
        Symmetric; ``[i, j]`` = transitions i → j plus j → i.
    """
    core = np.asarray(core, dtype=np.int64)
    n = int(core.max(initial=-1)) + 1 if n_basins is None else int(n_basins)
    pair = np.zeros((n, n), dtype=np.int64)
    ok = core >= 0
    if basins is not None:
        ok &= np.isin(core, np.asarray(list(basins), dtype=np.int64))
    labels = np.zeros(len(core), dtype=np.int64) if walker is None else np.asarray(walker)
    if labels.shape != core.shape:
        raise ValueError(f"walker must have shape {core.shape}, got {labels.shape}")
    for lab in np.unique(labels):
        seq = core[(labels == lab) & ok]
        if len(seq) < 2:
            continue
        a, b = seq[:-1], seq[1:]
        moved = a != b
        np.add.at(pair, (a[moved], b[moved]), 1)
    return pair + pair.T


def latent_round_trips(cores: LatentCores, z: np.ndarray, walker: np.ndarray | None = None,
                       basins: Sequence[int] | None = None) -> dict[str, Any]:
    """Round trips across the slowest split of the latent basins: the minimum cut of the transition graph, halved
    (module docstring).

    Parameters
    ----------
    cores : LatentCores
    z : numpy.ndarray, shape=(n, d)
        Latent coordinates of the frames, in time order within each walker.
    walker : numpy.ndarray, shape=(n,), optional
        Walker of every frame (each walker's frames a separate series).
    basins : sequence of int, optional
        Basins taking part (default all; :meth:`LatentCores.taking_part`); frames in the others count as in no core.

    Returns
    -------
    dict
        ``round_trips`` (minimum cut // 2; 0 with fewer than 2 basins taking part), ``transitions`` (the minimum
        cut: transitions between the ``bottleneck`` basins and the other basins taking part), ``bottleneck``
        (basin indices on the side of the cut without the deepest basin taking part), ``counted`` (the basins
        taking part), ``basin_transitions`` (per counted basin, transitions between its core and the other counted
        cores), ``pair_transitions`` (counted × counted matrix), ``basins`` (number of latent basins) and
        ``frames_in_cores`` (per basin).
    """
    core = cores.assign(z)
    counted = list(range(cores.n_basins)) if basins is None else sorted(int(b) for b in basins)
    if any(not 0 <= b < cores.n_basins for b in counted):
        raise ValueError(f"basins must be indices in 0..{cores.n_basins - 1}, got {counted}")
    pair = transition_pairs(core, walker, cores.n_basins, counted)[np.ix_(counted, counted)]
    cut, side = min_cut(pair) if len(counted) >= 2 else (0, np.zeros(len(counted), dtype=bool))
    return {"round_trips": int(cut // 2), "transitions": int(cut),
            "bottleneck": [counted[i] for i in np.flatnonzero(side)], "counted": counted,
            "basin_transitions": [int(x) for x in pair.sum(axis=1)], "pair_transitions": pair.tolist(),
            "basins": cores.n_basins, "frames_in_cores": [int(np.count_nonzero(core == k)) for k in range(cores.n_basins)]}


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
    c = cfg.converge
    part = cores.taking_part(cfg.md.temperature, c.fes_cutoff, c.basin_min_frames, c.round_trip_basins)
    logger.info("converge phase: %d latent basins (minima %s at %s kJ/mol; cores %s kJ/mol above them; populations "
                "%s; %s exploration frames in the cores); basins %s take part in the round-trip count: the phase "
                "needs %d round trips across the slowest split of them (minimum cut)", cores.n_basins,
                np.round(cores.minima, 3).tolist(), np.round(cores.free_energies, 2).tolist(),
                np.round(cores.levels, 2).tolist(), [f"{p:.2g}" for p in cores.populations],
                cores.core_frames.tolist(), part, c.min_round_trips)
    if len(part) < 2:
        logger.warning("converge phase: %d latent basin(s) of the exploration rounds' latent FES take part in the "
                       "round-trip count (population >= exp(-fes_cutoff/kT), >= [converge] basin_min_frames = %d "
                       "frames in the core): no round trip can be counted, so the converge phase runs to its budget "
                       "(max_steps)", len(part), c.basin_min_frames)
    return cores.to_dict()
