"""Free-energy surfaces and basin free-energy differences from (re)weighted samples, with block-averaged errors.

F(s) = −kT ln p(s) from a weighted histogram of a 1-D or 2-D collective variable, shifted so that min F = 0.
Errors are standard errors over blocks of frames: contiguous blocks in time order by default, or any labelling of
frames into blocks (for pooled umbrella windows use :func:`block_labels` with the per-window frame counts, so that
every block holds part of every window). Energies in **kJ/mol**, temperatures in **K**, CVs in their own units.
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

logger = logging.getLogger(__name__)

__all__ = ["FreeEnergySurface", "basin_free_energy_difference", "block_labels", "free_energy_surface"]


@dataclass
class FreeEnergySurface:
    """A free-energy surface on a histogram grid.

    Attributes
    ----------
    edges : list of numpy.ndarray
        Bin edges per CV dimension, each shape=(nbins_i + 1,), in CV units.
    centers : list of numpy.ndarray
        Bin centers per CV dimension, each shape=(nbins_i,).
    free_energy : numpy.ndarray, shape=(nbins,) or (nbins_x, nbins_y)
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
        Number of blocks used for the errors.
    """

    edges: list[np.ndarray]
    centers: list[np.ndarray]
    free_energy: np.ndarray
    error: np.ndarray
    probability: np.ndarray
    temperature: float
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    n_blocks: int = 0

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
            "# F = -kT ln(p / bin volume) shifted so min F = 0; error = block standard error "
            f"({self.n_blocks} blocks); probability = weight fraction per bin; nan = no samples\n"
        )
        buf.write(",".join(names) + "\n")
        np.savetxt(buf, np.column_stack(columns), delimiter=",", fmt="%.10g")
        path = atomic_write_bytes(path, buf.getvalue().encode(), overwrite)
        logger.info("wrote %d-D free energy surface to %s", self.ndim, path)
        return path


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
) -> FreeEnergySurface:
    """Free-energy surface F(s) = −kT ln p(s) of a 1-D or 2-D CV from (weighted) frames.

    Parameters
    ----------
    cv : array_like, shape=(n_frames,) or (n_frames, 2)
        CV value of every frame (CV units).
    logweights : array_like, shape=(n_frames,), optional
        Log-weights of the frames in the target ensemble (see :mod:`latentbias.analysis.reweight`); -inf means
        zero weight. Default: unweighted (unbiased sampling).
    bins : int, sequence of int or sequence of edge arrays
        Histogram bins, as for ``numpy.histogramdd``.
    range : (lo, hi) or ((lo0, hi0), (lo1, hi1)), optional
        Histogram range in CV units; default: the CV's min and max. Frames outside are dropped from the histogram
        (but count in the normalisation of ``probability``).
    temperature : float or openmm.unit.Quantity
        Temperature of the target ensemble, **K**.
    n_blocks : int
        Number of blocks for the error estimate (contiguous blocks in frame order unless ``blocks`` is given).
        Blocks should be longer than the correlation time. ``n_blocks=1`` gives NaN errors.
    min_count : int
        Bins with fewer frames than this get F = NaN.
    blocks : array_like of int, shape=(n_frames,), optional
        Block label of every frame (overrides ``n_blocks``); see :func:`block_labels` for pooled umbrella windows.

    Returns
    -------
    FreeEnergySurface
        F in **kJ/mol** with min F = 0. The error is the standard error over blocks of each block's
        F_b = −kT ln(p_b / bin volume) (p_b normalised within the block), using only blocks with weight in the
        bin; it does not include the uncertainty of the weights themselves (e.g. of MBAR's f_k).
    """
    x = ensure_cv(cv)
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
    temperature : float or openmm.unit.Quantity
        Temperature, **K**.
    n_blocks : int
        Number of contiguous blocks for the error (``blocks`` overrides, see :func:`block_labels`).
    blocks : array_like of int, shape=(n_frames,), optional
        Block label of every frame.

    Returns
    -------
    dF_kjmol : float
        F_B − F_A in **kJ/mol** (positive when B is less populated).
    err_kjmol : float
        Standard error over blocks, **kJ/mol** (NaN if fewer than 2 blocks visit both basins).
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
    per_block = np.full(nb, np.nan)
    for k in range(nb):
        sel = labels == k
        pa, pb = w[sel & a].sum(), w[sel & b].sum()
        if pa > 0 and pb > 0:
            per_block[k] = -kt * np.log(pb / pa)
    err = float(_block_standard_error(per_block[:, None])[0])
    return df, err
