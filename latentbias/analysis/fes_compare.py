"""How far a reweighted free-energy surface of two periodic angles lies from a reference surface on a grid.

The measure issue 8 holds the ala2 demo to ("a reweighted φ/ψ FES within RMSE ≤ 1.5 kJ/mol of the reference over
the region below 25 kJ/mol"), made one function so that the demo, the benchmarks and a user's own check compute
the same number:

1. each run's frames are binned on the reference grid's cells (periodic in both angles) with their weights
   exp(log w), the weights of each run normalised to 1 (several runs: independent estimates of one distribution,
   weighted equally, as their ΔF values are);
2. ``coarse`` × ``coarse`` reference cells are merged into one bin: the histogram by summing, the reference by
   Boltzmann-averaging its cells, −kT ln ⟨exp(−F/kT)⟩ (what a histogram of that bin measures; averaging F itself
   would not be);
3. the region is the bins whose coarse reference lies below ``cutoff`` above its minimum; the RMSE is taken over
   the region's bins that hold at least one frame, after removing the best constant offset (the mean difference:
   free energies are defined up to a constant), and ``coverage`` says what fraction of the region that is.

An unsampled bin has no estimate, so the RMSE alone rewards a run that stays in its basin: always read it with
the coverage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .constants import kt_kjmol, temperature_kelvin

__all__ = ["FESComparison", "compare_periodic_fes"]


@dataclass(frozen=True)
class FESComparison:
    """Result of :func:`compare_periodic_fes`.

    Attributes
    ----------
    rmse : float
        Root-mean-square deviation (kJ/mol) over the sampled bins of the region, best constant offset removed;
        NaN when no bin of the region was sampled.
    coverage : float
        Fraction of the region's bins that hold at least one frame with a finite log-weight.
    bins_compared, region_bins : int
        Sampled bins of the region, and all bins of the region.
    bin_width_deg : float
        Width of a compared bin (degrees): the reference spacing × ``coarse``.
    offset : float
        Constant (kJ/mol) subtracted from estimate − reference.
    """

    rmse: float
    coverage: float
    bins_compared: int
    region_bins: int
    bin_width_deg: float
    offset: float

    def __str__(self) -> str:
        return (f"RMSE {self.rmse:.2f} kJ/mol over {100 * self.coverage:.0f} % of the region "
                f"({self.bins_compared} of {self.region_bins} bins of {self.bin_width_deg:g} deg)")


def _reference_grid(centres_deg: Any, reference_kjmol: Any) -> tuple[np.ndarray, np.ndarray]:
    centres = np.asarray(centres_deg, dtype=float).ravel()
    ref = np.asarray(reference_kjmol, dtype=float)
    if centres.size >= 2 and np.isclose(centres[-1] - centres[0], 360.0):
        centres = centres[:-1]  # a periodic grid that repeats its first point at the end (OpenMM's convention)
        ref = ref[:-1, :-1] if ref.shape == (centres.size + 1,) * 2 else ref
    n = centres.size
    if n < 2 or ref.shape != (n, n):
        raise ValueError(f"reference_kjmol must be an (n, n) grid over the n = {n} centres (a repeated periodic end "
                         f"point allowed); got shape {ref.shape}")
    if not np.allclose(np.diff(centres), 360.0 / n):
        raise ValueError(f"centres_deg must be {n} evenly spaced points covering 360 degrees (spacing "
                         f"{360.0 / n:g}); got spacings {np.unique(np.round(np.diff(centres), 6))}")
    if not np.all(np.isfinite(ref)):
        raise ValueError("reference_kjmol holds non-finite values: give a finite free energy in every cell")
    return centres, ref


def _histogram(angles: np.ndarray, logw: np.ndarray, first_edge: float, width: float, n: int) -> np.ndarray:
    ok = np.isfinite(logw)
    hist = np.zeros((n, n))
    if not ok.any():
        return hist
    w = np.exp(logw[ok] - logw[ok].max())
    idx = np.floor((angles[ok] - first_edge) / width).astype(int) % n
    np.add.at(hist, (idx[:, 0], idx[:, 1]), w)
    return hist / hist.sum()


def compare_periodic_fes(angles_deg: np.ndarray | Sequence[np.ndarray], logweights: np.ndarray | Sequence[np.ndarray],
                         reference_kjmol: Any, centres_deg: Any, temperature: Any = 300.0, coarse: int = 3,
                         cutoff: float = 25.0) -> FESComparison:
    """Compare the reweighted FES of two periodic angles with a reference grid (the recipe in the module docstring).

    Parameters
    ----------
    angles_deg : (n_frames, 2) array, or a sequence of them (one per independent run)
        The two angles of every frame in degrees (any period-360 representation).
    logweights : (n_frames,) array, or a sequence of them matching ``angles_deg``
        Log-weights of the frames; −inf (or NaN) keeps a frame out, as in a campaign's ``frames.csv``.
    reference_kjmol : (m, m) array
        Reference free energy (kJ/mol) at the grid centres, indexed [first angle, second angle].
    centres_deg : (m,) array
        The grid centres (degrees) shared by both angles; evenly spaced over 360°, a repeated end point allowed.
    temperature : float or Quantity
        K (default 300).
    coarse : int
        Reference cells merged per compared bin along each angle; must divide m (default 3: 15° bins on a 5° grid).
    cutoff : float
        The region: coarse reference below ``cutoff`` kJ/mol above its minimum (default 25).

    Returns
    -------
    FESComparison
    """
    runs_a = [angles_deg] if isinstance(angles_deg, np.ndarray) else list(angles_deg)
    runs_w = [logweights] if isinstance(logweights, np.ndarray) else list(logweights)
    if len(runs_a) != len(runs_w) or not runs_a:
        raise ValueError(f"give one logweights array per angles array ({len(runs_a)} angle sets, {len(runs_w)} "
                         "log-weight sets)")
    centres, ref = _reference_grid(centres_deg, reference_kjmol)
    n = centres.size
    if not isinstance(coarse, (int, np.integer)) or coarse < 1 or n % coarse:
        raise ValueError(f"coarse must be a positive integer dividing the {n} grid cells, got {coarse!r}")
    if not (np.isfinite(cutoff) and cutoff > 0):
        raise ValueError(f"cutoff must be a positive energy in kJ/mol, got {cutoff!r}")
    kt = kt_kjmol(temperature_kelvin(temperature))
    width = 360.0 / n
    hists = []
    for i, (a, lw) in enumerate(zip(runs_a, runs_w)):
        a = np.asarray(a, dtype=float)
        lw = np.asarray(lw, dtype=float).ravel()
        if a.ndim != 2 or a.shape[1] != 2 or a.shape[0] != lw.size:
            raise ValueError(f"run {i}: angles_deg must be (n_frames, 2) and logweights (n_frames,); got "
                             f"{a.shape} and {lw.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"run {i}: angles_deg holds non-finite values")
        if np.any(lw == np.inf):
            raise ValueError(f"run {i}: logweights holds +inf (a frame of infinite weight): check the weights")
        hists.append(_histogram(a, np.where(np.isnan(lw), -np.inf, lw), centres[0] - width / 2, width, n))
    hist = np.mean(hists, axis=0)
    m = n // coarse
    hist = hist.reshape(m, coarse, m, coarse).sum(axis=(1, 3))
    ref_c = -kt * np.log(np.exp(-(ref - ref.min()) / kt).reshape(m, coarse, m, coarse).mean(axis=(1, 3)))
    region = ref_c - ref_c.min() < cutoff
    with np.errstate(divide="ignore"):
        est = -kt * np.log(hist)
    mask = region & np.isfinite(est)
    if not mask.any():
        return FESComparison(float("nan"), 0.0, 0, int(region.sum()), width * coarse, float("nan"))
    d = (est - ref_c)[mask]
    offset = float(d.mean())
    d = d - offset
    return FESComparison(float(np.sqrt(np.mean(d ** 2))), float(mask.sum() / region.sum()), int(mask.sum()),
                         int(region.sum()), width * coarse, offset)
