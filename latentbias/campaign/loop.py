"""The adaptive loop: plan -> simulate -> train -> weights, round after round, resumable at any moment.

``Campaign(config, rundir).run()`` drives rounds 0..R-1. Round 0 is unbiased (or given trajectories); round r >= 1
is biased in the latent space of the model trained after round r-1, with the round's strategy. A round may end
before its planned length when the OOD guard calls for retraining (``end.json``). With ``[converge] enabled`` a
last round R — the converge phase — runs with the encoder of round R-1 frozen (no train phase) until its
estimate stops drifting or its budget is spent (:mod:`latentbias.campaign.converge`); its weights phase writes
the final estimate (:mod:`latentbias.campaign.weights`). When the frozen encoder meets out-of-distribution frames
the converge attempt ends, trains like an exploration round, and a new attempt runs in round R + 1 (up to
``[converge] restarts`` times; the final estimate uses the last attempt only). Each phase lives
in its own module; this one only orders them and holds what they share (configuration, run directory, system,
featurizer, the models of finished rounds):

=============  =========================================  =============================================
phase          module                                     writes
=============  =========================================  =============================================
``plan``       :mod:`latentbias.campaign.plan`            ``plan.json`` (+ ``initial_bias.npz``)
``simulate``   :mod:`latentbias.campaign.simulate`,       ``seg_*.npz``, checkpoints, ``frames.dcd``,
               :mod:`latentbias.campaign.roundbias`,      ``end.json`` (ended early)
               :mod:`latentbias.campaign.converge`,
               :mod:`latentbias.campaign.walkers`         (``[execution] walkers`` > 1: parallel walkers on Dask)
``train``      :mod:`latentbias.campaign.train`           ``model.pt``, ``model_state.npz``, ``model.json``
``weights``    :mod:`latentbias.campaign.weights`         ``weights.json``, ``weights.csv``, ``frames.csv``
=============  =========================================  =============================================

Everything is written through :class:`~latentbias.campaign.rundir.RunDir`'s commit protocol while holding its
lock, so running the same command again resumes from the last committed step with no frame lost or repeated.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import secrets
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..features import build_featurizer
from .config import CampaignConfig
from .plan import n_segments, plan_round
from .converge import converge_end_check, convergence_history, restarted
from .extend import assess_change, reconcile_config
from .pocket import frames_openness, pocket_enabled
from .records import frame_boxes, load_frames
from .rundir import RunDir
from .seeds import MAX_SEED
from .simulate import import_trajectories, simulate_round
from .systems import build_system
from .train import RoundModel, load_round_model, train_round
from .execution import WalkerPool
from .weights import BiasState, bias_states, write_weights

logger = logging.getLogger(__name__)

__all__ = ["Campaign", "RoundModel"]


def _resolve_seed(config: CampaignConfig, run_dir: RunDir) -> CampaignConfig:
    """A config whose ``[md] seed`` is set: as given, else the one stored in the run directory, else drawn at
    random (and logged; the run directory stores it with the config, so a resume is identical)."""
    if config.md.seed is not None:
        return config
    stored = run_dir.stored_config()
    seed = (stored or {}).get("md", {}).get("seed")
    if seed is None:
        seed = secrets.randbelow(MAX_SEED) + 1
        logger.info("no [md] seed given: drew seed = %d (stored in %s)", seed, run_dir.config_file)
    return dataclasses.replace(config, md=dataclasses.replace(config.md, seed=int(seed)))



@contextlib.contextmanager
def deterministic_torch_threads() -> Iterator[None]:
    """Run the campaign's own torch work (training, encoding) on one thread, then restore the caller's setting.

    Floating-point reductions in torch depend on the number of intra-op threads, and the number a process has
    depends on what ran in it before (OMP_NUM_THREADS, an earlier ``torch.set_num_threads``). Fixing it makes the
    same config and seed give the same models, z ranges and hence the same frames in any process (a resumed run
    in a fresh process equals an uninterrupted one). OpenMM's own threads are not affected.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)

class Campaign:
    """An adaptive sampling campaign in one run directory.

    Parameters
    ----------
    config : CampaignConfig
        Without ``[md] seed`` the seed stored in ``rundir`` is used, or a new one is drawn (see ``cfg.md.seed``).
    rundir : str or path-like
        Created if missing; an existing one is resumed. A config that differs from the stored one extends or
        moves the campaign when the completed work stays valid, and is refused (naming the keys) otherwise
        (:mod:`latentbias.campaign.extend`).
    progress : bool
        tqdm progress bars (hidden when not a terminal anyway).
    """

    def __init__(self, config: CampaignConfig, rundir: str | Path, progress: bool = True):
        self.run_dir = RunDir(rundir)
        self.cfg = _resolve_seed(config, self.run_dir)
        stored = self.run_dir.stored_config()
        self._seed_drawn = config.md.seed is None and stored is None
        if stored is not None:  # refuse a change the completed work cannot follow before anything starts
            assess_change(self.run_dir, stored, self.cfg.to_dict())
        self.progress = progress
        self._system_cache = None
        self._models: dict[int, RoundModel] = {}
        self.log_handler = logging.FileHandler(self.run_dir.log_file)
        self.log_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self._pool: WalkerPool | None = None  # parallel walkers' Dask client ([execution] walkers > 1), started lazily
        self._phases: dict[str, Callable[[int, dict[str, Any]], dict[str, Any]]] = {
            "plan": self._plan, "simulate": self._simulate, "train": self._train, "weights": self._weights}

    # ------------------------------------------------------------------------------------------- public API

    def run(self) -> dict[str, Any]:
        """Run (or resume) the campaign to the end. Returns the final progress record.

        Raises :class:`~latentbias.campaign.rundir.RunDirLocked` when another process runs in the same directory
        and :class:`~latentbias.campaign.rundir.RunDirError` when the directory is damaged.
        """
        root = logging.getLogger("latentbias")
        root.addHandler(self.log_handler)
        level = root.level
        if root.getEffectiveLevel() > logging.INFO:  # campaign.log records INFO whatever the caller configured
            root.setLevel(logging.INFO)
        try:
            with self.run_dir.lock(), deterministic_torch_threads():
                return self._run_locked()
        finally:
            if self._pool is not None:  # stop the walkers' cluster, whatever happened
                self._pool.close()
                self._pool = None
            root.removeHandler(self.log_handler)
            root.setLevel(level)

    def _run_locked(self) -> dict[str, Any]:
        self.run_dir.remove_temporary_files()
        reconcile_config(self)  # dry build of a new or changed config; a finished campaign may grow (extend.py)
        progress = self.run_dir.read_progress()
        if progress["finished"]:
            logger.info("campaign in %s already finished", self.run_dir.path)
            return progress
        if not self.run_dir.progress_file.is_file():
            logger.info("new campaign in %s, seed %d%s", self.run_dir.path, self.cfg.md.seed,
                        " (drawn at random; stored in config.json)" if self._seed_drawn else "")
            self.run_dir.write_progress(progress)
        else:
            logger.info("resuming %s at round %d, phase %s, %d committed segments", self.run_dir.path,
                        progress["round"], progress["phase"], progress["segments"])
        while not progress["finished"]:
            progress = self._phases[progress["phase"]](progress["round"], progress)
            self.run_dir.write_progress(progress)
        return progress

    def system(self) -> tuple[Any, Any, np.ndarray]:
        """``(openmm.System, openmm.app.Topology, starting positions in nm)`` of the campaign (built once)."""
        if self._system_cache is None:
            self._system_cache = build_system(self.cfg)
        return self._system_cache

    def featurizer(self) -> Any:
        """A new instance of the campaign's featurizer (``[features]``) for the system's topology."""
        import mdtraj as md

        _, topology, xyz = self.system()
        f = self.cfg.features
        return build_featurizer(f.kind, md.Topology.from_openmm(topology), f.selection, xyz, f.contact_r0)

    def n_segments(self, r: int) -> int:
        """Checkpoint segments of round r."""
        return n_segments(self.cfg, r)

    @property
    def converge_round(self) -> int | None:
        """Index of the converge phase's current (finally: last) attempt — ``[campaign] rounds``, plus one per
        attempt that went back to retraining — or None without a converge phase."""
        if not self.cfg.converge.enabled:
            return None
        r = self.cfg.campaign.rounds
        while restarted(self.run_dir, r):
            r += 1
        return r

    @property
    def last_round(self) -> int:
        """Index of the campaign's last round (the converge phase's last attempt when there is one)."""
        r = self.converge_round
        return self.cfg.campaign.rounds - 1 if r is None else r

    def encoder_round(self, r: int) -> int:
        """The round whose model encodes frames after round r (the frozen one for the converge phase)."""
        return r - 1 if r == self.converge_round else r

    def encode(self, q: int, frames: dict[str, np.ndarray]) -> np.ndarray:
        """Latent coordinates of ``frames`` under round q's model, with the frames' periodic boxes (shape=(n, d))."""
        return self.model(q).file.encode(frames["positions"].astype(float), frame_boxes(frames))

    def model(self, r: int) -> RoundModel:
        """The model trained after round r."""
        if r not in self._models:
            self._models[r] = load_round_model(self.run_dir, r)
        return self._models[r]

    def all_frames(self, upto: int) -> dict[str, np.ndarray]:
        """Frames of rounds 0..upto concatenated (:data:`~latentbias.campaign.records.FRAME_COLUMNS`)."""
        def segments():
            for r in range(upto + 1):
                for k in range(self.run_dir.round_segments(r)):
                    yield r, k, self.run_dir.read_segment(r, k)

        return load_frames(segments())

    def bias_states(self, frames: dict[str, np.ndarray]) -> tuple[list[BiasState], np.ndarray]:
        """The bias state of every frame and the index of each frame's state
        (:func:`latentbias.campaign.weights.bias_states`)."""
        return bias_states(frames, self.run_dir, self.cfg)

    def initial_bias(self, r: int) -> np.ndarray | None:
        """The metadynamics bias round r started from (kJ/mol, grid shape), or None."""
        return self.run_dir.read_initial_bias(r, self.run_dir.read_plan(r))

    # ----------------------------------------------------------------------------------------------- phases

    def _plan(self, r: int, progress: dict[str, Any]) -> dict[str, Any]:
        plan_round(self, r)
        return {"round": r, "phase": "simulate", "segments": 0, "finished": False}

    def _simulate(self, r: int, progress: dict[str, Any]) -> dict[str, Any]:
        if self.run_dir.read_plan(r)["strategy"] == "given":
            import_trajectories(self, r)
            n_seg = 1
        elif r == self.converge_round:
            n_seg = self._simulate_round(r, int(progress["segments"]),
                                         lambda n: converge_end_check(self.run_dir, self.cfg, r, n, self.featurizer()))
            if not restarted(self.run_dir, r):
                return {"round": r, "phase": "weights", "segments": n_seg, "finished": False}
        else:
            n_seg = self._simulate_round(r, int(progress["segments"]))
        return {"round": r, "phase": "train", "segments": n_seg, "finished": False}

    def _simulate_round(self, r: int, committed: int, end_check: Callable[[int], str | None] | None = None) -> int:
        """One simulation in this process, or ``[execution] walkers`` in parallel on Dask
        (:mod:`latentbias.campaign.walkers`)."""
        if self.cfg.execution.walkers == 1:
            return simulate_round(self, r, committed, end_check)
        from .walkers import simulate_round_walkers

        if self._pool is None:
            self._pool = WalkerPool(self.cfg.execution)
        return simulate_round_walkers(self, r, committed, self._pool, end_check)

    def _train(self, r: int, progress: dict[str, Any]) -> dict[str, Any]:
        self._models[r] = train_round(self, r, self.all_frames(r))
        return {**progress, "phase": "weights"}

    def _weights(self, r: int, progress: dict[str, Any]) -> dict[str, Any]:
        frames = self.all_frames(r)
        encoded: dict[int, np.ndarray] = {}

        def encode(q: int) -> np.ndarray:
            if q not in encoded:
                encoded[q] = self.encode(q, frames)
            return encoded[q]

        if r == self.converge_round:
            convergence_history(self.run_dir, self.cfg, r, self.featurizer())
        extra = None
        if pocket_enabled(self.cfg):  # openness per frame in frames.csv (latentbias.campaign.pocket)
            extra = {f"openness_{self.cfg.pocket.unit.replace('^', '')}": frames_openness(self, frames)}
        write_weights(self.run_dir, self.cfg, r, frames, encode, extra, self.featurizer())
        last = r >= self.last_round
        logger.info("%s done", "converge phase" if r == self.converge_round
                    else f"converge attempt in round {r} (ended to retrain)" if restarted(self.run_dir, r)
                    else f"round {r} (rounds 0-{self.cfg.campaign.rounds - 1})")
        return {"round": r if last else r + 1, "phase": "done" if last else "plan", "segments": 0, "finished": last}
