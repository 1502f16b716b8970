"""Planning a round: what round r does, fixed in ``round_RRR/plan.json`` before its first step.

A plan holds ``round``, ``strategy`` and ``segments`` (checkpoint segments of the round), and per strategy:

* ``unbiased`` (round 0) / ``given`` (round 0 from ``round0_trajectories``): nothing more;
* ``metadynamics``: ``variables`` — one :class:`~latentbias.bias.grid.LatentVariable` per latent dimension, the
  grid covering the latent range the previous model saw plus ``margin`` of it on each side, Gaussian width
  ``sigma`` of it — and, with ``carry_bias``, ``initial_bias`` naming ``initial_bias.npz``: the previous
  metadynamics round's final bias read at the new grid points (:func:`carried_bias`);
* ``opes``: ``variables`` as for metadynamics, from ``[opes]`` ``margin``, ``sigma`` (σ0) and ``grid_points``
  (no carried bias: an OPES state is its kernels, not a grid);
* the converge phase (round ``[campaign] rounds``, when ``[converge] enabled``): ``converge = true``,
  ``strategy`` = ``[converge] method``, ``model_round`` (the frozen encoder: the last exploration round's),
  ``variables``, and ``segments`` = the budget ``max_steps`` / ``checkpoint_interval`` (the run may stop earlier:
  ``end.json``);
* ``pocket``: ``bias``, ``variables`` (the openness-anchored dimension only), ranked frontier ``targets``, the
  restart ``start_frame`` and ``restart_segments`` (:func:`~latentbias.campaign.pocket.pocket_plan`);
* ``frontier``: ``targets`` (:func:`~latentbias.campaign.frontier.frontier_targets` in the previous model's latent
  space), ``start_frames`` (index, among all frames of the earlier rounds, of the frame nearest each target) and
  ``schedule`` (:func:`frontier_schedule`).

Plans are written once and read by every later phase and by the reweighting, so a resumed run does exactly
what the interrupted one planned.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from ..bias.grid import BiasGrid, LatentVariable
from .config import CampaignConfig
from .frontier import frontier_targets

if TYPE_CHECKING:
    from .loop import Campaign

logger = logging.getLogger(__name__)

__all__ = ["n_segments", "plan_round", "metadynamics_variables", "carried_bias", "frontier_schedule"]

INITIAL_BIAS = "initial_bias.npz"


def n_segments(config: CampaignConfig, r: int) -> int:
    """Checkpoint segments planned for round r (round ``[campaign] rounds`` is the converge phase)."""
    c = config.campaign
    if r >= c.rounds:
        return config.converge.max_steps // c.checkpoint_interval
    steps = c.round0_steps if r == 0 else c.steps_per_round
    return steps // c.checkpoint_interval


def metadynamics_variables(config: CampaignConfig, z_min: np.ndarray, z_max: np.ndarray,
                           section: str = "metadynamics") -> list[dict[str, Any]]:
    """Grid variables (as :class:`LatentVariable` keyword dicts) over the latent range [z_min, z_max] of the
    previous model, extended by ``margin`` × the range on each side; Gaussian width ``sigma`` × the range
    (``section``: "metadynamics" or "opes", whose keys are used)."""
    m = getattr(config, section)
    zmin, zmax = np.asarray(z_min, dtype=float), np.asarray(z_max, dtype=float)
    span = np.maximum(zmax - zmin, 1e-6)
    return [{"index": i, "minValue": float(zmin[i] - m.margin * span[i]),
             "maxValue": float(zmax[i] + m.margin * span[i]), "biasWidth": float(m.sigma * span[i]),
             "periodic": False, "gridWidth": int(m.grid_points)}
            for i in range(len(zmin))]


def carried_bias(old_variables: list[dict[str, Any]], old_grid: np.ndarray,
                 new_variables: list[dict[str, Any]]) -> np.ndarray:
    """A metadynamics bias (kJ/mol on the old grid) read at the points of a new grid: consecutive rounds' latent
    spaces are aligned, so coordinates correspond; outside the old grid the edge value is used.

    Returns
    -------
    numpy.ndarray, shape=new grid shape
    """
    old = BiasGrid([LatentVariable(**v) for v in old_variables])
    new = BiasGrid([LatentVariable(**v) for v in new_variables])
    mesh = np.stack(np.meshgrid(*new.axes, indexing="ij"), axis=-1).reshape(-1, new.ndim)
    return old.interpolate(mesh, old_grid).reshape(new.shape)


def frontier_schedule(n_segments: int, n_targets: int, pull_fraction: float) -> list[list[Any]]:
    """Per segment ``[target index, "pull" | "release"]``: the round's segments are shared among the targets in
    order; the first ``pull_fraction`` of each share (rounded up) pulls toward the target, the rest is released."""
    share = np.array_split(np.arange(n_segments), n_targets)
    schedule: list[list[Any]] = [[0, "release"]] * n_segments
    for t, segs in enumerate(share):
        n_pull = int(np.ceil(pull_fraction * len(segs)))
        for j, k in enumerate(segs):
            schedule[int(k)] = [t, "pull" if j < n_pull else "release"]
    return schedule


def plan_round(campaign: Campaign, r: int) -> dict[str, Any]:
    """Decide what round r does, write its plan.json (and initial_bias.npz) and return the plan."""
    cfg, run_dir = campaign.cfg, campaign.run_dir
    plan: dict[str, Any] = {"round": r, "segments": n_segments(cfg, r)}
    if r == 0:
        plan["strategy"] = "given" if cfg.campaign.round0_trajectories else "unbiased"
    elif r >= cfg.campaign.rounds:  # the converge phase: the last encoder, frozen
        plan.update(strategy=cfg.converge.method, converge=True, model_round=r - 1)
        info = campaign.model(r - 1).info
        section = "opes" if cfg.converge.method == "opes" else "metadynamics"
        plan["variables"] = metadynamics_variables(cfg, info["z_min"], info["z_max"], section)
    else:
        plan["strategy"] = cfg.strategy_for_round(r)
        info = campaign.model(r - 1).info
        if plan["strategy"] == "pocket":  # the openness-anchored dimension (latentbias.campaign.pocket)
            from .pocket import pocket_plan

            plan.update(pocket_plan(campaign, r, plan["segments"]))
        elif plan["strategy"] == "opes":
            plan["variables"] = metadynamics_variables(cfg, info["z_min"], info["z_max"], "opes")
        elif plan["strategy"] == "metadynamics":
            plan["variables"] = metadynamics_variables(cfg, info["z_min"], info["z_max"])
            previous = run_dir.read_plan(r - 1)
            if cfg.metadynamics.carry_bias and r >= 2 and previous["strategy"] == "metadynamics":
                final = run_dir.read_segment(r - 1, run_dir.round_segments(r - 1) - 1)["grid_end"]
                run_dir.save_npz(run_dir.round_dir(r) / INITIAL_BIAS,
                                 grid=carried_bias(previous["variables"], final, plan["variables"]))
                plan["initial_bias"] = INITIAL_BIAS
        else:
            z = campaign.encode(r - 1, campaign.all_frames(r - 1))
            targets, nearest = frontier_targets(z, cfg.frontier.n_targets, cfg.frontier.bins)
            plan["targets"] = targets.tolist()
            plan["start_frames"] = nearest.tolist()
            plan["schedule"] = frontier_schedule(plan["segments"], len(targets), cfg.frontier.pull_fraction)
    run_dir.write_plan(r, plan)
    logger.info("round %d plan: %s", r, {k: v for k, v in plan.items() if k in ("strategy", "segments", "targets")})
    return plan
