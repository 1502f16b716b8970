"""Umbrella sampling along latent paths with one restraint force, analysed with MBAR.

The windows are simulated one after another in the same Context: moving a window is ``Context.setParameter`` on
the :class:`~latentbias.bias.restraint.LatentRestraint` globals, not a rebuild. With ``outputDir`` every finished
window is written atomically to ``window_<k>.npz``: a rerun skips finished windows (resume after a crash), and
several processes can split the windows (``run(windows=...)``) and share the folder;
:meth:`UmbrellaResult.load` gathers them.

Analysis: the reduced potential of every frame under every window, ``u_kn = β V_k(z_n)``, is evaluated exactly
from the stored latent coordinates (the restraint is the only difference between states), and MBAR gives the
unbiased per-frame weights and window free energies. Error bars of profiles and ΔF come from a stratified block
bootstrap over the windows (blocks of ≈ 3 statistical inefficiencies, contiguous in time within each window,
MBAR re-solved on every resample; :mod:`latentbias.analysis.uncertainty`). The path coordinate honours periodic
latent dimensions (minimum image).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from ..analysis.constants import kt_kjmol
from ..io import load_npz, save_npz, write_json
from ..validation import deprecated_attribute, renamed_keywords
from .restraint import LatentRestraint, restraint_energy

logger = logging.getLogger(__name__)

__all__ = ["straight_path", "path_coordinate", "LatentUmbrellaSampling", "UmbrellaResult"]


def straight_path(start: Any, end: Any, n_windows: int) -> np.ndarray:
    """Window centres evenly spaced on the segment start -> end (inclusive), shape=(n_windows, d)."""
    a = np.atleast_1d(np.asarray(start, dtype=float))
    b = np.atleast_1d(np.asarray(end, dtype=float))
    if a.shape != b.shape:
        raise ValueError(f"start and end must have the same length, got {a.shape} and {b.shape}")
    if int(n_windows) < 2:
        raise ValueError("a path needs at least 2 windows")
    t = np.linspace(0.0, 1.0, int(n_windows))[:, None]
    return a + t * (b - a)


def _minimum_image(delta: np.ndarray, period: np.ndarray | None) -> np.ndarray:
    """Wrap displacements (shape=(..., d)) into [−period/2, period/2) on periodic dimensions (period > 0)."""
    if period is None:
        return delta
    periodic = period > 0
    if not np.any(periodic):
        return delta
    out = delta.copy()
    out[..., periodic] -= period[periodic] * np.round(out[..., periodic] / period[periodic])
    return out


def path_coordinate(z: Any, path: Any, period: Any | None = None) -> np.ndarray:
    """Arc length (units of z) of the projection of each point onto a polyline path.

    Parameters
    ----------
    z : array_like, shape=(n, d)
    path : array_like, shape=(m, d), m >= 2
        Polyline vertices (e.g. the window centres). On periodic dimensions the vertices may be given wrapped or
        unwrapped (e.g. 2.6 … 3.6 rad on a dimension of period 2π); each segment is taken as its minimum image,
        so segments must be shorter than half a period.
    period : array_like, shape=(d,), optional
        Period of every dimension (units of z); 0 (or None for all) = not periodic. Displacements between points
        and vertices use the minimum image, so a sample that wrapped (e.g. z = −3.0 rad near a vertex at
        3.2 rad) projects onto the path where it is.

    Returns
    -------
    numpy.ndarray, shape=(n,)
        0 at ``path[0]``, total length at ``path[-1]``; points are projected onto the nearest segment.
    """
    pts = np.atleast_2d(np.asarray(z, dtype=float))
    p = np.atleast_2d(np.asarray(path, dtype=float))
    if p.shape[0] < 2 or p.shape[1] != pts.shape[1]:
        raise ValueError(f"path must have shape (m >= 2, {pts.shape[1]}), got {p.shape}")
    per = None
    if period is not None:
        per = np.asarray(period, dtype=float).reshape(-1)
        if per.shape != (p.shape[1],) or not np.all(np.isfinite(per)) or np.any(per < 0):
            raise ValueError(f"period must hold {p.shape[1]} values >= 0 (0 = not periodic), got {period!r}")
    seg = _minimum_image(p[1:] - p[:-1], per)
    seg_len = np.linalg.norm(seg, axis=1)
    if np.any(seg_len == 0):
        raise ValueError("path has repeated consecutive points")
    if per is not None and np.any(np.abs(seg[:, per > 0]) >= 0.5 * per[per > 0] - 1e-12):
        raise ValueError("path segments must be shorter than half a period on periodic dimensions; add vertices")
    offset = np.concatenate([[0.0], np.cumsum(seg_len)])
    rel = _minimum_image(pts[:, None, :] - p[None, :-1], per)  # (n, m-1, d) from each segment's start
    t = np.einsum("nmd,md->nm", rel, seg) / seg_len**2
    lo, hi = np.zeros(len(seg)), np.ones(len(seg))
    lo[0], hi[-1] = -np.inf, np.inf  # points before the start / beyond the end extrapolate the end segments
    t_in = np.clip(t, lo, hi)
    dist = np.linalg.norm(rel - t_in[..., None] * seg[None], axis=2)
    best = np.argmin(dist, axis=1)
    idx = np.arange(len(pts))
    return offset[best] + t_in[idx, best] * seg_len[best]


@dataclass
class UmbrellaResult:
    """Samples of all windows and the restraint that produced them.

    Attributes
    ----------
    centers : numpy.ndarray, shape=(K, d)
    force_constants : numpy.ndarray, shape=(K, d)
        kJ/mol per (unit of z)².
    z : list of numpy.ndarray, each shape=(n_k, latent_dim)
        Latent coordinates sampled in each window.
    temperature : float
        K.
    restraint : dict
        :meth:`LatentRestraint.parameters` (dims, walls, periods).
    steps : list of numpy.ndarray
        Simulation step of each sample.
    """

    centers: np.ndarray
    force_constants: np.ndarray
    z: list[np.ndarray]
    temperature: float
    restraint: dict[str, Any]
    steps: list[np.ndarray] = field(default_factory=list)

    @property
    def n_samples(self) -> np.ndarray:
        return np.array([len(zk) for zk in self.z])

    @property
    def window_of_sample(self) -> np.ndarray:
        """Window index of every sample of :attr:`all_z`, shape=(N,)."""
        return np.repeat(np.arange(len(self.z)), self.n_samples)

    @property
    def period(self) -> np.ndarray:
        """Period of every restrained dimension (0 = not periodic), shape=(d,)."""
        period = self.restraint.get("period")
        d = len(self.restraint["dims"])
        return np.zeros(d) if period is None else np.asarray(period, dtype=float).reshape(d)

    @property
    def all_z(self) -> np.ndarray:
        """All samples concatenated in window order, shape=(N, latent_dim)."""
        return np.concatenate(self.z)

    def reduced_potentials(self) -> np.ndarray:
        """u_kn = β V_k(z_n) of every sample n under every window k, shape=(K, N)."""
        r = self.restraint
        dims = r["dims"]
        zz = self.all_z[:, dims]
        beta = 1.0 / kt_kjmol(self.temperature)
        arrays = {k: np.asarray(r[k], dtype=float) for k in ("lower_walls", "upper_walls", "wall_force_constant", "period")}
        return np.stack([
            beta * restraint_energy(zz.copy(), c, k, arrays["lower_walls"], arrays["upper_walls"],
                                    arrays["wall_force_constant"], arrays["period"])
            for c, k in zip(self.centers, self.force_constants)
        ])

    def mbar(self, uncertainty: str = "asymptotic", n_bootstrap: int = 200, seed: int | None = 0
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """MBAR on all windows.

        Parameters
        ----------
        uncertainty : {"asymptotic", "bootstrap"}
            ``df_k`` from pymbar's asymptotic formula (frames taken as independent: too small for correlated
            samples) or from the stratified block bootstrap (blocks of ≈ 3 g within each window, g of the
            restrained latent coordinates; MBAR re-solved per resample).
        n_bootstrap : int, default 200
            Bootstrap resamples (``uncertainty="bootstrap"``).
        seed : int or None, default 0
            Seed of the bootstrap.

        Returns
        -------
        logweights : numpy.ndarray, shape=(N,)
            Normalised log-weights of the samples in the unbiased ensemble.
        f_k, df_k : numpy.ndarray, shape=(K,)
            Dimensionless window free energies relative to window 0, and their 1σ uncertainties.
        """
        from ..analysis.reweight import mbar_logweights

        if np.any(self.n_samples == 0):
            raise ValueError("some windows have no samples; run them first")
        return mbar_logweights(self.reduced_potentials(), self.n_samples, uncertainty=uncertainty,
                               observable=self._observable(), n_bootstrap=n_bootstrap, seed=seed)

    def _observable(self) -> np.ndarray:
        """Restrained latent coordinates, periodic ones as (cos, sin) so that wrapping is not a jump."""
        zz = self.all_z[:, self.restraint["dims"]]
        per = self.period
        cols = []
        for j in range(zz.shape[1]):
            if per[j] > 0:
                phase = 2.0 * np.pi * zz[:, j] / per[j]
                cols += [np.cos(phase), np.sin(phase)]
            else:
                cols.append(zz[:, j])
        return np.column_stack(cols)

    def reweighter(self):
        """``indices -> log-weights``: MBAR re-solved on a selection of samples (see
        :func:`latentbias.analysis.uncertainty.mbar_reweighter`); used for bootstrap error bars."""
        from ..analysis.uncertainty import mbar_reweighter

        logw, f_k, _ = self.mbar(uncertainty="none")
        return logw, mbar_reweighter(self.reduced_potentials(), self.window_of_sample, initial_f_k=f_k)

    def path_coordinate(self, path: Any | None = None) -> tuple[np.ndarray, float]:
        """Arc length of every sample along ``path`` (default: the window centres) and the path length.

        Periodic restrained dimensions are handled by minimum image (:func:`path_coordinate`).
        """
        p = self.centers if path is None else np.asarray(path, dtype=float)
        s = path_coordinate(self.all_z[:, self.restraint["dims"]], p, self.period)
        length = float(path_coordinate(p[-1:], p, self.period)[0])
        return s, length

    def free_energy_along_path(self, path: Any | None = None, bins: int = 40, *, n_bootstrap: int = 200,
                               seed: int | None = 0):
        """FES (kJ/mol) along the polyline ``path`` (default: the window centres) from MBAR weights.

        Returns a :class:`latentbias.analysis.FreeEnergySurface` whose coordinate is the arc length along the
        path (units of z), binned between the path's two ends. Error bars: stratified block bootstrap over the
        windows with MBAR re-solved on every resample (:mod:`latentbias.analysis.uncertainty`).

        Parameters
        ----------
        path : array_like, shape=(n_points, n_restrained_dims), optional
            Polyline in the restrained latent dimensions; default: the window centres.
        bins : int, default 40
            Bins along the arc length.
        n_bootstrap : int, default 200
            Bootstrap resamples.
        seed : int or None, default 0
            Seed of the bootstrap.
        """
        from ..analysis.fes import free_energy_surface

        logw, reweight = self.reweighter()
        s, length = self.path_coordinate(path)
        return free_energy_surface(s, logw, bins=bins, range=(0.0, length), temperature=self.temperature,
                                   states=self.window_of_sample, reweight=reweight, n_bootstrap=n_bootstrap,
                                   seed=seed)

    def free_energy_2d(self, dims: Sequence[int] = (0, 1), bins: int = 30, range: Any | None = None,
                       *, n_bootstrap: int = 200, seed: int | None = 0):
        """FES (kJ/mol) on a 2-D grid of two latent components from MBAR weights (bootstrap errors as in
        :meth:`free_energy_along_path`).

        Parameters
        ----------
        dims : sequence of two int, default (0, 1)
            Latent components of the two axes.
        bins : int or sequence of int, default 30
            Bins per axis.
        range : ((lo0, hi0), (lo1, hi1)), optional
            Histogram range in units of z; default: the samples' min and max.
        n_bootstrap : int, default 200
            Bootstrap resamples.
        seed : int or None, default 0
            Seed of the bootstrap.
        """
        from ..analysis.fes import free_energy_surface

        logw, reweight = self.reweighter()
        return free_energy_surface(self.all_z[:, list(dims)], logw, bins=bins, range=range,
                                   temperature=self.temperature, states=self.window_of_sample, reweight=reweight,
                                   n_bootstrap=n_bootstrap, seed=seed)

    def free_energy_difference(self, in_a: Any, in_b: Any, *, n_bootstrap: int = 200, seed: int | None = 0):
        """ΔF = F_B − F_A (kJ/mol) between two regions of latent space, with a bootstrap error.

        Parameters
        ----------
        in_a, in_b : array_like of bool, shape=(N,), or callable
            Membership of every sample (order of :attr:`all_z`), or a function of ``all_z`` (shape=(N, latent_dim))
            returning it.
        n_bootstrap : int, default 200
            Bootstrap resamples.
        seed : int or None, default 0
            Seed of the bootstrap.

        Returns
        -------
        latentbias.analysis.Estimate
            Value and 1σ error (stratified block bootstrap over windows, MBAR re-solved per resample; block
            length from the statistical inefficiency of the region indicator and the restrained coordinates).
        """
        from ..analysis.fes import basin_free_energy_estimate

        logw, reweight = self.reweighter()
        z = self.all_z
        a = in_a(z) if callable(in_a) else in_a
        b = in_b(z) if callable(in_b) else in_b
        return basin_free_energy_estimate(z, logw, np.asarray(a), np.asarray(b), self.temperature,
                                          states=self.window_of_sample, reweight=reweight, n_bootstrap=n_bootstrap,
                                          seed=seed, observable=self._observable())

    @classmethod
    def load(cls, output_dir: str | os.PathLike) -> "UmbrellaResult":
        """Gather the finished windows written by :meth:`LatentUmbrellaSampling.run`."""
        import json

        folder = Path(output_dir)
        info = json.loads((folder / "umbrella.json").read_text())
        zs, steps = [], []
        for k in range(len(info["centers"])):
            path = folder / f"window_{k:03d}.npz"
            if not path.is_file():
                raise FileNotFoundError(f"window {k} has not finished ({path} missing)")
            data = load_npz(path)
            zs.append(data["z"])
            steps.append(data["step"])
        return cls(np.asarray(info["centers"]), np.asarray(info["force_constants"]), zs, info["temperature"],
                   info["restraint"], steps)


class LatentUmbrellaSampling:
    """Run umbrella windows along latent coordinates in one Simulation.

    Parameters
    ----------
    simulation : openmm.app.Simulation
        Its System contains ``restraint.force``.
    restraint : LatentRestraint
    centers : array_like, shape=(K, d)
        Window centres (e.g. :func:`straight_path`).
    forceConstants : float or array_like, shape=(d,) or (K, d)
        kJ/mol per (unit of z)².
    temperature : float (K) or Quantity
    outputDir : str or path-like, optional
        Folder for ``umbrella.json`` and per-window ``window_<k>.npz`` (enables resume and multi-process runs).

    Notes
    -----
    OpenMM-facing, so camelCase like :class:`LatentRestraint`; the snake_case keywords and attributes of earlier
    releases (``force_constants``, ``output_dir``; ``run(steps_per_window=, sample_interval=,
    equilibration_steps=)``) still work and warn (DeprecationWarning).
    """

    @renamed_keywords(force_constants="forceConstants", output_dir="outputDir")
    def __init__(
        self,
        simulation: Any,
        restraint: LatentRestraint,
        centers: Any,
        forceConstants: Any,
        temperature: Any,
        outputDir: str | os.PathLike | None = None,
    ):
        from openmm import unit

        from ..validation import strip_unit

        self.simulation = simulation
        self.restraint = restraint
        self.centers = np.atleast_2d(np.asarray(centers, dtype=float))
        if self.centers.shape[1] != restraint.ndim:
            raise ValueError(f"centers must have shape (K, {restraint.ndim}), got {self.centers.shape}")
        k = np.asarray(forceConstants, dtype=float)
        self.forceConstants = np.broadcast_to(k, self.centers.shape).copy()
        if np.any(self.forceConstants <= 0):
            raise ValueError(f"umbrella forceConstants must be positive, got {k.tolist()}")
        self.temperature = float(strip_unit(temperature, unit.kelvin))
        self.outputDir = None if outputDir is None else Path(outputDir)
        if self.outputDir is not None:
            self.outputDir.mkdir(parents=True, exist_ok=True)
            info = {"centers": self.centers.tolist(), "force_constants": self.forceConstants.tolist(),
                    "temperature": self.temperature, "restraint": restraint.parameters()}
            info_path = self.outputDir / "umbrella.json"
            if info_path.exists():
                import json

                old = json.loads(info_path.read_text())
                keep = ("centers", "force_constants", "temperature")
                if any(np.shape(old[key]) != np.shape(info[key]) or not np.allclose(old[key], info[key])
                       for key in keep):
                    raise ValueError(f"{info_path} describes different windows; use another outputDir")
            else:
                write_json(info_path, info)

    force_constants = deprecated_attribute("forceConstants", "force_constants")
    output_dir = deprecated_attribute("outputDir", "output_dir")

    def _window_path(self, k: int) -> Path | None:
        return None if self.outputDir is None else self.outputDir / f"window_{k:03d}.npz"

    @renamed_keywords(steps_per_window="stepsPerWindow", sample_interval="sampleInterval",
                      equilibration_steps="equilibrationSteps")
    def run(
        self,
        stepsPerWindow: int,
        sampleInterval: int,
        equilibrationSteps: int = 0,
        windows: Sequence[int] | None = None,
        progress: bool = True,
    ) -> UmbrellaResult | None:
        """Simulate the windows (all, or the given subset) in order.

        Parameters
        ----------
        stepsPerWindow : int
            Production steps per window.
        sampleInterval : int
            Steps between recorded samples.
        equilibrationSteps : int, default 0
            Steps discarded after moving to a window.
        windows : sequence of int, optional
            Subset of windows for this process (others may run elsewhere with the same ``outputDir``).
        progress : bool

        Returns
        -------
        UmbrellaResult or None
            The result when all windows are available (run here or found in ``outputDir``), else None.
        """
        from openmm import unit

        context = self.simulation.context
        todo = list(range(len(self.centers))) if windows is None else [int(k) for k in windows]
        n_samples = int(stepsPerWindow) // int(sampleInterval)
        if n_samples <= 0:
            raise ValueError(f"stepsPerWindow must be at least sampleInterval, got {stepsPerWindow} and "
                             f"{sampleInterval}")
        results: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        periodic = self.simulation.system.usesPeriodicBoundaryConditions()
        for k in tqdm(todo, desc="umbrella windows", unit="window", disable=(not progress) or None):
            path = self._window_path(k)
            if path is not None and path.is_file():
                logger.info("window %d already done (%s): skipped", k, path)
                continue
            self.restraint.setCenters(context, self.centers[k])
            self.restraint.setForceConstants(context, self.forceConstants[k])
            if equilibrationSteps:
                self.simulation.step(int(equilibrationSteps))
            zs, steps = [], []
            for _ in range(n_samples):
                self.simulation.step(int(sampleInterval))
                st = context.getState(getPositions=True)
                box = st.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer) if periodic else None
                zs.append(self.restraint.model.encode(st.getPositions(asNumpy=True).value_in_unit(unit.nanometer), box))
                steps.append(self.simulation.currentStep)
            results[k] = (np.asarray(zs), np.asarray(steps))
            if path is not None:
                save_npz(path, z=results[k][0], step=results[k][1], center=self.centers[k],
                         force_constant=self.forceConstants[k])
            logger.info("window %d/%d at %s: %d samples", k + 1, len(self.centers),
                        np.array2string(self.centers[k], precision=3), n_samples)
        if self.outputDir is not None:
            try:
                return UmbrellaResult.load(self.outputDir)
            except FileNotFoundError:
                return None
        if len(results) != len(self.centers):
            return None
        order = sorted(results)
        return UmbrellaResult(self.centers, self.forceConstants, [results[k][0] for k in order], self.temperature,
                              self.restraint.parameters(), [results[k][1] for k in order])
