"""Independent realisations of a path's umbrella windows, and the check that they agree.

A restrained window holds the latent coordinates at its node; every other degree of freedom must equilibrate within
the window's few tens of picoseconds. When the encoder maps two conformers to the same latent point (a side chain,
a peptide-plane flip, a ring pucker the latent space does not resolve) and the window starts in the wrong one, it
need not leave it, and the window's bootstrap error — computed from that window's own samples — cannot see it
(measured on ala2: two runs of the same 20 windows from the same structures with other MD seeds gave barriers of
32.3 ± 0.5 and 44.4 ± 0.4 kJ/mol; benchmarks/RESULTS.md, "reproducible path windows").

So :func:`latentbias.pathway.transition_path` runs the windows ``realisations`` times (default 2) from the same
structures with independent seeds (:func:`realisation_seed`), pools all windows into one MBAR profile
(:func:`pool_windows`), and compares the realisations' own profiles (:func:`compare_realisations`): their barriers
and their end-minus-start differences must agree within ``n_sigma`` combined bootstrap errors. A disagreement is
logged as a warning and stored in ``path.json``: the profile is then not converged in the coordinates the encoder
does not resolve, whatever its error bar says — run longer windows or more realisations.

What the check cannot see: a bias shared by every realisation (all start from the same rebuilt structures), e.g.
windows that never leave a wrong conformer in any realisation. Agreement is necessary, not sufficient.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["RealisationCheck", "compare_realisations", "pool_windows", "realisation_seed"]

#: spawn-key offset of the realisations' base seeds (distinct from the per-window keys of ``relax.window_seeds``)
_REALISATION_KEY = 1 << 20


def realisation_seed(seed: int, realisation: int) -> int:
    """Base seed of realisation ``realisation`` of a path relaxed with base seed ``seed``.

    Realisation 0 uses ``seed`` itself (so one realisation is what :func:`~latentbias.pathway.relax.relax_path`
    gives with ``seed``, and its window files resume); realisation r ≥ 1 a child of ``numpy.random.SeedSequence``
    (seed, spawn_key=(2**20, r)) in [1, 2**31 − 1].
    """
    from ..campaign.seeds import MAX_SEED

    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or int(seed) < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(realisation, bool) or not isinstance(realisation, (int, np.integer)) or int(realisation) < 0:
        raise ValueError(f"realisation must be a non-negative integer, got {realisation!r}")
    if int(realisation) == 0:
        return int(seed)
    state = np.random.SeedSequence(int(seed), spawn_key=(_REALISATION_KEY, int(realisation))).generate_state(
        1, np.uint64)[0]
    return int(state % MAX_SEED) + 1


def pool_windows(runs: Sequence[Any]) -> Any:
    """All windows of several realisations as one :class:`~latentbias.bias.umbrella.UmbrellaResult` (windows of
    realisation 0 first; MBAR treats two windows at the same node as two states with the same bias).

    Parameters
    ----------
    runs : sequence of PathWindows
        Realisations of the same path: same nodes, force constant, temperature and restraint.
    """
    from ..bias.umbrella import UmbrellaResult

    if not runs:
        raise ValueError("no realisations to pool")
    first = runs[0].umbrella
    for k, run in enumerate(runs[1:], start=1):
        u = run.umbrella
        if u.centers.shape != first.centers.shape or not np.allclose(u.centers, first.centers) \
                or not np.allclose(u.force_constants, first.force_constants) or u.temperature != first.temperature \
                or u.restraint["dims"] != first.restraint["dims"]:
            raise ValueError(f"realisation {k} has other nodes, force constants, temperature or restrained "
                             "dimensions than realisation 0: only realisations of the same path can be pooled")
    us = [run.umbrella for run in runs]
    return UmbrellaResult(np.concatenate([u.centers for u in us]), np.concatenate([u.force_constants for u in us]),
                          [z for u in us for z in u.z], first.temperature, first.restraint,
                          [s for u in us for s in u.steps])


@dataclass
class RealisationCheck:
    """Do independent realisations of a path's windows agree?

    Attributes
    ----------
    barrier, barrier_error : numpy.ndarray, shape=(R,)
        Barrier of each realisation's umbrella profile and its 1σ bootstrap error, kJ/mol.
    end_minus_start, end_minus_start_error : numpy.ndarray, shape=(R,)
        F(end) − F(start) of each realisation's profile and its 1σ bootstrap error, kJ/mol.
    largest_deviation : float
        Largest pairwise |difference| / sqrt(σ_a² + σ_b²) over the barriers and the end differences.
    n_sigma : float
        Agreement threshold on ``largest_deviation``.
    """

    barrier: np.ndarray
    barrier_error: np.ndarray
    end_minus_start: np.ndarray
    end_minus_start_error: np.ndarray
    largest_deviation: float
    n_sigma: float

    @property
    def consistent(self) -> bool:
        """True when every pair agrees within ``n_sigma`` (False also when a difference is not finite)."""
        return bool(np.isfinite(self.largest_deviation) and self.largest_deviation <= self.n_sigma)

    def summary(self) -> dict[str, Any]:
        """JSON-ready numbers."""
        return {"n": int(len(self.barrier)), "consistent": self.consistent, "n_sigma": float(self.n_sigma),
                "largest_deviation_sigma": float(self.largest_deviation),
                "barrier_kjmol": [[float(v), float(e)] for v, e in zip(self.barrier, self.barrier_error)],
                "end_minus_start_kjmol": [[float(v), float(e)]
                                          for v, e in zip(self.end_minus_start, self.end_minus_start_error)]}

    def message(self) -> str:
        """One line: each realisation's barrier and end difference, and the verdict."""
        parts = ", ".join(f"{b:.2f} ± {eb:.2f} (end − start {d:+.2f} ± {ed:.2f})" for b, eb, d, ed in
                          zip(self.barrier, self.barrier_error, self.end_minus_start, self.end_minus_start_error))
        verdict = ("agree" if self.consistent else
                   f"DISAGREE ({self.largest_deviation:.1f} sigma > {self.n_sigma:g}): the windows have not "
                   "equilibrated in coordinates the encoder does not resolve, and the profile's error bar does not "
                   "cover that; run longer windows (--production-steps) or more realisations (--realisations)")
        return f"{len(self.barrier)} realisations of the path's windows, barriers {parts}: {verdict}"


def compare_realisations(profiles: Sequence[Any], n_sigma: float = 3.0) -> RealisationCheck:
    """Compare the umbrella profiles of independent realisations of the same windows.

    Parameters
    ----------
    profiles : sequence of PathProfile
        One profile per realisation (same path, bins and tube), each with ``end_minus_start``.
    n_sigma : float, default 3.0
        Pairs agree when |a − b| ≤ n_sigma · sqrt(σ_a² + σ_b²), for the barrier and for F(end) − F(start).

    Returns
    -------
    RealisationCheck
    """
    if len(profiles) < 2:
        raise ValueError(f"comparing realisations needs at least 2 profiles, got {len(profiles)}")
    if not float(n_sigma) > 0:
        raise ValueError(f"n_sigma must be positive, got {n_sigma!r}")
    if any(p.end_minus_start is None for p in profiles):
        raise ValueError("every profile needs its end_minus_start estimate (umbrella_profile gives it)")
    b = np.array([p.barrier.value for p in profiles])
    eb = np.array([p.barrier.error for p in profiles])
    d = np.array([p.end_minus_start.value for p in profiles])
    ed = np.array([p.end_minus_start.error for p in profiles])
    worst = 0.0
    for i, j in itertools.combinations(range(len(profiles)), 2):
        for v, e in ((b, eb), (d, ed)):
            with np.errstate(divide="ignore", invalid="ignore"):
                z = 0.0 if v[i] == v[j] else abs(v[i] - v[j]) / np.sqrt(e[i] ** 2 + e[j] ** 2)
            worst = float("nan") if not np.isfinite(z) or not np.isfinite(worst) else max(worst, float(z))
    return RealisationCheck(b, eb, d, ed, worst, float(n_sigma))
