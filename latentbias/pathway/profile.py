"""Free-energy profiles along a latent path, and the barrier they show.

Two estimates of F(s), s the arc length along a polyline path in latent space (:func:`latentbias.bias.umbrella
.path_coordinate`; units of z), binned between the path's ends:

* :func:`umbrella_profile`: from restrained (umbrella) windows along the path, MBAR over all windows
  (:meth:`latentbias.bias.umbrella.UmbrellaResult.reweighter`);
* :func:`reweighted_profile`: from any reweighted sample (e.g. a campaign's frames with their final log-weights)
  projected onto the path.

Only samples inside a tube around the path count (distance to the polyline at most ``max_distance``; the
workflow uses twice the umbrella windows' thermal width sqrt(kT/k)): a window at the side of a deep basin that lies
off the path leaks samples into it, and with their large MBAR weights they would otherwise dominate bins of the
path they merely project onto. F(s) is then the free energy of the tube's cross-section at s.

F = −kT ln(p / bin width), shifted to min 0, kJ/mol. The barrier of a profile (:func:`path_barrier`) is its
highest value minus the lowest value before it (the climb from the start basin); :func:`path_end_difference` is
F at the end minus F at the start (the free-energy difference between the path's ends, tube cross-sections
included). Error bars of the profile and of
the barrier come from the stratified block bootstrap of :func:`latentbias.analysis.uncertainty
.estimate_uncertainty` (windows are the strata, blocks of ≈ 3 statistical inefficiencies of s; MBAR re-solved on
every resample), so they include the uncertainty of the window free energies.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..analysis.constants import kt_kjmol
from ..analysis.uncertainty import Estimate, estimate_uncertainty

logger = logging.getLogger(__name__)

__all__ = ["PathProfile", "distance_to_path", "path_barrier", "path_end_difference", "reweighted_profile",
           "umbrella_profile", "write_profiles"]


def distance_to_path(z: Any, path: Any, s: Any) -> np.ndarray:
    """Distance (units of z) of points to the polyline ``path`` at their arc-length positions ``s`` (clipped to the
    path's ends), shape=(n,). Non-periodic dimensions."""
    zz = np.atleast_2d(np.asarray(z, dtype=float))
    p = np.asarray(path, dtype=float)
    cum = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(p, axis=0), axis=1))]
    t = np.clip(np.asarray(s, dtype=float), 0.0, cum[-1])
    foot = np.column_stack([np.interp(t, cum, p[:, k]) for k in range(p.shape[1])])
    return np.linalg.norm(zz - foot, axis=1)


def path_barrier(free_energy: Any) -> float:
    """Highest F of a profile minus the lowest F before it (kJ/mol); NaN bins ignored, NaN if < 2 finite bins."""
    f = np.asarray(free_energy, dtype=float)
    ok = np.flatnonzero(np.isfinite(f))
    if ok.size < 2:
        return float("nan")
    g = f[ok]
    top = int(np.argmax(g))
    return float(g[top] - g[: top + 1].min())


def path_end_difference(free_energy: Any) -> float:
    """F of the last non-empty bin minus F of the first (kJ/mol); NaN bins ignored, NaN if < 2 finite bins."""
    f = np.asarray(free_energy, dtype=float)
    ok = np.flatnonzero(np.isfinite(f))
    if ok.size < 2:
        return float("nan")
    return float(f[ok[-1]] - f[ok[0]])


@dataclass
class PathProfile:
    """F along a path with 1σ errors.

    Attributes
    ----------
    s : numpy.ndarray, shape=(n_bins,)
        Bin centres, arc length (units of z).
    free_energy, error : numpy.ndarray, shape=(n_bins,)
        kJ/mol (min 0; NaN in empty bins) and its bootstrap error (NaN in empty bins, and where bootstrap
        resamples leave the bin empty: too few samples there for an error bar).
    barrier : latentbias.analysis.uncertainty.Estimate
        :func:`path_barrier` of the profile with its bootstrap error (kJ/mol).
    length : float
        Path length (units of z).
    label : str
    info : dict
    end_minus_start : latentbias.analysis.uncertainty.Estimate, optional
        :func:`path_end_difference` of the profile with its bootstrap error (kJ/mol).
    """

    s: np.ndarray
    free_energy: np.ndarray
    error: np.ndarray
    barrier: Estimate
    length: float
    label: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    end_minus_start: Estimate | None = None


def _profile(s: np.ndarray, logw: np.ndarray, edges: np.ndarray, kt: float) -> np.ndarray:
    w = np.exp(logw - np.max(logw[np.isfinite(logw)]))
    w = np.where(np.isfinite(logw), w, 0.0)
    hist, _ = np.histogram(s, bins=edges, weights=w)
    with np.errstate(divide="ignore"):
        return -kt * np.log(hist / w.sum() / np.diff(edges))


def _estimate(estimator: Callable[[np.ndarray], np.ndarray], n: int, states: np.ndarray | None, observable: Any,
              n_bootstrap: int, seed: int | None, edges: np.ndarray, length: float, label: str,
              info: dict[str, Any]) -> PathProfile:
    est = estimate_uncertainty(estimator, n, states=states, observable=observable, n_bootstrap=n_bootstrap,
                               seed=seed)
    value = np.asarray(est.value)
    error = np.asarray(est.error)
    nb = len(edges) - 1  # the estimator's vector: F of every bin, then the barrier and the end-minus-start

    def scalar(k: int) -> Estimate:
        return Estimate(value=float(value[k]), error=float(error[k]), method=est.method,
                        n_independent=est.n_independent, samples=est.samples[:, k])

    f = np.where(np.isfinite(value[:nb]), value[:nb], np.nan)  # empty bins (p = 0): NaN, as documented
    f = f - np.nanmin(f)
    err = np.where(np.isfinite(f), error[:nb], np.nan)
    return PathProfile(0.5 * (edges[1:] + edges[:-1]), f, err, scalar(nb), length, label, info, scalar(nb + 1))


def _with_scalars(f: np.ndarray) -> np.ndarray:
    """The estimators' output: the profile, its barrier and its end-minus-start difference."""
    return np.r_[f, path_barrier(f), path_end_difference(f)]


def umbrella_profile(result: Any, path: Any | None = None, bins: int | None = None, n_bootstrap: int = 100,
                     seed: int | None = 0, max_distance: float | None = None) -> PathProfile:
    """MBAR free-energy profile along ``path`` from umbrella windows, with bootstrap errors and the barrier.

    Parameters
    ----------
    result : latentbias.bias.umbrella.UmbrellaResult
    path : array_like, shape=(m, d), optional
        Polyline in the restrained latent dimensions (default: the window centres).
    bins : int, optional
        Bins between the path's ends (default: 2 per window).
    n_bootstrap : int
        Bootstrap resamples (each re-solves MBAR).
    seed : int, optional
    max_distance : float, optional
        Tube radius around the path (units of z); default: no tube. MBAR uses all samples either way.

    Returns
    -------
    PathProfile
    """
    s_all, length = result.path_coordinate(path)
    nodes = result.centers if path is None else np.asarray(path, dtype=float)
    inside = np.ones(len(s_all), dtype=bool)
    if max_distance is not None:
        if np.any(result.period > 0):
            raise ValueError("a tube around the path needs non-periodic latent dimensions")
        inside = distance_to_path(result.all_z[:, result.restraint["dims"]], nodes, s_all) <= max_distance
    nbins = int(bins) if bins is not None else 2 * len(result.centers)
    edges = np.linspace(0.0, length, nbins + 1)
    kt = kt_kjmol(result.temperature)
    logw_full, reweight = result.reweighter()
    states = result.window_of_sample

    def estimator(idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        logw = logw_full if len(idx) == len(s_all) and np.array_equal(idx, np.arange(len(s_all))) else reweight(idx)
        f = _profile(s_all[idx], np.where(inside[idx], logw, -np.inf), edges, kt)
        return _with_scalars(f)

    prof = _estimate(estimator, len(s_all), states, s_all, n_bootstrap, seed, edges, length, "umbrella (MBAR)",
                     {"n_windows": int(len(result.centers)), "n_samples": int(len(s_all)),
                      "outside_tube": int((~inside).sum()), "tube_radius": max_distance})
    logger.info("umbrella profile along the path: barrier %.2f +- %.2f kJ/mol (%d windows, %d samples)",
                prof.barrier.value, prof.barrier.error, len(result.centers), len(s_all))
    return prof


def reweighted_profile(z: Any, logweights: Any, path: Any, temperature: float, bins: int = 40,
                       period: Any | None = None, max_distance: float | None = None, n_bootstrap: int = 100,
                       seed: int | None = 0, label: str = "reweighted sample") -> PathProfile:
    """Profile along ``path`` from a reweighted sample (frames in time order, fixed log-weights).

    Parameters
    ----------
    z : array_like, shape=(n, d)
        Latent coordinates of the frames in the path's dimensions.
    logweights : array_like, shape=(n,)
        Log-weights in the target ensemble (−inf: frame left out).
    path : array_like, shape=(m, d)
    temperature : float
        K.
    bins : int
    period : array_like, shape=(d,), optional
    max_distance : float, optional
        Tube radius: frames farther than this from the path (units of z) are left out; default: all frames.
    n_bootstrap, seed
        Block bootstrap over the frames in time order (one state: weights held fixed).
    """
    from ..bias.umbrella import path_coordinate

    zz = np.atleast_2d(np.asarray(z, dtype=float))
    logw = np.asarray(logweights, dtype=float).copy()
    p = np.asarray(path, dtype=float)
    if logw.shape != (len(zz),):
        raise ValueError(f"logweights must have shape ({len(zz)},), got {logw.shape}")
    s = path_coordinate(zz, p, period)
    length = float(path_coordinate(p[-1:], p, period)[0])
    if max_distance is not None:
        logw[distance_to_path(zz, p, s) > max_distance] = -np.inf
    used = np.flatnonzero(np.isfinite(logw))
    if used.size < 2:
        raise ValueError("fewer than 2 frames with finite log-weight near the path")
    edges = np.linspace(0.0, length, int(bins) + 1)
    kt = kt_kjmol(temperature)
    su, lw = s[used], logw[used]

    def estimator(idx: np.ndarray) -> np.ndarray:
        f = _profile(su[idx], lw[idx], edges, kt)
        return _with_scalars(f)

    return _estimate(estimator, used.size, None, su, n_bootstrap, seed, edges, length, label,
                     {"n_frames": int(used.size)})


def write_profiles(path: str | os.PathLike, profiles: list[PathProfile], overwrite: bool = True) -> Path:
    """CSV: ``s`` then ``F_<k>, error_<k>`` per profile (same bins required), with a comment naming each."""
    from ..io import write_csv

    s = profiles[0].s
    for p in profiles[1:]:
        if p.s.shape != s.shape or not np.allclose(p.s, s):
            raise ValueError("profiles must share their bins to go in one CSV")
    header, cols = ["s"], [s]
    for k, p in enumerate(profiles):
        header += [f"free_energy_{k}_kjmol", f"error_{k}_kjmol"]
        cols += [p.free_energy, p.error]
    comment = ("arc length s along the latent path (units of z); F in kJ/mol (min 0), 1-sigma block-bootstrap "
               "errors; " + "; ".join(f"{k}: {p.label} (barrier {p.barrier.value:.2f} +- {p.barrier.error:.2f})"
                                      for k, p in enumerate(profiles)))
    write_csv(path, header, np.column_stack(cols), comment=comment, overwrite=overwrite)
    return Path(path)
