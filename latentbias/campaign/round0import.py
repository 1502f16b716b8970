"""Round 0 from given trajectories, including trajectories of a subset of the system's atoms.

``[campaign] round0_trajectories`` whose frames hold every atom of the system are read with the system's
topology. Users routinely strip the solvent (or keep one chain) before keeping a trajectory; such trajectories are
given with their own topology, ``[campaign] round0_topology`` (a PDB or any file mdtraj reads a topology from).
Their atoms are then matched one by one onto the system's by chain position, residue number (or position), residue
name and atom name (:func:`latentbias.remap.match_atoms`, the rule ``latentbias remap`` uses for models); a
trajectory atom without exactly one match, or a featurized atom the trajectories do not hold, is an error naming
the atoms.

A campaign stores whole-system frames (round 1 starts from round 0's last frame; frontier and umbrella rounds start
from earlier frames). The atoms a stripped trajectory lacks (water, ions, other chains) are taken from the system's
starting structure (for the first frame; each later frame starts from the previous frame's result, as frames in
sequence are alike) and relaxed around each frame: an energy minimisation of the whole system in which the given
atoms are held by a stiff harmonic restraint (:data:`HOLD_KJMOL_NM2`), after which the given atoms are put back at
their exact trajectory positions. So the features, which read the given atoms only, are those of the trajectory,
and every frame is a configuration MD can start from. Relaxation costs one minimisation per frame on ``[md]
platform``. A frame whose relaxed energy is not finite is an error naming it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import ConfigError

if TYPE_CHECKING:
    from .loop import Campaign

logger = logging.getLogger(__name__)

__all__ = ["HOLD_KJMOL_NM2", "load_round0_frames"]

#: force constant (kJ/mol/nm²) holding the given atoms at their trajectory positions while the rest is relaxed
HOLD_KJMOL_NM2 = 1.0e5
#: minimiser settings of the relaxation (tolerance kJ/mol/nm, iteration cap)
_TOLERANCE = 10.0
_MAX_ITERATIONS = 200


def load_round0_frames(campaign: Campaign) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """Whole-system frames of ``[campaign] round0_trajectories``.

    Parameters
    ----------
    campaign : Campaign

    Returns
    -------
    positions : numpy.ndarray, shape=(n_frames, n_atoms, 3), nm
    boxes : numpy.ndarray, shape=(n_frames, 3, 3), nm, or None for a non-periodic system
    info : dict
        For plan.json: empty for whole-system trajectories; else ``given_atoms`` (how many atoms the trajectories
        hold), ``system_atoms`` and ``filled`` (how the others were placed).

    Raises
    ------
    ValueError
        A trajectory does not fit the system (the message names the file, the atoms and the fix); a
        :class:`~latentbias.campaign.config.ConfigError` for a ``round0_topology`` whose atoms do not match.
    """
    import mdtraj as md

    cfg = campaign.cfg.campaign
    system, topology, start = campaign.system()
    top = md.Topology.from_openmm(topology)
    sub_top = None
    if cfg.round0_topology:
        path = campaign.cfg.resolve(cfg.round0_topology)
        try:
            sub_top = md.load_topology(str(path))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"[campaign] round0_topology: cannot read a topology from {path} ({exc})") from None
    trajs = []
    for name in cfg.round0_trajectories:
        path = campaign.cfg.resolve(name)
        try:
            trajs.append(md.load(str(path), top=top if sub_top is None else sub_top))
        except ValueError as exc:
            n = top.n_atoms if sub_top is None else sub_top.n_atoms
            hint = ("; if it holds a subset of the system's atoms (e.g. the solvent stripped), give that subset's "
                    "topology as [campaign] round0_topology = \"protein.pdb\": its atoms are matched onto the "
                    "system's by residue and atom name") if sub_top is None else ""
            raise ValueError(f"[campaign] round0_trajectories: {path} does not fit the {n}-atom topology it is read "
                             f"with ({' '.join(str(exc).split())}){hint}") from None
    periodic = system.usesPeriodicBoundaryConditions()
    boxes = None
    if periodic:
        if any(t.unitcell_vectors is None for t in trajs):
            raise ValueError("[campaign] round0_trajectories: the system is periodic but a trajectory has no box "
                             "vectors; give trajectories with unit cells (DCD, XTC, H5)")
        boxes = np.concatenate([t.unitcell_vectors for t in trajs]).astype(float)
    given = np.concatenate([t.xyz for t in trajs]).astype(float)
    if sub_top is None:
        return given, boxes, {}
    index = _match(sub_top, top, campaign)
    if len(index) == top.n_atoms:
        logger.info("round 0: the trajectories hold every atom of the system (matched by name)")
        full = np.empty((len(given), top.n_atoms, 3))
        full[:, index] = given
        return full, boxes, {}
    full = _relaxed(campaign, system, np.asarray(start, dtype=float), index, given, boxes)
    logger.info("round 0: %d frames of %d of the system's %d atoms; the other atoms taken from the starting "
                "structure and relaxed around each frame", len(full), len(index), top.n_atoms)
    return full, boxes, {"given_atoms": int(len(index)), "system_atoms": int(top.n_atoms),
                         "filled": "from the system's starting structure, energy-minimised around each frame with "
                                   f"the given atoms held ({HOLD_KJMOL_NM2:g} kJ/mol/nm^2) and then put back"}


def _match(sub_top: Any, top: Any, campaign: Campaign) -> np.ndarray:
    """System index of each trajectory atom; every featurized atom must be among them."""
    from ..remap import match_atoms

    try:
        index = match_atoms(sub_top, top)
    except ValueError as exc:
        raise ConfigError(f"[campaign] round0_topology: {exc}") from None
    if len(np.unique(index)) != len(index):
        raise ConfigError("[campaign] round0_topology: several trajectory atoms match the same system atom; the "
                          "topology has duplicate chain/residue/atom names")
    featurized = np.asarray(campaign.featurizer().atom_indices(), dtype=int)
    missing = np.setdiff1d(featurized, index)
    if missing.size:
        shown = ", ".join(f"{top.atom(int(i))} ({int(i)})" for i in missing[:5])
        more = f", ... ({missing.size} in all)" if missing.size > 5 else ""
        raise ConfigError(f"[campaign] round0_topology: the features ([features] selection) read atoms the "
                          f"trajectories do not hold: {shown}{more}; give trajectories with these atoms or select "
                          "features of atoms they hold")
    return index


def _relaxed(campaign: Campaign, system: Any, start: np.ndarray, index: np.ndarray, given: np.ndarray,
             boxes: np.ndarray | None) -> np.ndarray:
    """Whole-system frames: ``given`` at ``index``, the other atoms from ``start`` relaxed around them."""
    import openmm
    from openmm import unit

    held = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    periodic = held.usesPeriodicBoundaryConditions()
    hold = openmm.CustomExternalForce("0.5*k_hold*" + ("periodicdistance(x, y, z, x0, y0, z0)^2" if periodic else
                                                      "((x-x0)^2 + (y-y0)^2 + (z-z0)^2)"))
    hold.addGlobalParameter("k_hold", HOLD_KJMOL_NM2)
    for name in ("x0", "y0", "z0"):
        hold.addPerParticleParameter(name)
    for i in index:
        hold.addParticle(int(i), [0.0, 0.0, 0.0])
    held.addForce(hold)
    m = campaign.cfg.md
    context = openmm.Context(held, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(m.platform),
                             dict(m.platform_properties))
    out = np.repeat(start[None], len(given), axis=0)
    for f in range(len(given)):
        if f:  # frames in sequence are alike: start from the previous frame's relaxed surroundings (fewer iterations)
            out[f] = out[f - 1]
        out[f, index] = given[f]
        for j, i in enumerate(index):
            hold.setParticleParameters(j, int(i), [float(v) for v in given[f, j]])
        hold.updateParametersInContext(context)
        if boxes is not None:
            context.setPeriodicBoxVectors(*[openmm.Vec3(*row) * unit.nanometer for row in boxes[f]])
        context.setPositions(out[f] * unit.nanometer)
        openmm.LocalEnergyMinimizer.minimize(context, _TOLERANCE, _MAX_ITERATIONS)
        state = context.getState(getPositions=True, getEnergy=True)
        energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        relaxed = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        if not (np.isfinite(energy) and np.all(np.isfinite(relaxed))):
            raise ValueError(f"[campaign] round0_trajectories: frame {f}: the atoms the trajectories lack could not "
                             f"be placed around the given ones (energy {energy} kJ/mol after minimisation); give "
                             "whole-system trajectories for round 0, or let the campaign simulate it (round0_steps)")
        out[f] = relaxed
        out[f, index] = given[f]
    return out
