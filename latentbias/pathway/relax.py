"""Relax structures along a latent path by restrained MD; the same runs are umbrella windows along the path.

For every node z_k of a path in latent space, starting from a full structure (e.g. decoded and rebuilt,
:mod:`latentbias.pathway.rebuild`):

1. a :class:`~latentbias.bias.restraint.LatentRestraint` holds the latent coordinates at z_k
   (V = ½ k |z − z_k|², one force for all windows: the centre is a Context global parameter);
2. the energy is minimised with the restraint on (removes the strain left by rebuilding: bonds, clashes);
3. Langevin MD at the temperature: ``equilibration_steps`` discarded, then ``production_steps`` whose latent
   coordinates are recorded every ``sample_interval`` steps — the umbrella window's samples;
4. the production sample nearest to z_k is quenched (minimised with the restraint stiffened ``quench_factor``
   times, so that the structure stays at its node instead of sliding downhill): the node's relaxed structure.

The windows' samples form a :class:`~latentbias.bias.umbrella.UmbrellaResult`, analysed by MBAR
(:func:`latentbias.pathway.profile.umbrella_profile`). With ``output_dir`` every finished window is written
atomically (``window_<k>.npz``) and a rerun skips it (resume).

Reproducibility. Every window runs in its own Context with its own seeds (:func:`window_seeds`: children of
``numpy.random.SeedSequence(seed)``, never 0 — OpenMM treats an integrator seed of 0 as "pick one at random"), for
the Langevin integrator and for the initial velocities. So a window does not depend on the windows run before it
in the same process or call, and a resumed run (some windows read from ``output_dir``) gives the windows an
uninterrupted run gives. Bitwise identical windows need the same seed, settings, platform, OpenMM/torch build and
— on the CPU platform — the same ``Threads`` property: its random streams and force summation are split over
threads, so another thread count (OpenMM's default is every core, or ``OPENMM_CPU_THREADS``) gives another,
equally valid trajectory. Pass ``platform_properties={"Threads": "1"}`` (``latentbias path --threads``) to pin it;
the count used is recorded in ``settings["threads"]``. The Reference platform is single-threaded and deterministic.

Blow-ups. A window whose simulation becomes NaN or explodes (a kinetic temperature far above the thermostat's:
:mod:`latentbias.campaign.instability`, e.g. a stiff restraint on a latent coordinate with a near-singular gradient)
is run again from its start — a fresh Context, the same seeds — with the time step × 0.5, then × 0.25, as a
campaign segment is; the step each window used is saved in its file (``timestep``, ps) and listed in
``settings["window_timesteps"]``. Deterministic: a rerun repeats the same retries. A window that is unstable at
every step from its given structure — e.g. a rebuilt structure whose clash the restrained quench removed only by
moving onto a point where the latent gradient is near-singular (the Kabsch fit of aligned coordinates is not smooth
where its two smallest singular values meet with a reflection) — is started once more, with the same retries, from
its ``fallback_positions`` when they are given: :func:`~latentbias.pathway.workflow.transition_path` passes the
sampled frame nearest to each node, a structure the simulation itself produced. The structure each window started
from is saved (``start_structure``: 0 given, 1 fallback) and listed in ``settings["window_starts"]``.

Units: nm, ps, kJ/mol, K; force constants in kJ/mol per (unit of z)².
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from ..analysis.constants import kt_kjmol
from ..io import ChecksumError, load_npz, save_npz

logger = logging.getLogger(__name__)

__all__ = ["PathWindows", "default_force_constant", "relax_path", "window_seeds"]

_START_NAMES = ("given", "fallback")  # the structure a window started from, by its saved `start_structure`


def default_force_constant(nodes: Any, temperature: float, overlap: float = 2.0) -> float:
    """k such that a window's thermal width sqrt(kT/k) is the node spacing / ``overlap`` (kJ/mol per z²)."""
    p = np.asarray(nodes, dtype=float)
    spacing = float(np.mean(np.linalg.norm(np.diff(p, axis=0), axis=1)))
    if not spacing > 0:
        raise ValueError("the path's nodes coincide: cannot size the restraint from their spacing")
    return kt_kjmol(temperature) * (overlap / spacing) ** 2


@dataclass
class PathWindows:
    """Relaxed structures and umbrella samples along a path.

    Attributes
    ----------
    nodes : numpy.ndarray, shape=(K, d)
        Window centres (restrained latent dimensions).
    structures : numpy.ndarray, shape=(K, n_atoms, 3)
        Relaxed (restrained MD, then quenched) structure of each node, nm.
    structure_z : numpy.ndarray, shape=(K, latent_dim)
        Latent coordinates of the relaxed structures.
    potential_energy : numpy.ndarray, shape=(K,)
        Potential energy of each relaxed structure without the restraint, kJ/mol.
    umbrella : latentbias.bias.umbrella.UmbrellaResult
        Samples of all windows (z every ``sample_interval`` steps).
    settings : dict
    """

    nodes: np.ndarray
    structures: np.ndarray
    structure_z: np.ndarray
    potential_energy: np.ndarray
    umbrella: Any
    settings: dict[str, Any] = field(default_factory=dict)


def _unverified_window(path: Path) -> None:
    """``load_npz`` callback for a window file without a checksum (written before windows carried one)."""
    logger.warning("%s carries no checksum (written by an older latentbias), so it was read unverified; delete it to "
                   "rerun that window", path)


def window_seeds(seed: int, window: int) -> tuple[int, int]:
    """(integrator seed, velocity seed) of window ``window`` of a path relaxed with base seed ``seed``.

    Children ``SeedSequence(seed, spawn_key=(window, stream))`` — what ``SeedSequence(seed).spawn`` would give,
    addressable per window so a resumed run draws the seeds of an uninterrupted one — mapped to [1, 2**31 - 1]
    (OpenMM takes a signed 32-bit seed and treats 0 as "random").
    """
    from ..campaign.seeds import MAX_SEED

    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or int(seed) < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if int(window) < 0:
        raise ValueError(f"window must be >= 0, got {window!r}")
    states = [np.random.SeedSequence(int(seed), spawn_key=(int(window), stream)).generate_state(1, np.uint64)[0]
              for stream in range(2)]
    return int(states[0] % MAX_SEED) + 1, int(states[1] % MAX_SEED) + 1


def _quench(context: Any, tolerance: float, max_iterations: int) -> None:
    import openmm
    from openmm import unit

    openmm.LocalEnergyMinimizer.minimize(context, tolerance * unit.kilojoule_per_mole / unit.nanometer,
                                         int(max_iterations))


def relax_path(
    model: Any,
    system: Any,
    nodes: Any,
    initial_positions: Any,
    *,
    temperature: float = 300.0,
    force_constant: float | None = None,
    dims: Sequence[int] | None = None,
    platform: str = "Reference",
    platform_properties: dict[str, str] | None = None,
    timestep: float = 0.002,
    friction: float = 1.0,
    equilibration_steps: int = 2500,
    production_steps: int = 25000,
    sample_interval: int = 50,
    minimize_tolerance: float = 10.0,
    minimize_iterations: int = 2000,
    quench_factor: float = 10.0,
    seed: int = 0,
    backend: str = "auto",
    output_dir: str | os.PathLike | None = None,
    progress: bool = False,
    fallback_positions: Any | None = None,
) -> PathWindows:
    """Restrained relaxation at every node of a latent path; the runs are umbrella windows (module docstring).

    Parameters
    ----------
    model : path or LatentModelFile
        Exported latent model (the one whose latent space the path lives in).
    system : openmm.System
        The system (not modified: the restraint goes into a copy). Non-periodic or periodic.
    nodes : array_like, shape=(K, d)
        Path nodes in the restrained latent dimensions.
    initial_positions : array_like, shape=(K, n_atoms, 3), nm
        Starting structure of each window.
    temperature : float
        K.
    force_constant : float, optional
        kJ/mol per (unit of z)²; default :func:`default_force_constant` (thermal width = half the node spacing).
    dims : sequence of int, optional
        Restrained latent dimensions (default: all).
    platform : str
        OpenMM platform name (named explicitly: never OpenMM's default). ``"Reference"`` suits small systems.
    platform_properties : dict, optional
    timestep, friction : float
        ps and 1/ps (LangevinMiddleIntegrator).
    equilibration_steps, production_steps, sample_interval : int
        Per window.
    minimize_tolerance : float
        kJ/mol/nm, for the minimisations.
    minimize_iterations : int
    quench_factor : float
        Restraint stiffening for the final quench of each node's structure.
    seed : int
        Base seed (>= 0); window k's integrator and velocities use :func:`window_seeds` (seed, k). Same seed and
        settings on the same platform (and CPU thread count): the same windows (module docstring).
    backend : {"auto", "native", "torchforce"}
        Of the :class:`~latentbias.bias.restraint.LatentRestraint`.
    output_dir : path, optional
        Per-window results (``window_<k>.npz``) for resume.
    progress : bool
    fallback_positions : array_like, shape=(K, n_atoms, 3), nm, optional
        A second starting structure per window (e.g. the sampled frame nearest to the node), used when the window
        is unstable at every retried time step from ``initial_positions`` (module docstring).

    Returns
    -------
    PathWindows
    """
    import openmm
    from openmm import unit

    from ..bias.restraint import LatentRestraint
    from ..bias.umbrella import UmbrellaResult
    from ..forces import as_model_file
    from ..platforms import check_platform
    from ..campaign.instability import INSTABILITIES, check_kinetic_temperature, run_with_retries
    from ..nonfinite import NonFiniteBiasError

    mf = as_model_file(model)
    p = np.atleast_2d(np.asarray(nodes, dtype=float))
    x0 = np.asarray(initial_positions, dtype=float)
    n_atoms = system.getNumParticles()
    if x0.shape != (len(p), n_atoms, 3):
        raise ValueError(f"initial_positions must have shape ({len(p)}, {n_atoms}, 3) (one structure per node), "
                         f"got {x0.shape}")
    if not np.all(np.isfinite(p)) or not np.all(np.isfinite(x0)):
        raise ValueError("nodes and initial_positions must be finite")
    fallback = None if fallback_positions is None else np.asarray(fallback_positions, dtype=float)
    if fallback is not None and (fallback.shape != x0.shape or not np.all(np.isfinite(fallback))):
        raise ValueError(f"fallback_positions must be finite with the shape of initial_positions {x0.shape}, got "
                         f"{fallback.shape}")
    if len(p) < 2:
        raise ValueError("a path needs at least 2 nodes")
    for name, v in (("production_steps", production_steps), ("sample_interval", sample_interval)):
        if int(v) <= 0:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    n_samples = int(production_steps) // int(sample_interval)
    if n_samples < 2:
        raise ValueError("production_steps must hold at least 2 sample intervals")
    k = default_force_constant(p, temperature) if force_constant is None else float(force_constant)
    if not k > 0:
        raise ValueError(f"force_constant must be positive, got {force_constant!r}")
    sys_copy = copy.deepcopy(system)
    restraint = LatentRestraint(mf, sys_copy, p[0], k, dims=dims, backend=backend)
    if p.shape[1] != restraint.ndim:
        raise ValueError(f"nodes have {p.shape[1]} coordinates but {restraint.ndim} latent dimensions are restrained")
    group = restraint.force.getForceGroup()
    others = {g for g in range(32) if g != group}
    seeds = [window_seeds(seed, w) for w in range(len(p))]  # validates seed
    plat = openmm.Platform.getPlatformByName(platform)
    check_platform(sys_copy, plat)
    properties = {str(key): str(v) for key, v in (platform_properties or {}).items()}

    def new_context(w: int, factor: float = 1.0) -> tuple[Any, Any]:
        """A fresh Context for window w: its integrator seeded with window w's own seed (the Reference and CPU
        platforms seed their random streams when the Context is created, so a Context per window makes a window
        independent of the ones run before it); time step × ``factor`` (a retry after a blow-up)."""
        integ = openmm.LangevinMiddleIntegrator(temperature * unit.kelvin, friction / unit.picosecond,
                                                timestep * factor * unit.picosecond)
        integ.setRandomNumberSeed(seeds[w][0])
        ctx = openmm.Context(sys_copy, integ, plat, properties)
        if platform == "CPU" and settings["threads"] is None:
            settings["threads"] = int(plat.getPropertyValue(ctx, "Threads"))
            if "Threads" not in properties:
                logger.info("CPU platform with OpenMM's default of %d threads: the windows are reproducible only "
                            "with the same thread count (platform_properties={'Threads': ...} pins it)",
                            settings["threads"])
        return integ, ctx

    periodic = sys_copy.usesPeriodicBoundaryConditions()
    box0 = sys_copy.getDefaultPeriodicBoxVectors()
    folder = None if output_dir is None else Path(output_dir)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    settings = {"temperature": float(temperature), "force_constant": k, "platform": platform, "timestep": timestep,
                "friction": friction, "equilibration_steps": int(equilibration_steps),
                "production_steps": int(production_steps), "sample_interval": int(sample_interval), "seed": int(seed),
                "threads": int(properties["Threads"]) if platform == "CPU" and "Threads" in properties else None,
                "quench_factor": float(quench_factor),
                "dims": restraint.dims, "backend": restraint.backend}

    def encode(state: Any) -> tuple[np.ndarray, np.ndarray]:
        pos = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer) if periodic else None
        return np.asarray(pos), mf.encode(pos, box)

    blowup = check_kinetic_temperature(sys_copy, temperature)

    def checked_step(integrator: Any, context: Any, steps: int, w: int) -> Any:
        """``steps`` steps, then the state (positions, velocities); a simulation that became NaN or exploded
        raises an instability (:mod:`latentbias.campaign.instability`)."""
        try:
            integrator.step(steps)
        except openmm.OpenMMException as exc:
            if "nan" in str(exc).lower():
                raise NonFiniteBiasError(f"path window {w}: {str(exc).strip().splitlines()[0]}") from exc
            raise
        state = context.getState(getPositions=True, getVelocities=True)
        if not np.all(np.isfinite(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))):
            raise NonFiniteBiasError(f"path window {w}: positions became NaN/inf")
        blowup(state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond),
               context.getStepCount())
        return state

    def run_window(w: int, factor: float, start: np.ndarray) -> dict[str, Any]:
        """Window w from structure ``start`` with the time step × ``factor``: quench at the node, equilibrate,
        sample, quench the closest sample harder; its record (a fresh Context each call, so a retry starts from
        the same state)."""
        integrator, context = new_context(w, factor)
        restraint.setCenters(context, p[w])
        restraint.setForceConstants(context, np.full(restraint.ndim, k))
        if periodic:
            context.setPeriodicBoxVectors(*box0)
        context.setPositions(start * unit.nanometer)
        context.setTime(0.0)
        _quench(context, minimize_tolerance, minimize_iterations)
        context.setVelocitiesToTemperature(temperature * unit.kelvin, seeds[w][1])
        if equilibration_steps:
            checked_step(integrator, context, int(equilibration_steps), w)
        zs, steps = [], []
        best, best_d = None, np.inf
        for i in range(n_samples):
            pos, z = encode(checked_step(integrator, context, int(sample_interval), w))
            zs.append(z)
            steps.append((i + 1) * int(sample_interval))
            d = float(np.linalg.norm(z[restraint.dims] - p[w]))
            if d < best_d:
                best, best_d = pos, d
        context.setPositions(best * unit.nanometer)
        restraint.setForceConstants(context, np.full(restraint.ndim, k * float(quench_factor)))
        _quench(context, minimize_tolerance, minimize_iterations)
        state = context.getState(getPositions=True, getEnergy=True, groups=others)
        pos, z = encode(state)
        energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        del context, integrator
        return {"z": np.asarray(zs), "step": np.asarray(steps), "structure": pos, "structure_z": z,
                "energy": np.asarray(energy), "timestep": np.asarray(timestep * factor)}

    out: dict[str, list[np.ndarray]] = {"z": [], "step": [], "structure": [], "structure_z": [], "energy": []}
    window_timesteps: list[float] = []  # ps; below the configured step where a window blew up and was rerun
    window_starts: list[str] = []  # "given" or "fallback": the structure each window started from
    settings["window_timesteps"] = window_timesteps
    settings["window_starts"] = window_starts
    for w in tqdm(range(len(p)), desc="path windows", unit="window", disable=(not progress) or None):
        path = None if folder is None else folder / f"window_{w:03d}.npz"
        if path is not None and path.is_file():
            try:
                data = load_npz(path, unverified=_unverified_window)
            except ChecksumError as exc:
                raise ValueError(f"{exc}; delete {path} to rerun that window") from exc
            same_seed = "seeds" not in data or np.array_equal(data["seeds"], seeds[w])  # files before seeds: kept
            if data["center"].shape == p[w].shape and np.allclose(data["center"], p[w]) \
                    and float(data["force_constant"]) == k and data["z"].shape[0] == n_samples and same_seed:
                for key in out:
                    out[key].append(data[key])
                window_timesteps.append(float(data["timestep"]) if "timestep" in data else float(timestep))
                window_starts.append(_START_NAMES[int(data["start_structure"]) if "start_structure" in data else 0])
                logger.info("window %d: read from %s", w, path)
                continue
            raise ValueError(f"{path} belongs to another path or settings (node, force constant, number of "
                             "samples or seed differ); use another output folder")
        try:
            rec = run_with_retries(lambda factor, w=w: run_window(w, factor, x0[w]), f"path window {w}")
            rec["start_structure"] = np.asarray(0)
        except INSTABILITIES as exc:
            if fallback is None:
                raise
            logger.warning("path window %d is unstable at every time step from its given structure (%s); starting "
                           "it again from its fallback structure", w, str(exc).split(". ")[0])
            rec = run_with_retries(lambda factor, w=w: run_window(w, factor, fallback[w]),
                                   f"path window {w} (from its fallback structure)")
            rec["start_structure"] = np.asarray(1)
        for key in out:
            out[key].append(rec[key])
        window_timesteps.append(float(rec["timestep"]))
        window_starts.append(_START_NAMES[int(rec["start_structure"])])
        if path is not None:
            save_npz(path, checksum=True, center=p[w], force_constant=np.asarray(k), seeds=np.asarray(seeds[w]),
                     **rec)
        logger.info("window %d/%d at %s: %d samples, relaxed structure at z=%s, E=%.1f kJ/mol", w + 1, len(p),
                    np.array2string(p[w], precision=3), n_samples, np.array2string(rec["structure_z"], precision=3),
                    float(rec["energy"]))
    umbrella = UmbrellaResult(p.copy(), np.full(p.shape, k), [np.asarray(z) for z in out["z"]], float(temperature),
                              restraint.parameters(), [np.asarray(s) for s in out["step"]])
    return PathWindows(p.copy(), np.stack(out["structure"]), np.stack(out["structure_z"]),
                       np.array([float(e) for e in out["energy"]]), umbrella, settings)
