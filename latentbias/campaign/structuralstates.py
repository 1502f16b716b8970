"""Round trips between structural microstates: a visit count for the states the latent space may not resolve.

Why. The converge phase's latent count (:mod:`latentbias.campaign.roundtrips`) waits for round trips across the
slowest split of the frozen encoder's *latent* basins. A state the encoder projects onto another one — ala2's C7ax
under some demo encoders, where every latent basin is a part of C7eq/C5 — is invisible to it: the latent rule
stopped seeds 2026 and 2028 of the demo at 1.5 ns with 3 and 1 C7ax entries (benchmarks/RESULTS.md, basins8).
The sampler must still never see the user's coordinates (φ/ψ). What it does see is the encoder's *input*: the
features (for the demo the Kabsch-aligned heavy-atom coordinates). States that differ in structure differ there,
whether the encoder kept the difference or not.

What (:func:`structural_round_trips`, at every convergence check). The features of the exploration rounds' frames
(stored when the converge phase is planned, :func:`structural_states_plan`, with their log-weights of
``weights.csv``) and of every converge frame so far are standardized (each feature to zero mean and unit
variance over those frames, as the encoder's own input layer does) and clustered by k-means (k-means++ seeding
with a fixed seed, Lloyd iterations: deterministic in the frames) into ``[converge] structural_states``
microstates, re-done at each check so that regions first reached in the converge phase get their own
microstates. Frames are assigned to microstate *cores* with a buffer: a frame whose distance to its nearest
centre is d₁ and to the second nearest d₂ is in the core of the nearest only when d₁ ≤ ``_CORE_RATIO`` d₂ (0.8:
the band around each Voronoi face, ~10 % of the centre spacing on either side, is no core); frames in no core keep
the last core visited (hysteresis, as for the latent cores), so recrossings of a dividing surface do not count.
The converge frames after the burn-in then give the graph of committed transitions between microstate cores, and
the count is its **minimum cut** (Stoer–Wagner, :func:`latentbias.campaign.roundtrips.min_cut`): the fewest
transitions between any union S of microstates and the rest. The converge phase stops only when the latent cut
*and* this cut hold ≥ 2 × ``min_round_trips`` transitions (and the drift holds), or when its budget ends (then
``weights.json`` ``structural_round_trips`` carries a ``warning``).

Why the minimum cut over microstates is not dominated by noise. k-means on a few thousand frames splits every
well-sampled basin into several microstates; a split *inside* a basin is crossed at the rate of the basin's own
fluctuations (hundreds of transitions in a converge run), so it is never the minimum: the cut runs through the
slowest barrier — between unions of microstates — exactly as for latent basins. The same holds for a
microstate at the rim of a basin, which the trajectory enters and leaves on every excursion. What can dominate is a
microstate that is *rarely visited*: a high-energy region reached a few times in the exploration rounds. Such a
microstate takes part only when

* its population is at least exp(−``fes_cutoff``/kT) (4·10⁻⁵ at 25 kJ/mol and 300 K, the latent rule's and the
  drift's cutoff) in the exploration rounds' reweighted frames *or* in the converge frames after the burn-in
  (reweighted with the converge bias), whichever is larger — a state of weight in either estimate is one the
  estimate may be asked about, and a state found only in the converge phase has no exploration weight; and
* its core holds at least ``basin_min_frames`` frames (default 10) among all frames clustered: the population of a
  core of n frames is known to a relative √n/n, i.e. its free energy to kT/√n (0.32 kT at 10), while the state is
  a state only if it is separated from its neighbours by more than that; with fewer frames a "microstate" is a
  k-means centre placed on a handful of outliers (k-means++ seeds favour them).

Microstates that fail either test count as in no core (hysteresis). These are the thresholds of the latent rule
(:mod:`latentbias.campaign.roundtrips`), argued there for basins of a histogram and here for clusters of frames;
they were not tuned to a seed. A state that passes and is rarely visited *should* hold the run: it is a state of
weight whose free energy rests on few visits (ala2's C7ax is 11.7 kJ/mol above C7eq, population 0.9 %).

Number of microstates (``[converge] structural_states``, default 20; 0 switches the structural count off): enough
that a basin the latent space merges with another gets a microstate of its own (C7ax is ~5–25 % of the demo's
frames once found: at 20 centres it holds ≥ 1 of them), few enough that every microstate holds far more than
``basin_min_frames`` of the ~3000–8000 frames. The choice was checked on the demo's six seeds (benchmarks/RESULTS.md,
demo8s), not tuned to a seed.

Limits. Standardized input features weigh every coordinate equally; a slow degree of freedom carried by a few
features of small variance (a side-chain rotamer among a protein's backbone coordinates) can be split off only if
it dominates some cluster's distance. The microstates change from check to check (re-clustered); the count is
that of the current clustering. Restarted converge attempts' frames are clustered with the exploration frames'
(they define states) but not counted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from ..analysis.constants import kt_kjmol
from .roundtrips import min_cut, transition_pairs

if TYPE_CHECKING:
    from .config import CampaignConfig
    from .loop import Campaign
    from .rundir import RunDir

logger = logging.getLogger(__name__)

__all__ = ["MicroStates", "kmeans", "microstates", "ood_weight_share", "structural_round_trips",
           "structural_states_plan", "structural_count", "EXPLORATION_FILE"]

#: d₁ ≤ _CORE_RATIO d₂: a frame is in the core of its nearest centre (module docstring)
_CORE_RATIO = 0.8
#: k-means: seed of the k-means++ draw and the maximum number of Lloyd iterations
_SEED, _ITERATIONS = 0, 100
#: the exploration frames' features and log-weights, in the converge round's directory
EXPLORATION_FILE = "structural_exploration.npz"


def kmeans(x: np.ndarray, k: int, seed: int = 0, iterations: int = 100) -> np.ndarray:
    """k-means (k-means++ seeding, then Lloyd iterations until no frame changes cluster).

    Parameters
    ----------
    x : numpy.ndarray, shape=(n, f)
        Points (standardized features).
    k : int
        Clusters (at most n).
    seed : int, default 0
        Seed of the k-means++ draw (the result is deterministic in x).
    iterations : int, default 100
        Maximum number of Lloyd iterations.

    Returns
    -------
    numpy.ndarray, shape=(k', f)
        Centres, k' ≤ k (empty clusters are dropped).
    """
    x = np.asarray(x, dtype=float)
    n = len(x)
    if k < 1 or n < 1:
        raise ValueError(f"k-means needs k >= 1 and at least one point, got k = {k}, {n} points")
    k = min(int(k), n)
    rng = np.random.default_rng(seed)
    centres = [x[rng.integers(n)]]
    d2 = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        if d2.sum() <= 0:
            break
        centres.append(x[rng.choice(n, p=d2 / d2.sum())])
        d2 = np.minimum(d2, ((x - centres[-1]) ** 2).sum(1))
    c = np.array(centres)
    label = None
    xx = (x * x).sum(1)[:, None]
    for _ in range(iterations):
        new = np.argmin(xx - 2.0 * x @ c.T + (c * c).sum(1)[None, :], axis=1)
        if label is not None and np.array_equal(new, label):
            break
        label = new
        count = np.bincount(label, minlength=len(c)).astype(float)
        sums = np.column_stack([np.bincount(label, weights=x[:, j], minlength=len(c)) for j in range(x.shape[1])])
        keep = count > 0
        c = sums[keep] / count[keep, None]
    return c


def _nearest(x: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index of the nearest centre, distance to it and to the second nearest (inf with one centre)."""
    d2 = (x * x).sum(1)[:, None] - 2.0 * x @ c.T + (c * c).sum(1)[None, :]
    d2 = np.maximum(d2, 0.0)
    if len(c) == 1:
        return np.zeros(len(x), dtype=np.int64), np.sqrt(d2[:, 0]), np.full(len(x), np.inf)
    two = np.argpartition(d2, 1, axis=1)[:, :2]
    rows = np.arange(len(x))[:, None]
    pair = d2[rows, two]
    swap = pair[:, 0] > pair[:, 1]
    first = np.where(swap, two[:, 1], two[:, 0])
    pair.sort(axis=1)
    return first.astype(np.int64), np.sqrt(pair[:, 0]), np.sqrt(pair[:, 1])


@dataclass
class MicroStates:
    """k-means microstates in a standardized feature space, with cores and the tests of which take part.

    Attributes
    ----------
    centres : numpy.ndarray, shape=(k, f)
        Centres in standardized features.
    mean, scale : numpy.ndarray, shape=(f,)
        Standardization: (features − mean) / scale.
    populations : numpy.ndarray, shape=(k,)
        Largest of the microstate's reweighted populations in the estimates given (all its frames, not only its
        core).
    core_frames : numpy.ndarray of int, shape=(k,)
        Frames in each core among all frames clustered.
    """

    centres: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    populations: np.ndarray
    core_frames: np.ndarray

    @property
    def n_states(self) -> int:
        return len(self.centres)

    def assign(self, features: np.ndarray, cores: bool = True) -> np.ndarray:
        """Core (``cores``) or nearest microstate of every frame; −1: in no core or non-finite features.
        features: shape=(n, f). Returns shape=(n,) int."""
        x = (np.asarray(features, dtype=float) - self.mean) / self.scale
        ok = np.all(np.isfinite(x), axis=1)
        out = np.full(len(x), -1, dtype=np.int64)
        if ok.any():
            j, d1, d2 = _nearest(x[ok], self.centres)
            out[ok] = np.where(d1 <= _CORE_RATIO * d2, j, -1) if cores else j
        return out

    def taking_part(self, temperature: float, fes_cutoff: float, min_frames: int) -> list[int]:
        """Microstates with population ≥ exp(−``fes_cutoff``/kT) and ≥ ``min_frames`` core frames (module
        docstring). Returns indices, ascending."""
        floor = np.exp(-fes_cutoff / kt_kjmol(temperature))
        return [k for k in range(self.n_states) if self.populations[k] >= floor and self.core_frames[k] >= min_frames]


def microstates(features: np.ndarray, estimates: Sequence[tuple[np.ndarray, np.ndarray]], n_states: int,
                seed: int = 0) -> MicroStates:
    """Cluster frames into microstates (module docstring).

    Parameters
    ----------
    features : numpy.ndarray, shape=(n, f)
        Input features of all frames to cluster (non-finite rows are left out).
    estimates : sequence of (numpy.ndarray of bool, numpy.ndarray)
        Reweighted estimates the populations come from: per estimate, a mask of the frames in it, shape=(n,), and
        their log-weights, shape=(n,) (−inf: not in it). A microstate's population is the largest over the
        estimates.
    n_states : int
        Number of k-means centres (≥ 2).
    seed : int, default 0
        k-means++ seed.

    Returns
    -------
    MicroStates
    """
    x = np.asarray(features, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"features must have shape (n_frames, n_features), got {x.shape}")
    if n_states < 2:
        raise ValueError(f"structural microstates need n_states >= 2, got {n_states}")
    ok = np.all(np.isfinite(x), axis=1)
    if ok.sum() < n_states:
        raise ValueError(f"{int(ok.sum())} frames with finite features cannot make {n_states} microstates")
    mean = x[ok].mean(0)
    scale = x[ok].std(0)
    scale = np.where(scale > 1e-12 * max(float(scale.max()), 1e-300), scale, 1.0)  # constant features: unscaled
    centres = kmeans((x[ok] - mean) / scale, n_states, seed, _ITERATIONS)
    states = MicroStates(centres, mean, scale, np.zeros(len(centres)), np.zeros(len(centres), dtype=np.int64))
    near = states.assign(x, cores=False)
    core = states.assign(x)
    states.core_frames = np.bincount(core[core >= 0], minlength=len(centres)).astype(np.int64)
    pops = np.zeros(len(centres))
    for mask, logw in estimates:
        m = np.asarray(mask, bool) & np.isfinite(np.asarray(logw, float)) & (near >= 0)
        if not m.any():
            continue
        w = np.exp(logw[m] - logw[m].max())
        pops = np.maximum(pops, np.bincount(near[m], weights=w, minlength=len(centres)) / w.sum())
    states.populations = pops
    return states


def structural_round_trips(states: MicroStates, features: np.ndarray, walker: np.ndarray | None = None,
                           taking_part: Sequence[int] | None = None, ood: np.ndarray | None = None,
                           logweights: np.ndarray | None = None) -> dict[str, Any]:
    """Transitions across the minimum cut of the microstate transition graph (module docstring).

    Parameters
    ----------
    states : MicroStates
    features : numpy.ndarray, shape=(n, f)
        Features of the counted frames, in time order within each walker.
    walker : numpy.ndarray, shape=(n,), optional
        Walker of every frame (each walker a separate series).
    taking_part : sequence of int, optional
        Microstates taking part (default all).
    ood, logweights : numpy.ndarray, shape=(n,), optional
        The counted frames' out-of-distribution flags and log-weights in the estimate; with both, the result also
        holds ``ood_weight_share``.

    Returns
    -------
    dict
        ``round_trips`` (minimum cut // 2; 0 with fewer than 2 microstates taking part), ``transitions`` (the cut),
        ``bottleneck`` (microstates on the side of the cut without the most populated one taking part),
        ``counted``, ``states`` (number of microstates), ``populations`` and ``frames_in_cores`` (of the counted
        frames, per microstate); with ``ood`` and ``logweights``, ``ood_weight_share``: per microstate, the share
        of its weight (counted frames assigned to their nearest centre) in out-of-distribution frames (None where
        its counted frames carry no weight).
    """
    core = states.assign(features)
    counted = list(range(states.n_states)) if taking_part is None else sorted(int(b) for b in taking_part)
    pair = transition_pairs(core, walker, states.n_states, counted)[np.ix_(counted, counted)]
    if len(counted) >= 2:
        order = np.argsort(-states.populations[counted], kind="stable")  # node 0: the most populated
        cut, side = min_cut(pair[np.ix_(order, order)])
        bottleneck = sorted(counted[order[i]] for i in np.flatnonzero(side))
    else:
        cut, bottleneck = 0, []
    out = {"round_trips": int(cut // 2), "transitions": int(cut), "bottleneck": bottleneck, "counted": counted,
           "states": states.n_states, "populations": [float(p) for p in states.populations],
           "frames_in_cores": [int(np.count_nonzero(core == k)) for k in range(states.n_states)]}
    if ood is not None and logweights is not None:
        out["ood_weight_share"] = ood_weight_share(states.assign(features, cores=False), ood, logweights,
                                                   states.n_states)
    return out


def ood_weight_share(labels: np.ndarray, ood: np.ndarray, logweights: np.ndarray, n_states: int
                     ) -> list[float | None]:
    """Per state, the share of its reweighted population carried by out-of-distribution frames.

    Reweighting stays exact for frames the encoder extrapolates on (their weight is that of the bias that acted),
    so the share does not measure a bias of the estimate; it measures whether the encoder describes a state: a
    state whose weight sits in frames it never saw is one its latent space does not resolve (the bias cannot
    flatten what separates it, and latent-space results there — FES, basins, paths — do not describe it).

    Parameters
    ----------
    labels : numpy.ndarray of int, shape=(n,)
        State of every frame (−1: none).
    ood : numpy.ndarray of bool, shape=(n,)
    logweights : numpy.ndarray, shape=(n,)
        Log-weights in the estimate (−inf: not in it).
    n_states : int

    Returns
    -------
    list of float or None, length n_states
        Σ w·ood / Σ w over each state's frames; None where they carry no weight.
    """
    lw = np.asarray(logweights, dtype=float)
    fin = np.isfinite(lw)
    w = np.zeros(len(lw))
    if fin.any():
        w[fin] = np.exp(lw[fin] - lw[fin].max())
    flags = np.asarray(ood, dtype=bool)
    lab = np.asarray(labels)
    out: list[float | None] = []
    for k in range(int(n_states)):
        total = float(w[lab == k].sum())
        out.append(float(w[(lab == k) & flags].sum() / total) if total > 0 else None)
    return out


# ------------------------------------------------------------------------------------------- campaign glue

_FEATURIZERS: dict[str, Any] = {}


def _featurizer(config: CampaignConfig) -> Any:
    """The campaign's featurizer built from the config alone (cached per system and feature settings)."""
    import json

    key = json.dumps([config.to_dict().get("system"), config.to_dict().get("features"),
                      str(getattr(config, "base_dir", ""))], sort_keys=True, default=str)
    if key not in _FEATURIZERS:
        import mdtraj as md

        from ..features import build_featurizer
        from .systems import build_system

        _, topology, xyz = build_system(config)
        f = config.features
        _FEATURIZERS[key] = build_featurizer(f.kind, md.Topology.from_openmm(topology), f.selection, xyz,
                                             f.contact_r0)
    return _FEATURIZERS[key]


def _features(featurizer: Any, frames: dict[str, np.ndarray]) -> np.ndarray:
    from ..features import featurize
    from .records import frame_boxes

    if not len(frames["positions"]):
        return np.zeros((0, 0))
    return featurize(featurizer, frames["positions"].astype(float), frame_boxes(frames))


def structural_states_plan(campaign: Campaign, r: int) -> dict[str, Any]:
    """The ``structural_states`` entry of the converge round's plan; writes the features of all frames so far and
    their log-weights of ``weights.csv`` (written after the last exploration round) to ``round_RRR/``
    :data:`EXPLORATION_FILE`."""
    from .estimate import final_weights

    frames = campaign.all_frames(r - 1)
    table = final_weights(campaign.run_dir.path)
    if len(table["logweight"]) != len(frames["positions"]):
        raise ValueError(f"weights.csv of {campaign.run_dir.path} has {len(table['logweight'])} rows, the rounds "
                         f"before the converge phase {len(frames['positions'])} frames: re-run the weights phase")
    feats = _features(campaign.featurizer(), frames)
    campaign.run_dir.save_npz(campaign.run_dir.round_dir(r) / EXPLORATION_FILE, features=feats,
                              logweight=np.asarray(table["logweight"], dtype=float))
    n = campaign.cfg.converge.structural_states
    logger.info("converge phase: also counts round trips across the slowest split of %d structural microstates "
                "(k-means on the %d standardized input features of the %d frames so far and the converge frames, "
                "re-clustered at each check; latentbias.campaign.structuralstates)", n, feats.shape[1], len(feats))
    return {"n_states": int(n), "file": EXPLORATION_FILE}


def structural_count(run_dir: RunDir, config: CampaignConfig, r: int, frames: dict[str, np.ndarray],
                     used: np.ndarray, converge_logw: Callable[[], np.ndarray],
                     featurizer: Any | None = None) -> dict[str, Any]:
    """The structural count of the converge round r at a check.

    Parameters
    ----------
    run_dir, config, r
        The campaign and its converge round (whose plan has ``structural_states``).
    frames : dict
        The converge frames so far in time order (:func:`latentbias.campaign.converge._converge_frames`, with
        ``positions``), shape=(n, ...).
    used : numpy.ndarray of bool, shape=(n,)
        Frames after the burn-in (the counted ones).
    converge_logw : callable
        Returns the converge frames' log-weights, shape=(n,) (−inf outside ``used``).
    featurizer : optional
        The campaign's featurizer (default: built from ``config``).

    Returns
    -------
    dict
        :func:`structural_round_trips`' result.
    """
    plan = run_dir.read_plan(r)["structural_states"]
    stored = run_dir.read_npz(run_dir.round_dir(r) / plan["file"])
    x_conv = _features(featurizer if featurizer is not None else _featurizer(config), frames)
    x_old = np.asarray(stored["features"], dtype=float)
    n_old = len(x_old)
    x = np.concatenate([x_old, x_conv.reshape(len(x_conv), -1)]) if len(x_conv) else x_old
    lw_conv = np.asarray(converge_logw(), dtype=float)
    explore = (np.arange(len(x)) < n_old, np.concatenate([stored["logweight"], np.full(len(x_conv), -np.inf)]))
    converge = (np.arange(len(x)) >= n_old, np.concatenate([np.full(n_old, -np.inf), lw_conv]))
    states = microstates(x, [explore, converge], int(plan["n_states"]), _SEED)
    c = config.converge
    part = states.taking_part(config.md.temperature, c.fes_cutoff, c.basin_min_frames)
    ood = frames["ood"][used] if "ood" in frames else None
    return structural_round_trips(states, x_conv[used], frames["walker"][used], part, ood, lw_conv[used])
