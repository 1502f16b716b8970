"""Error bars for free-energy estimates from correlated, multi-state samples: one machinery for every estimator.

An *estimator* here is any function ``estimator(indices) -> value`` that computes an estimate (a ΔF, a FES, window
free energies ...) from the frames selected by ``indices`` (an integer array, repeats allowed), re-solving whatever
the estimate depends on — MBAR's f_k, the reweighting — for that selection. :func:`estimate_uncertainty` calls it
on the full data and on resampled data and returns an :class:`Estimate` (value, 1σ error, how it was obtained).

Two routes, chosen by what the data offer:

1. **Independent replicas** (walkers, repeated runs; ≥ 2 of them): the estimator is applied to each replica's
   frames separately; the error of the pooled estimate is the spread of the per-replica estimates,
   s/√n, turned into a Student-t interval with n − 1 degrees of freedom (:func:`replica_estimate`).
   Assumptions: replicas are independent and each one on its own gives a (nearly) unbiased estimate, i.e. each
   replica samples every state the estimator needs.
2. **Stratified block bootstrap** otherwise (:func:`block_bootstrap_indices`): frames are grouped by the
   thermodynamic *state* they were sampled in (umbrella window, bias state; a single state for one metadynamics
   run); within each state the frames, in time order, are cut into contiguous blocks of length
   L_k = ⌈``block_factor`` · g_k⌉, where g_k is the statistical inefficiency (1 + 2τ_int, Chodera et al.,
   JCTC 3, 26 (2007); :func:`statistical_inefficiency`, pymbar's ``timeseries.statistical_inefficiency``) of the
   observable that carries the slow motion (the CV, a basin indicator). Each bootstrap sample draws, for every
   state, blocks with replacement until it holds exactly N_k frames, so every resample contains a fraction of
   every state and the per-state counts N_k that MBAR needs are kept. The estimator — including the MBAR solve —
   is re-run on every resample; the error is the standard deviation of the bootstrap estimates, multiplied by
   √(n_b/(n_b − 1)) (n_b: frame-weighted mean number of blocks per state) to undo the small-sample bias of the
   bootstrap variance, and divided by √r̄ to undo the bias of cutting a correlated series into blocks: the
   blocks are treated as independent, so the correlation between neighbouring blocks is lost. For a series with
   an exponential autocorrelation (AR(1), ρ = (g − 1)/(g + 1)) the block-bootstrap variance is the fraction
   r(g, L) = 1 − (g² − 1)(1 − ρ^L)/(2gL) of the true one (:func:`block_variance_ratio`; 0.83 for L = 3g, lower
   where short states force shorter blocks); r̄ is its average over states weighted by N_k g_k (each state's
   share of the variance when the states contribute alike). Without it, 300 correlated samples per umbrella
   window gave 1σ coverage 0.575 (40 replicas; tests/test_uncertainty.py). Assumptions: each state's series is
   stationary; its autocorrelation is close to exponential (the correction is exact for AR(1) and approximate
   otherwise); g is estimated well, which needs runs much longer than the slowest relaxation. No error bar can
   see a barrier that was never crossed.

Errors are "1σ" in the sense of coverage: ``Estimate.error`` is the half-width of the 68.27 % interval and
:meth:`Estimate.halfwidth` gives the half-width for any number of σ (Student-t for replicas, normal for the
bootstrap). Energies are in whatever unit the estimator returns (kJ/mol in this package).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..validation import strip_unit

logger = logging.getLogger(__name__)

__all__ = [
    "Estimate",
    "block_bootstrap_indices",
    "block_lengths",
    "block_variance_ratio",
    "estimate_uncertainty",
    "mbar_reweighter",
    "regenerative_error",
    "replica_estimate",
    "statistical_inefficiency",
    "transition_count",
    "two_state_error",
]

#: Default number of bootstrap resamples.
DEFAULT_N_BOOTSTRAP = 200
#: Default block length in units of the statistical inefficiency g.
DEFAULT_BLOCK_FACTOR = 3.0
#: Fewest blocks per state; a state too short for ``block_factor`` · g gets shorter blocks (and a warning).
MIN_BLOCKS_PER_STATE = 5


@dataclass
class Estimate:
    """An estimate with an error bar that says how it was obtained.

    Attributes
    ----------
    value : float or numpy.ndarray
        The estimate from all frames (pooled over replicas).
    error : float or numpy.ndarray, same shape as ``value``
        Half-width of the 68.27 % ("1σ") confidence interval; NaN where it cannot be estimated.
    method : str
        ``"replicas"`` (spread of independent replicas, Student t) or ``"block-bootstrap"`` (stratified).
    n_independent : int
        Number of replicas, or of bootstrap blocks (summed over states).
    dof : float
        Degrees of freedom of the t distribution behind ``error`` (n − 1 for replicas, inf for the bootstrap).
    samples : numpy.ndarray, shape=(n_replicas or n_bootstrap,) + value shape
        Per-replica or bootstrap estimates.
    block_lengths : numpy.ndarray of int, shape=(n_states,)
        Block length (frames) used in each state (bootstrap only; empty for replicas).
    statistical_inefficiency : numpy.ndarray, shape=(n_states,)
        g of the observable in each state (bootstrap only).
    """

    value: Any
    error: Any
    method: str
    n_independent: int
    dof: float = math.inf
    samples: np.ndarray = field(default_factory=lambda: np.zeros(0))
    block_lengths: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    statistical_inefficiency: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def halfwidth(self, n_sigma: float = 1.0) -> Any:
        """Half-width of the interval whose coverage is that of ±``n_sigma`` σ of a normal distribution.

        For the bootstrap this is ``n_sigma * error``; for replicas the Student-t quantile with ``dof`` degrees
        of freedom replaces the normal one (e.g. 2σ ↔ 95.45 %).

        Parameters
        ----------
        n_sigma : float, default 1.0
            Width in σ of the normal interval whose coverage is wanted (> 0).
        """
        from scipy import stats

        if not n_sigma > 0:
            raise ValueError(f"n_sigma must be positive, got {n_sigma!r}")
        if math.isinf(self.dof):
            return n_sigma * np.asarray(self.error) if np.ndim(self.error) else n_sigma * float(self.error)
        p = stats.norm.cdf(n_sigma)
        scale = stats.t.ppf(p, self.dof) / stats.t.ppf(stats.norm.cdf(1.0), self.dof)
        return scale * np.asarray(self.error) if np.ndim(self.error) else scale * float(self.error)


def statistical_inefficiency(observable: Any) -> float:
    """Statistical inefficiency g = 1 + 2τ_int (≥ 1) of a time series, the largest over its columns.

    Parameters
    ----------
    observable : array_like, shape=(n_frames,) or (n_frames, d)
        Time series in time order (any units).

    Returns
    -------
    float
        g ≥ 1 (pymbar's ``timeseries.statistical_inefficiency``, which integrates the normalised
        autocorrelation function until it first crosses zero). A constant or too short series gives 1.
    """
    from .reweight import quiet_pymbar

    x = np.asarray(strip_unit(observable), dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"observable must have shape (n_frames,) or (n_frames, d), got {np.shape(observable)}")
    if not np.all(np.isfinite(x)):
        raise ValueError("observable contains non-finite values (NaN or inf); drop those frames first")
    if x.shape[0] < 4:
        return 1.0
    with quiet_pymbar(logging.ERROR):
        from pymbar import timeseries
    g = 1.0
    for col in x.T:
        if np.ptp(col) == 0:
            continue
        try:
            with quiet_pymbar(logging.ERROR):
                g = max(g, float(timeseries.statistical_inefficiency(col, fast=False)))
        except Exception as exc:  # pymbar raises ParameterError for degenerate series
            logger.debug("statistical inefficiency failed (%s); using 1", exc)
    return g


def _state_labels(states: Any, n_frames: int) -> np.ndarray:
    if states is None:
        return np.zeros(n_frames, dtype=np.int64)
    arr = np.asarray(states)
    if arr.shape != (n_frames,):
        raise ValueError(f"states must be one integer label per frame, shape ({n_frames},), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"states must be integer state labels, got dtype {arr.dtype}")
    return np.unique(arr, return_inverse=True)[1].astype(np.int64).reshape(-1)


def _trajectory_labels(trajectories: Any | None, n_frames: int) -> np.ndarray:
    if trajectories is None:
        return np.zeros(n_frames, dtype=np.int64)
    arr = np.asarray(trajectories)
    if arr.shape != (n_frames,) or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"trajectories must be one integer label per frame, shape ({n_frames},), got shape "
                         f"{arr.shape} and dtype {arr.dtype}")
    return arr.astype(np.int64)


def _frames_of_state(labels: np.ndarray, traj: np.ndarray, k: int) -> list[np.ndarray]:
    """Frames of state k split by trajectory, each in increasing frame index (time) order."""
    frames = np.flatnonzero(labels == k)
    return [frames[traj[frames] == t] for t in np.unique(traj[frames])]


def block_lengths(
    observable: Any | None,
    states: Any | None = None,
    block_factor: float = DEFAULT_BLOCK_FACTOR,
    n_frames: int | None = None,
    trajectories: Any | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Block length of every state from the statistical inefficiency of ``observable`` within that state.

    Parameters
    ----------
    observable : array_like, shape=(n_frames,) or (n_frames, d), or None
        Observable in frame order (frames of one state in time order). None: g = 1 everywhere (uncorrelated
        frames assumed; a warning is logged).
    states : array_like of int, shape=(n_frames,), optional
        State of every frame (default: one state).
    block_factor : float, default 3.0
        L_k = ⌈block_factor · g_k⌉, capped at N_k // 5 so that every state has at least 5 blocks.
    n_frames : int, optional
        Needed only when ``observable`` is None.
    trajectories : array_like of int, shape=(n_frames,), optional
        Independent trajectory of every frame (e.g. the replicas of an umbrella window): g of a state is the
        largest over its trajectories, each taken in time order.

    Returns
    -------
    lengths : numpy.ndarray of int, shape=(n_states,)
        Block length (frames) per state, in the order of the sorted state labels.
    g : numpy.ndarray, shape=(n_states,)
        Statistical inefficiency per state.
    """
    if observable is None:
        if n_frames is None:
            raise ValueError("give observable or n_frames")
        obs = None
    else:
        obs = np.asarray(strip_unit(observable), dtype=np.float64)
        n_frames = obs.shape[0]
    if not block_factor > 0:
        raise ValueError(f"block_factor must be positive, got {block_factor!r}")
    labels = _state_labels(states, int(n_frames))
    traj = _trajectory_labels(trajectories, int(n_frames))
    n_states = int(labels.max()) + 1 if labels.size else 0
    g = np.ones(n_states)
    if obs is None:
        logger.warning("no observable for the statistical inefficiency: frames are treated as uncorrelated")
    else:
        for k in range(n_states):
            g[k] = max(statistical_inefficiency(obs[part]) for part in _frames_of_state(labels, traj, k))
    n_k = np.bincount(labels, minlength=n_states)
    lengths = np.maximum(1, np.ceil(block_factor * g)).astype(np.int64)
    cap = np.maximum(1, n_k // MIN_BLOCKS_PER_STATE)
    short = lengths > cap
    if np.any(short):
        logger.warning(
            "%d of %d states hold fewer than %d × %.1f g frames (g up to %.1f): their blocks are shortened to keep "
            "%d blocks per state, so the error bar may be too small; run longer", int(short.sum()), n_states,
            MIN_BLOCKS_PER_STATE, block_factor, float(g[short].max()), MIN_BLOCKS_PER_STATE)
    return np.minimum(lengths, cap), g


def block_variance_ratio(g: Any, lengths: Any) -> np.ndarray:
    """Fraction of the true variance of a mean that a bootstrap over non-overlapping blocks recovers.

    For a stationary series with exponential autocorrelation ρ^t (AR(1)), statistical inefficiency
    g = (1 + ρ)/(1 − ρ), the variance of the sum of a block of L frames is L σ² g r with
    r = 1 − (g² − 1)(1 − ρ^L)/(2gL): the block bootstrap, which treats blocks as independent, returns r times the
    variance of the mean (r → 1 for L ≫ g; 0.83 for L = 3g).

    Parameters
    ----------
    g : array_like, shape=(n_states,)
        Statistical inefficiency per state (≥ 1).
    lengths : array_like of int, shape=(n_states,)
        Block length per state (frames).

    Returns
    -------
    numpy.ndarray, shape=(n_states,)
        r per state, clipped to [0.25, 1] (blocks shorter than ~g/2 are not corrected further).
    """
    g = np.maximum(np.asarray(g, dtype=np.float64), 1.0)
    length = np.maximum(np.asarray(lengths, dtype=np.float64), 1.0)
    rho = (g - 1.0) / (g + 1.0)
    r = 1.0 - (g**2 - 1.0) * (1.0 - rho**length) / (2.0 * g * length)
    return np.clip(r, 0.25, 1.0)


def block_bootstrap_indices(
    states: Any | None,
    lengths: Any,
    rng: np.random.Generator,
    n_frames: int | None = None,
    trajectories: Any | None = None,
) -> np.ndarray:
    """One stratified block-bootstrap resample: for every state, contiguous blocks drawn with replacement.

    With several independent trajectories in a state (``trajectories``), each is cut into blocks on its own and
    the state's blocks are drawn from all of them together: a resample can hold one trajectory's blocks twice and
    another's not at all, so the error sees how much trajectories of one state disagree (e.g. umbrella replicas
    that stayed on different sides of a barrier the restraint coordinate does not resolve).

    Parameters
    ----------
    states : array_like of int, shape=(n_frames,), or None (one state)
        State of every frame; the frames of a state are taken in increasing frame index (time) order.
    lengths : array_like of int, shape=(n_states,)
        Block length per state (see :func:`block_lengths`).
    rng : numpy.random.Generator
    n_frames : int, optional
        Needed when ``states`` is None.
    trajectories : array_like of int, shape=(n_frames,), optional
        Independent trajectory of every frame (default: one per state); blocks never straddle two.

    Returns
    -------
    numpy.ndarray of int, shape=(n_frames,)
        Frame indices (with repeats); exactly N_k of them belong to state k, and they come grouped by state in the
        order of the sorted state labels.
    """
    if states is None and n_frames is None:
        raise ValueError("give states or n_frames")
    n = int(n_frames) if states is None else len(states)
    labels = _state_labels(states, n)
    traj = _trajectory_labels(trajectories, n)
    lengths = np.asarray(lengths, dtype=np.int64)
    out = []
    for k in range(int(labels.max()) + 1):
        parts = _frames_of_state(labels, traj, k)
        n_k = sum(p.size for p in parts)
        length = int(min(max(1, lengths[k]), n_k))
        blocks = [p[a: a + length] for p in parts for a in range(0, p.size, length)]  # the last may be shorter
        picked: list[np.ndarray] = []
        total = 0
        while total < n_k:
            for b in rng.integers(len(blocks), size=len(blocks)):
                picked.append(blocks[b])
                total += blocks[b].size
                if total >= n_k:
                    break
        out.append(np.concatenate(picked)[:n_k])
    return np.concatenate(out)


def transition_count(core_a: Any, core_b: Any, breaks: Any | None = None) -> int:
    """Number of committed transitions between two cores along a time series (A → B and B → A counted).

    A frame in neither core keeps the last core visited (hysteresis), so recrossings of a dividing surface are not
    counted: a transition is a first frame in one core after the last core visited was the other.

    Parameters
    ----------
    core_a, core_b : array_like of bool, shape=(n_frames,)
        Whether each frame, in time order, is in core A / core B (they must not overlap).
    breaks : array_like, shape=(n_frames,), optional
        Label of the independent time series each frame belongs to (e.g. walker or run): the series are counted
        separately, and a jump from one to the next is never a transition.

    Returns
    -------
    int
    """
    a = np.asarray(core_a, dtype=bool)
    b = np.asarray(core_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"core_a and core_b must be 1-D masks of one shape, got {a.shape} and {b.shape}")
    if np.any(a & b):
        raise ValueError(f"{int(np.count_nonzero(a & b))} frames are in both cores; cores must not overlap")
    labels = np.zeros(a.shape, dtype=np.int64) if breaks is None else np.asarray(breaks)
    if labels.shape != a.shape:
        raise ValueError(f"breaks must have shape {a.shape}, got {labels.shape}")
    count = 0
    for lab in np.unique(labels):
        sel = labels == lab
        state = np.where(a[sel], 0, np.where(b[sel], 1, -1))
        visited = state[state >= 0]
        count += int(np.count_nonzero(np.diff(visited)))
    return count


def regenerative_error(
    estimator: Callable[[np.ndarray], float],
    core_a: Any,
    core_b: Any,
    breaks: Any | None = None,
    n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
    seed: int | None = 0,
) -> tuple[float, int]:
    """1σ error of ``estimator`` from a bootstrap over round trips A → B → A (regenerative bootstrap).

    A Markov process that returns to core A starts afresh each time: the stretches between successive returns to A
    from B (each holding one stay in A and one visit to B) are independent and identically distributed (Athreya &
    Fuh 1992), whatever the frames' correlation inside a stretch. Resampling whole round trips therefore gives an
    error that counts visits, not frames: a run with three visits to B has three samples of B's population, and a
    visit made while an adaptive bias was still far from converged weighs in the spread as it should.

    Parameters
    ----------
    estimator : callable
        ``estimator(indices) -> float`` (repeats allowed); NaN/inf when a selection misses a basin.
    core_a, core_b : array_like of bool, shape=(n_frames,)
        Cores of the two basins, frames in time order.
    breaks : array_like, shape=(n_frames,), optional
        Independent time series (a new series starts a new round trip).
    n_bootstrap : int, default 200
        Resamples.
    seed : int or None, default 0
        Seed of the resampling.

    Returns
    -------
    error : float
        Bootstrap standard deviation × √(n/(n − 1)); inf with fewer than 2 round trips or when more than 20 % of the
        resamples miss a basin.
    n_cycles : int
        Number of stretches resampled (completed round trips, plus the partial stretches at the ends).
    """
    a = np.asarray(core_a, dtype=bool)
    b = np.asarray(core_b, dtype=bool)
    n = a.shape[0]
    labels = np.zeros(n, dtype=np.int64) if breaks is None else np.asarray(breaks)
    if b.shape != a.shape or labels.shape != a.shape:
        raise ValueError(f"core_a, core_b and breaks must have one shape, got {a.shape}, {b.shape}, {labels.shape}")
    cycle = np.empty(n, dtype=np.int64)
    current, last, prev_label = 0, -1, None
    for i in range(n):
        if labels[i] != prev_label:  # a new independent series starts a new stretch
            if prev_label is not None:
                current += 1
            last, prev_label = -1, labels[i]
        if a[i]:
            if last == 1:  # a return to A after a visit to B
                current += 1
            last = 0
        elif b[i]:
            last = 1
        cycle[i] = current
    ids = np.unique(cycle)
    members = [np.flatnonzero(cycle == c) for c in ids]
    if len(members) < 3:  # at most one complete round trip between partial ends
        return math.inf, len(members)
    rng = np.random.default_rng(seed)
    samples = np.array([estimator(np.concatenate([members[j] for j in rng.integers(0, len(members), len(members))]))
                        for _ in range(int(n_bootstrap))], dtype=np.float64)
    finite = np.isfinite(samples)
    if finite.mean() < 0.8:
        return math.inf, len(members)
    k = len(members)
    return float(np.std(samples[finite], ddof=1) * math.sqrt(k / (k - 1))), k


def two_state_error(transitions: int, temperature: Any) -> float:
    """Smallest 1σ error (kJ/mol) of a basin free-energy difference estimated from a run with ``transitions``
    committed transitions between the two basins: 2 kT / √K.

    For a two-state Markov process with rates k_AB, k_BA observed for a time T, the population p of B has variance
    2 p (1 − p) τ / T with τ = 1/(k_AB + k_BA), and the expected number of transitions is K = 2 p (1 − p) T / τ,
    so Var(p̂) = 4 p² (1 − p)² / K and σ(ΔF) = kT σ(p̂) / (p (1 − p)) = 2 kT / √K, whatever p. Reweighting biased
    frames can only add variance (the weights fluctuate within a basin), so no run with K transitions determines
    ΔF better. It is what the block bootstrap cannot see when a run visits a basin once or twice: blocks then
    are shorter than the time between visits. K = 0 gives inf.
    """
    from .constants import kt_kjmol

    k = int(transitions)
    if k < 0:
        raise ValueError(f"transitions must be >= 0, got {transitions!r}")
    return math.inf if k == 0 else 2.0 * kt_kjmol(temperature) / math.sqrt(k)


def replica_estimate(per_replica: Any, pooled: Any | None = None) -> Estimate:
    """Estimate and Student-t error from the estimates of n ≥ 2 independent replicas.

    Parameters
    ----------
    per_replica : array_like, shape=(n_replicas,) + value shape
        The estimate from each replica alone.
    pooled : float or array_like, optional
        The estimate from all replicas together (default: the mean of ``per_replica``).

    Returns
    -------
    Estimate
        ``error`` = t_{n−1}(0.8413) · s/√n, the half-width of the 68.27 % interval of the mean.
    """
    from scipy import stats

    x = np.asarray(per_replica, dtype=np.float64)
    n = x.shape[0] if x.ndim else 0
    if n < 2:
        raise ValueError(f"replica errors need at least 2 replicas, got {n}")
    finite = np.isfinite(x)
    n_ok = finite.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nansum(np.where(finite, x, 0.0), axis=0) / n_ok
        sd = np.sqrt(np.nansum(np.where(finite, (x - mean) ** 2, 0.0), axis=0) / (n_ok - 1))
        t1 = stats.t.ppf(stats.norm.cdf(1.0), np.maximum(n_ok - 1, 1))
        err = np.where(n_ok >= 2, t1 * sd / np.sqrt(n_ok), np.nan)
    value = mean if pooled is None else np.asarray(pooled, dtype=np.float64)
    if np.ndim(value) == 0:
        value, err = float(value), float(err)
    return Estimate(value=value, error=err, method="replicas", n_independent=n, dof=float(n - 1), samples=x)


def estimate_uncertainty(
    estimator: Callable[[np.ndarray], Any],
    n_frames: int,
    *,
    replicas: Any | None = None,
    states: Any | None = None,
    observable: Any | None = None,
    n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
    block_factor: float = DEFAULT_BLOCK_FACTOR,
    seed: int | None = 0,
    min_finite_fraction: float = 0.8,
    trajectories: Any | None = None,
) -> Estimate:
    """Run ``estimator`` on all frames and attach an error bar: replica spread if possible, else block bootstrap.

    Parameters
    ----------
    estimator : callable
        ``estimator(indices) -> float or numpy.ndarray``: the estimate from the frames ``indices`` (int array,
        repeats allowed, grouped by state). It must redo every fitted step (MBAR, normalisation) on that
        selection. NaN/inf entries of a resample are allowed (e.g. an empty histogram bin).
    n_frames : int
        Number of frames.
    replicas : array_like of int, shape=(n_frames,), optional
        Independent replica (walker, run) of every frame. With ≥ 2 distinct labels the replica route is used.
    states : array_like of int, shape=(n_frames,), optional
        Thermodynamic state of every frame, for the stratified bootstrap (default: one state).
    observable : array_like, shape=(n_frames,) or (n_frames, d), optional
        Slow observable whose statistical inefficiency sets the block length per state (e.g. the CV).
    n_bootstrap : int, default 200
        Bootstrap resamples.
    block_factor : float, default 3.0
        Block length in units of g.
    seed : int or None, default 0
        Seed of the bootstrap's random generator (reproducible error bars).
    min_finite_fraction : float, default 0.8
        An entry of the value whose resamples are finite in fewer than this fraction gets error NaN.
    trajectories : array_like of int, shape=(n_frames,), optional
        Independent trajectory of every frame within its state (e.g. umbrella replicas of one window): blocks are
        cut per trajectory and drawn across the state's trajectories (:func:`block_bootstrap_indices`).

    Returns
    -------
    Estimate
    """
    n_frames = int(n_frames)
    if n_frames < 2:
        raise ValueError(f"need at least 2 frames for an error bar, got {n_frames}")
    if replicas is not None:
        rep = np.asarray(replicas)
        if rep.shape != (n_frames,) or not np.issubdtype(rep.dtype, np.integer):
            raise ValueError(f"replicas must be one integer label per frame, shape ({n_frames},), got {rep.shape}")
        labels = np.unique(rep)
        if labels.size >= 2:
            pooled = estimator(np.arange(n_frames))
            per = np.stack([np.asarray(estimator(np.flatnonzero(rep == r)), dtype=np.float64) for r in labels])
            return replica_estimate(per, pooled)
        logger.info("only one replica: falling back to the stratified block bootstrap")
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, (int, np.integer)) or n_bootstrap < 2:
        raise ValueError(f"n_bootstrap must be an integer >= 2, got {n_bootstrap!r}")
    lab = _state_labels(states, n_frames)
    traj = _trajectory_labels(trajectories, n_frames)
    lengths, g = block_lengths(observable, lab, block_factor, n_frames=n_frames, trajectories=traj)
    value = estimator(np.arange(n_frames))
    rng = np.random.default_rng(seed)
    samples = np.stack([np.asarray(estimator(block_bootstrap_indices(lab, lengths, rng, trajectories=traj)),
                                   dtype=np.float64) for _ in range(int(n_bootstrap))])
    finite = np.isfinite(samples)
    frac = finite.mean(axis=0)
    masked = np.where(finite, samples, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nansum(masked, axis=0) / finite.sum(axis=0)  # NaN (no warning) where no resample is finite
        sd = np.sqrt(np.nansum((masked - mean) ** 2, axis=0) / np.maximum(finite.sum(0) - 1, 1))
    n_k = np.bincount(lab)
    n_blocks = np.array([sum(-(-p.size // max(1, min(int(lengths[k]), int(n_k[k]))))
                             for p in _frames_of_state(lab, traj, k)) for k in range(n_k.size)])
    n_bar = float(np.sum(n_k * n_blocks) / np.sum(n_k))
    sd = sd * math.sqrt(n_bar / (n_bar - 1.0)) if n_bar > 1 else sd * np.nan
    share = n_k * g
    sd = sd / math.sqrt(float(np.sum(share * block_variance_ratio(g, lengths)) / np.sum(share)))
    err = np.where(frac >= min_finite_fraction, sd, np.nan)
    if np.ndim(value) == 0:
        value, err = float(value), float(err)
    else:
        value = np.asarray(value, dtype=np.float64)
    return Estimate(value=value, error=err, method="block-bootstrap", n_independent=int(n_blocks.sum()),
                    samples=samples, block_lengths=lengths, statistical_inefficiency=g)


def mbar_reweighter(
    reduced_potentials: Any,
    states: Any,
    target_reduced_potential: Any | None = None,
    initial_f_k: Any | None = None,
) -> Callable[[np.ndarray], np.ndarray]:
    """A function ``indices -> log-weights`` that re-solves MBAR on a selection of frames (for bootstraps).

    Parameters
    ----------
    reduced_potentials : array_like, shape=(n_states, n_frames)
        u_kn = β U_k(x_n) of every frame in every state (see :func:`~latentbias.analysis.reweight.mbar_logweights`).
    states : array_like of int, shape=(n_frames,)
        Row of ``reduced_potentials`` (state index 0..n_states−1) each frame was sampled in.
    target_reduced_potential : array_like, shape=(n_frames,), optional
        As in ``mbar_logweights``.
    initial_f_k : array_like, shape=(n_states,), optional
        Starting guess (e.g. the full-data solution) that speeds up the solves.

    Returns
    -------
    callable
        ``f(indices)`` → log-weights (shape=(len(indices),), logsumexp 0) of the selected frames in the target
        state, in the order of ``indices``. States absent from a selection are dropped from that solve.
    """
    from .reweight import mbar_logweights

    u = np.asarray(reduced_potentials, dtype=np.float64)
    lab = np.asarray(states)
    if u.ndim != 2 or lab.shape != (u.shape[1],):
        raise ValueError(f"reduced_potentials (n_states, n_frames) and states (n_frames,) disagree: {u.shape}, "
                         f"{lab.shape}")
    if not np.issubdtype(lab.dtype, np.integer) or lab.min() < 0 or lab.max() >= u.shape[0]:
        raise ValueError(f"states must be integer row indices of reduced_potentials (0..{u.shape[0] - 1})")
    target = None if target_reduced_potential is None else np.asarray(target_reduced_potential, dtype=np.float64)
    f0 = None if initial_f_k is None else np.asarray(initial_f_k, dtype=np.float64)

    def reweight(indices: np.ndarray) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64)
        order = np.argsort(lab[idx], kind="stable")
        sel = idx[order]
        present = np.unique(lab[sel])
        n_k = np.bincount(lab[sel], minlength=u.shape[0])[present]
        logw_sorted, _, _ = mbar_logweights(u[np.ix_(present, sel)], n_k,
                                            None if target is None else target[sel],
                                            initial_f_k=None if f0 is None else f0[present] - f0[present[0]],
                                            uncertainty="none", quiet=True)
        out = np.empty_like(logw_sorted)
        out[order] = logw_sorted
        return out

    return reweight
