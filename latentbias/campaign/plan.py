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
  ``variables`` (every latent dimension; in a campaign with ``pocket`` rounds the openness-anchored dimension only,
  :func:`~latentbias.campaign.pocket.pocket_converge_variables`), and ``segments`` = the budget ``max_steps`` / ``checkpoint_interval`` (the run may stop earlier:
  ``end.json``); ``attempt`` and ``restart_segments`` (:func:`converge_attempt_budget`): an attempt whose frozen
  encoder meets out-of-distribution frames goes back to retraining, and the next attempt (round r + 1, encoder of
  round r) gets what is left of the budget; ``[converge] method = "umbrella"`` adds the windows along a latent
  path (``dims``, ``path``, ``centers``, ``force_constants``, ``start_frames``, ``schedule``, ``sweep_segments``,
  :func:`latentbias.campaign.umbrellaconv.umbrella_plan`; its ``variables`` only set the drift's FES range);
  otherwise, with ``[converge] min_round_trips`` > 0, ``round_trip_cores``: the cores of the latent basins whose
  round trips the stopping rule counts (:func:`latentbias.campaign.roundtrips.round_trip_cores_plan`), and with
  ``structural_states`` > 0 also ``structural_states`` (the microstate count and the file of the exploration
  frames' features, :func:`latentbias.campaign.structuralstates.structural_states_plan`);
* ``pocket``: ``bias``, ``variables`` (the openness-anchored dimension only), ranked frontier ``targets``, the
  restart ``start_frame`` and ``restart_segments`` (:func:`~latentbias.campaign.pocket.pocket_plan`);
* ``frontier``: ``targets`` (:func:`~latentbias.campaign.frontier.frontier_targets` in the previous model's latent
  space), ``start_frames`` (index, among all frames of the earlier rounds, of the frame nearest each target) and
  ``schedule`` (:func:`frontier_schedule`); with parallel walkers (``[execution] walkers`` > 1) also
  ``walker_schedules``, one schedule per walker over its share of the targets (:func:`walker_frontier_schedules`).

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

__all__ = ["n_segments", "plan_round", "converge_attempt_budget", "metadynamics_variables", "carried_bias",
           "frontier_schedule", "walker_frontier_schedules"]

INITIAL_BIAS = "initial_bias.npz"


def n_segments(config: CampaignConfig, r: int) -> int:
    """Checkpoint segments planned for round r (round ``[campaign] rounds`` is the converge phase)."""
    c = config.campaign
    if r >= c.rounds:
        return config.converge.max_steps // c.checkpoint_interval
    steps = c.round0_steps if r == 0 else c.steps_per_round
    return steps // c.checkpoint_interval


def converge_attempt_budget(campaign: Campaign, r: int) -> dict[str, int]:
    """Budget of the converge attempt in round r (rounds ``[campaign] rounds``, +1, ... when earlier attempts went
    back to retraining, see :mod:`latentbias.campaign.converge`): ``attempt`` (0 for the first), ``segments`` (the
    ``max_steps`` budget less what earlier attempts used, at least ``min_steps``) and ``restart_segments`` (after
    how many committed segments at most the attempt may still end for retraining: only while restarts remain and
    the budget left after it still holds ``min_steps`` for a new attempt; 0 = never)."""
    cfg = campaign.cfg
    c, ckpt = cfg.converge, cfg.campaign.checkpoint_interval
    attempt = r - cfg.campaign.rounds
    used = sum(campaign.run_dir.round_segments(q) for q in range(cfg.campaign.rounds, r)) * ckpt
    segments = max(c.max_steps - used, c.min_steps, ckpt) // ckpt
    may = attempt < c.restarts and cfg.ood.action == "retrain"
    restart_segments = max(0, (c.max_steps - c.min_steps - used) // ckpt) if may else 0
    return {"attempt": attempt, "segments": int(segments), "restart_segments": int(min(restart_segments, segments))}


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


def walker_frontier_schedules(n_segments: int, n_targets: int, n_walkers: int,
                              pull_fraction: float) -> list[list[list[Any]]]:
    """Per walker, per segment ``[target index, "pull" | "release"]``: the targets are dealt to the walkers in
    turn (walker w gets targets w, w + N, ...; a walker left without one when N exceeds the targets repeats
    target w mod n_targets, from its own velocities), and each walker shares its segments among its targets as
    :func:`frontier_schedule` does."""
    out = []
    for w in range(n_walkers):
        mine = list(range(w, n_targets, n_walkers)) or [w % n_targets]
        local = frontier_schedule(n_segments, len(mine), pull_fraction)
        out.append([[mine[t], phase] for t, phase in local])
    return out


def plan_round(campaign: Campaign, r: int) -> dict[str, Any]:
    """Decide what round r does, write its plan.json (and initial_bias.npz) and return the plan."""
    cfg, run_dir = campaign.cfg, campaign.run_dir
    plan: dict[str, Any] = {"round": r, "segments": n_segments(cfg, r)}
    if r == 0:
        plan["strategy"] = "given" if cfg.campaign.round0_trajectories else "unbiased"
    elif r >= cfg.campaign.rounds:  # the converge phase: the last encoder, frozen
        plan.update(strategy=cfg.converge.method, converge=True, model_round=r - 1,
                    **converge_attempt_budget(campaign, r))
        info = campaign.model(r - 1).info
        section = "metadynamics" if cfg.converge.method == "metadynamics" else "opes"
        from .pocket import pocket_converge_variables  # pocket campaigns: the anchored dimension only

        plan["variables"] = (pocket_converge_variables(cfg, info["z_min"], info["z_max"])
                             or metadynamics_variables(cfg, info["z_min"], info["z_max"], section))
        if cfg.converge.method == "umbrella":  # windows along a latent path (latentbias.campaign.umbrellaconv)
            from .umbrellaconv import umbrella_plan

            plan.update(umbrella_plan(campaign, r, plan["segments"]))
        elif cfg.converge.min_round_trips > 0:  # cores of the latent basins (latentbias.campaign.roundtrips)
            from .roundtrips import round_trip_cores_plan

            plan["round_trip_cores"] = round_trip_cores_plan(campaign, plan["variables"])
            if cfg.converge.structural_states > 0:  # input-feature microstates (latentbias.campaign.structuralstates)
                from .structuralstates import structural_states_plan

                plan["structural_states"] = structural_states_plan(campaign, r)
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
            if cfg.execution.walkers > 1:
                plan["walker_schedules"] = walker_frontier_schedules(plan["segments"], len(targets),
                                                                     cfg.execution.walkers,
                                                                     cfg.frontier.pull_fraction)
    run_dir.write_plan(r, plan)
    logger.info("round %d plan: %s", r, {k: v for k, v in plan.items() if k in ("strategy", "segments", "targets")})
    return plan
