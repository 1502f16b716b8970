"""Transition paths from sampled latent space: the MFEP on the latent FES, decoded and relaxed structures along it,
and a physical free-energy profile from umbrella windows at its nodes.

Steps of :func:`transition_path` (:func:`transition_path_from_rundir` reads a campaign's run directory):

1. the latent FES from the reweighted frames (:func:`latentbias.analysis.fes.free_energy_surface`, block-bootstrap
   errors), its basins and the minimum free-energy path between two states (zero-temperature string,
   :mod:`latentbias.analysis.paths`) with its sensitivity to the FES's errors;
2. each node is decoded (the model's coordinate decoder) and completed with the other atoms of the nearest sampled
   frame, superposed residue by residue onto the decoded atoms (:mod:`latentbias.pathway.rebuild`);
3. restrained MD at every node relaxes the structures and samples umbrella windows (:mod:`latentbias.pathway.relax`),
   ``realisations`` times with independent seeds (default 2);
4. profiles along the path: MBAR over the windows of all realisations, and the campaign's own reweighted frames
   projected on the path (:mod:`latentbias.pathway.profile`); the realisations' own profiles must agree
   (:mod:`latentbias.pathway.realisations`: a warning when they do not); physical checks of the relaxed structures
   (:mod:`latentbias.pathway.checks`).
5. the two barriers are compared (``info["profiles_check"]``). Both measure the free energy along the same latent
   path, one from the windows, one from the campaign's frames, so they agree within their errors when the latent
   coordinates describe the transition. When the latent space maps different structures onto the same latent
   values (one basin aliased onto the transition region, say), the windows, started from the decoded structures,
   stay in one of them while the campaign's frames at those latent values are mostly the others, and the two
   barriers differ by many σ: a warning says that neither is the barrier of the transition, and the plot shows it.

:func:`write_path_outputs` writes ``path.pdb`` (one MODEL per node), ``path.dcd``, ``path.csv`` (per node),
``profile.csv``, ``profile.png`` and ``path.json``.

Latent spaces of 2 or 3 dimensions (the FES is gridded in the full latent space: a model with more dimensions is
refused with a ValueError — a histogram in d > 3 needs bins^d cells).

Endpoints (:func:`resolve_endpoint`): ``"z0,z1"`` or ``"z0,z1,z2"`` (a latent point), ``"frame:N"`` (frame N of the samples, in the
order of the run directory's ``weights.csv``), ``"basin:K"`` (K-th basin of the latent FES, lowest first) or
``"auto"`` (start: the lowest basin; end: the lowest basin other than the start's).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..analysis.constants import kt_kjmol
from ..analysis.fes import FreeEnergySurface, free_energy_surface
from ..analysis.paths import Basins, FreeEnergyPath, find_basins, minimum_free_energy_path, path_sensitivity
from .checks import StructureCheck, bond_deviations, check_structure
from .profile import PathProfile, reweighted_profile, umbrella_profile, write_profiles
from .realisations import RealisationCheck, compare_realisations, pool_windows, realisation_seed
from .rebuild import nearest_frames, rebuild_structure, reconstruction_rmsd
from .relax import PathWindows, relax_path

logger = logging.getLogger(__name__)

__all__ = ["LatentSamples", "TransitionPath", "compare_profiles", "latent_fes", "resolve_endpoint",
           "samples_from_rundir", "transition_path", "transition_path_from_rundir", "write_path_outputs"]


@dataclass
class LatentSamples:
    """Sampled frames in a model's latent space, with log-weights in the target ensemble.

    Attributes
    ----------
    model : latentbias.export.LatentModelFile
        With a coordinate decoder.
    system : openmm.System
    topology : openmm.app.Topology
    positions : numpy.ndarray, shape=(n_frames, n_atoms, 3), nm
    z : numpy.ndarray, shape=(n_frames, latent_dim)
    logweights : numpy.ndarray, shape=(n_frames,)
        −inf for frames outside the estimate (they still serve as templates).
    temperature : float
        K.
    source : str
    heldout : numpy.ndarray of bool, shape=(n_frames,), optional
        Frames the model was not trained on (for the decoder's held-out reconstruction RMSD).
    """

    model: Any
    system: Any
    topology: Any
    positions: np.ndarray
    z: np.ndarray
    logweights: np.ndarray
    temperature: float
    source: str = ""
    heldout: np.ndarray | None = None


def samples_from_rundir(rundir: str | os.PathLike) -> LatentSamples:
    """All frames of a campaign, their latent coordinates under the final encoder and the final log-weights
    (``weights.csv``)."""
    from ..campaign.estimate import final_weights
    from ..campaign.report import load_campaign

    rundir = Path(rundir)
    if not (rundir / "config.json").is_file():
        raise ValueError(f"{rundir} is not a campaign run directory (no config.json); run `latentbias run` first")
    campaign, last = load_campaign(rundir)
    frames = campaign.all_frames(last)
    q = campaign.encoder_round(last)
    model = campaign.model(q).file
    z = campaign.encode(q, frames)
    logw = final_weights(rundir)["logweight"]
    if logw.shape != (len(z),):
        raise ValueError(f"{rundir / 'weights.csv'} has {len(logw)} frames but the run directory has {len(z)}; "
                         "rerun the campaign's last round to refresh it")
    system, topology, _ = campaign.system()
    return LatentSamples(model, system, topology, frames["positions"].astype(float), z, logw,
                         float(campaign.cfg.md.temperature), str(rundir), heldout=frames["round"] > q)


def latent_fes(samples: LatentSamples, bins: int = 40, n_bootstrap: int = 50, seed: int = 0) -> FreeEnergySurface:
    """Latent FES (2-D or 3-D: all latent dimensions) of the frames in the estimate, block-bootstrap errors
    (frames in time order, weights held fixed); the grid (``bins`` per dimension) spans all frames."""
    d = samples.z.shape[1]
    if d not in (2, 3):
        raise ValueError(f"transition paths need a latent space of 2 or 3 dimensions, got {d} ({samples.source}): a "
                         "gridded latent FES in more dimensions needs bins^d cells; train the model with latent_dim "
                         "2 or 3")
    used = np.isfinite(samples.logweights)
    if used.sum() < 10:
        raise ValueError(f"only {int(used.sum())} frames have a finite log-weight ({samples.source}): too few for a "
                         "free-energy surface")
    z = samples.z
    lo, hi = z.min(0), z.max(0)
    pad = 0.02 * (hi - lo)
    rng = [(float(lo[i] - pad[i]), float(hi[i] + pad[i])) for i in range(d)]
    return free_energy_surface(z[used], samples.logweights[used], bins=bins, range=rng,
                               temperature=samples.temperature, error_method="bootstrap", observable=z[used],
                               n_bootstrap=n_bootstrap, seed=seed)


def resolve_endpoint(spec: str, samples: LatentSamples, basins: Basins, fes: FreeEnergySurface,
                     other: np.ndarray | None = None) -> np.ndarray:
    """Latent point (all latent dimensions) of an endpoint spec (module docstring); ``other``: the already resolved
    start, for ``"auto"`` as the end."""
    text = str(spec).strip()
    if text == "auto":
        if other is None:
            return basins.minima[0].copy()
        cell = tuple(int(np.argmin(np.abs(c - v))) for c, v in zip(fes.centers, other))
        label = basins.labels[cell]
        for k in range(len(basins.minima)):
            if k != label:
                return basins.minima[k].copy()
        raise ValueError("the latent FES has a single basin: give the end state explicitly (--to)")
    if text.startswith("basin:"):
        try:
            k = int(text.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"endpoint {spec!r}: expected basin:K with an integer K") from None
        if not 0 <= k < len(basins.minima):
            n = len(basins.minima)
            raise ValueError(f"endpoint {spec!r}: the latent FES has {n} basins (0..{n - 1})")
        return basins.minima[k].copy()
    if text.startswith("frame:"):
        try:
            n = int(text.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"endpoint {spec!r}: expected frame:N with an integer N") from None
        if not 0 <= n < len(samples.z):
            raise ValueError(f"endpoint {spec!r}: there are {len(samples.z)} frames (0..{len(samples.z) - 1})")
        return samples.z[n].copy()
    try:
        values = np.array([float(v) for v in text.split(",")])
    except ValueError:
        raise ValueError(f"endpoint {spec!r}: give 'z0,z1[,z2]', 'frame:N', 'basin:K' or 'auto'") from None
    d = samples.z.shape[1]
    if values.shape != (d,) or not np.all(np.isfinite(values)):
        names = ",".join(f"z{i}" for i in range(d))
        raise ValueError(f"endpoint {spec!r}: a point of this {d}-D latent space needs {d} finite numbers '{names}'")
    return values


@dataclass
class TransitionPath:
    """Everything :func:`transition_path` computed (see the module docstring).

    Attributes
    ----------
    string : latentbias.analysis.paths.FreeEnergyPath
        Nodes on the latent FES (all latent dimensions, 2 or 3) and the smoothed latent F along them.
    sensitivity : dict
        :func:`~latentbias.analysis.paths.path_sensitivity` output (node spread, barrier spread).
    decoded : numpy.ndarray, shape=(K, m, 3)
        Decoded atoms of every node, nm.
    rebuilt : numpy.ndarray, shape=(K, n_atoms, 3)
        Full structures before relaxation, nm.
    templates : numpy.ndarray of int, shape=(K,)
        Frame used to complete each node.
    windows : PathWindows
        Relaxed structures and umbrella samples of the first realisation.
    umbrella : PathProfile
        MBAR profile along the path, all realisations' windows pooled.
    reweighted : PathProfile
        The samples' own reweighted profile along the path.
    checks : list of StructureCheck
        Of the relaxed structures.
    info : dict
    realisations : list of PathWindows
        Every realisation of the windows (``realisations[0]`` is ``windows``).
    realisation_profiles : list of PathProfile
        Each realisation's own MBAR profile (empty with one realisation).
    realisation_check : RealisationCheck, optional
        Do the realisations agree (None with one realisation)?
    """

    samples: LatentSamples
    fes: FreeEnergySurface
    basins: Basins
    start: np.ndarray
    end: np.ndarray
    string: FreeEnergyPath
    sensitivity: dict[str, Any]
    decoded: np.ndarray
    rebuilt: np.ndarray
    templates: np.ndarray
    windows: PathWindows
    umbrella: PathProfile
    reweighted: PathProfile
    checks: list[StructureCheck]
    info: dict[str, Any] = field(default_factory=dict)
    realisations: list[PathWindows] = field(default_factory=list)
    realisation_profiles: list[PathProfile] = field(default_factory=list)
    realisation_check: RealisationCheck | None = None

    def summary(self) -> dict[str, Any]:
        """JSON-ready numbers: barriers (umbrella, reweighted samples, latent FES string), checks, settings."""
        dec = self.samples.model.metadata.get("decoder") or {}
        return {
            "source": self.samples.source,
            "start": self.start.tolist(), "end": self.end.tolist(),
            "n_nodes": int(len(self.string.nodes)),
            "string": {"converged": bool(self.string.converged), "iterations": int(self.string.iterations),
                       "barrier_kjmol": float(self.string.barrier),
                       "barrier_spread_kjmol": float(self.sensitivity.get("barrier_std", float("nan"))),
                       "max_node_spread": float(np.max(self.sensitivity.get("node_spread", [np.nan])))},
            "umbrella_barrier_kjmol": [float(self.umbrella.barrier.value), float(self.umbrella.barrier.error)],
            "reweighted_barrier_kjmol": [float(self.reweighted.barrier.value), float(self.reweighted.barrier.error)],
            "decoder_validation_rmsd_angstrom": dec.get("validation_rmsd_angstrom"),
            "decoder_heldout_rmsd_angstrom": self.info.get("heldout_rmsd_angstrom"),
            "max_bond_deviation_angstrom": float(max(c.max_bond_deviation for c in self.checks) * 10.0),
            "clashes": int(sum(c.n_clashes for c in self.checks)),
            "all_physical": bool(all(c.physical for c in self.checks)),
            "umbrella_end_minus_start_kjmol": None if self.umbrella.end_minus_start is None else
            [float(self.umbrella.end_minus_start.value), float(self.umbrella.end_minus_start.error)],
            "realisations": {"n": max(1, len(self.realisations))} if self.realisation_check is None
            else self.realisation_check.summary(),
            "relax": self.windows.settings,
            **self.info,
        }


def compare_profiles(umbrella: PathProfile, reweighted: PathProfile, n_sigma: float = 3.0) -> dict[str, Any]:
    """Do the umbrella and the reweighted-frames barriers along one path agree (module docstring, step 5)?

    Parameters
    ----------
    umbrella, reweighted : PathProfile
        Profiles along the same path and tube, with 1σ bootstrap errors on their barriers (kJ/mol).
    n_sigma : float, default 3.0
        They agree when |b_u − b_r| ≤ n_sigma · sqrt(σ_u² + σ_r²).

    Returns
    -------
    dict
        ``deviation_sigma`` (|b_u − b_r| / sqrt(σ_u² + σ_r²); NaN when an error is not finite or both are 0),
        ``difference_kjmol`` (b_u − b_r), ``n_sigma`` and ``consistent`` (False also when the deviation is NaN).
    """
    if not float(n_sigma) > 0:
        raise ValueError(f"n_sigma must be positive, got {n_sigma!r}")
    diff = float(umbrella.barrier.value - reweighted.barrier.value)
    err = float(np.hypot(umbrella.barrier.error, reweighted.barrier.error))
    dev = abs(diff) / err if np.isfinite(err) and err > 0 else float("nan")
    return {"deviation_sigma": float(dev), "difference_kjmol": diff, "n_sigma": float(n_sigma),
            "consistent": bool(np.isfinite(dev) and dev <= n_sigma)}


def transition_path(samples: LatentSamples, start: str = "auto", end: str = "auto", n_nodes: int = 16, *,
                    bins: int = 40, smooth: float = 1.0, fixed_ends: bool = False, sensitivity_samples: int = 10,
                    n_bootstrap: int = 100, seed: int = 0, tube_widths: float = 2.0,
                    output_dir: str | os.PathLike | None = None, realisations: int = 2,
                    consistency_sigma: float = 3.0, **relax_kwargs: Any) -> TransitionPath:
    """MFEP, structures and umbrella profile between two states of ``samples`` (module docstring).

    Parameters
    ----------
    samples : LatentSamples
    start, end : str
        Endpoint specs (:func:`resolve_endpoint`).
    n_nodes : int
        Nodes of the string = umbrella windows = structures.
    bins : int
        Latent FES grid per dimension.
    smooth : float
        Gaussian smoothing of the latent FES for the string, grid spacings.
    fixed_ends : bool
        Keep the end nodes at the given points (default: they relax to the nearest minimum; when both slide into
        the same basin, the string is run again with fixed ends, with a warning).
    sensitivity_samples : int
        FES resamples for the path's sensitivity (0: skip).
    n_bootstrap : int
        Bootstrap resamples of the profiles and the latent FES.
    seed : int
    tube_widths : float
        Radius of the tube around the path the profiles are measured in, in units of the windows' thermal width
        sqrt(kT/k) (:mod:`latentbias.pathway.profile`).
    output_dir : path, optional
        Folder for the per-window files (resume); realisation r ≥ 1 in its subfolder ``realisation_<r>``.
    realisations : int, default 2
        Independent runs of the windows from the same structures (:func:`~latentbias.pathway.realisations
        .realisation_seed`); the profile pools them, and their own profiles are compared
        (:func:`~latentbias.pathway.realisations.compare_realisations`). 1 skips the check (half the MD).
    consistency_sigma : float, default 3.0
        Agreement threshold of the realisations, and of the umbrella and reweighted-frames barriers
        (:func:`compare_profiles`), combined bootstrap errors.
    **relax_kwargs
        Passed to :func:`~latentbias.pathway.relax.relax_path` (``platform``, ``production_steps``,
        ``force_constant`` ...).
    """
    model = samples.model
    if not model.has_decoder:
        raise ValueError(f"the model of {samples.source or 'these samples'} has no coordinate decoder: train it on "
                         "aligned coordinates (features 'aligned') with the autoencoder objective")
    if int(n_nodes) < 3:
        raise ValueError(f"n_nodes must be at least 3, got {n_nodes!r}")
    if isinstance(realisations, bool) or not isinstance(realisations, (int, np.integer)) or int(realisations) < 1:
        raise ValueError(f"realisations must be a positive integer, got {realisations!r}")
    if model.latent_dim not in (2, 3) or samples.z.shape[1] != model.latent_dim:
        raise ValueError(f"transition paths are found on 2-D or 3-D latent spaces; the model of "
                         f"{samples.source or 'these samples'} has latent_dim {model.latent_dim} (samples: "
                         f"{samples.z.shape[1]}): a gridded latent FES in more dimensions needs bins^d cells")
    fes = latent_fes(samples, bins=bins, n_bootstrap=max(2, min(n_bootstrap, 50)), seed=seed)
    basins = find_basins(fes.free_energy, fes.centers, smooth=smooth)
    a = resolve_endpoint(start, samples, basins, fes)
    b = resolve_endpoint(end, samples, basins, fes, other=a)
    if np.allclose(a, b):
        raise ValueError(f"start {start!r} and end {end!r} are the same latent point")
    string_kw = {"n_nodes": int(n_nodes), "smooth": smooth, "fixed_ends": fixed_ends}
    string = minimum_free_energy_path(fes.free_energy, fes.centers, a, b, **string_kw)
    spacing = max(float(c[1] - c[0]) for c in fes.centers)
    if not fixed_ends and np.linalg.norm(string.nodes[-1] - string.nodes[0]) < spacing:
        # both free ends slid into one basin: the end state is not a minimum of the smoothed latent FES (e.g. it
        # lies on a shoulder of the start basin); a path of length ~0 would size the restraint to ~infinity
        logger.warning("the string's free end nodes both slid into the basin at %s (the end state %s is not a "
                       "minimum of the smoothed latent FES, lowest pass %.2f kJ/mol above the start): running it "
                       "again with the ends fixed at the given states", np.round(string.nodes[0], 3),
                       np.round(b, 3), string.info.get("lowest_pass_barrier", float("nan")))
        string_kw["fixed_ends"] = True
        string = minimum_free_energy_path(fes.free_energy, fes.centers, a, b, **string_kw)
    if not string.converged:
        logger.warning("the string did not converge in %d iterations", string.iterations)
    sens: dict[str, Any] = {}
    if sensitivity_samples:
        sens = path_sensitivity(fes.free_energy, fes.error, fes.centers, a, b, n_samples=int(sensitivity_samples),
                                seed=seed, **string_kw)
    nodes = string.nodes
    logger.info("latent MFEP from %s to %s: %d nodes, latent-FES barrier %.2f kJ/mol", np.round(a, 3),
                np.round(b, 3), len(nodes), string.barrier)
    decoded = model.decode(nodes)
    atoms = np.asarray(model.metadata["decoder"]["atom_indices"], dtype=np.int64)
    templates = nearest_frames(samples.z, nodes)
    residues = np.array([a.residue.index for a in samples.topology.atoms()])  # local fits per residue
    rebuilt = np.stack([rebuild_structure(decoded[k], atoms, samples.positions[templates[k]], groups=residues)
                        for k in range(len(nodes))])
    relax_kwargs.setdefault("temperature", samples.temperature)
    runs = []
    for r in range(int(realisations)):
        folder = output_dir if output_dir is None or r == 0 else Path(output_dir) / f"realisation_{r}"
        runs.append(relax_path(model, samples.system, nodes, rebuilt, output_dir=folder,
                               seed=realisation_seed(seed, r), fallback_positions=samples.positions[templates],
                               **relax_kwargs))
    windows = runs[0]
    nb = 2 * len(nodes)
    # both profiles in the same tube around the path: twice the windows' thermal width sqrt(kT/k)
    tube = tube_widths * np.sqrt(kt_kjmol(samples.temperature) / windows.settings["force_constant"])
    profile_kw = {"bins": nb, "n_bootstrap": n_bootstrap, "seed": seed, "max_distance": tube}
    umb = umbrella_profile(pool_windows(runs), nodes, **profile_kw)
    own: list[PathProfile] = []
    check = None
    if len(runs) > 1:
        umb.label = f"umbrella (MBAR, {len(runs)} realisations)"
        own = [umbrella_profile(run.umbrella, nodes, **profile_kw) for run in runs]
        for r, prof in enumerate(own):
            prof.label = f"umbrella, realisation {r}"
        check = compare_realisations(own, consistency_sigma)
        (logger.info if check.consistent else logger.warning)("%s", check.message())
    rew = reweighted_profile(samples.z, samples.logweights, nodes, samples.temperature, bins=nb,
                             max_distance=tube, n_bootstrap=n_bootstrap, seed=seed, label="reweighted samples")
    checks = [check_structure(samples.system, samples.topology, x) for x in windows.structures]
    info: dict[str, Any] = {"profiles_check": compare_profiles(umb, rew, consistency_sigma),
                            "string_fixed_ends": bool(string_kw["fixed_ends"])}
    if not info["profiles_check"]["consistent"]:
        logger.warning("the umbrella barrier along the path (%.2f +- %.2f kJ/mol) and the campaign's reweighted frames "
                       "along the same path (%.2f +- %.2f) differ by %.1f sigma: the latent coordinates merge "
                       "structures the windows do not move between (a barrier they do not describe), so neither is "
                       "the transition's barrier; train an encoder that separates them (more latent dimensions, "
                       "other features, more rounds)", umb.barrier.value, umb.barrier.error, rew.barrier.value,
                       rew.barrier.error, info["profiles_check"]["deviation_sigma"])
    if samples.heldout is not None and np.any(samples.heldout):
        held = np.flatnonzero(samples.heldout)
        held = held[np.linspace(0, len(held) - 1, min(len(held), 2000)).astype(int)]
        rmsd = reconstruction_rmsd(model, samples.positions[held])
        info.update({"heldout_rmsd_angstrom": float(np.mean(rmsd)), "heldout_rmsd_frames": int(len(held))})
        logger.info("decoder reconstruction RMSD on %d held-out frames: %.2f A (mean)", len(held), np.mean(rmsd))
    info.update({"rebuilt_max_bond_deviation_angstrom": float(max(
        np.max(bond_deviations(samples.system, x), initial=0.0) for x in rebuilt) * 10.0), "tube_radius": float(tube)})
    tp = TransitionPath(samples, fes, basins, a, b, string, sens, decoded, rebuilt, templates, windows, umb, rew,
                        checks, info, runs, own, check)
    logger.info("path barrier: umbrella %.2f +- %.2f, reweighted samples %.2f +- %.2f, latent FES string %.2f kJ/mol;"
                " relaxed structures physical: %s", umb.barrier.value, umb.barrier.error, rew.barrier.value,
                rew.barrier.error, string.barrier, all(c.physical for c in checks))
    return tp


def transition_path_from_rundir(rundir: str | os.PathLike, start: str = "auto", end: str = "auto",
                                n_nodes: int = 16, **kwargs: Any) -> TransitionPath:
    """:func:`transition_path` on a campaign's run directory (:func:`samples_from_rundir`)."""
    return transition_path(samples_from_rundir(rundir), start, end, n_nodes, **kwargs)


def _plot(tp: TransitionPath, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    import io

    from ..io import atomic_write_bytes

    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    f = tp.fes.free_energy
    three = f.ndim == 3
    if three:  # the marginal F(z0, z1) of the 3-D latent FES: -kT ln of the probability summed over z2
        kt = kt_kjmol(tp.samples.temperature)
        p = np.nansum(np.exp(-np.where(np.isfinite(f), f, np.inf) / kt), axis=2)
        with np.errstate(divide="ignore"):
            f = np.where(p > 0, -kt * np.log(p), np.nan)
        f = f - np.nanmin(f)
    ext = [tp.fes.edges[0][0], tp.fes.edges[0][-1], tp.fes.edges[1][0], tp.fes.edges[1][-1]]
    im = ax1.imshow(np.ma.masked_invalid(f).T, origin="lower", extent=ext, aspect="auto", cmap="viridis",
                    vmax=min(np.nanmax(f), 40.0))
    fig.colorbar(im, ax=ax1, label="latent F (kJ/mol)")
    ax1.plot(tp.string.nodes[:, 0], tp.string.nodes[:, 1], "w.-", label="MFEP nodes")
    ax1.plot(tp.windows.structure_z[:, 0], tp.windows.structure_z[:, 1], "r+", label="relaxed structures")
    ax1.set_xlabel("z0")
    ax1.set_ylabel("z1")
    ax1.legend(fontsize=7, loc="upper right")
    ax1.set_title("latent FES (marginal over z2) and path (projected)" if three else "latent FES and path")
    for prof, style in ((tp.umbrella, "C0"), (tp.reweighted, "C1")):
        ok = np.isfinite(prof.free_energy)
        ax2.plot(prof.s[ok], prof.free_energy[ok], color=style,
                 label=f"{prof.label}: barrier {prof.barrier.value:.1f} ± {prof.barrier.error:.1f}")
        err = np.nan_to_num(prof.error[ok])
        ax2.fill_between(prof.s[ok], prof.free_energy[ok] - err, prof.free_energy[ok] + err, color=style, alpha=0.3)
    for prof in tp.realisation_profiles:
        ok = np.isfinite(prof.free_energy)
        ax2.plot(prof.s[ok], prof.free_energy[ok], color="C0", lw=0.8, ls=":", label=f"{prof.label}: barrier "
                 f"{prof.barrier.value:.1f} ± {prof.barrier.error:.1f}")
    if not tp.info.get("profiles_check", {}).get("consistent", True):
        ax2.text(0.02, 0.90, "umbrella and reweighted frames disagree: latent space merges structures",
                 transform=ax2.transAxes, color="red", fontsize=8, va="top")
    if tp.realisation_check is not None and not tp.realisation_check.consistent:
        ax2.text(0.02, 0.97, "realisations disagree: profile not converged", transform=ax2.transAxes, color="red",
                 va="top", fontsize=8)
    s = tp.string.arc_length
    ax2.plot(s, tp.string.free_energy - tp.string.free_energy.min(), "k--",
             label=f"smoothed {tp.fes.free_energy.ndim}-D latent FES at nodes: barrier {tp.string.barrier:.1f}")
    ax2.set_xlabel("arc length along the path (latent units)")
    ax2.set_ylabel("F (kJ/mol)")
    ax2.legend(fontsize=7)
    ax2.set_title("free energy along the path")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write_bytes(path, buf.getvalue())


def write_path_outputs(tp: TransitionPath, outdir: str | os.PathLike, overwrite: bool = False) -> dict[str, Path]:
    """Write path.pdb (MODEL per node), path.dcd, path.csv, profile.csv, profile.png and path.json (atomic).

    Raises FileExistsError when a file exists and ``overwrite`` is False.
    """
    import io

    import mdtraj as md
    from openmm import app, unit

    from ..io import atomic_write_bytes, write_csv, write_json

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    names = {k: out / f for k, f in (("pdb", "path.pdb"), ("dcd", "path.dcd"), ("csv", "path.csv"),
                                     ("profile", "profile.csv"), ("png", "profile.png"), ("json", "path.json"))}
    if not overwrite:
        for p in names.values():
            if p.exists():
                raise FileExistsError(f"{p} exists; pass overwrite=True (--overwrite) or another output folder")
    top = tp.samples.topology
    buf = io.StringIO()
    app.PDBFile.writeHeader(top, buf)
    for k, x in enumerate(tp.windows.structures):
        app.PDBFile.writeModel(top, x * 10.0 * unit.angstrom, buf, modelIndex=k + 1)
    app.PDBFile.writeFooter(top, buf)
    atomic_write_bytes(names["pdb"], buf.getvalue().encode())
    traj = md.Trajectory(tp.windows.structures, md.Topology.from_openmm(top))
    tmp = names["dcd"].with_name(".path.dcd.tmp")
    if tmp.exists():
        tmp.unlink()
    traj.save_dcd(str(tmp))
    os.replace(tmp, names["dcd"])
    nodes = tp.string.nodes
    d = nodes.shape[1]
    rows = np.column_stack([np.arange(len(nodes)), tp.string.arc_length, nodes, tp.string.free_energy,
                            tp.windows.structure_z[:, :d], tp.windows.potential_energy, tp.templates,
                            [c.max_bond_deviation * 10.0 for c in tp.checks], [c.n_clashes for c in tp.checks]])
    write_csv(names["csv"], ["node", "s", *(f"z{i}" for i in range(d)), "latent_fes_kjmol",
                             *(f"relaxed_z{i}" for i in range(d)),
                             "potential_energy_kjmol", "template_frame", "max_bond_deviation_angstrom", "clashes"],
              rows, comment="nodes of the latent MFEP (string on the smoothed latent FES, kJ/mol relative to node "
                            "0); relaxed structures = MODELs of path.pdb / frames of path.dcd", overwrite=True)
    write_profiles(names["profile"], [tp.umbrella, tp.reweighted, *tp.realisation_profiles])
    _plot(tp, names["png"])
    write_json(names["json"], tp.summary())
    logger.info("wrote %s", ", ".join(str(p) for p in names.values()))
    return names
