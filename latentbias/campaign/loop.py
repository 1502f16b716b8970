"""The adaptive loop: simulate -> collect -> retrain -> export -> bias the next round, resumable at any moment.

``Campaign(config, rundir).run()`` drives rounds 0..R-1. Round 0 is unbiased (or given trajectories); round r >= 1
is biased in the latent space of the model trained after round r-1, with the round's strategy:

* ``metadynamics`` — :class:`~latentbias.bias.metadynamics.LatentMetadynamics` over all latent dimensions, grid
  covering the sampled latent range plus a margin;
* ``frontier`` — the least-visited points on the edge of the sampled latent region are targets
  (:func:`~latentbias.campaign.frontier.frontier_targets`); each gets a restrained run from the nearest sampled
  frame toward it (a :class:`~latentbias.bias.restraint.LatentRestraint` at the target), then is released
  (unbiased) for the rest of its share of the round.

After each round the encoder is retrained on all frames so far (warm start), its latent space is aligned to the
previous one (similarity Procrustes on the frames both saw, folded into the exported model) and exported; every
frame of every round then gets an MBAR log-weight (:mod:`latentbias.campaign.weights`).

An out-of-distribution guard watches each saved frame's reconstruction error under the biasing model: above
``threshold`` × its 99th percentile on the training frames, the bias is capped (no new Gaussians; restraints
off) or switched off until the end of the checkpoint segment, and the event is logged and stored with the frame.

Everything is written through :class:`~latentbias.campaign.rundir.RunDir`'s commit protocol, so running the same
command again resumes from the last committed checkpoint segment with no frame lost or repeated.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..export import LatentModelFile, load_model, save_model
from ..features import build_featurizer, featurize
from ..io import load_npz, save_npz, write_csv, write_json
from ..models import FeatureAutoencoder, LatentModel
from ..training import LatentModelEstimator
from .alignment import apply_alignment, fit_alignment
from .config import CampaignConfig
from .frontier import frontier_targets
from .rundir import RunDir
from .systems import build_system
from .weights import BiasState, cross_round_logweights

logger = logging.getLogger(__name__)

__all__ = ["Campaign", "RoundModel"]

KIND_UNBIASED, KIND_RESTRAINT, KIND_METAD = 0, 1, 2


@dataclass
class RoundModel:
    """A round's trained model: the exported file (z), the autoencoder (reconstruction error) and its stats."""

    file: LatentModelFile
    autoencoder: FeatureAutoencoder
    info: dict[str, Any]

    def reconstruction_error(self, features: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            x = torch.as_tensor(features, dtype=torch.float32)
            target = self.autoencoder.standardizer(x)
            out = self.autoencoder.decode(self.autoencoder.encode(x))
            return ((out - target) ** 2).mean(-1).double().numpy()


def _save_autoencoder(ae: FeatureAutoencoder, path: Path) -> None:
    save_npz(path, **{k: v.detach().cpu().numpy() for k, v in ae.state_dict().items()})


def _load_autoencoder(path: Path, config: dict[str, Any]) -> FeatureAutoencoder:
    ae = FeatureAutoencoder(config["n_features"], config["latent_dim"], config["hidden"], config["activation"])
    ae.load_state_dict({k: torch.as_tensor(v) for k, v in load_npz(path).items()})
    return ae.eval()


class Campaign:
    """An adaptive sampling campaign in one run directory.

    Parameters
    ----------
    config : CampaignConfig
    rundir : str or path-like
        Created if missing; an existing one is resumed (its stored config must match).
    progress : bool
        tqdm progress bars (hidden when not a terminal anyway).
    """

    def __init__(self, config: CampaignConfig, rundir: str | Path, progress: bool = True):
        self.cfg = config
        self.run_dir = RunDir(rundir)
        self.run_dir.check_config(config.to_dict())
        self.progress = progress
        self._system_cache = None
        self._models: dict[int, RoundModel] = {}
        self._log_handler = logging.FileHandler(self.run_dir.log_file)
        self._log_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    # ------------------------------------------------------------------------------------------- public API

    def run(self) -> dict[str, Any]:
        """Run (or resume) the campaign to the end. Returns the final progress record."""
        root = logging.getLogger("latentbias")
        root.addHandler(self._log_handler)
        try:
            progress = self.run_dir.read_progress()
            if progress.get("finished"):
                logger.info("campaign in %s already finished", self.run_dir.path)
                return progress
            if progress["phase"] != "plan" or progress["round"] > 0:
                logger.info("resuming %s at round %d, phase %s, %d committed segments", self.run_dir.path,
                            progress["round"], progress["phase"], progress.get("segments", 0))
            while not progress.get("finished"):
                r = progress["round"]
                if progress["phase"] == "plan":
                    self._plan(r)
                    progress = {"round": r, "phase": "simulate", "segments": 0, "finished": False}
                    self.run_dir.write_progress(progress)
                if progress["phase"] == "simulate":
                    progress = self._simulate(r, progress)
                if progress["phase"] == "train":
                    progress = self._train(r)
            return progress
        finally:
            root.removeHandler(self._log_handler)

    # ------------------------------------------------------------------------------------------------ system

    def _system(self):
        if self._system_cache is None:
            self._system_cache = build_system(self.cfg)
        return self._system_cache

    def _featurizer(self):
        import mdtraj as md

        _, topology, xyz = self._system()
        f = self.cfg.features
        return build_featurizer(f.kind, md.Topology.from_openmm(topology), f.selection, xyz, f.contact_r0)

    def _n_segments(self, r: int) -> int:
        c = self.cfg.campaign
        steps = c.round0_steps if r == 0 else c.steps_per_round
        return steps // c.checkpoint_interval

    def model(self, r: int) -> RoundModel:
        """The model trained after round r."""
        if r not in self._models:
            info = self.run_dir.read_json(self.run_dir.round_dir(r) / "model.json")
            ae = _load_autoencoder(self.run_dir.round_dir(r) / "model_state.npz", info["architecture"])
            self._models[r] = RoundModel(load_model(self.run_dir.model_file(r)), ae, info)
        return self._models[r]

    # -------------------------------------------------------------------------------------------------- plan

    def _plan(self, r: int) -> None:
        """Fix what round r does (strategy, bias settings, targets, start frame) in plan.json."""
        cfg = self.cfg
        plan: dict[str, Any] = {"round": r, "segments": self._n_segments(r)}
        if r == 0:
            plan["strategy"] = "given" if cfg.campaign.round0_trajectories else "unbiased"
        else:
            plan["strategy"] = cfg.strategy_for_round(r)
            prev = self.model(r - 1)
            zmin, zmax = np.array(prev.info["z_min"]), np.array(prev.info["z_max"])
            span = np.maximum(zmax - zmin, 1e-6)
            if plan["strategy"] == "metadynamics":
                m = cfg.metadynamics
                plan["variables"] = [
                    {"index": i, "minValue": float(zmin[i] - m.margin * span[i]),
                     "maxValue": float(zmax[i] + m.margin * span[i]), "biasWidth": float(m.sigma * span[i]),
                     "periodic": False, "gridWidth": int(m.grid_points)}
                    for i in range(len(zmin))
                ]
                self._carry_bias(r, plan)
            else:
                z = self._all_z(r - 1, upto=r - 1)
                targets, nearest = frontier_targets(z, cfg.frontier.n_targets, cfg.frontier.bins)
                plan["targets"] = targets.tolist()
                plan["start_frames"] = nearest.tolist()
                plan["schedule"] = self._frontier_schedule(plan["segments"], len(targets))
        write_json(self.run_dir.round_dir(r) / "plan.json", plan)
        logger.info("round %d plan: %s", r, {k: v for k, v in plan.items() if k in ("strategy", "segments", "targets")})

    def _carry_bias(self, r: int, plan: dict[str, Any]) -> None:
        """Initial bias of a metadynamics round: the previous metadynamics round's final bias, read at the new
        grid points (the latent spaces are aligned, so the coordinates correspond; outside the old grid the edge
        value is used). Stored as initial_bias.npz; the MBAR states use it exactly as applied."""
        from ..bias.grid import BiasGrid, LatentVariable

        if not self.cfg.metadynamics.carry_bias or r < 2:
            return
        prev = self.run_dir.read_json(self.run_dir.round_dir(r - 1) / "plan.json")
        if prev["strategy"] != "metadynamics":
            return
        old = load_npz(self.run_dir.segment_file(r - 1, prev["segments"] - 1))["grid_end"]
        old_grid = BiasGrid([LatentVariable(**v) for v in prev["variables"]])
        new_grid = BiasGrid([LatentVariable(**v) for v in plan["variables"]])
        mesh = np.stack(np.meshgrid(*new_grid.axes, indexing="ij"), axis=-1).reshape(-1, new_grid.ndim)
        initial = old_grid.interpolate(mesh, old).reshape(new_grid.shape)
        save_npz(self.run_dir.round_dir(r) / "initial_bias.npz", grid=initial)
        plan["initial_bias"] = "initial_bias.npz"

    def initial_bias(self, r: int) -> np.ndarray | None:
        path = self.run_dir.round_dir(r) / "initial_bias.npz"
        return load_npz(path)["grid"] if path.is_file() else None

    def _frontier_schedule(self, n_segments: int, n_targets: int) -> list[list[Any]]:
        """Per segment: [target index, 'pull' | 'release']."""
        share = np.array_split(np.arange(n_segments), n_targets)
        schedule: list[list[Any]] = [[0, "release"]] * n_segments
        for t, segs in enumerate(share):
            n_pull = int(np.ceil(self.cfg.frontier.pull_fraction * len(segs)))
            for j, k in enumerate(segs):
                schedule[int(k)] = [t, "pull" if j < n_pull else "release"]
        return schedule

    # ---------------------------------------------------------------------------------------------- simulate

    def _make_simulation(self, system, seed: int):
        import openmm
        from openmm import app, unit

        m = self.cfg.md
        integrator = openmm.LangevinMiddleIntegrator(m.temperature * unit.kelvin, m.friction / unit.picosecond,
                                                     m.timestep * unit.femtosecond)
        integrator.setRandomNumberSeed(seed)
        from ..platforms import check_platform

        platform = openmm.Platform.getPlatformByName(m.platform)
        check_platform(system, platform)  # refuse a route that would crash the process, before the Context exists
        _, topology, _ = self._system()
        return app.Simulation(topology, system, integrator, platform, dict(m.platform_properties))

    def _simulate(self, r: int, progress: dict[str, Any]) -> dict[str, Any]:
        import openmm
        from openmm import unit

        cfg = self.cfg
        plan = self.run_dir.read_json(self.run_dir.round_dir(r) / "plan.json")
        committed = int(progress["segments"])
        removed = self.run_dir.discard_uncommitted(r, committed)
        if removed:
            logger.info("round %d: removed %d files of an interrupted commit", r, len(removed))
        if plan["strategy"] == "given":
            return self._import_trajectories(r)
        base_system, _, start_xyz = self._system()
        system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(base_system))
        bias = _RoundBias(self, r, plan, system)
        seed = cfg.md.seed + 7919 * r
        sim = self._make_simulation(system, seed)
        if committed > 0:
            sim.context.loadCheckpoint(self.run_dir.checkpoint_file(r, committed - 1).read_bytes())
            bias.load(self.run_dir.bias_prefix(r, committed - 1))
        else:
            sim.context.setPositions(self._start_positions(r) * unit.nanometer)
            sim.context.setVelocitiesToTemperature(cfg.md.temperature * unit.kelvin, seed)
        n_seg = plan["segments"]
        per_seg = cfg.campaign.checkpoint_interval // cfg.campaign.save_interval
        bar = tqdm(total=n_seg * cfg.campaign.checkpoint_interval, initial=committed * cfg.campaign.checkpoint_interval,
                   desc=f"round {r} {plan['strategy']}", unit="step", disable=(not self.progress) or None, leave=False)
        t0 = time.perf_counter()
        for k in range(committed, n_seg):
            bias.begin_segment(k, sim)
            frames: dict[str, list] = {"positions": [], "step": [], "time_ps": [], "z": [], "bias_kjmol": [],
                                       "ood": [], "recon_error": [], "scale": [], "target": []}
            for _ in range(per_seg):
                bias.step(sim, cfg.campaign.save_interval)
                state = sim.context.getState(getPositions=True)
                xyz = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
                record = bias.observe(sim, xyz)
                frames["positions"].append(xyz.astype(np.float32))
                frames["step"].append(sim.currentStep)
                frames["time_ps"].append(state.getTime().value_in_unit(unit.picosecond))
                for key in ("z", "bias_kjmol", "ood", "recon_error", "scale", "target"):
                    frames[key].append(record[key])
                bar.update(cfg.campaign.save_interval)
            arrays = {k: np.asarray(v) for k, v in frames.items()}
            arrays["kind"] = np.full(per_seg, bias.kind_of_segment(k))
            arrays.update(bias.segment_extras())
            self.run_dir.commit_segment(r, k, arrays, sim.context.createCheckpoint(), bias.save,
                                        {"round": r, "phase": "simulate", "segments": k + 1, "finished": False})
        bar.close()
        self._assemble(r, n_seg)
        logger.info("round %d simulated: %d segments, %.1f ps in %.0f s", r, n_seg,
                    n_seg * cfg.campaign.checkpoint_interval * cfg.md.timestep / 1000.0, time.perf_counter() - t0)
        progress = {"round": r, "phase": "train", "segments": n_seg, "finished": False}
        self.run_dir.write_progress(progress)
        return progress

    def _start_positions(self, r: int) -> np.ndarray:
        if r == 0:
            return self._system()[2]
        prev = self.run_dir.read_json(self.run_dir.round_dir(r - 1) / "plan.json")
        last = load_npz(self.run_dir.segment_file(r - 1, prev["segments"] - 1))
        return last["positions"][-1].astype(float)

    def _import_trajectories(self, r: int) -> dict[str, Any]:
        import mdtraj as md

        _, topology, _ = self._system()
        top = md.Topology.from_openmm(topology)
        xyz = []
        for path in self.cfg.campaign.round0_trajectories:
            xyz.append(md.load(str(self.cfg.resolve(path)), top=top).xyz)
        xyz = np.concatenate(xyz)
        n = len(xyz)
        frames = {"positions": xyz.astype(np.float32), "step": np.arange(1, n + 1), "time_ps": np.zeros(n),
                  "z": np.zeros((n, 0)), "bias_kjmol": np.zeros(n), "ood": np.zeros(n, bool),
                  "recon_error": np.zeros(n), "scale": np.ones(n), "target": np.full(n, -1),
                  "kind": np.full(n, KIND_UNBIASED)}
        write_json(self.run_dir.round_dir(r) / "plan.json", {"round": r, "strategy": "given", "segments": 1})
        save_npz(self.run_dir.segment_file(r, 0), **frames)
        self._assemble(r, 1)
        progress = {"round": r, "phase": "train", "segments": 1, "finished": False}
        self.run_dir.write_progress(progress)
        return progress

    def _assemble(self, r: int, n_seg: int) -> None:
        """frames.dcd + topology.pdb of round r from its segments (derived files, rewritten when resuming)."""
        import mdtraj as md

        _, topology, _ = self._system()
        top = md.Topology.from_openmm(topology)
        data = self.run_dir.load_segments(r, n_seg)
        traj = md.Trajectory(data["positions"], top, time=data["time_ps"])
        d = self.run_dir.round_dir(r)
        traj.save_dcd(str(d / ".frames.dcd.partial"))
        (d / ".frames.dcd.partial").replace(d / "frames.dcd")
        traj[0].save_pdb(str(d / ".topology.pdb.partial"))
        (d / ".topology.pdb.partial").replace(d / "topology.pdb")

    # ------------------------------------------------------------------------------------------------- train

    def all_frames(self, upto: int) -> dict[str, np.ndarray]:
        """Frames of rounds 0..upto concatenated, with a ``round`` and ``segment`` column."""
        parts = []
        for r in range(upto + 1):
            plan = self.run_dir.read_json(self.run_dir.round_dir(r) / "plan.json")
            for k in range(plan["segments"]):
                seg = load_npz(self.run_dir.segment_file(r, k))
                n = len(seg["step"])
                seg["round"] = np.full(n, r)
                seg["segment"] = np.full(n, k)
                seg.pop("grid_end", None)
                seg["z"] = seg["z"].reshape(n, -1)
                parts.append(seg)
        keys = ["positions", "step", "time_ps", "bias_kjmol", "ood", "recon_error", "scale", "target", "kind",
                "round", "segment"]
        return {k: np.concatenate([p[k] for p in parts]) for k in keys}

    def _all_z(self, model_round: int, upto: int) -> np.ndarray:
        frames = self.all_frames(upto)
        return self.model(model_round).file.encode(frames["positions"].astype(float))

    def _train(self, r: int) -> dict[str, Any]:
        cfg = self.cfg
        t0 = time.perf_counter()
        frames = self.all_frames(r)
        featurizer = self._featurizer()
        feats = featurize(featurizer, frames["positions"].astype(float))
        lengths = [int(np.count_nonzero(frames["round"] == q)) for q in range(r + 1)]
        mc = cfg.model
        est = LatentModelEstimator(latent_dim=mc.latent_dim, hidden=mc.hidden, activation=mc.activation,
                                   objective=mc.objective, lag=mc.lag, epochs=mc.epochs, batch_size=mc.batch_size,
                                   learning_rate=mc.learning_rate, patience=mc.patience, seed=cfg.md.seed + r,
                                   progress=self.progress)
        init = self.model(r - 1).autoencoder if (r > 0 and mc.warm_start) else None
        result = est.fit(feats, lengths=lengths, init=init)
        ae = result.model
        info: dict[str, Any] = {"round": r, "history": result.history, "best_epoch": result.best_epoch,
                                "architecture": ae.config(), "n_frames": int(len(feats))}
        if r > 0:
            n_prev = int(np.count_nonzero(frames["round"] < r))
            with torch.no_grad():
                z_new = ae.encode(torch.as_tensor(feats[:n_prev], dtype=torch.float32)).double().numpy()
            z_old = self.model(r - 1).file.encode(frames["positions"][:n_prev].astype(float))
            align = fit_alignment(z_new, z_old)
            apply_alignment(ae, align)
            info["alignment"] = {"r2": align.r2, "rmsd": align.rmsd, "scale": align.scale}
            logger.info("round %d: latent space aligned to round %d: R^2 = %.3f, rmsd = %.3g", r, r - 1, align.r2,
                        align.rmsd)
        model = LatentModel(featurizer, ae, self._system()[0].getNumParticles())
        d = self.run_dir.round_dir(r)
        _save_autoencoder(ae, d / "model_state.npz")
        save_model(model, self.run_dir.model_file(r), training=result, overwrite=True,
                   extra={"campaign_round": r})
        rm = RoundModel(load_model(self.run_dir.model_file(r)), ae, info)
        z = rm.file.encode(frames["positions"].astype(float))
        err = rm.reconstruction_error(feats)
        info.update({"z_min": z.min(0).tolist(), "z_max": z.max(0).tolist(),
                     "recon_error_q99": float(np.quantile(err, 0.99)), "train_seconds": time.perf_counter() - t0})
        write_json(d / "model.json", info)
        self._models[r] = RoundModel(rm.file, ae, info)
        self._write_weights(r, frames, z)
        last = r + 1 >= cfg.campaign.rounds
        progress = {"round": r if last else r + 1, "phase": "done" if last else "plan", "segments": 0, "finished": last}
        self.run_dir.write_progress(progress)
        h = result.history
        logger.info("round %d/%d done: %d frames total, val loss %.4g (epoch %d), z range %s, OOD frames %d",
                    r + 1, cfg.campaign.rounds, len(feats), (h["val_loss"] or h["train_loss"])[result.best_epoch],
                    result.best_epoch, np.array2string(np.stack([z.min(0), z.max(0)]), precision=2),
                    int(frames["ood"][frames["round"] == r].sum()))
        return progress

    # ------------------------------------------------------------------------------------------------ weights

    def bias_states(self, frames: dict[str, np.ndarray]) -> tuple[list[BiasState], np.ndarray]:
        """The bias state of every frame (see :mod:`latentbias.campaign.weights`)."""
        states: list[BiasState] = [BiasState("unbiased")]
        index: dict[tuple, int] = {("unbiased",): 0}
        state_of = np.zeros(len(frames["step"]), dtype=int)
        plans: dict[int, dict[str, Any]] = {}
        for n in range(len(state_of)):
            kind, r, k = int(frames["kind"][n]), int(frames["round"][n]), int(frames["segment"][n])
            scale = float(frames["scale"][n])
            if kind == KIND_UNBIASED or (kind == KIND_RESTRAINT and scale == 0.0):
                continue
            if r not in plans:
                plans[r] = self.run_dir.read_json(self.run_dir.round_dir(r) / "plan.json")
            plan = plans[r]
            if kind == KIND_RESTRAINT:
                key = ("restraint", r, int(frames["target"][n]), scale)
                if key not in index:
                    index[key] = len(states)
                    states.append(BiasState("restraint", r - 1, np.array(plan["targets"][key[2]]),
                                            self.cfg.frontier.restraint_k * scale))
            else:
                key = ("metad", r, k, scale)
                if key not in index:
                    end = load_npz(self.run_dir.segment_file(r, k))["grid_end"]
                    if k > 0:
                        start = load_npz(self.run_dir.segment_file(r, k - 1))["grid_end"]
                    else:
                        initial = self.initial_bias(r)
                        start = np.zeros_like(end) if initial is None else initial
                    index[key] = len(states)
                    states.append(BiasState("metad", r - 1, variables=plan["variables"], grid=0.5 * (start + end),
                                            wall_k=self.cfg.metadynamics.wall_force_constant, scale=scale))
            state_of[n] = index[key]
        return states, state_of

    def _write_weights(self, r: int, frames: dict[str, np.ndarray], z_latest: np.ndarray) -> None:
        states, state_of = self.bias_states(frames)
        positions = frames["positions"].astype(float)
        logw, info = cross_round_logweights(states, state_of, lambda q: self.model(q).file.encode(positions),
                                            self.cfg.md.temperature)
        info["n_states"] = len(set(state_of.tolist()))
        write_json(self.run_dir.path / "weights.json", {"after_round": r, **info})
        d = z_latest.shape[1]
        header = ["round", "step", "time_ps"] + [f"z{i}" for i in range(d)] + ["bias_kjmol", "logweight", "ood"]
        rows = np.column_stack([frames["round"], frames["step"], frames["time_ps"], z_latest, frames["bias_kjmol"],
                                logw, frames["ood"]])
        write_csv(self.run_dir.path / "weights.csv", header, rows, overwrite=True,
                  comment=f"all frames after round {r}; z in the latest (aligned) latent space; bias in kJ/mol; "
                          "logweight = MBAR log-weight in the unbiased ensemble (normalised)")
        for q in range(r + 1):
            sel = frames["round"] == q
            write_csv(self.run_dir.round_dir(q) / "frames.csv", ["step", "time_ps"] + [f"z{i}" for i in range(d)]
                      + ["bias_kjmol", "logweight", "round", "ood"],
                      np.column_stack([frames["step"][sel], frames["time_ps"][sel], z_latest[sel],
                                       frames["bias_kjmol"][sel], logw[sel], frames["round"][sel], frames["ood"][sel]]),
                      overwrite=True,
                      comment=f"round {q}; time in ps; z in the latest (round {r}) aligned latent space; bias acting "
                              "on the frame in kJ/mol; logweight = MBAR log-weight over all rounds so far")
        logger.info("cross-round weights: %d states, effective sample size %.0f of %d frames", info["n_states"],
                    info["ess"], len(logw))


class _RoundBias:
    """What biases round r, how it is observed per frame and saved per segment."""

    def __init__(self, campaign: Campaign, r: int, plan: dict[str, Any], system: Any):
        from ..bias.grid import LatentVariable
        from ..bias.metadynamics import LatentMetadynamics
        from ..bias.restraint import LatentRestraint

        self.c = campaign
        self.cfg = campaign.cfg
        self.plan = plan
        self.strategy = plan["strategy"]
        self.model = campaign.model(r - 1) if r > 0 else None
        self.featurizer = campaign._featurizer() if self.model is not None else None
        self.meta = None
        self.restraint = None
        self.capped = False
        self._previous_positions: np.ndarray | None = None
        if self.strategy == "metadynamics":
            m = self.cfg.metadynamics
            self.meta = LatentMetadynamics(system, self.model.file, [LatentVariable(**v) for v in plan["variables"]],
                                           self.cfg.md.temperature, m.bias_factor, m.height, m.frequency,
                                           wallForceConstant=m.wall_force_constant)
            initial = campaign.initial_bias(r)
            if initial is not None:
                self.meta.addBias(initial)
        elif self.strategy == "frontier":
            d = self.model.file.latent_dim
            self.restraint = LatentRestraint(self.model.file, system, centers=np.zeros(d), force_constants=0.0)

    def kind_of_segment(self, k: int) -> int:
        if self.meta is not None:
            return KIND_METAD
        if self.restraint is not None and self.plan["schedule"][k][1] == "pull":
            return KIND_RESTRAINT
        return KIND_UNBIASED

    def begin_segment(self, k: int, sim: Any) -> None:
        from openmm import unit

        self.capped = False
        if self.meta is not None:
            self.meta.depositionEnabled = True
            self.meta.setBiasScale(sim.context, 1.0)
        if self.restraint is not None:
            target, phase = self.plan["schedule"][k]
            first_of_target = k == 0 or self.plan["schedule"][k - 1][0] != target
            if first_of_target:
                if self._previous_positions is None:  # frames of rounds < r, read once per round
                    self._previous_positions = self.c.all_frames(self.plan["round"] - 1)["positions"]
                xyz = self._previous_positions[self.plan["start_frames"][target]].astype(float)
                sim.context.setPositions(xyz * unit.nanometer)
                sim.context.setVelocitiesToTemperature(self.cfg.md.temperature * unit.kelvin,
                                                       self.cfg.md.seed + 31 * k + 7)
            self.restraint.set_centers(sim.context, self.plan["targets"][target])
            k_now = self.cfg.frontier.restraint_k if phase == "pull" else 0.0
            self.restraint.set_force_constants(sim.context, k_now)
        self.target = self.plan["schedule"][k][0] if self.restraint is not None else -1

    def step(self, sim: Any, n: int) -> None:
        if self.meta is not None:
            self.meta.step(sim, n)
        else:
            sim.step(n)

    def observe(self, sim: Any, xyz: np.ndarray) -> dict[str, Any]:
        from openmm import unit

        out = {"z": np.zeros(0), "bias_kjmol": 0.0, "ood": False, "recon_error": 0.0, "scale": 1.0,
               "target": self.target}
        if self.model is None:
            return out
        out["z"] = self.model.file.encode(xyz)
        err = float(self.model.reconstruction_error(featurize(self.featurizer, xyz[None]))[0])
        out["recon_error"] = err
        limit = self.cfg.ood.threshold * self.model.info["recon_error_q99"]
        if err > limit and not self.capped:
            self.capped = True
            logger.warning("OOD guard: reconstruction error %.3g > %.3g at step %d: bias %s until the segment ends",
                           err, limit, sim.currentStep, "capped" if self.cfg.ood.action == "cap" else "off")
            if self.meta is not None:
                self.meta.depositionEnabled = False
                if self.cfg.ood.action == "off":
                    self.meta.setBiasScale(sim.context, 0.0)
            if self.restraint is not None:
                self.restraint.set_force_constants(sim.context, 0.0)
        out["ood"] = err > limit
        if self.meta is not None:
            out["bias_kjmol"] = self.meta.backend.energy(sim.context)
            out["scale"] = self.meta.backend.scale
        elif self.restraint is not None:
            acting = bool(self.restraint.force_constants.max() > 0)
            st = sim.context.getState(getEnergy=True, groups={self.restraint.force.getForceGroup()})
            out["bias_kjmol"] = st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) if acting else 0.0
            out["scale"] = 1.0 if acting else 0.0
        return out

    def segment_extras(self) -> dict[str, np.ndarray]:
        if self.meta is not None:
            return {"grid_end": self.meta.getBias()}
        return {}

    def save(self, prefix: Path) -> None:
        if self.meta is not None:
            self.meta.saveState(prefix)

    def load(self, prefix: Path) -> None:
        if self.meta is not None:
            self.meta.loadState(prefix)
