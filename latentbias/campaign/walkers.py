"""Parallel walkers: a round as N walkers running checkpoint segments in parallel on Dask, sharing one bias.

With ``[execution] walkers = N > 1`` every round (round 0 and the converge phase included) runs N independent
simulations ("walkers") of the round's planned segments each, so a round samples N times its planned steps.
Segment k of all walkers runs in parallel as N Dask tasks (:func:`run_segment`, on the workers of
:class:`~latentbias.campaign.execution.WalkerPool`); the driver (the campaign's process) waits for all N,
commits them together, and starts segment k + 1. Training and weighting stay on the driver.

Shared bias: deposits exchanged through the driver, segment by segment
---------------------------------------------------------------------
Metadynamics and OPES walkers share one bias. Walker w in segment k acts under

    the carried bias (metadynamics, ``initial_bias.npz``) + every walker's deposits of segments 0..k-1
    + its own deposits of segment k,

i.e. the walkers exchange their shares (:meth:`LatentMetadynamics.walkerContribution` /
:meth:`LatentOPES.walkerContribution`: own Gaussians, or own kernels and weight sums) through the driver after
every segment, and each imports the others' with ``setOtherWalkers``. This is the multiple-walker scheme of the
bias classes (and PLUMED's ``WALKERS_MPI`` / ``WALKERS_RSTRIDE``) with the exchange at fixed simulation times
instead of whenever a file in a shared folder happens to have been rewritten. That choice, rather than the
shared-directory protocol (``biasDir``), is deliberate:

* determinism: with a shared folder what a walker feels depends on how fast the other walkers ran, so two runs
  with the same seeds differ and a segment rerun after a lost worker would not reproduce the lost one. Here a
  segment is a pure function of its inputs (the committed checkpoint, the walker's committed bias state and the
  committed shares), so a rerun gives byte-identical frames, on any worker, at any time;
* reweighting: every frame must be a sample of a known bias state. Each walker records ``bias_kjmol`` and
  ``ct_kjmol`` of the bias acting in its own Context, and each segment stores the grid every walker acted under at
  its start and end (``walker_grid_start``, ``walker_grid_end``), from which
  :func:`latentbias.campaign.weights.bias_states` builds one piecewise-static state per walker and segment;
* only the driver writes to the run directory, so the commit protocol of
  :mod:`latentbias.campaign.rundir` holds unchanged and workers need no writable shared folder.

The price: a walker sees the others' deposits up to one checkpoint segment late (choose ``checkpoint_interval``
accordingly), and each segment ends with a barrier (walkers of equal speed lose little).

Budgets count per walker: a round's ``steps_per_round``, the converge phase's ``min_steps`` / ``max_steps`` and
its drift check all refer to one walker's simulated time (the round samples N times as much).

Frontier rounds: the plan's targets are dealt to the walkers (``walker_schedules``,
:func:`latentbias.campaign.plan.walker_frontier_schedules`). Seeds: walker w draws its integrator and velocity
seeds from its own ``numpy.random.SeedSequence`` child (:meth:`~latentbias.campaign.seeds.RoundSeeds.for_walker`).
Walker w starts round r from its own last frame of round r - 1 (round 0: the system's positions).

Run directory (``round_RRR/``, besides ``plan.json``)::

    seg_KKKKK.npz              frames of segment K of all walkers, walker 0 first (column ``walker``), with
                               grid_end (the shared bias after the exchange: all deposits of segments 0..K),
                               walker_grid_start / walker_grid_end (shape (N, grid)): each walker's acting bias
    chk_KKKKK_wWW.chk/.json    walker WW's OpenMM checkpoint after segment K, and its SHA-256 and platform
                               (:meth:`RunDir.write_checkpoint`, verified when the next segment reads it)
    bias_KKKKK_wWW.npz/.json   walker WW's bias state after segment K (own deposits, records)
    share_KKKKK.npz            every walker's share of the bias after segment K (what segment K + 1 imports)

Commit of segment K: all these files (each atomically), then ``progress.json``, then the walker files of K - 1
are deleted; a driver killed at any moment resumes from the last committed segment (files of uncommitted
segments are removed), exactly as with one walker.

Lost workers cost only their segment: Dask reschedules it on another worker from the same inputs
(:mod:`latentbias.campaign.execution`), and nothing is committed before all walkers of the segment are back.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..io import atomic_write_bytes
from .config import CampaignConfig
from .execution import WalkerPool, walker_platform_properties
from .roundbias import ROUND_BIASES, RoundBias, RoundSetup
from .rundir import RunDir, RunDirError
from .seeds import RoundSeeds
from .instability import check_kinetic_temperature, run_with_retries
from .simulate import end_round_early, assemble_round, frame_interval, make_simulation, record_segment

if TYPE_CHECKING:
    from .loop import Campaign

logger = logging.getLogger(__name__)

__all__ = ["SegmentTask", "SegmentResult", "run_segment", "simulate_round_walkers", "walker_plan",
           "discard_uncommitted_walker_files", "read_walker_state"]

_WALKER_FILE = re.compile(r"^(chk|bias|share)_(\d{5})(_w\d{2})?\.(npz|chk|json)$")
#: id of the carried metadynamics bias among the walkers' shares
CARRIED = "carried"
_SEP = "__"


# ------------------------------------------------------------------------------------------------- files

def walker_checkpoint_file(run_dir: RunDir, r: int, k: int, w: int) -> Path:
    return run_dir.checkpoint_file(r, k, walker=w)


def walker_bias_prefix(run_dir: RunDir, r: int, k: int, w: int) -> Path:
    return run_dir.round_dir(r) / f"bias_{k:05d}_w{w:02d}"


def share_file(run_dir: RunDir, r: int, k: int) -> Path:
    return run_dir.round_dir(r) / f"share_{k:05d}.npz"


def discard_uncommitted_walker_files(run_dir: RunDir, r: int, committed: int) -> list[Path]:
    """Remove walker checkpoint/bias/share files of round r except those of the last committed segment
    (``committed`` - 1): later ones are leftovers of an interrupted commit, earlier ones of a driver killed
    between a commit and the removal of the previous segment's files."""
    removed = []
    for p in run_dir.round_dir(r).iterdir():
        m = _WALKER_FILE.match(p.name)
        if m is None or (m.group(3) is None and m.group(1) != "share"):  # one-walker files: RunDir's business
            continue
        if int(m.group(2)) != committed - 1:
            p.unlink()
            removed.append(p)
    return removed


def _read_shares(run_dir: RunDir, r: int, k: int) -> dict[str, dict[str, np.ndarray]]:
    data = run_dir.read_npz(share_file(run_dir, r, k))
    out: dict[str, dict[str, np.ndarray]] = {}
    for key, value in data.items():
        walker, name = key.split(_SEP, 1)
        out.setdefault(walker, {})[name] = value
    return out


def read_walker_state(run_dir: RunDir, r: int, k: int, w: int, platform: str | None) -> tuple[bytes, dict[str, bytes]]:
    """Walker w's committed OpenMM checkpoint and bias state files after segment k, verified in the driver.

    The checkpoint against the SHA-256 in its ``chk_KKKKK_wWW.json`` (and the platform that wrote it:
    a checkpoint cannot be loaded on another platform), the bias state's ``.json`` against its own checksum and
    its ``.npz`` against the SHA-256 in that ``.json``. Damage raises :class:`RunDirError` naming the file and what
    to do, before any walker runs.
    """
    kind, checkpoint = run_dir.read_checkpoint(r, k, platform, walker=w)
    if kind != "checkpoint":  # walkers write no platform-independent state
        raise RunDirError(f"{walker_checkpoint_file(run_dir, r, k, w)} was written on another platform than "
                          f"{platform}; resume round {r} on the platform that wrote it ([md] platform) and change "
                          "the platform after the round")
    prefix = walker_bias_prefix(run_dir, r, k, w)
    npz, meta = prefix.with_name(prefix.name + ".npz"), prefix.with_name(prefix.name + ".json")
    if not npz.is_file() and not meta.is_file():
        return checkpoint, {}  # a bias without a state (restraint, unbiased)
    info = run_dir.read_json(meta, ("npz_sha256",))  # verifies the record's own checksum
    data = run_dir.read_verified(npz, meta, info["npz_sha256"])
    return checkpoint, {".npz": data, ".json": meta.read_bytes()}


# ------------------------------------------------------------------------------------------------- tasks

@dataclass(frozen=True)
class SegmentTask:
    """Everything one walker segment depends on (a segment is a pure function of it).

    Attributes
    ----------
    rundir : str
        Run directory (read only on the worker: plan, models, earlier frames).
    config : CampaignConfig
    r, k, walker : int
        Round, segment and walker index.
    checkpoint : bytes or None
        The walker's committed OpenMM checkpoint after segment k - 1 (None: k = 0, a fresh start).
    bias_state : dict
        The walker's committed bias state after k - 1 (``{".npz": bytes, ".json": bytes}``; empty at k = 0).
    shares : dict
        Bias shares (walker id -> arrays) of all walkers after segment k - 1, and the carried bias.
    """

    rundir: str
    config: CampaignConfig
    r: int
    k: int
    walker: int
    checkpoint: bytes | None
    bias_state: dict[str, bytes]
    shares: dict[str, dict[str, np.ndarray]]


@dataclass
class SegmentResult:
    """What a walker segment returns to the driver (nothing is written on the worker)."""

    walker: int
    columns: dict[str, np.ndarray]
    checkpoint: bytes
    bias_state: dict[str, bytes]
    share: dict[str, np.ndarray] | None
    grid_start: np.ndarray | None
    grid_end: np.ndarray | None
    host: str
    pid: int
    seconds: float
    worker: str | None = None
    continued: bool = False
    share_id: str | None = None
    #: warnings of the segment's retries after a blow-up (latentbias.campaign.instability), for the driver's log
    retries: tuple[str, ...] = ()


@dataclass
class _Live:
    """The simulation a worker process ran last, kept to continue it without a rebuild when the same walker's
    next segment comes to the same process."""

    key: tuple[str, str, int, int]
    k: int
    system: Any
    bias: RoundBias
    sim: Any
    checkpoint: bytes
    bias_state: dict[str, bytes]


#: per worker process: its last simulation. Continuing it is identical to restoring the committed checkpoint and
#: bias state, and used only when those are byte for byte what it produced and no other simulation ran since (the
#: Reference platform's random number generator is per process; its state is part of the checkpoint).
_LIVE: list[_Live | None] = [None]


class _WorkerView:
    """What a segment needs of its campaign on a worker: config, run directory, system, featurizer, models."""

    def __init__(self, rundir: str, config: CampaignConfig):
        self.cfg = config
        self.run_dir = RunDir(rundir)
        self.progress = False
        self._system_cache = None
        self._models: dict[tuple[int, int], Any] = {}

    def system(self) -> tuple[Any, Any, np.ndarray]:
        from .systems import build_system

        if self._system_cache is None:
            self._system_cache = build_system(self.cfg)
        return self._system_cache

    def featurizer(self) -> Any:
        from .loop import Campaign

        return Campaign.featurizer(self)  # type: ignore[arg-type]

    def model(self, r: int) -> Any:
        from .train import load_round_model

        key = (r, self.run_dir.model_file(r).stat().st_mtime_ns)  # a rewritten model is read again
        if key not in self._models:
            self._models[key] = load_round_model(self.run_dir, r)
        return self._models[key]

    def earlier_positions(self, r: int) -> np.ndarray:
        from .loop import Campaign

        return Campaign.all_frames(self, r - 1)["positions"]  # type: ignore[arg-type]


#: per worker process: views of the campaigns it has run segments of (system and models built once)
_VIEWS: dict[tuple[str, str], _WorkerView] = {}


def _view(rundir: str, config: CampaignConfig) -> _WorkerView:
    key = (str(Path(rundir).resolve()), repr(config))
    if key not in _VIEWS:
        while len(_VIEWS) >= 4:  # a long-lived worker serving many campaigns keeps the latest few
            _VIEWS.pop(next(iter(_VIEWS)))
        _VIEWS[key] = _WorkerView(rundir, config)
    return _VIEWS[key]


def walker_plan(plan: dict[str, Any], walker: int) -> dict[str, Any]:
    """Round plan as walker ``walker`` runs it (frontier: its own schedule over its share of the targets; umbrella:
    its share of the windows' trajectories, ``walker_replica_schedules`` saying which replica)."""
    if "walker_schedules" in plan:
        out = {**plan, "schedule": plan["walker_schedules"][walker]}
        if "walker_replica_schedules" in plan:
            out["replica_schedule"] = plan["walker_replica_schedules"][walker]
        return out
    return plan


def _shared(bias: RoundBias) -> Any:
    """The bias object walkers share (LatentMetadynamics / LatentOPES), or None (unbiased, frontier)."""
    return getattr(bias, "meta", None) or getattr(bias, "opes", None)


def _start_positions(view: _WorkerView, r: int, w: int) -> np.ndarray:
    """Round 0: the system's positions; round r: walker w's last frame of round r - 1 (nm)."""
    if r == 0:
        return view.system()[2]
    run_dir = view.run_dir
    seg = run_dir.read_segment(r - 1, run_dir.round_segments(r - 1) - 1)
    if "walker" not in seg:  # round 0 from given trajectories
        return seg["positions"][-1].astype(float)
    ids = np.unique(seg["walker"])
    return seg["positions"][seg["walker"] == ids[w % len(ids)]][-1].astype(float)


def _build_bias(view: Any, cfg: CampaignConfig, plan: dict[str, Any], r: int, walker: int,
                earlier: Callable[[], np.ndarray]) -> tuple[Any, RoundBias]:
    import openmm

    base_system = view.system()[0]
    system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(base_system))
    model = view.model(r - 1) if r > 0 else None
    seeds = RoundSeeds(cfg.md.seed, r)
    setup = RoundSetup(config=cfg, plan=walker_plan(plan, walker) if walker >= 0 else plan, system=system,
                       model=model, featurizer=view.featurizer() if model is not None else None,
                       seeds=seeds.for_walker(walker) if walker >= 0 else seeds, initial_bias=None,
                       earlier_positions=earlier, walker=walker)
    return system, ROUND_BIASES[plan["strategy"]](setup)


def run_segment(task: SegmentTask) -> SegmentResult:
    """Run segment ``task.k`` of walker ``task.walker`` of round ``task.r`` (on a Dask worker) and return its
    frames, checkpoint, bias state and bias share. Writes nothing to the run directory."""
    import torch
    from openmm import unit

    t0 = time.perf_counter()
    cfg, r, k, w = task.config, task.r, task.k, task.walker
    e = cfg.execution
    torch.set_num_threads(e.threads_per_walker)
    view = _view(task.rundir, cfg)
    key = (str(Path(task.rundir).resolve()), repr(cfg), r, w)
    live, _LIVE[0] = _LIVE[0], None  # taken: if this segment fails, no half-run simulation is left to continue
    continued = (live is not None and live.key == key and live.k == k - 1 and live.checkpoint == task.checkpoint
                 and live.bias_state == task.bias_state)
    seeds = RoundSeeds(cfg.md.seed, r).for_walker(w)
    plan = view.run_dir.read_plan(r)

    def build() -> tuple[Any, RoundBias, Any]:
        system, bias = _build_bias(view, cfg, plan, r, w, lambda: view.earlier_positions(r))
        properties = walker_platform_properties(e, cfg.md.platform, cfg.md.platform_properties, w)
        return system, bias, make_simulation(view, system, seeds.integrator, properties)

    if continued:
        system, bias, sim = live.system, live.bias, live.sim
    else:
        live = None
        system, bias, sim = build()
    blowup = check_kinetic_temperature(system, cfg.md.temperature)
    with tempfile.TemporaryDirectory(prefix="latentbias-walker-") as tmp:
        prefix = Path(tmp) / "state"
        if continued:  # the live objects are reused (no rebuild), but the committed state is loaded all the same
            logger.debug("walker %d segment %d continues the live simulation", w, k)
        holder: list[Any] = [system, bias, sim, None]

        def attempt(factor: float) -> Any:
            """Segment k from the committed state with the time step x factor (a retry rebuilds everything)."""
            if factor != 1.0:
                holder[0], holder[1], holder[2] = build()
            system, bias, sim = holder[0], holder[1], holder[2]
            if task.checkpoint is not None:  # so a continued segment and a restored one start from identical states
                sim.context.loadCheckpoint(task.checkpoint)
                if task.bias_state:
                    for suffix, data in task.bias_state.items():
                        prefix.with_name(prefix.name + suffix).write_bytes(data)
                    bias.load(prefix)
            else:
                sim.context.setPositions(_start_positions(view, r, w) * unit.nanometer)
                sim.context.setVelocitiesToTemperature(cfg.md.temperature * unit.kelvin, seeds.velocities)
            sim.integrator.setStepSize(cfg.md.timestep * factor * unit.femtosecond)
            shared = _shared(bias)
            holder[3] = None
            if shared is not None:
                shared.setOtherWalkers(task.shares)
                holder[3] = shared.getBias()
            bias.begin_segment(k, sim)
            save = frame_interval(cfg, plan)  # [converge] save_interval in the converge phase
            return record_segment(sim, bias, cfg.campaign.checkpoint_interval // save, save,
                                  system.usesPeriodicBoundaryConditions(), blowup=blowup)

        notes: list[str] = []
        recorder = run_with_retries(attempt, f"round {r} segment {k} walker {w}", notes=notes)
        system, bias, sim, grid_start = holder
        sim.integrator.setStepSize(cfg.md.timestep * unit.femtosecond)  # the next segment: the configured step
        shared = _shared(bias)
        columns = recorder.columns(bias.kind_of_segment(k))
        columns.update(bias.segment_extras())
        grid_end = columns.pop("grid_end", None)
        columns["walker"] = np.full(len(recorder), w, dtype=np.int64)
        out_prefix = Path(tmp) / "saved"
        bias.save(out_prefix)
        state = {suffix: out_prefix.with_name(out_prefix.name + suffix).read_bytes() for suffix in (".npz", ".json")
                 if out_prefix.with_name(out_prefix.name + suffix).is_file()}
    checkpoint = sim.context.createCheckpoint()
    _LIVE[0] = _Live(key, k, system, bias, sim, checkpoint, state)
    return SegmentResult(walker=w, columns=columns, checkpoint=checkpoint, bias_state=state,
                         share=shared.walkerContribution() if shared is not None else None,
                         grid_start=grid_start, grid_end=grid_end, host=socket.gethostname(), pid=os.getpid(),
                         seconds=time.perf_counter() - t0, worker=_worker_address(), continued=continued,
                         share_id=shared.walkerId if shared is not None else None, retries=tuple(notes))


def _worker_address() -> str | None:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return None


# ------------------------------------------------------------------------------------------------ driver

def _commit(run_dir: RunDir, r: int, k: int, columns: dict[str, np.ndarray], results: list[SegmentResult],
            shares: dict[str, dict[str, np.ndarray]], progress: dict[str, Any], platform: str | None) -> None:
    """Commit segment k of all walkers (module docstring)."""
    run_dir.save_npz(run_dir.segment_file(r, k), **columns)
    for res in results:
        run_dir.write_checkpoint(r, k, res.checkpoint, platform=platform, walker=res.walker)
        prefix = walker_bias_prefix(run_dir, r, k, res.walker)
        for suffix in (".npz", ".json"):  # the .json (with the npz's checksum) last, as saveState does
            if suffix in res.bias_state:
                atomic_write_bytes(prefix.with_name(prefix.name + suffix), res.bias_state[suffix])
    run_dir.save_npz(share_file(run_dir, r, k),
                     **{f"{walker}{_SEP}{name}": v for walker, arrays in shares.items() for name, v in arrays.items()})
    run_dir.write_progress(progress)
    discard = [share_file(run_dir, r, k - 1)]
    for res in results:
        prefix = walker_bias_prefix(run_dir, r, k - 1, res.walker)
        discard += [*run_dir.checkpoint_files(r, k - 1, walker=res.walker), prefix.with_name(prefix.name + ".npz"),
                    prefix.with_name(prefix.name + ".json")]
    for old in discard:
        if k > 0 and old.exists():
            old.unlink()


def _gather(pool: WalkerPool, futures: list[Any]) -> list[SegmentResult]:
    try:
        return pool.client().gather(futures)
    except BaseException:
        pool.client().cancel(futures)
        raise


def simulate_round_walkers(campaign: Campaign, r: int, committed: int, pool: WalkerPool,
                           end_check: Callable[[int], str | None] | None = None) -> int:
    """Simulate round r with ``[execution] walkers`` parallel walkers on ``pool``, resuming after ``committed``
    committed segments; returns the number of segments the round holds. The counterpart of
    :func:`latentbias.campaign.simulate.simulate_round` (same plan, early ends and ``end.json``)."""
    cfg, run_dir = campaign.cfg, campaign.run_dir
    n_walkers = cfg.execution.walkers
    plan = run_dir.read_plan(r)
    if run_dir.round_end(r) is not None:
        n_seg = run_dir.round_segments(r)
        assemble_round(campaign, r, n_seg)
        return n_seg
    run_dir.check_strategy(r, plan, tuple(ROUND_BIASES))  # names plan.json, the value and the fix
    removed = run_dir.discard_uncommitted(r, committed) + discard_uncommitted_walker_files(run_dir, r, committed)
    if removed:
        logger.info("round %d: removed %d files of an interrupted commit", r, len(removed))
    # the driver's view of the shared bias: all walkers' shares merged (grid_end), and the OOD guard's judge
    _, merged = _build_bias(campaign, cfg, plan, r, -1, lambda: campaign.all_frames(r - 1)["positions"])
    merged_shared = _shared(merged)
    carried: dict[str, dict[str, np.ndarray]] = {}
    initial = run_dir.read_initial_bias(r, plan)
    if initial is not None:
        carried[CARRIED] = {"selfBias": np.asarray(initial, dtype=float), "nDeposits": np.asarray(0),
                            "shape": np.asarray(initial.shape)}
    n_seg = plan["segments"]
    if 0 < committed < n_seg:  # killed after a commit: would the round have ended there?
        reason = merged.end_reason(run_dir.read_segment(r, committed - 1)) or (end_check and end_check(committed))
        if reason:
            return end_round_early(campaign, r, committed, reason)
    shares = _read_shares(run_dir, r, committed - 1) if committed > 0 else dict(carried)
    token = uuid.uuid4().hex[:8]
    home: dict[int, str | None] = {}  # worker that ran each walker's last segment (and may continue it)
    t0 = time.perf_counter()
    for k in range(committed, n_seg):
        states = [read_walker_state(run_dir, r, k - 1, w, cfg.md.platform) if k else (None, {})
                  for w in range(n_walkers)]
        tasks = [SegmentTask(rundir=str(run_dir.path), config=cfg, r=r, k=k, walker=w,
                             checkpoint=states[w][0], bias_state=states[w][1], shares=shares)
                 for w in range(n_walkers)]
        futures = [pool.submit(run_segment, t, key=f"latentbias-r{r:03d}-k{k:05d}-w{t.walker:02d}-{token}",
                               worker=home.get(t.walker)) for t in tasks]
        results = sorted(_gather(pool, futures), key=lambda res: res.walker)
        for note in (note for res in results for note in res.retries):
            logger.warning("%s", note)  # the worker's own log does not reach the campaign's
        columns = {name: np.concatenate([res.columns[name] for res in results]) for name in results[0].columns}
        new_shares = dict(carried)
        if merged_shared is not None:
            new_shares.update({res.share_id: res.share for res in results})  # keyed as each walker names itself
            merged_shared.setOtherWalkers(new_shares)
            columns["grid_end"] = merged_shared.getBias()
            columns["walker_grid_start"] = np.stack([res.grid_start for res in results])
            columns["walker_grid_end"] = np.stack([res.grid_end for res in results])
        _commit(run_dir, r, k, columns, results, new_shares,
                {"round": r, "phase": "simulate", "segments": k + 1, "finished": False}, cfg.md.platform)
        shares = new_shares
        home = {res.walker: res.worker for res in results}
        logger.info("round %d segment %d/%d: %d walkers committed (%s)", r, k + 1, n_seg, n_walkers,
                    ", ".join(f"w{res.walker} {res.seconds:.1f} s on {res.host}:{res.pid}"
                              f"{' (continued)' if res.continued else ''}" for res in results))
        if k + 1 < n_seg:
            reason = merged.end_reason(columns) or (end_check and end_check(k + 1))
            if reason:
                return end_round_early(campaign, r, k + 1, reason)
    assemble_round(campaign, r, n_seg)
    c = cfg.campaign
    logger.info("round %d simulated: %d walkers x %d segments, %.1f ps in %.0f s", r, n_walkers, n_seg,
                n_walkers * n_seg * c.checkpoint_interval * cfg.md.timestep / 1000.0, time.perf_counter() - t0)
    return n_seg
