"""The ``pocket`` strategy: campaigns that push a (cryptic) pocket open.

A campaign with a ``[pocket]`` region measures the pocket's openness in every frame and anchors one latent
dimension to it; rounds whose strategy is ``"pocket"`` bias along that dimension toward opening.

Configuration (``[pocket]``; every key shown with its default)::

    [pocket]
    residues = [78, 84, 87, 88, 91, 99, 102, 103, 111, 118, 121, 133, 153]   # PDB numbers lining the pocket
    # or a sphere: center = [x, y, z] (nm) or center_residues = [...] (centroid of their atoms), and radius (nm)
    padding = 0.35             # nm added to the residues' box on every side (pyKVFinder's residue box)
    measure = "volume"         # volume (nm^3, KVFinder-style cavity) | distance (nm, group_a/group_b residues)
    # group_a = [..]; group_b = [..]   residues (PDB numbers) whose centres of mass are measured, for "distance"
    step = 0.06                # nm, cavity grid spacing
    probe_in = 0.14            # nm
    probe_out = 0.4            # nm
    removal_distance = 0.24    # nm
    volume_cutoff = 0.005      # nm^3
    anchor_dim = 0             # latent dimension trained to reproduce the openness (CV-aligned loss)
    cv_weight = 1.0            # weight of the CV-alignment term in the training loss
    bias = "opes"              # opes | metadynamics, on the anchored dimension ([opes] / [metadynamics] settings)
    target = 0.0               # openness to reach (measure's units; 0: none): the bias grid extends at least to it
    restart = true             # each pocket round starts from the earlier frame nearest the most open frontier target
    restart_segments = 1       # checkpoint segments after a restart kept out of the estimate (transient)
    n_structures = 5           # most open frames written by the report as PDB with cavity pseudo-atoms

What a pocket round does
------------------------
*Training* (every round, once ``[pocket]`` names a region): the openness of all frames so far is the anchor CV of
the CV-aligned loss (:func:`latentbias.losses.cv_alignment_loss`), so latent dimension ``anchor_dim`` is trained
to equal the openness in its own units; the agreement on all frames is stored in ``model.json`` (``pocket_anchor``,
:func:`latentbias.analysis.pockets.anchor_agreement`) with the held-out correlation of the training history.
Consecutive rounds' latent spaces are aligned on the *free* dimensions only (:func:`anchored_alignment`): the
anchored one is already in the openness's units and must not be rotated into the others.

*Plan* (:func:`pocket_plan`): one bias variable, the anchored dimension, whose grid covers the openness seen so
far (plus ``margin``) and at least up to ``target``; frontier targets of the previous model's latent space
(:func:`~latentbias.campaign.frontier.frontier_targets`) ranked by their predicted openness (the anchored
coordinate), and — with ``restart`` — the earlier frame nearest the most open target as the round's start.

*Bias* (:class:`PocketBias`): OPES-METAD (default) or well-tempered metadynamics on the anchored dimension. Filling
the closed basin's free energy along the openness drives the system toward opening; the upper grid edge carries
the usual restoring wall.

*Converge phase* (``[converge] enabled``): in a campaign with pocket rounds the frozen encoder's production run
biases the anchored dimension only, with ``[converge] method`` on the same variable as a pocket round (its grid
reaching ``target``; :func:`pocket_converge_variables`); its drift criterion then watches F(openness).

*Estimator*: pocket rounds are OPES/metadynamics rounds, reweighted like them
(:mod:`latentbias.campaign.weights`); the first ``restart_segments`` checkpoint segments after a restart are
kept out (code ``pocket-restart``): like a frontier release, a run started from a hand-picked frame remembers
its start until it decorrelates.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .config import CampaignConfig
    from .loop import Campaign
    from .rundir import RunDir

logger = logging.getLogger(__name__)

__all__ = ["PocketConfig", "validate_pocket", "pocket_enabled", "PocketMeasure", "round_openness",
           "frames_openness", "anchored_alignment", "pocket_plan", "pocket_variable", "pocket_converge_variables",
           "OPENNESS_FILE"]

POCKET_BIASES = ("opes", "metadynamics")
POCKET_MEASURES = ("volume", "distance")
#: per-round cache of the openness of the round's frames
OPENNESS_FILE = "openness.npz"


@dataclass
class PocketConfig:
    """``[pocket]``: the region, the openness measure, the anchored dimension and the bias (module docstring)."""

    residues: list[int] = field(default_factory=list)
    center: list[float] = field(default_factory=list)
    center_residues: list[int] = field(default_factory=list)
    radius: float = 0.0
    padding: float = 0.35
    measure: str = "volume"
    group_a: list[int] = field(default_factory=list)
    group_b: list[int] = field(default_factory=list)
    step: float = 0.06
    probe_in: float = 0.14
    probe_out: float = 0.4
    removal_distance: float = 0.24
    volume_cutoff: float = 0.005
    anchor_dim: int = 0
    cv_weight: float = 1.0
    bias: str = "opes"
    target: float = 0.0
    restart: bool = True
    restart_segments: int = 1
    n_structures: int = 5

    @property
    def unit(self) -> str:
        """Unit of the openness measure."""
        return "nm^3" if self.measure == "volume" else "nm"


def pocket_enabled(config: CampaignConfig) -> bool:
    """Whether the campaign names a pocket (then openness is measured and a latent dimension anchored)."""
    p = config.pocket
    return bool(p.residues or p.center or p.center_residues or (p.measure == "distance" and p.group_a))


def validate_pocket(config: CampaignConfig) -> None:
    """Check ``[pocket]`` against the rest of the config; raises ConfigError naming the key."""
    from .config import ConfigError

    p = config.pocket
    uses = "pocket" in config.campaign.strategy
    if not pocket_enabled(config):
        if uses:
            raise ConfigError("[campaign] strategy \"pocket\" needs a [pocket] region: residues = [...] (PDB numbers "
                              "lining the pocket), or center = [x, y, z] (nm) / center_residues = [...] with radius")
        return
    if p.measure not in POCKET_MEASURES:
        raise ConfigError(f"[pocket] measure = {p.measure!r} is not allowed; choose one of {', '.join(POCKET_MEASURES)}")
    if p.bias not in POCKET_BIASES:
        raise ConfigError(f"[pocket] bias = {p.bias!r} is not allowed; choose one of {', '.join(POCKET_BIASES)}")
    if p.measure == "distance":
        if not (p.group_a and p.group_b):
            raise ConfigError("[pocket] measure = \"distance\" needs group_a and group_b (residue numbers)")
    else:
        sphere = bool(p.center or p.center_residues)
        if bool(p.residues) == sphere:
            raise ConfigError("[pocket] give either residues = [...] (a box around them) or a sphere (center = "
                              "[x, y, z] nm, or center_residues = [...], with radius), not both or neither")
        if sphere:
            if p.center and p.center_residues:
                raise ConfigError("[pocket] give center (nm) or center_residues, not both")
            if p.center and len(p.center) != 3:
                raise ConfigError(f"[pocket] center must be 3 numbers (nm), got {p.center!r}")
            if not p.radius > 0:
                raise ConfigError(f"[pocket] radius must be > 0 nm for a sphere region, got {p.radius!r}")
    for key in ("step", "probe_in", "probe_out", "cv_weight"):
        if not getattr(p, key) > 0:
            raise ConfigError(f"[pocket] {key} must be positive, got {getattr(p, key)!r}")
    if p.step > 0.2:
        raise ConfigError(f"[pocket] step = {p.step} nm is coarser than 2 Å: give it in nm (0.06 = 0.6 Å)")
    if p.probe_out <= p.probe_in:
        raise ConfigError("[pocket] probe_out must be larger than probe_in (nm)")
    for key in ("padding", "removal_distance", "volume_cutoff", "target"):
        if getattr(p, key) < 0:
            raise ConfigError(f"[pocket] {key} must be >= 0, got {getattr(p, key)!r}")
    if not 0 <= p.anchor_dim < config.model.latent_dim:
        raise ConfigError(f"[pocket] anchor_dim = {p.anchor_dim} is not a latent dimension ([model] latent_dim = "
                          f"{config.model.latent_dim})")
    if p.restart_segments < 0 or p.n_structures < 0:
        raise ConfigError("[pocket] restart_segments and n_structures must be >= 0")
    if uses and p.restart and p.restart_segments >= config.campaign.steps_per_round // config.campaign.checkpoint_interval:
        raise ConfigError(f"[pocket] restart_segments = {p.restart_segments} leaves no segment of a pocket round in "
                          "the estimate; lower it or lengthen [campaign] steps_per_round")
    if uses and p.bias == "opes":
        c, op = config.campaign, config.opes
        if c.save_interval % op.pace and op.pace % c.save_interval:
            raise ConfigError("[opes] pace and [campaign] save_interval must divide one another")
        if op.pace % max(1, op.pace // 10):  # LatentOPES samples the kernel width every pace // 10 steps
            raise ConfigError(f"[opes] pace = {op.pace}: LatentOPES's sigma-sampling interval pace // 10 = "
                              f"{op.pace // 10} must divide it; use a multiple of 10 or a pace below 10")


# ----------------------------------------------------------------------------------------------------- the measure


class PocketMeasure:
    """The campaign's openness measure for its topology: ``measure(positions) -> (n,)`` in :attr:`unit`.

    The cavity volume's grid is axis-aligned, so for a tumbling protein (implicit solvent, vacuum) each frame is
    first superposed (rigid-body least squares) on ``reference`` over the fit atoms: the region's atoms (residue
    box), the ``center_residues`` atoms, or every Cα for a fixed ``center`` (given in the reference's coordinates).
    The distance measure needs no superposition.

    Parameters
    ----------
    config : PocketConfig
    topology : openmm.app.Topology or mdtraj.Topology
    reference : numpy.ndarray, shape=(n_atoms, 3), nm, optional
        Orientation the frames are superposed on (the campaign's starting structure); None: no superposition.
    """

    def __init__(self, config: PocketConfig, topology: Any, reference: np.ndarray | None = None):
        from ..analysis.pockets import CavityVolume, PocketRegion, as_mdtraj_topology, residue_atoms, atom_radii

        self.config = config
        self.topology = as_mdtraj_topology(topology)
        self.unit = config.unit
        self.reference = None if reference is None else np.asarray(reference, dtype=np.float64)
        self.fit_atoms: np.ndarray | None = None
        if config.measure == "distance":
            self.groups = (residue_atoms(self.topology, config.group_a), residue_atoms(self.topology, config.group_b))
            self.volume = None
            self.region = None
            return
        if config.residues:
            self.region = PocketRegion.from_residues(self.topology, config.residues, padding=config.padding)
            self.fit_atoms = self.region.atoms
        elif config.center:
            self.region = PocketRegion.from_center(config.radius, center=np.asarray(config.center, dtype=float))
            self.fit_atoms = self.topology.select("name CA")
        else:
            atoms = residue_atoms(self.topology, config.center_residues)
            self.region = PocketRegion.from_center(config.radius, center_atoms=atoms)
            self.fit_atoms = atoms
        self.volume = CavityVolume(self.region, atom_radii(self.topology), step=config.step,
                                   probe_in=config.probe_in, probe_out=config.probe_out,
                                   removal_distance=config.removal_distance, volume_cutoff=config.volume_cutoff)

    def superpose(self, positions: np.ndarray) -> np.ndarray:
        """Frames (nm, shape=(n, n_atoms, 3)) superposed on the reference over the fit atoms (unchanged without a
        reference or for the distance measure)."""
        import mdtraj as md

        xyz = np.asarray(positions, dtype=np.float64).reshape(-1, self.topology.n_atoms, 3)
        if self.reference is None or self.volume is None or self.fit_atoms is None or len(self.fit_atoms) < 3:
            return xyz
        traj = md.Trajectory(xyz.astype(np.float32), self.topology)
        ref = md.Trajectory(self.reference[None].astype(np.float32), self.topology)
        traj.superpose(ref, 0, atom_indices=self.fit_atoms)
        return traj.xyz.astype(np.float64)

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        """Openness of frames (nm, shape=(n, n_atoms, 3)); shape=(n,), in :attr:`unit`."""
        from ..analysis.pockets import group_distance

        xyz = np.asarray(positions, dtype=np.float64)
        if self.volume is None:
            masses = np.array([a.element.mass if a.element is not None else 1.0 for a in self.topology.atoms])
            return group_distance(xyz, self.groups[0], self.groups[1], masses=masses)
        return self.volume(self.superpose(xyz))

    def cavity_points(self, xyz: np.ndarray) -> np.ndarray:
        """Cavity grid points of one frame *as superposed* (:meth:`superpose`) (nm, shape=(m, 3)); empty for the
        distance measure."""
        if self.volume is None:
            return np.zeros((0, 3))
        return self.volume.cavity_points(self.superpose(xyz)[0])


def round_openness(campaign: Campaign, q: int, positions: np.ndarray) -> np.ndarray:
    """Openness of round q's frames (``positions``: all of them, in order), cached in ``round_QQQ/openness.npz``
    (recomputed when the number of frames differs)."""
    run_dir = campaign.run_dir
    path = run_dir.round_dir(q) / OPENNESS_FILE
    if path.is_file():
        cached = run_dir.read_npz(path)
        if len(cached["openness"]) == len(positions):
            return np.asarray(cached["openness"], dtype=float)
    values = pocket_measure(campaign)(positions)
    run_dir.save_npz(path, openness=values)
    return values


def pocket_measure(campaign: Campaign) -> PocketMeasure:
    """The campaign's :class:`PocketMeasure` (built once per campaign object)."""
    measure = _MEASURES.get(campaign)
    if measure is None:
        _, topology, xyz = campaign.system()
        measure = PocketMeasure(campaign.cfg.pocket, topology, reference=xyz)
        _MEASURES[campaign] = measure
    return measure


#: one PocketMeasure per live Campaign object
_MEASURES: "weakref.WeakKeyDictionary[Any, PocketMeasure]" = weakref.WeakKeyDictionary()


def frames_openness(campaign: Campaign, frames: dict[str, np.ndarray]) -> np.ndarray:
    """Openness of every frame of a frame table (rounds in order, each round complete), shape=(n,)."""
    out = np.empty(len(frames["step"]))
    rounds = np.asarray(frames["round"])
    for q in np.unique(rounds):
        sel = rounds == q
        out[sel] = round_openness(campaign, int(q), frames["positions"][sel])
    return out


# ---------------------------------------------------------------------------------------------------- training


def anchored_alignment(z_new: np.ndarray, z_ref: np.ndarray, anchored: list[int]):
    """Align a new latent space to the previous one on the free dimensions only; anchored ones are left as they are.

    The free dimensions get the similarity Procrustes fit of :func:`~latentbias.campaign.alignment.fit_alignment`;
    the returned :class:`~latentbias.campaign.alignment.LatentAlignment` has ``scale = 1`` and a block matrix as
    ``rotation`` (identity on the anchored dimensions, ``scale × rotation`` of the free fit elsewhere), which
    :func:`~latentbias.campaign.alignment.apply_alignment` folds into the model exactly. ``r2``/``rmsd`` are those
    of the free dimensions (r2 = 1 when every dimension is anchored).
    """
    from .alignment import LatentAlignment, fit_alignment

    a, b = np.asarray(z_new, dtype=float), np.asarray(z_ref, dtype=float)
    d = a.shape[1]
    free = [i for i in range(d) if i not in set(anchored)]
    m = np.eye(d)
    shift = np.zeros(d)
    r2, rmsd = 1.0, 0.0
    if free:
        fit = fit_alignment(a[:, free], b[:, free])
        m[np.ix_(free, free)] = fit.scale * fit.rotation
        shift[free] = fit.shift
        r2, rmsd = fit.r2, fit.rmsd
    return LatentAlignment(m, 1.0, shift, r2, rmsd)


def pocket_anchor(campaign: Campaign, r: int, frames: dict[str, np.ndarray]) -> dict[str, Any] | None:
    """Estimator settings that anchor the openness in training after round r (None without a pocket):
    ``cv_dims``, ``cv_weight`` and ``cvs`` (openness of every frame, shape=(n, 1))."""
    if not pocket_enabled(campaign.cfg):
        return None
    p = campaign.cfg.pocket
    values = frames_openness(campaign, frames)
    logger.info("round %d: pocket openness of %d frames: %.4g .. %.4g %s (mean %.4g)", r, len(values),
                values.min(), values.max(), p.unit, values.mean())
    return {"cv_dims": [p.anchor_dim], "cv_weight": p.cv_weight, "cvs": values[:, None]}


# -------------------------------------------------------------------------------------------------------- plan


def pocket_variable(config: CampaignConfig, z_min: float, z_max: float,
                    method: str | None = None) -> dict[str, Any]:
    """The bias variable of a pocket round (a :class:`~latentbias.bias.grid.LatentVariable` keyword dict): the
    anchored dimension over [z_min, max(z_max, target)] extended by ``margin`` of that range on each side, Gaussian
    width ``sigma`` of it (from ``[opes]`` or ``[metadynamics]`` after ``method``: ``[pocket] bias`` by default,
    ``[converge] method`` for the converge phase)."""
    p = config.pocket
    method = p.bias if method is None else method
    if method not in POCKET_BIASES:
        raise ValueError(f"method must be one of {POCKET_BIASES}, got {method!r}")
    m = config.opes if method == "opes" else config.metadynamics
    lo, hi = float(z_min), max(float(z_max), float(p.target))
    span = max(hi - lo, 1e-6)
    return {"index": int(p.anchor_dim), "minValue": lo - m.margin * span, "maxValue": hi + m.margin * span,
            "biasWidth": float(m.sigma * span), "periodic": False, "gridWidth": int(m.grid_points)}


def pocket_converge_variables(config: CampaignConfig, z_min: Any, z_max: Any) -> list[dict[str, Any]] | None:
    """Bias variables of the converge phase of a pocket campaign, or None for other campaigns.

    A campaign whose strategy uses ``"pocket"`` rounds wants F(openness), and opening: its converge phase biases
    the anchored dimension only (``[converge] method`` on :func:`pocket_variable`, whose grid reaches ``[pocket]
    target``), as its pocket rounds do, instead of every latent dimension over the range seen so far. A campaign
    that only measures a pocket (``[pocket]`` region, other strategies) keeps the default converge phase.

    Parameters
    ----------
    config : CampaignConfig
    z_min, z_max : array_like, shape=(latent_dim,)
        Latent range of the frozen model (its ``info``).
    """
    if not (pocket_enabled(config) and "pocket" in config.campaign.strategy):
        return None
    k = config.pocket.anchor_dim
    return [pocket_variable(config, z_min[k], z_max[k], config.converge.method)]


def pocket_plan(campaign: Campaign, r: int, n_segments: int) -> dict[str, Any]:
    """The strategy-specific part of a pocket round's plan.

    Returns ``bias`` (opes | metadynamics), ``variables`` (the anchored dimension, :func:`pocket_variable`),
    ``targets`` (frontier targets of the previous model's latent space, most open first: ranked by their anchored
    coordinate, the predicted openness), ``target_frames`` (nearest earlier frame of each), ``start_frame`` (with
    ``restart``: the first of them, an index among all frames of rounds < r; else absent) and
    ``restart_segments``.
    """
    from .frontier import frontier_targets

    cfg = campaign.cfg
    p = cfg.pocket
    info = campaign.model(r - 1).info
    k = p.anchor_dim
    plan: dict[str, Any] = {"bias": p.bias,
                            "variables": [pocket_variable(cfg, info["z_min"][k], info["z_max"][k])]}
    if p.restart:
        z = campaign.encode(r - 1, campaign.all_frames(r - 1))
        targets, nearest = frontier_targets(z, cfg.frontier.n_targets, cfg.frontier.bins)
        order = np.argsort(-targets[:, k], kind="stable")
        plan.update(targets=targets[order].tolist(), target_frames=nearest[order].tolist(),
                    start_frame=int(nearest[order[0]]), restart_segments=min(p.restart_segments, n_segments - 1))
        logger.info("round %d: pocket restart from frame %d (predicted openness %.4g %s; frontier targets' predicted "
                    "openness %s)", r, plan["start_frame"], z[plan["start_frame"], k], p.unit,
                    np.array2string(targets[order, k], precision=4))
    else:
        plan["restart_segments"] = 0
    return plan


def restart_exclusion(plan: dict[str, Any], segment: np.ndarray) -> np.ndarray:
    """Frames of a pocket round kept out as the transient after its restart (bool, shape of ``segment``)."""
    n = int(plan.get("restart_segments", 0)) if "start_frame" in plan else 0
    return np.asarray(segment) < n
