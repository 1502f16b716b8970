"""Refuse a configuration that cannot work before round 0 runs: dry-build what the campaign will build later.

Config validation (:mod:`latentbias.campaign.config`) checks each value; some combinations only fail when the
object they describe is built — a selection that matches no atom, ``hidden = [0]``, a grid too small for its
variables, a bias that deposits non-finite energy — and would otherwise fail after round 0 (or a whole round
later). :func:`dry_build` builds, once, on the campaign's system and platform:

1. the system and the featurizer (features of the starting structure must exist and be finite);
2. a model with the configured architecture, trained for one epoch on copies of the starting structure with
   small random displacements, exported and loaded back (the export checks of :func:`latentbias.load_model`);
3. for every strategy the campaign uses (``[campaign] strategy`` and the converge method), that round's bias on
   that model, in an OpenMM Context on ``[md] platform``, run for one deposition interval; the bias energy,
   the forces and the bias grid must be finite.

Nothing is written to the run directory and no random stream of the campaign is consumed (torch's global
generator is forked, numpy uses a local one). Failures raise :class:`~latentbias.campaign.config.ConfigError`
naming the section(s) whose values built the failing object and keeping the full cause.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from ..torchscript_errors import cause_first
from .config import ConfigError

if TYPE_CHECKING:
    from .loop import Campaign

logger = logging.getLogger(__name__)

__all__ = ["dry_build"]

#: frames of the dry training set and their random displacement (nm)
_N_FRAMES = 32
_NOISE_NM = 0.02


@contextlib.contextmanager
def _stage(what: str, keys: str) -> Iterator[None]:
    try:
        yield
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure of a dry build is a configuration error
        raise ConfigError(f"{keys}: the configuration passes validation but {what} cannot be built or run, so the "
                          f"campaign would fail later; fix these values and run again (nothing was run). Cause: "
                          f"{type(exc).__name__}: {cause_first(str(exc))}") from exc


#: seed of the dry build's perturbed frames: fixed, so a configuration gets the same verdict on every run
_DRY_SEED = 12345

def _finite(name: str, value: Any) -> None:
    a = np.asarray(value, dtype=float)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} is not finite ({np.count_nonzero(~np.isfinite(a))} non-finite value(s))")


def dry_build(campaign: Campaign) -> None:
    """Build and briefly run everything ``campaign`` will build (module docstring); raise
    :class:`ConfigError` naming the keys of the first thing that fails."""
    import torch

    t0 = time.perf_counter()
    quiet = logging.getLogger("latentbias")  # the dry objects' own INFO messages would only confuse campaign.log
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        with torch.random.fork_rng(devices=[]):
            _dry_build(campaign)
    finally:
        quiet.setLevel(level)
    logger.info("dry build of the configuration passed (%.1f s)", time.perf_counter() - t0)


def _strategies(cfg: Any) -> list[str]:
    # a pocket round's bias is OPES or metadynamics ([pocket] bias): that is what can fail on a platform
    used = list(dict.fromkeys(cfg.pocket.bias if s == "pocket" else s
                              for s in (cfg.strategy_for_round(r) for r in range(1, max(cfg.campaign.rounds, 1)))))
    if cfg.converge.enabled and cfg.converge.method not in used:
        used.append(cfg.converge.method)
    return used


def _dry_build(campaign: Campaign) -> None:
    import openmm

    from ..export import load_model, save_model
    from ..features import featurize
    from ..models import LatentModel
    from ..training import LatentModelEstimator
    from .train import RoundModel

    cfg = campaign.cfg
    with _stage("the system", "[system]"):
        system, _, xyz = campaign.system()
        periodic = system.usesPeriodicBoundaryConditions()
        box = None
        if periodic:
            box = np.array([v.value_in_unit(openmm.unit.nanometer) for v in system.getDefaultPeriodicBoxVectors()])
    rng = np.random.default_rng(_DRY_SEED)
    frames = xyz[None] + _NOISE_NM * rng.standard_normal((_N_FRAMES + cfg.model.lag, *xyz.shape))
    frames[0] = xyz
    boxes = None if box is None else np.repeat(box[None], len(frames), axis=0)
    with _stage("the featurizer", "[features] kind / selection / contact_r0"):
        featurizer = campaign.featurizer()
        feats = featurize(featurizer, frames, boxes)
        if feats.ndim != 2 or feats.shape[1] == 0:
            raise ValueError(f"the featurizer gives no features (shape {feats.shape}): the selection matches too "
                             "few atoms")
        _finite("the features of the starting structure", feats)
    m = cfg.model
    with _stage("the model", "[model] latent_dim / hidden / activation / objective / lag / learning_rate / "
                             "batch_size"):
        est = LatentModelEstimator(latent_dim=m.latent_dim, hidden=m.hidden, activation=m.activation,
                                   objective=m.objective, lag=m.lag, epochs=1, batch_size=m.batch_size,
                                   learning_rate=m.learning_rate, patience=m.patience, seed=1, progress=False)
        result = est.fit(feats, lengths=[len(feats)])
        ae = result.model
        model = LatentModel(featurizer, ae, system.getNumParticles())
        with tempfile.TemporaryDirectory(prefix="latentbias-dry-") as tmp:
            path = Path(tmp) / "model.pt"
            save_model(model, path, training=result)
            exported = load_model(path)
            z = exported.encode(frames, boxes)
        _finite("the latent coordinates", z)
        dry = RoundModel(exported, ae, {})
        err = dry.reconstruction_error(feats)
        dry.info.update({"z_min": z.min(0).tolist(), "z_max": z.max(0).tolist(),
                         "recon_error_q99": float(np.quantile(err, 0.99)), "recon_error_n": int(len(err)),
                         "n_frames": int(len(err))})
    for strategy in _strategies(cfg):
        _dry_round(campaign, strategy, dry, featurizer, xyz, z)


def _dry_round(campaign: Campaign, strategy: str, dry: Any, featurizer: Any, xyz: np.ndarray,
               z: np.ndarray) -> None:
    """Build the bias of a ``strategy`` round on the dry model ``dry`` and run it for one deposition interval."""
    import openmm
    from openmm import unit

    from .plan import frontier_schedule, metadynamics_variables
    from .roundbias import ROUND_BIASES, RoundSetup
    from .seeds import RoundSeeds
    from .simulate import make_simulation

    cfg = campaign.cfg
    section = {"metadynamics": "[metadynamics]", "opes": "[opes]", "frontier": "[frontier]",
               "umbrella": "[converge] umbrella_windows / umbrella_force_constant"}[strategy]
    article = "an" if strategy[0] in "aeiou" else "a"
    with _stage(f"{article} {strategy} round", f"{section} (with [md] platform = {cfg.md.platform!r} and [model])"):
        plan: dict[str, Any] = {"round": 1, "strategy": strategy, "segments": 1}
        if strategy in ("metadynamics", "opes"):
            plan["variables"] = metadynamics_variables(cfg, dry.info["z_min"], dry.info["z_max"], strategy)
        elif strategy == "umbrella":  # windows between the dry frames' latent extremes (campaign.umbrellaconv)
            from .umbrellaconv import umbrella_force_constants, window_centers

            dims = [0] if z.shape[1] == 1 else [0, 1]
            centers = window_centers([z.min(0)[dims], z.max(0)[dims]], cfg.converge.umbrella_windows)
            span = (z.max(0) - z.min(0))[dims]
            plan.update(dims=dims, centers=centers.tolist(), start_frames=[0] * len(centers), schedule=[0],
                        model_round=0, force_constants=umbrella_force_constants(
                            centers, span, cfg.md.temperature, cfg.converge.umbrella_force_constant).tolist())
        else:
            plan.update(targets=[z[0].tolist()], start_frames=[0],
                        schedule=frontier_schedule(1, 1, cfg.frontier.pull_fraction))
        base = campaign.system()[0]
        system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(base))
        setup = RoundSetup(config=cfg, plan=plan, system=system, model=dry, featurizer=featurizer,
                           seeds=RoundSeeds(1, 1), initial_bias=None, earlier_positions=lambda: xyz[None])
        bias = ROUND_BIASES[strategy](setup)
        sim = make_simulation(campaign, system, 1)
        sim.context.setPositions(xyz * unit.nanometer)
        sim.context.setVelocitiesToTemperature(cfg.md.temperature * unit.kelvin, 1)
        bias.begin_segment(0, sim)
        steps = {"metadynamics": cfg.metadynamics.frequency, "opes": cfg.opes.pace}.get(strategy, 1)
        bias.step(sim, steps)
        state = sim.context.getState(getPositions=True, getEnergy=True, getForces=True)
        pos = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        box = (np.asarray(state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer))
               if system.usesPeriodicBoundaryConditions() else None)
        record = bias.observe(sim, np.asarray(pos), box)
        _finite("the bias energy", record["bias_kjmol"])
        _finite("the potential energy", state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
        _finite("the forces", state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))
        extras = bias.segment_extras()
        if "grid_end" in extras:
            _finite("the bias grid", extras["grid_end"])
