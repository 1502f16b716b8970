"""How stiff a bias is for the integrator: the fastest harmonic frequency it adds, against the time step.

A latent bias acts through the encoder's Jacobian, F = −(∂V/∂z)·(∂z/∂x). Where the encoder folds (a narrow range
of φ mapped onto a wide range of z) the Jacobian is 10× its median and the bias's curvature in Cartesian space
can exceed the force field's fastest unconstrained mode (the C=O stretch with HBonds constraints,
ω ≈ 340 ps⁻¹, ω·dt ≈ 0.7 at 2 fs). Velocity Verlet and LangevinMiddle then integrate those configurations with
errors the force field alone does not have (benchmarks/RESULTS.md, "time step under a stiff latent bias": NVE
energy errors 2.6–7.5× the force field's at 2 fs, 1.2–2.2× at 1 fs, equal at 0.5 fs), and for one of seven converge-phase
biases measured the sampled biased ensemble itself was wrong at 2 fs and at 1 fs (:data:`DEFAULT_OMEGA_DT_LIMIT`).

:func:`max_frequency` estimates the largest |eigenvalue| of the mass-weighted Hessian M^{-1/2} H M^{-1/2} of the
forces of one force group by power iteration on central differences of forces (two force evaluations of that
group per iteration; no Hessian is stored), at one configuration. ω = sqrt(|λ|) in ps⁻¹ (kJ/mol, nm, dalton).
Negative curvature counts too (a bias maximum as narrow as a bond is as hard to integrate as a bond).
Constrained directions are included, so the value is an upper bound for constrained systems when the group's
forces act along constraints (a latent bias on heavy-atom features does not).

:func:`check_timestep` applies it to the frames of a segment where the bias force is largest and says, as a
warning a user can act on, when ω·dt passes ``limit``, with the time step that would bring it back.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["max_frequency", "group_force_magnitudes", "check_timestep", "bias_force_groups", "DEFAULT_OMEGA_DT_LIMIT"]

#: Largest ω·dt of a latent bias that sampled its biased ensemble correctly in benchmarks/timestep_latent_bias.py:
#: a Ace-Gly-Nme converge-phase bias with ω = 600 ps⁻¹ (a narrow ridge, 18 kJ/mol over 5° of φ, where the encoder
#: folds) shifted the sampled biased C7ax population from the exp(−β(F_ref + V)) value 0.127 to 0.20 at 2 fs
#: (ω·dt 1.2) and 0.17 at 1 fs (0.6), and reproduced it at 0.5 fs (0.3: 0.12). Stricter than the force field's own
#: fastest mode (C=O stretch, ω ≈ 340 ps⁻¹, ω·dt 0.7 at 2 fs), which is harmonic and benign.
DEFAULT_OMEGA_DT_LIMIT = 0.3


def _masses(system: Any) -> np.ndarray:
    from openmm import unit

    m = np.array([system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(system.getNumParticles())])
    return m


def _group_forces(context: Any, positions: np.ndarray, groups: set[int]) -> np.ndarray:
    from openmm import unit

    context.setPositions(positions)
    state = context.getState(getForces=True, groups=groups)
    return np.asarray(state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))


def group_force_magnitudes(context: Any, frames: np.ndarray, groups: set[int]) -> np.ndarray:
    """Largest per-atom force of ``groups`` in each frame, shape=(n_frames,), kJ/mol/nm.

    Parameters
    ----------
    context : openmm.Context
        Context of the system; its positions are changed (save and restore them around the call).
    frames : numpy.ndarray
        Positions, shape=(n_frames, n_atoms, 3), nm.
    groups : set of int
        Force groups whose forces count.
    """
    return np.array([np.linalg.norm(_group_forces(context, np.asarray(x, float), groups), axis=1).max()
                     for x in frames])


def max_frequency(context: Any, positions: np.ndarray, groups: set[int], iterations: int = 20,
                  displacement: float = 1e-4, seed: int = 0) -> float:
    """Largest harmonic frequency of the forces of ``groups`` at ``positions``, ps⁻¹.

    Power iteration on the mass-weighted Hessian (either sign of curvature), with Hessian-vector products from
    central differences of the group's forces.

    Parameters
    ----------
    context : openmm.Context
        Context of the system; its positions are changed (save and restore them around the call).
    positions : numpy.ndarray
        Configuration, shape=(n_atoms, 3), nm.
    groups : set of int
        Force groups whose curvature is measured.
    iterations : int, default 20
        Power iterations (2 force evaluations each). The estimate approaches the largest |eigenvalue| from below.
    displacement : float, default 1e-4
        Length of the mass-weighted finite-difference step, nm·dalton^½.
    seed : int, default 0
        Seed of the random start vector.

    Returns
    -------
    float
        ω = sqrt(|λ_max|) in ps⁻¹ (λ in kJ/mol/nm²/dalton = ps⁻²); 0 when the group exerts no force.
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if not displacement > 0:
        raise ValueError(f"displacement must be positive (nm·dalton^½), got {displacement}")
    x0 = np.asarray(positions, dtype=float)
    masses = _masses(context.getSystem())
    if x0.shape != (len(masses), 3):
        raise ValueError(f"positions must have shape ({len(masses)}, 3) (nm), got {x0.shape}")
    inv_sqrt_m = np.where(masses > 0, 1.0 / np.sqrt(np.where(masses > 0, masses, 1.0)), 0.0)[:, None]
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(x0.shape) * (masses > 0)[:, None]
    norm = np.linalg.norm(v)
    if norm == 0:
        return 0.0
    v /= norm
    lam = 0.0
    for _ in range(iterations):
        dx = displacement * inv_sqrt_m * v
        hv = -(_group_forces(context, x0 + dx, groups) - _group_forces(context, x0 - dx, groups)) / (2 * displacement)
        hv *= inv_sqrt_m  # M^{-1/2} H M^{-1/2} v
        lam = float((v * hv).sum())
        norm = np.linalg.norm(hv)
        if norm == 0:
            return 0.0
        v = hv / norm
    # |H v| of a unit v never exceeds |λ_max| and reaches it as v turns into the top eigenvector (whatever its sign)
    return math.sqrt(max(abs(lam), norm))


def bias_force_groups(system: Any, n_base_forces: int) -> set[int]:
    """Force groups of the forces added to ``system`` after its first ``n_base_forces`` (the bias's), less the
    groups the force field's forces use; empty when the bias shares a group with the force field."""
    base = {system.getForce(i).getForceGroup() for i in range(n_base_forces)}
    added = {system.getForce(i).getForceGroup() for i in range(n_base_forces, system.getNumForces())}
    return added - base


def check_timestep(context: Any, frames: np.ndarray, groups: set[int], timestep_fs: float,
                   limit: float = DEFAULT_OMEGA_DT_LIMIT, n_frames: int = 3, iterations: int = 20,
                   where: str = "") -> dict[str, float]:
    """ω·dt of the bias on the frames where its force is largest; a warning when it passes ``limit``.

    Parameters
    ----------
    context : openmm.Context
        Context of the biased system. Its positions (and velocities) are saved and restored.
    frames : numpy.ndarray
        Frames to look at, shape=(n, n_atoms, 3), nm (e.g. a segment's).
    groups : set of int
        The bias's force groups (:func:`bias_force_groups`).
    timestep_fs : float
        The integrator's time step, fs.
    limit : float, default 0.3
        Largest acceptable ω·dt (:data:`DEFAULT_OMEGA_DT_LIMIT`, from the measurements it names).
    n_frames : int, default 3
        How many of the frames with the largest bias force are examined.
    iterations : int, default 20
        Power iterations per frame (:func:`max_frequency`).
    where : str, default ""
        Named in the warning (e.g. ``"round 4"``).

    Returns
    -------
    dict
        ``omega`` (ps⁻¹), ``omega_dt``, ``max_force`` (kJ/mol/nm, largest per-atom bias force among the frames),
        ``suggested_timestep_fs`` (limit/ω, fs; inf when ω = 0) and ``warned`` (1.0 or 0.0).
    """
    if not timestep_fs > 0:
        raise ValueError(f"timestep_fs must be positive (fs), got {timestep_fs}")
    if not limit > 0:
        raise ValueError(f"limit must be a positive omega*dt, got {limit}")
    frames = np.asarray(frames, dtype=float)
    if frames.ndim != 3 or len(frames) == 0:
        raise ValueError(f"frames must have shape (n >= 1, n_atoms, 3) (nm), got {frames.shape}")
    if not groups:
        return {"omega": 0.0, "omega_dt": 0.0, "max_force": 0.0, "suggested_timestep_fs": math.inf, "warned": 0.0}
    saved = context.getState(getPositions=True, getVelocities=True)
    try:
        fmax = group_force_magnitudes(context, frames, groups)
        top = np.argsort(fmax)[::-1][:n_frames]
        omega = max(max_frequency(context, frames[i], groups, iterations=iterations) for i in top)
    finally:
        context.setPositions(saved.getPositions())
        context.setVelocities(saved.getVelocities())
    omega_dt = omega * timestep_fs / 1000.0
    suggested = 1000.0 * limit / omega if omega > 0 else math.inf
    warned = omega_dt > limit
    logger.debug("%somega %.1f /ps, omega*dt %.3f, largest bias force %.0f kJ/mol/nm", f"{where}: " if where else "",
                 omega, omega_dt, float(fmax.max()))
    if warned:
        logger.warning(
            "%sthe bias's curvature reaches omega = %.0f /ps (largest bias force %.0f kJ/mol/nm): omega*dt = %.2f at "
            "%.3g fs, above %.2f. The integrator may sample the biased ensemble wrongly there (a converge-phase "
            "bias this stiff shifted a basin population by 2 kJ/mol at 2 and 1 fs, benchmarks/RESULTS.md), and "
            "reweighted free energies inherit it. Rerun with [md] timestep <= %.2g fs (costs %.1fx the steps), "
            "or make the bias smoother (wider kernels, a smoother encoder).", f"{where}: " if where else "", omega,
            float(fmax.max()), omega_dt, timestep_fs, limit, suggested, timestep_fs / suggested)
    return {"omega": float(omega), "omega_dt": float(omega_dt), "max_force": float(fmax.max()),
            "suggested_timestep_fs": float(suggested), "warned": float(warned)}
