"""Free-energy surfaces and basin free-energy differences from (re)weighted samples, with error bars.

F(s) = −kT ln p(s) from a weighted histogram of a 1-D or 2-D collective variable, shifted so that min F = 0.
Energies in **kJ/mol**, temperatures in **K**, CVs in their own units.

Error bars (``error_method``), see :mod:`latentbias.analysis.uncertainty`:

* ``"replicas"``: spread of the estimates of independent replicas (``replicas`` labels), Student t;
* ``"bootstrap"``: stratified block bootstrap — blocks of ≈ 3 statistical inefficiencies (of the CV, or of the
  basin indicator for ΔF), contiguous in time within each state (``states`` labels: umbrella window, bias
  state), every resample keeping every state's frame count. With ``reweight`` (a function frame indices →
  log-weights, e.g. :func:`~latentbias.analysis.uncertainty.mbar_reweighter`) the weights are re-solved on every
  resample, so the uncertainty of the weights (MBAR's f_k) is part of the error bar;
* ``"blocks"`` (legacy): the standard error over ``n_blocks`` blocks (contiguous in frame order, or ``blocks``
  labels) with the weights held fixed. It is honest only when each block is much longer than the correlation
  time and the weights are exact;
* ``"auto"`` (default): replicas when ≥ 2 are labelled, else the bootstrap when ``states`` or ``reweight`` is
  given, else blocks.

Free energies in a bootstrap or replica estimate use the gauge −kT ln(p/volume) with p normalised over all frames
(not min F = 0), so that the error of a bin is not inflated by the noise of the minimum bin.
"""

from __future__ import annotations

import builtins
import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..io import atomic_write_bytes
from ._validation import (
    ensure_1d_float,
    ensure_block_labels,
    ensure_cv,
    ensure_logweights,
    ensure_n_blocks,
)
from .constants import kt_kjmol, temperature_kelvin
from .uncertainty import Estimate, estimate_uncertainty

logger = logging.getLogger(__name__)

__all__ = [
    "FreeEnergySurface",
    "basin_free_energy_difference",
    "basin_free_energy_estimate",
    "block_labels",
    "free_energy_surface",
]


@dataclass
class FreeEnergySurface:
    """A free-energy surface on a histogram grid.

    Attributes
    ----------
    edges : list of numpy.ndarray
        Bin edges per CV dimension, each shape=(nbins_i + 1,), in CV units.
    centers : list of numpy.ndarray
        Bin centers per CV dimension, each shape=(nbins_i,).
    free_energy : numpy.ndarray, shape=(nbins,), (nbins_x, nbins_y) or (nbins_x, nbins_y, nbins_z)
        F = −kT ln(p / bin volume), **kJ/mol**, shifted so that the minimum is 0. ``ij`` indexing: the first index
        runs over ``cv[:, 0]``. NaN in bins without samples (or with fewer than ``min_count``).
    error : numpy.ndarray, same shape as ``free_energy``
        Block standard error of F, **kJ/mol**; NaN where fewer than 2 blocks have samples.
    probability : numpy.ndarray, same shape as ``free_energy``
        Fraction of the total weight falling in each bin (sums to less than 1 when ``range`` excludes frames).
    temperature : float
        Temperature, **K**.
    counts : numpy.ndarray of int, same shape as ``free_energy``
        Number of frames (unweighted) in each bin.
    n_blocks : int
        Number of blocks used for the errors (legacy blocks; bootstrap blocks summed over states; or replicas).
    error_method : str
        ``"blocks"``, ``"block-bootstrap"`` or ``"replicas"`` (see the module docstring).
    """

    edges: list[np.ndarray]
    centers: list[np.ndarray]
    free_energy: np.ndarray
    error: np.ndarray
    probability: np.ndarray
    temperature: float
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    n_blocks: int = 0
    error_method: str = "blocks"

    @property
    def ndim(self) -> int:
        """Number of CV dimensions (1 or 2)."""
        return len(self.edges)

    def to_csv(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the surface as CSV, atomically (temporary file, fsync, rename).

        The file starts with ``#`` comment lines stating units and the temperature, then a header row
        ``cv0,[cv1,]free_energy_kjmol,error_kjmol,probability`` and one row per bin (``ij`` order for 2-D: cv0
        varies slowest). Empty bins hold ``nan``. Read it back with
        ``np.loadtxt(path, delimiter=",", comments="#", skiprows=...)``, ``np.genfromtxt(path, delimiter=",",
        names=True)`` or ``pandas.read_csv(path, comment="#")``.

        Parameters
        ----------
        path : str or path-like
            Output file.
        overwrite : bool
            Replace an existing file; by default an existing file raises FileExistsError.

        Returns
        -------
        pathlib.Path
        """
        grids = np.meshgrid(*self.centers, indexing="ij")
        columns = [g.ravel() for g in grids] + [
            np.asarray(self.free_energy).ravel(),
            np.asarray(self.error).ravel(),
            np.asarray(self.probability).ravel(),
        ]
        names = [f"cv{i}" for i in range(self.ndim)] + ["free_energy_kjmol", "error_kjmol", "probability"]
        buf = io.StringIO()
        buf.write(f"# free energy surface, kJ/mol, T={self.temperature:g} K\n")
        buf.write(
            "# F = -kT ln(p / bin volume) shifted so min F = 0; error = 1-sigma "
            f"({_ERROR_TEXT.get(self.error_method, self.error_method)}, {self.n_blocks} blocks or replicas); "
            "probability = weight fraction per bin; nan = no samples\n"
        )
        buf.write(",".join(names) + "\n")
        np.savetxt(buf, np.column_stack(columns), delimiter=",", fmt="%.10g")
        path = atomic_write_bytes(path, buf.getvalue().encode(), overwrite)
        logger.info("wrote %d-D free energy surface to %s", self.ndim, path)
        return path


_ERROR_TEXT = {
    "blocks": "block standard error",
    "block-bootstrap": "stratified block bootstrap",
    "replicas": "spread of independent replicas, Student t",
}
_ERROR_METHODS = ("auto", "blocks", "bootstrap", "replicas")


def _choose_error_method(error_method: str, replicas: Any, states: Any, reweight: Any) -> str:
    if error_method not in _ERROR_METHODS:
        raise ValueError(f"error_method must be one of {', '.join(_ERROR_METHODS)}, got {error_method!r}")
    if error_method == "auto":
        if replicas is not None and np.unique(np.asarray(replicas)).size >= 2:
            return "replicas"
        return "bootstrap" if (states is not None or reweight is not None) else "blocks"
    if error_method == "replicas" and (replicas is None or np.unique(np.asarray(replicas)).size < 2):
        raise ValueError("error_method='replicas' needs replicas labels with at least 2 distinct replicas")
    return error_method


def _resampled_logweights(logw: np.ndarray, reweight: Any, idx: np.ndarray) -> np.ndarray:
    if reweight is None:
        return logw[idx]
    out = np.asarray(reweight(idx), dtype=np.float64)
    if out.shape != idx.shape:
        raise ValueError(f"reweight(indices) must return one log-weight per index, got shape {out.shape}")
    return out


def block_labels(n_samples: int | Sequence[int], n_blocks: int) -> np.ndarray:
    """Block label of every frame for block-averaged errors.

    Parameters
    ----------
    n_samples : int or sequence of int
        An int: the number of frames of one time series, split into ``n_blocks`` contiguous blocks. A sequence:
        frames per segment (e.g. per umbrella window, concatenated in that order); each segment is split into
        ``n_blocks`` contiguous blocks and block b collects the b-th part of every segment.
    n_blocks : int
        Number of blocks.

    Returns
    -------
    numpy.ndarray of int64, shape=(n_frames,)
        Labels 0 .. n_blocks − 1.
    """
    counts = np.atleast_1d(np.asarray(n_samples))
    if counts.ndim != 1 or not np.issubdtype(counts.dtype, np.integer) or np.any(counts < 0):
        raise ValueError(f"n_samples must be a non-negative int or a sequence of them, got {n_samples!r}")
    labels = []
    for n in counts.tolist():
        if n == 0:
            continue
        nb = ensure_n_blocks(n_blocks, n)
        labels.append((np.arange(n, dtype=np.int64) * nb) // n)
    if not labels:
        raise ValueError("n_samples holds no frames")
    return np.concatenate(labels)


def _normalise_range(range_: Any, ndim: int) -> list[tuple[float, float]] | None:
    if range_ is None:
        return None
    arr = np.asarray(range_, dtype=np.float64)
    if ndim == 1 and arr.shape == (2,):
        arr = arr[None]
    if arr.shape != (ndim, 2):
        want = "(lo, hi)" if ndim == 1 else "((lo0, hi0), (lo1, hi1))"
        raise ValueError(f"range must be {want} for a {ndim}-D CV, got {range_!r}")
    if not np.all(np.isfinite(arr)) or np.any(arr[:, 1] <= arr[:, 0]):
        raise ValueError(f"range must be finite with lo < hi in every dimension, got {range_!r}")
    return [tuple(r) for r in arr.tolist()]


def _histogram_edges(cv: np.ndarray, bins: Any, range_: Any) -> list[np.ndarray]:
    ndim = cv.shape[1]
    rng = _normalise_range(range_, ndim)
    if isinstance(bins, (int, np.integer)) and not isinstance(bins, bool):
        bins_arg: Any = int(bins)
        if bins_arg < 1:
            raise ValueError(f"bins must be a positive integer or bin edges, got {bins!r}")
    elif ndim == 1 and np.ndim(bins) == 1 and len(bins) >= 2:
        bins_arg = [np.asarray(bins, dtype=np.float64)]
    else:
        try:
            bins_arg = list(bins)
        except TypeError:
            raise ValueError(f"bins must be an int, a sequence of ints or bin edges, got {bins!r}") from None
        if len(bins_arg) != ndim:
            raise ValueError(f"bins must give one entry per CV dimension ({ndim}), got {bins!r}")
    needs_range = isinstance(bins_arg, int) or any(np.ndim(b) == 0 for b in bins_arg)
    if rng is None and needs_range:
        lo, hi = cv.min(axis=0), cv.max(axis=0)
        same = hi <= lo
        if np.any(same):
            raise ValueError(
                "the CV does not vary over the frames (max == min in dimension "
                f"{int(np.flatnonzero(same)[0])}); pass range=... explicitly"
            )
        rng = [(float(a), float(b)) for a, b in zip(lo, hi)]
    try:
        _, edges = np.histogramdd(cv[:1], bins=bins_arg, range=rng)
    except ValueError as exc:
        raise ValueError(f"invalid bins {bins!r}: {exc}") from None
    for i, e in enumerate(edges):
        if e.size < 2 or not np.all(np.isfinite(e)) or np.any(np.diff(e) <= 0):
            raise ValueError(f"bin edges of dimension {i} must be finite and strictly increasing")
    return [np.asarray(e, dtype=np.float64) for e in edges]


def _bin_index(cv: np.ndarray, edges: list[np.ndarray]) -> np.ndarray:
    """Flat bin index of each frame (−1 outside the grid); the last edge is inclusive like numpy."""
    shape = tuple(e.size - 1 for e in edges)
    idx = np.zeros(cv.shape[0], dtype=np.int64)
    inside = np.ones(cv.shape[0], dtype=bool)
    for d, e in enumerate(edges):
        i = np.searchsorted(e, cv[:, d], side="right") - 1
        i[cv[:, d] == e[-1]] = e.size - 2
        inside &= (i >= 0) & (i < e.size - 1)
        idx = idx * shape[d] + np.clip(i, 0, e.size - 2)
    idx[~inside] = -1
    return idx


def _free_energy(prob: np.ndarray, volume: np.ndarray, kt: float) -> np.ndarray:
    out = np.full(prob.shape, np.nan)
    pos = prob > 0
    out[pos] = -kt * np.log(prob[pos] / volume[pos])
    return out


def _block_standard_error(values: np.ndarray) -> np.ndarray:
    """Standard error over the first axis ignoring NaN; NaN where fewer than 2 values are finite."""
    n = np.sum(np.isfinite(values), axis=0)
    out = np.full(values.shape[1:], np.nan)
    ok = n >= 2
    if np.any(ok):
        sub = values[:, ok]
        mean = np.nanmean(sub, axis=0)
        var = np.nansum((sub - mean) ** 2, axis=0) / (n[ok] - 1)
        out[ok] = np.sqrt(var / n[ok])
    return out


def free_energy_surface(
    cv: Any,
    logweights: Any | None = None,
    bins: int | Sequence[Any] = 50,
    range: Any | None = None,
    temperature: Any = 300.0,
    n_blocks: int = 5,
    min_count: int = 1,
    blocks: Any | None = None,
    *,
    error_method: str = "auto",
    states: Any | None = None,
    replicas: Any | None = None,
    reweight: Callable[[np.ndarray], np.ndarray] | None = None,
    n_bootstrap: int = 200,
    seed: int | None = 0,
    observable: Any | None = None,
    trajectories: Any | None = None,
) -> FreeEnergySurface:
    """Free-energy surface F(s) = −kT ln p(s) of a 1-D, 2-D or 3-D CV from (weighted) frames.

    Parameters
    ----------
    cv : array_like, shape=(n_frames,) or (n_frames, d), d <= 3
        CV value of every frame (CV units).
    logweights : array_like, shape=(n_frames,), optional
        Log-weights of the frames in the target ensemble (see :mod:`latentbias.analysis.reweight`); -inf means
        zero weight. Default: unweighted (unbiased sampling).
    bins : int, sequence of int or sequence of edge arrays, default 50
        Histogram bins, as for ``numpy.histogramdd``.
    range : (lo, hi) or ((lo0, hi0), (lo1, hi1)[, (lo2, hi2)]), optional
        Histogram range in CV units; default: the CV's min and max. Frames outside are dropped from the histogram
        (but count in the normalisation of ``probability``).
    temperature : float or openmm.unit.Quantity, default 300.0
        Temperature of the target ensemble, **K**.
    n_blocks : int, default 5
        Number of blocks for the error estimate (contiguous blocks in frame order unless ``blocks`` is given).
        Blocks should be longer than the correlation time. ``n_blocks=1`` gives NaN errors.
    min_count : int, default 1
        Bins with fewer frames than this get F = NaN.
    blocks : array_like of int, shape=(n_frames,), optional
        Block label of every frame (overrides ``n_blocks``; ``error_method="blocks"`` only).
    error_method : {"auto", "blocks", "bootstrap", "replicas"}
        How the error is computed (module docstring).
    states : array_like of int, shape=(n_frames,), optional
        Thermodynamic state (umbrella window, bias state) of every frame, for the stratified bootstrap; frames of a
        state must be in time order.
    replicas : array_like of int, shape=(n_frames,), optional
        Independent replica of every frame.
    reweight : callable, optional
        ``reweight(indices) -> log-weights`` of the selected frames, re-solving the weights (e.g. MBAR) on a
        resample or a single replica; without it ``logweights[indices]`` is used.
    n_bootstrap : int, default 200
        Bootstrap resamples.
    seed : int or None, default 0
        Seed of the bootstrap.
    observable : array_like, shape=(n_frames,) or (n_frames, k), optional
        Slow observable(s) whose statistical inefficiency sets the bootstrap block length (default: ``cv``).
    trajectories : array_like of int, shape=(n_frames,), optional
        Independent trajectory of every frame within its state (bootstrap blocks are cut per trajectory and drawn
        across a state's trajectories; :func:`~latentbias.analysis.uncertainty.block_bootstrap_indices`).

    Returns
    -------
    FreeEnergySurface
        F in **kJ/mol** with min F = 0 and its 1σ error. For ``"blocks"``: the standard error over blocks of each
        block's F_b = −kT ln(p_b / bin volume) (p_b normalised within the block), using only blocks with weight in
        the bin, weights held fixed.
    """
    x = ensure_cv(cv, max_dim=3)
    n_frames, ndim = x.shape
    logw = ensure_logweights(logweights, n_frames)
    n_blocks = ensure_n_blocks(n_blocks, n_frames)
    labels, nb = ensure_block_labels(blocks, n_frames, n_blocks)
    if isinstance(min_count, bool) or not isinstance(min_count, (int, np.integer)) or min_count < 1:
        raise ValueError(f"min_count must be a positive integer, got {min_count!r}")
    temp = temperature_kelvin(temperature)
    kt = kt_kjmol(temp)

    edges = _histogram_edges(x, bins, range)
    shape = tuple(e.size - 1 for e in edges)
    n_bins = int(np.prod(shape))
    volume = np.ones(shape)
    for d, e in enumerate(edges):
        w = np.diff(e)
        volume = volume * w.reshape([-1 if k == d else 1 for k in builtins.range(ndim)])
    volume = volume.ravel()

    idx = _bin_index(x, edges)
    inside = idx >= 0
    if not np.any(inside & np.isfinite(logw)):
        raise ValueError("no frame with non-zero weight falls inside the histogram range; check range/bins")
    w = np.exp(logw - np.max(logw))

    counts = np.bincount(idx[inside], minlength=n_bins)
    mass = np.bincount(idx[inside], weights=w[inside], minlength=n_bins)
    prob = mass / w.sum()
    valid = (counts >= min_count) & (prob > 0)
    prob_masked = np.where(valid, prob, 0.0)
    free = _free_energy(prob_masked, volume, kt)

    method = _choose_error_method(error_method, replicas, states, reweight)
    if method == "blocks":
        block_f = np.full((nb, n_bins), np.nan)
        for b in builtins.range(nb):
            sel = labels == b
            total = w[sel].sum()
            if total <= 0:
                continue
            sel_in = sel & inside
            pb = np.bincount(idx[sel_in], weights=w[sel_in], minlength=n_bins) / total
            block_f[b] = _free_energy(np.where(valid, pb, 0.0), volume, kt)
        error = _block_standard_error(block_f)
        method_name = "blocks"
    else:
        def estimator(sel: np.ndarray) -> np.ndarray:
            lw = _resampled_logweights(logw, reweight, sel)
            top = np.max(lw)
            if not np.isfinite(top):  # a resample holding only excluded (-inf) frames carries no estimate
                return np.full(n_bins, np.nan)
            ws = np.exp(lw - top)
            ins = idx[sel] >= 0
            pb = np.bincount(idx[sel][ins], weights=ws[ins], minlength=n_bins) / ws.sum()
            with np.errstate(divide="ignore"):
                out = -kt * np.log(pb / volume)
            out[~valid] = np.nan
            return out

        est = estimate_uncertainty(estimator, n_frames, replicas=replicas if method == "replicas" else None,
                                   states=states, observable=x if observable is None else observable,
                                   n_bootstrap=n_bootstrap, seed=seed, trajectories=trajectories)
        error = np.asarray(est.error, dtype=np.float64)
        nb = est.n_independent
        method_name = est.method
    error[~valid] = np.nan

    if not np.any(valid):
        raise ValueError(
            f"no bin has at least min_count={min_count} frames with non-zero weight; lower min_count, use fewer "
            "bins or check range"
        )
    fmin = np.nanmin(free)
    free = free - fmin
    n_empty = int(np.count_nonzero(~valid))
    if n_empty:
        logger.debug("%d of %d bins have no samples (F = NaN)", n_empty, n_bins)
    return FreeEnergySurface(
        edges=edges,
        centers=[0.5 * (e[1:] + e[:-1]) for e in edges],
        free_energy=free.reshape(shape),
        error=error.reshape(shape),
        probability=prob.reshape(shape),
        temperature=temp,
        counts=counts.reshape(shape),
        n_blocks=nb,
        error_method=method_name,
    )


def _frame_mask(mask: Any, x: np.ndarray, name: str) -> np.ndarray:
    if callable(mask):
        values = mask(x[:, 0] if x.shape[1] == 1 else x)
    else:
        values = mask
    arr = np.asarray(values)
    if arr.dtype != bool:
        raise ValueError(
            f"{name} must be a boolean array with one entry per frame (or a callable cv -> mask), got dtype {arr.dtype}"
        )
    if arr.shape != (x.shape[0],):
        raise ValueError(f"{name} must have shape ({x.shape[0]},), one entry per frame, got shape {arr.shape}")
    return arr


def basin_free_energy_difference(
    cv: Any,
    logweights: Any | None,
    in_a: np.ndarray | Callable[[np.ndarray], np.ndarray],
    in_b: np.ndarray | Callable[[np.ndarray], np.ndarray],
    temperature: Any = 300.0,
    n_blocks: int = 5,
    blocks: Any | None = None,
    *,
    error_method: str = "auto",
    states: Any | None = None,
    replicas: Any | None = None,
    reweight: Callable[[np.ndarray], np.ndarray] | None = None,
    n_bootstrap: int = 200,
    seed: int | None = 0,
) -> tuple[float, float]:
    """Free-energy difference ΔF = F_B − F_A = −kT ln(P_B / P_A) between two basins, with a block error.

    Parameters
    ----------
    cv : array_like, shape=(n_frames,) or (n_frames, d)
        CV values (used for the frame count and for callable masks).
    logweights : array_like, shape=(n_frames,) or None
        Log-weights of the frames in the target ensemble; None for unweighted frames.
    in_a, in_b : array_like of bool, shape=(n_frames,), or callable
        Whether each frame belongs to basin A / B, or a function mapping the CV array (shape (n_frames,) for a
        1-D CV, else (n_frames, d)) to such a mask.
    temperature : float or openmm.unit.Quantity, default 300.0
        Temperature, **K**.
    n_blocks : int, default 5
        Number of contiguous blocks for the error (``blocks`` overrides, see :func:`block_labels`).
    blocks : array_like of int, shape=(n_frames,), optional
        Block label of every frame (``error_method="blocks"``).
    error_method, states, replicas, reweight
        As in :func:`free_energy_surface`; the bootstrap's block length comes from the statistical inefficiency of
        the basin indicator 1_B − 1_A within each state.
    n_bootstrap : int, default 200
        Bootstrap resamples.
    seed : int or None, default 0
        Seed of the bootstrap.

    Returns
    -------
    dF_kjmol : float
        F_B − F_A in **kJ/mol** (positive when B is less populated).
    err_kjmol : float
        1σ error, **kJ/mol**: standard error over blocks (NaN if fewer than 2 blocks visit both basins), or the
        bootstrap / replica error (NaN if fewer than 80 % of the resamples visit both basins).
    """
    x = ensure_cv(cv, max_dim=None)
    n_frames = x.shape[0]
    logw = ensure_logweights(logweights, n_frames)
    n_blocks = ensure_n_blocks(n_blocks, n_frames)
    labels, nb = ensure_block_labels(blocks, n_frames, n_blocks)
    a = _frame_mask(in_a, x, "in_a")
    b = _frame_mask(in_b, x, "in_b")
    if np.any(a & b):
        logger.warning("%d frames are in both basins; basins should not overlap", int(np.count_nonzero(a & b)))
    kt = kt_kjmol(temperature)
    w = np.exp(logw - np.max(logw))
    wa, wb = w[a].sum(), w[b].sum()
    if wa <= 0 or wb <= 0:
        empty = "A" if wa <= 0 else "B"
        raise ValueError(f"basin {empty} has no frames with non-zero weight; cannot estimate its free energy")
    df = float(-kt * np.log(wb / wa))
    method = _choose_error_method(error_method, replicas, states, reweight)
    if method == "blocks":
        per_block = np.full(nb, np.nan)
        for k in range(nb):
            sel = labels == k
            pa, pb = w[sel & a].sum(), w[sel & b].sum()
            if pa > 0 and pb > 0:
                per_block[k] = -kt * np.log(pb / pa)
        return df, float(_block_standard_error(per_block[:, None])[0])
    est = basin_free_energy_estimate(x, logw, a, b, temperature, error_method=method, states=states,
                                     replicas=replicas, reweight=reweight, n_bootstrap=n_bootstrap, seed=seed)
    return df if reweight is None else float(est.value), float(est.error)


def basin_free_energy_estimate(
    cv: Any,
    logweights: Any | None,
    in_a: np.ndarray | Callable[[np.ndarray], np.ndarray],
    in_b: np.ndarray | Callable[[np.ndarray], np.ndarray],
    temperature: Any = 300.0,
    *,
    error_method: str = "auto",
    states: Any | None = None,
    replicas: Any | None = None,
    reweight: Callable[[np.ndarray], np.ndarray] | None = None,
    n_bootstrap: int = 200,
    seed: int | None = 0,
    observable: Any | None = None,
    trajectories: Any | None = None,
) -> Estimate:
    """ΔF = F_B − F_A (**kJ/mol**) with its error as an :class:`~latentbias.analysis.uncertainty.Estimate`.

    Same inputs as :func:`basin_free_energy_difference` (which returns ``(value, error)`` of this); the estimate
    says how its error was obtained (``method``, ``n_independent``, ``statistical_inefficiency``) and gives
    intervals for any number of σ (:meth:`Estimate.halfwidth`). ``error_method`` may be "auto", "bootstrap" or
    "replicas" ("auto" without replicas means the bootstrap, with one state unless ``states`` is given).
    ``observable`` (shape=(n_frames,) or (n_frames, k)) adds slow observables to the basin indicator for the
    statistical inefficiency; pass the biased coordinate when the weights come from MBAR over several states
    (within a window the indicator may never change while the position, which sets f_k, is correlated).

    Parameters
    ----------
    cv, logweights, in_a, in_b, error_method, states, replicas, reweight
        As in :func:`basin_free_energy_difference`.
    temperature : float or openmm.unit.Quantity, default 300.0
        Temperature, **K**.
    n_bootstrap : int, default 200
        Bootstrap resamples.
    seed : int or None, default 0
        Seed of the bootstrap.
    observable : array_like, shape=(n_frames,) or (n_frames, k), optional
        Slow observables added to the basin indicator for the statistical inefficiency (above).
    trajectories : array_like of int, shape=(n_frames,), optional
        Independent trajectory of every frame within its state (bootstrap blocks are cut per trajectory and drawn
        across a state's trajectories; :func:`~latentbias.analysis.uncertainty.block_bootstrap_indices`).
    """
    x = ensure_cv(cv, max_dim=None)
    n_frames = x.shape[0]
    logw = ensure_logweights(logweights, n_frames)
    a = _frame_mask(in_a, x, "in_a")
    b = _frame_mask(in_b, x, "in_b")
    kt = kt_kjmol(temperature)
    method = _choose_error_method(error_method, replicas, states, reweight)
    if method == "blocks":
        if error_method == "blocks":
            raise ValueError("basin_free_energy_estimate has no 'blocks' method; use basin_free_energy_difference")
        method = "bootstrap"

    obs = (b.astype(float) - a.astype(float))[:, None]
    if observable is not None:
        extra = np.asarray(observable, dtype=np.float64)
        extra = extra[:, None] if extra.ndim == 1 else extra
        if extra.ndim != 2 or extra.shape[0] != n_frames:
            raise ValueError(f"observable must have shape ({n_frames},) or ({n_frames}, k), got {np.shape(observable)}")
        obs = np.column_stack([obs, extra])

    def estimator(sel: np.ndarray) -> float:
        lw = _resampled_logweights(logw, reweight, sel)
        ws = np.exp(lw - np.max(lw))
        pa, pb = ws[a[sel]].sum(), ws[b[sel]].sum()
        if pa <= 0 or pb <= 0:
            return float("nan")
        return float(-kt * np.log(pb / pa))

    est = estimate_uncertainty(estimator, n_frames, replicas=replicas if method == "replicas" else None,
                               states=states, observable=obs, n_bootstrap=n_bootstrap, seed=seed,
                               trajectories=trajectories)
    if not np.isfinite(est.value):
        raise ValueError("basin A or B has no frames with non-zero weight; cannot estimate its free energy")
    return est
