"""Running a round: the OpenMM simulation, segment by segment, each committed atomically with its checkpoint.

:func:`simulate_round` builds the round's own copy of the system, adds the round's bias
(:mod:`latentbias.campaign.roundbias`), resumes from the last committed segment's checkpoint (or starts from the
previous round's last frame with fresh velocities) and saves a frame every ``save_interval`` steps
(:class:`~latentbias.campaign.records.SegmentRecorder`). Every ``checkpoint_interval`` steps the segment is
committed (:meth:`~latentbias.campaign.rundir.RunDir.commit_segment`). When the round ends its frames are
assembled into ``frames.dcd`` + ``topology.pdb`` (:func:`assemble_round`).

:func:`import_trajectories` is round 0 from ``round0_trajectories``: the frames become one unbiased segment.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from tqdm.auto import tqdm

from ..bias.stiffness import bias_force_groups, check_timestep
from ..export import ModelEvaluationError
from ..nonfinite import nonfinite_frame_error
from ..platforms import check_platform
from ..torchscript_errors import cause_first
from .instability import check_kinetic_temperature, run_with_retries
from .records import SegmentRecorder, unbiased_frames
from .roundbias import ROUND_BIASES, RoundSetup
from .rundir import RunDirError
from .seeds import RoundSeeds

if TYPE_CHECKING:
    from .config import CampaignConfig
    from .loop import Campaign

logger = logging.getLogger(__name__)

__all__ = ["simulate_round", "import_trajectories", "assemble_round", "make_simulation", "restore_state",
           "record_segment"]


def make_simulation(campaign: Campaign, system: Any, seed: int, properties: dict[str, str] | None = None) -> Any:
    """An ``openmm.app.Simulation`` of ``system`` with the campaign's integrator, seed and platform (platform
    properties: ``[md] platform_properties`` unless ``properties`` are given)."""
    import openmm
    from openmm import app, unit

    m = campaign.cfg.md
    integrator = openmm.LangevinMiddleIntegrator(m.temperature * unit.kelvin, m.friction / unit.picosecond,
                                                 m.timestep * unit.femtosecond)
    integrator.setRandomNumberSeed(seed)
    platform = openmm.Platform.getPlatformByName(m.platform)
    check_platform(system, platform)  # refuse a route that would crash the process, before the Context exists
    props = dict(m.platform_properties) if properties is None else dict(properties)
    return app.Simulation(campaign.system()[1], system, integrator, platform, props)


def record_segment(sim: Any, bias: Any, n_frames: int, save_interval: int, periodic: bool,
                   on_frame: Callable[[], None] | None = None,
                   blowup: Callable[[np.ndarray, int], None] | None = None) -> SegmentRecorder:
    """Advance ``sim`` under ``bias`` by ``n_frames`` × ``save_interval`` steps, recording a frame after each
    ``save_interval`` (positions, step, time, box and the bias's observation); ``on_frame`` is called after
    each. Positions that became NaN/inf raise :class:`~latentbias.nonfinite.NonFiniteBiasError` naming the atoms
    and what the bias's model gives at the last finite frame (:func:`~latentbias.nonfinite.nonfinite_frame_error`);
    ``blowup(velocities nm/ps, step)`` (:func:`~latentbias.campaign.instability.check_kinetic_temperature`) is
    called on every frame before the bias observes it and raises when the system exploded with finite positions."""
    from openmm import unit

    recorder = SegmentRecorder()
    last = _frame(sim, periodic)  # the last finite configuration, for the diagnosis of a non-finite one
    for _ in range(n_frames):
        try:
            bias.step(sim, save_interval)
        except Exception as exc:  # openmm.OpenMMException from a TorchForce: torch's cause is on its last line
            text, reordered = str(exc).strip(), cause_first(str(exc))
            if "NaN" in text and "latentbias:" not in text:  # e.g. "Particle coordinate is NaN" from OpenMM
                raise nonfinite_frame_error(sim, bias, last, _frame(sim, periodic)[0], text) from exc
            if reordered.splitlines()[:1] == text.splitlines()[:1]:
                raise
            raise ModelEvaluationError(f"the biasing force's model failed after step {sim.currentStep}: "
                                       f"{reordered}") from exc
        state = sim.context.getState(getPositions=True, getVelocities=blowup is not None)
        xyz = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer) if periodic else None
        if not np.all(np.isfinite(xyz)):
            raise nonfinite_frame_error(sim, bias, last, np.asarray(xyz))
        if blowup is not None:
            blowup(state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond), sim.currentStep)
        recorder.append(xyz, sim.currentStep, state.getTime().value_in_unit(unit.picosecond),
                        bias.observe(sim, xyz, None if box is None else np.asarray(box)), box)
        last = (np.asarray(xyz), None if box is None else np.asarray(box), sim.currentStep)
        if on_frame is not None:
            on_frame()
    return recorder


def _frame(sim: Any, periodic: bool) -> tuple[np.ndarray, np.ndarray | None, int]:
    """(positions nm, box nm or None, step) of the simulation now."""
    from openmm import unit

    state = sim.context.getState(getPositions=True)
    box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer) if periodic else None
    return (np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)),
            None if box is None else np.asarray(box), sim.currentStep)


def _start_positions(campaign: Campaign, r: int) -> np.ndarray:
    """Round 0: the system's positions; round r: the last frame of round r-1 (nm)."""
    if r == 0:
        return campaign.system()[2]
    return campaign.run_dir.read_segment(r - 1, campaign.run_dir.round_segments(r - 1) - 1)["positions"][-1].astype(float)


def simulate_round(campaign: Campaign, r: int, committed: int,
                   end_check: Callable[[int], str | None] | None = None) -> int:
    """Simulate round r from its plan, resuming after ``committed`` committed segments; returns the number of
    segments the round holds.

    The round ends before its plan's last segment when, after a committed segment, the bias says so
    (:meth:`~latentbias.campaign.roundbias.RoundBias.end_reason`: OOD -> retrain) or ``end_check(n_committed)``
    returns a reason (the converge phase's drift criterion). The end is recorded in ``end.json``
    (:meth:`~latentbias.campaign.rundir.RunDir.write_round_end`) before progress moves on; a run killed in
    between re-evaluates the same deterministic checks on resume.
    """
    import openmm
    from openmm import unit

    cfg, run_dir = campaign.cfg, campaign.run_dir
    plan = run_dir.read_plan(r)
    if run_dir.round_end(r) is not None:
        n_seg = run_dir.round_segments(r)
        assemble_round(campaign, r, n_seg)
        return n_seg
    run_dir.check_strategy(r, plan, tuple(ROUND_BIASES))  # names plan.json, the value and the fix
    removed = run_dir.discard_uncommitted(r, committed)
    if removed:
        logger.info("round %d: removed %d files of an interrupted commit", r, len(removed))
    base_system, _, _ = campaign.system()
    seeds = RoundSeeds(cfg.md.seed, r)
    model = campaign.model(r - 1) if r > 0 else None

    def build() -> tuple[Any, Any]:
        """A fresh copy of the system with the round's bias added: (system, bias)."""
        system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(base_system))
        setup = RoundSetup(config=cfg, plan=plan, system=system, model=model,
                           featurizer=campaign.featurizer() if model is not None else None, seeds=seeds,
                           initial_bias=run_dir.read_initial_bias(r, plan),
                           earlier_positions=lambda: campaign.all_frames(r - 1)["positions"])
        return system, ROUND_BIASES[plan["strategy"]](setup)

    def start(system: Any, bias: Any, done: int) -> Any:
        """The round's simulation in the state after ``done`` committed segments (a resume after a kill, or the
        retry of a segment that blew up, :mod:`~latentbias.campaign.instability`)."""
        sim = make_simulation(campaign, system, seeds.integrator)
        if done > 0:
            restore_state(campaign, sim, r, done - 1)
            try:
                run_dir.check_bias_state(run_dir.bias_prefix(r, done - 1))
                bias.load(run_dir.bias_prefix(r, done - 1))
            except (OSError, ValueError) as exc:
                raise RunDirError(f"round {r}: the bias state after segment {done - 1} cannot be restored ({exc}); "
                                  "the earlier states are gone (only the last committed one is kept): restore the "
                                  "run directory from a backup, or start again in a new --rundir") from None
        else:
            sim.context.setPositions(_start_positions(campaign, r) * unit.nanometer)
            sim.context.setVelocitiesToTemperature(cfg.md.temperature * unit.kelvin, seeds.velocities)
        return sim

    system, bias = build()
    bias_groups = bias_force_groups(system, base_system.getNumForces())
    n_seg = plan["segments"]
    if 0 < committed < n_seg:  # killed after a commit: would the round have ended there?
        reason = bias.end_reason(run_dir.read_segment(r, committed - 1)) or (end_check and end_check(committed))
        if reason:
            return end_round_early(campaign, r, committed, reason)
    periodic = system.usesPeriodicBoundaryConditions()
    blowup = check_kinetic_temperature(system, cfg.md.temperature)
    live = [system, bias, start(system, bias, committed)]
    c = cfg.campaign
    save = frame_interval(cfg, plan)
    per_seg = c.checkpoint_interval // save
    bar = tqdm(total=n_seg * c.checkpoint_interval, initial=committed * c.checkpoint_interval,
               desc=f"round {r} {plan['strategy']}", unit="step", disable=(not campaign.progress) or None, leave=False)
    t0 = time.perf_counter()
    stiff_warned = False
    for k in range(committed, n_seg):

        def attempt(factor: float, k: int = k) -> SegmentRecorder:
            if factor != 1.0:  # a retry: rebuild everything from the last committed state
                live[0], live[1] = build()
                live[2] = start(live[0], live[1], k)
                bar.n = k * c.checkpoint_interval
            live[2].integrator.setStepSize(cfg.md.timestep * factor * unit.femtosecond)
            live[1].begin_segment(k, live[2])
            return record_segment(live[2], live[1], per_seg, save, periodic, lambda: bar.update(save), blowup)

        recorder = run_with_retries(attempt, f"round {r} segment {k}")
        system, bias, sim = live
        sim.integrator.setStepSize(cfg.md.timestep * unit.femtosecond)  # the next segment: the configured step
        columns = recorder.columns(bias.kind_of_segment(k))
        columns.update(bias.segment_extras())
        run_dir.commit_segment(r, k, columns, sim.context.createCheckpoint(), bias.save,
                               {"round": r, "phase": "simulate", "segments": k + 1, "finished": False},
                               state_xml=_state_xml(sim), platform=sim.context.getPlatform().getName())
        if bias_groups and not stiff_warned and k % 4 == 0:  # bias stiffer than the time step? (once a round)
            stiff_warned = _stiffness_warning(sim, columns["positions"], bias_groups, cfg.md.timestep, r, k)
        if k + 1 < n_seg:
            reason = bias.end_reason(columns) or (end_check and end_check(k + 1))
            if reason:
                bar.close()
                return end_round_early(campaign, r, k + 1, reason)
    bar.close()
    assemble_round(campaign, r, n_seg)
    logger.info("round %d simulated: %d segments, %.1f ps in %.0f s", r, n_seg,
                n_seg * c.checkpoint_interval * cfg.md.timestep / 1000.0, time.perf_counter() - t0)
    return n_seg


def _stiffness_warning(sim: Any, positions: np.ndarray, groups: set[int], timestep: float, r: int, k: int) -> bool:
    """:func:`~latentbias.bias.stiffness.check_timestep` on segment k's frames (the Context's positions and
    velocities are restored); True when it warned. A diagnostic: a failure is logged, never raised."""
    try:
        return bool(check_timestep(sim.context, positions, groups, timestep, where=f"round {r} segment {k}")["warned"])
    except Exception as exc:  # noqa: BLE001 - a diagnostic must not end a campaign
        logger.info("round %d segment %d: the bias's stiffness could not be checked (%s)", r, k, exc)
        return False


def _state_xml(sim: Any) -> str:
    import openmm

    state = sim.context.getState(getPositions=True, getVelocities=True, getParameters=True,
                                 getIntegratorParameters=True)
    return openmm.XmlSerializer.serialize(state)


def restore_state(campaign: Campaign, sim: Any, r: int, k: int) -> None:
    """Put ``sim`` in the state saved after segment k of round r: the OpenMM checkpoint when this platform wrote it
    (the continuation is then bit-identical to an uninterrupted run), else the platform-independent state (the run
    moved to another platform: same positions, velocities and step; the integrator's random stream restarts)."""
    import openmm

    platform = sim.context.getPlatform().getName()
    kind, data = campaign.run_dir.read_checkpoint(r, k, platform)
    if kind == "checkpoint":
        sim.context.loadCheckpoint(data)
        return
    sim.context.setState(openmm.XmlSerializer.deserialize(data.decode()))
    logger.warning("round %d continues on the %s platform from the platform-independent state after segment %d "
                   "(the checkpoint was written by another platform): positions, velocities and step are kept, the "
                   "integrator's random stream restarts", r, platform, k)


def frame_interval(config: CampaignConfig, plan: dict[str, Any]) -> int:
    """Steps between saved frames of a round: ``[converge] save_interval`` in the converge phase when set (more
    frames for the final estimate at no extra simulated time), else ``[campaign] save_interval``."""
    if plan.get("converge", False) and config.converge.save_interval:
        return int(config.converge.save_interval)
    return int(config.campaign.save_interval)


def end_round_early(campaign: Campaign, r: int, n_seg: int, reason: str) -> int:
    """End round r after ``n_seg`` committed segments (``end.json`` with ``reason``), assemble its files and
    return ``n_seg``."""
    campaign.run_dir.write_round_end(r, n_seg, reason)
    assemble_round(campaign, r, n_seg)
    logger.info("round %d ended after %d of %d planned segments (%s)", r, n_seg,
                campaign.run_dir.read_plan(r)["segments"], reason)
    return n_seg


def import_trajectories(campaign: Campaign, r: int) -> None:
    """Round r (0) from the configured trajectories: one unbiased segment and a plan saying so (trajectories of a
    subset of the atoms are matched and completed: :mod:`latentbias.campaign.round0import`)."""
    from .round0import import load_round0_frames

    xyz, boxes, info = load_round0_frames(campaign)
    plan = {"round": r, "strategy": "given", "segments": 1}
    if info:
        plan["round0_atoms"] = info
    campaign.run_dir.write_plan(r, plan)
    campaign.run_dir.save_npz(campaign.run_dir.segment_file(r, 0), **unbiased_frames(xyz, boxes))
    assemble_round(campaign, r, 1)


def assemble_round(campaign: Campaign, r: int, n_segments: int) -> None:
    """frames.dcd + topology.pdb of round r from its segments (derived files, rewritten when resuming)."""
    import mdtraj as md

    top = md.Topology.from_openmm(campaign.system()[1])
    data = campaign.run_dir.load_segments(r, n_segments)
    traj = md.Trajectory(data["positions"], top, time=data["time_ps"])
    if "box" in data and np.any(data["box"] != 0):
        traj.unitcell_vectors = data["box"].astype(np.float32)
    d = campaign.run_dir.round_dir(r)
    traj.save_dcd(str(d / ".frames.dcd.partial"))
    (d / ".frames.dcd.partial").replace(d / "frames.dcd")
    traj[0].save_pdb(str(d / ".topology.pdb.partial"))
    (d / ".topology.pdb.partial").replace(d / "topology.pdb")
