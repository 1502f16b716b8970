"""What biases a round while it runs: one class per strategy, with the out-of-distribution guard they share.

A round's bias is built from a :class:`RoundSetup` by :data:`ROUND_BIASES` ``[plan["strategy"]]`` and driven
segment by segment by :func:`latentbias.campaign.simulate.simulate_round`:

* :class:`RoundBias` — no bias (round 0): frames are recorded with ``z`` empty and zero bias;
* :class:`MetadynamicsBias` — :class:`~latentbias.bias.metadynamics.LatentMetadynamics` over all latent
  dimensions of the previous round's model, starting from the plan's carried bias;
* :class:`FrontierBias` — per target of the plan: restart from the nearest earlier frame, pull with a
  :class:`~latentbias.bias.restraint.LatentRestraint` at the target, then release (unbiased);
* :class:`OPESBias` — :class:`~latentbias.bias.opes.LatentOPES` (OPES-METAD, or explore) over all latent
  dimensions of the previous round's model (also the default bias of the converge phase).

Out-of-distribution guard (every biased round): each saved frame's reconstruction error under the biasing model
is compared with ``[ood] threshold`` × its 99th percentile on the training frames and flagged ``ood`` above it.
The percentile is trusted only when the model was trained on at least ``[ood] min_frames`` frames; with fewer the
guard says once that it cannot judge yet and flags nothing. What a flag does (``[ood] action``):

* ``"retrain"`` (default): nothing during the segment — the bias keeps acting where the exploration happens — but
  a segment whose fraction of flagged frames exceeds ``retrain_fraction`` ends the round early
  (:meth:`RoundBias.end_reason`): the encoder is retrained on the new frames at once (adaptive round length).
  The converge phase, whose encoder is frozen, only counts the flags.
* ``"cap"`` / ``"off"``: the first flag of a segment freezes the bias (no new kernels; restraints off) or switches
  it off until the segment ends.

What a frame records is the schema of :mod:`latentbias.campaign.records`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..features import featurize
from .config import CampaignConfig
from .records import KIND_METAD, KIND_OPES, KIND_RESTRAINT, KIND_UNBIASED
from .seeds import RoundSeeds

if TYPE_CHECKING:
    from .train import RoundModel

logger = logging.getLogger(__name__)

__all__ = ["RoundSetup", "walker_name", "RoundBias", "MetadynamicsBias", "FrontierBias", "OPESBias", "ROUND_BIASES"]


@dataclass
class RoundSetup:
    """Everything a round's bias is built from.

    Attributes
    ----------
    config : CampaignConfig
    plan : dict
        The round's plan (:mod:`latentbias.campaign.plan`).
    system : openmm.System
        The round's own copy of the system; the bias adds its forces to it.
    model : RoundModel or None
        The model trained after the previous round (None in round 0).
    featurizer : torch.nn.Module or None
        The campaign's featurizer (reconstruction errors of the OOD guard).
    seeds : RoundSeeds
    initial_bias : numpy.ndarray or None
        Metadynamics bias the round starts from (kJ/mol, grid shape).
    earlier_positions : callable
        Returns the positions (nm, shape=(n, n_atoms, 3)) of all frames of the earlier rounds (called lazily).
    walker : int or None
        Parallel walker index (:mod:`latentbias.campaign.walkers`; its id in a shared bias is
        :func:`walker_name`); None in a one-walker campaign. Parallel walkers do not add ``initial_bias`` to their
        own bias: they receive it with the other walkers' shares (:mod:`latentbias.campaign.walkers`).
    """

    config: CampaignConfig
    plan: dict[str, Any]
    system: Any
    model: RoundModel | None
    featurizer: Any | None
    seeds: RoundSeeds
    initial_bias: np.ndarray | None
    earlier_positions: Callable[[], np.ndarray]
    walker: int | None = None


def walker_name(walker: int | None) -> str | None:
    """Id of parallel walker ``walker`` in a shared metadynamics/OPES bias ("w00", ...; "merged" for a negative
    index: the driver's view of all walkers together; None without walkers)."""
    if walker is None:
        return None
    return "merged" if walker < 0 else f"w{walker:02d}"


class RoundBias:
    """No bias; the base class of every strategy's bias (OOD guard, per-frame observation, segment hooks)."""

    def __init__(self, setup: RoundSetup):
        self.cfg = setup.config
        self.plan = setup.plan
        self.model = setup.model
        self.featurizer = setup.featurizer
        self.capped = False
        self.target = -1
        self.converge = bool(self.plan.get("converge", False))
        self._judged = self.model is None or self._can_judge()

    def _can_judge(self) -> bool:
        n = int(self.model.info.get("recon_error_n", self.model.info.get("n_frames", 0)))
        if n < self.cfg.ood.min_frames:
            logger.info("OOD guard: the model's reconstruction-error percentile comes from %d frames (< [ood] "
                        "min_frames = %d): cannot judge yet, no frame is flagged this round", n,
                        self.cfg.ood.min_frames)
            return False
        return True

    # ----------------------------------------------------------------------------------- strategy hooks

    def kind_of_segment(self, k: int) -> int:
        """``kind`` column (:mod:`~latentbias.campaign.records`) of the frames of segment k."""
        return KIND_UNBIASED

    def begin_segment(self, k: int, sim: Any) -> None:
        """Set the bias up for segment k (the OOD guard is re-armed)."""
        self.capped = False

    def step(self, sim: Any, n: int) -> None:
        sim.step(n)

    def cap(self, sim: Any) -> None:
        """React to the OOD guard firing (``[ood] action``)."""

    def acting(self, sim: Any) -> tuple[float, float]:
        """Bias energy acting now (kJ/mol) and its scale (1 normal, 0 off)."""
        return 0.0, 1.0

    def segment_extras(self) -> dict[str, np.ndarray]:
        """Arrays stored with each segment besides the frame columns."""
        return {}

    def end_reason(self, columns: dict[str, np.ndarray]) -> str | None:
        """Why the round ends after this committed segment (its columns), or None to go on. With ``[ood] action =
        "retrain"`` an exploration round ends when more than ``retrain_fraction`` of the segment's frames were
        flagged out of distribution."""
        if self.converge or self.model is None or self.cfg.ood.action != "retrain":
            return None
        frac = float(np.mean(columns["ood"])) if len(columns["ood"]) else 0.0
        if frac > self.cfg.ood.retrain_fraction:
            logger.warning("OOD guard: %.0f %% of the segment's frames are out of distribution (> %.0f %%): the round "
                           "ends here and the encoder retrains", 100 * frac, 100 * self.cfg.ood.retrain_fraction)
            return "ood"
        return None

    def save(self, prefix: Path) -> None:
        """Write the bias state after a segment (files ``prefix.*``)."""

    def load(self, prefix: Path) -> None:
        """Restore the bias state written by :meth:`save`."""

    # ------------------------------------------------------------------------------------------- shared

    def observe(self, sim: Any, xyz: np.ndarray, box: np.ndarray | None = None) -> dict[str, Any]:
        """The bias-related columns of a saved frame at positions ``xyz`` (nm) in the periodic ``box`` (nm, rows
        a, b, c; None when not periodic) — the same box the biasing force sees; runs the OOD guard."""
        out = {"z": np.zeros(0), "bias_kjmol": 0.0, "ood": False, "recon_error": 0.0, "scale": 1.0,
               "target": self.target, "ct_kjmol": 0.0}
        if self.model is None:
            return out
        out["z"] = self.model.file.encode(xyz, box)
        err = float(self.model.reconstruction_error(
            featurize(self.featurizer, xyz[None], None if box is None else box[None]))[0])
        out["recon_error"] = err
        limit = self.cfg.ood.threshold * self.model.info["recon_error_q99"]
        flagged = self._judged and err > limit
        if flagged and not self.capped and self.cfg.ood.action in ("cap", "off") and not self.converge:
            self.capped = True
            logger.warning("OOD guard: reconstruction error %.3g > %.3g at step %d: bias %s until the segment ends",
                           err, limit, sim.currentStep, "capped" if self.cfg.ood.action == "cap" else "off")
            self.cap(sim)
        out["ood"] = flagged
        out.update(self.acting_record(sim))
        return out

    def acting_record(self, sim: Any) -> dict[str, float]:
        """``bias_kjmol``, ``scale`` (and ``ct_kjmol`` where defined) of the bias that generated the frame."""
        bias, scale = self.acting(sim)
        return {"bias_kjmol": bias, "scale": scale}


class MetadynamicsBias(RoundBias):
    """Well-tempered metadynamics on the plan's grid variables, started from the carried bias."""

    def __init__(self, setup: RoundSetup):
        from ..bias.grid import LatentVariable
        from ..bias.metadynamics import LatentMetadynamics

        super().__init__(setup)
        m = self.cfg.metadynamics
        self.meta = LatentMetadynamics(setup.system, self.model.file,
                                       [LatentVariable(**v) for v in self.plan["variables"]], self.cfg.md.temperature,
                                       m.bias_factor, m.height, m.frequency, wallForceConstant=m.wall_force_constant,
                                       walkerId=walker_name(setup.walker))
        if setup.initial_bias is not None and setup.walker is None:
            self.meta.addBias(setup.initial_bias)

    def kind_of_segment(self, k: int) -> int:
        return KIND_METAD

    def begin_segment(self, k: int, sim: Any) -> None:
        super().begin_segment(k, sim)
        self.meta.depositionEnabled = True
        self.meta.setBiasScale(sim.context, 1.0)

    def step(self, sim: Any, n: int) -> None:
        self.meta.step(sim, n)

    def cap(self, sim: Any) -> None:
        self.meta.depositionEnabled = False
        if self.cfg.ood.action == "off":
            self.meta.setBiasScale(sim.context, 0.0)

    def acting(self, sim: Any) -> tuple[float, float]:
        return self.meta.getBiasEnergy(sim.context), self.meta.biasScale

    def acting_record(self, sim: Any) -> dict[str, float]:
        """The bias that generated the frame: when a Gaussian was deposited at the frame's step, the values
        LatentMetadynamics recorded just before that deposit (the frame was sampled under the previous bias; the
        new Gaussian, centred on the frame's own z, would add its full height); otherwise the bias acting now."""
        rec = self.meta.records
        scale = self.meta.biasScale
        if rec["step"] and int(rec["step"][-1]) == sim.currentStep:
            bias = scale * float(rec["bias_kjmol"][-1]) + float(rec["wall_kjmol"][-1])
            return {"bias_kjmol": bias, "scale": scale, "ct_kjmol": float(rec["ct_kjmol"][-1])}
        bias, scale = self.acting(sim)
        return {"bias_kjmol": bias, "scale": scale, "ct_kjmol": scale * self.meta.ct()}

    def segment_extras(self) -> dict[str, np.ndarray]:
        return {"grid_end": self.meta.getBias()}

    def save(self, prefix: Path) -> None:
        self.meta.saveState(prefix)

    def load(self, prefix: Path) -> None:
        self.meta.loadState(prefix)


class FrontierBias(RoundBias):
    """Restrained pulls toward the plan's frontier targets, each followed by a free (released) run."""

    def __init__(self, setup: RoundSetup):
        from ..bias.restraint import LatentRestraint

        super().__init__(setup)
        self.seeds = setup.seeds
        self._earlier_positions = setup.earlier_positions
        self._positions: np.ndarray | None = None
        d = self.model.file.latent_dim
        self.restraint = LatentRestraint(self.model.file, setup.system, centers=np.zeros(d), forceConstants=0.0)

    def kind_of_segment(self, k: int) -> int:
        return KIND_RESTRAINT if self.plan["schedule"][k][1] == "pull" else KIND_UNBIASED

    def begin_segment(self, k: int, sim: Any) -> None:
        from openmm import unit

        super().begin_segment(k, sim)
        target, phase = self.plan["schedule"][k]
        if k == 0 or self.plan["schedule"][k - 1][0] != target:  # a new target: restart from its nearest frame
            if self._positions is None:  # frames of the earlier rounds, read once per round
                self._positions = self._earlier_positions()
            xyz = self._positions[self.plan["start_frames"][target]].astype(float)
            sim.context.setPositions(xyz * unit.nanometer)
            sim.context.setVelocitiesToTemperature(self.cfg.md.temperature * unit.kelvin,
                                                   self.seeds.restart_velocities(k))
        self.restraint.setCenters(sim.context, self.plan["targets"][target])
        self.restraint.setForceConstants(sim.context, self.cfg.frontier.restraint_k if phase == "pull" else 0.0)
        self.target = target

    def cap(self, sim: Any) -> None:
        self.restraint.setForceConstants(sim.context, 0.0)

    def acting(self, sim: Any) -> tuple[float, float]:
        from openmm import unit

        if not self.restraint.forceConstants.max() > 0:
            return 0.0, 0.0
        state = sim.context.getState(getEnergy=True, groups={self.restraint.force.getForceGroup()})
        return state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole), 1.0


class OPESBias(RoundBias):
    """OPES-METAD (``[opes] explore = false``) or OPES-explore on the plan's grid variables.

    Each saved frame records the bias that generated it and that bias's c(t): when a kernel was deposited at the
    frame's step, the values recorded by LatentOPES just before the deposit (the frame was sampled under the
    previous bias); otherwise the bias acting now, which has not changed since the frame's last step.

    In the converge phase with ``[opes] max_temperature``, an OPES multithermal bias on the potential energy
    (:class:`~latentbias.bias.multithermal.MultithermalOPES`) acts beside the latent one, coupled to it (its
    estimator reweights with the latent bias; the latent OPES flattens the multithermal ensemble's latent
    distribution); the frames' ``bias_kjmol`` is then the sum of both, each as it acted on the frame, and
    ``ct_kjmol`` the latent bias's c(t) (the multithermal bias is normalised by construction). Parallel walkers
    each keep their own multithermal estimate. Exploration rounds never carry it: their cross-round MBAR evaluates
    every bias state from the latent coordinates alone.
    """

    def __init__(self, setup: RoundSetup):
        from ..bias.grid import LatentVariable
        from ..bias.multithermal import MultithermalOPES
        from ..bias.opes import LatentOPES

        super().__init__(setup)
        o = self.cfg.opes
        # built on the unbiased system, before the latent force is added: its energy CV copies the force field
        self.thermal = (MultithermalOPES(setup.system, self.cfg.md.temperature, o.max_temperature, o.pace,
                                         numTemperatures=o.temperatures or None)
                        if o.max_temperature > 0 and self.plan.get("converge", False) else None)
        self.opes = LatentOPES(setup.system, self.model.file, [LatentVariable(**v) for v in self.plan["variables"]],
                               self.cfg.md.temperature, o.barrier, o.pace, explore=o.explore,
                               biasFactor=o.bias_factor or None,
                               compressionThreshold=o.compression_threshold, wallForceConstant=o.wall_force_constant,
                               walkerId=f"round{self.plan['round']:03d}{walker_name(setup.walker) or ''}",
                               coupledBias=self.thermal)

    def kind_of_segment(self, k: int) -> int:
        return KIND_OPES

    def begin_segment(self, k: int, sim: Any) -> None:
        super().begin_segment(k, sim)
        self.opes.depositionEnabled = True
        self.opes.setBiasScale(sim.context, 1.0)

    def step(self, sim: Any, n: int) -> None:
        self.opes.step(sim, n)

    def cap(self, sim: Any) -> None:
        self.opes.depositionEnabled = False
        if self.cfg.ood.action == "off":
            self.opes.setBiasScale(sim.context, 0.0)

    def acting(self, sim: Any) -> tuple[float, float]:
        thermal = 0.0 if self.thermal is None else self.thermal.getBiasEnergy(sim.context)
        return self.opes.getBiasEnergy(sim.context) + thermal, self.opes.biasScale

    def acting_record(self, sim: Any) -> dict[str, float]:
        rec = self.opes.records
        scale = self.opes.biasScale
        thermal = 0.0 if self.thermal is None else self.thermal.actingBias(sim.context, sim.currentStep)
        if rec["step"] and int(rec["step"][-1]) == sim.currentStep:  # deposited here: the bias before the deposit
            bias = scale * float(rec["bias_kjmol"][-1]) + float(rec["wall_kjmol"][-1])
            return {"bias_kjmol": bias + thermal, "scale": scale, "ct_kjmol": scale * float(rec["ct_kjmol"][-1])}
        return {"bias_kjmol": self.opes.getBiasEnergy(sim.context) + thermal, "scale": scale,
                "ct_kjmol": scale * self.opes.ct()}

    def segment_extras(self) -> dict[str, np.ndarray]:
        return {"grid_end": self.opes.getBias()}

    def save(self, prefix: Path) -> None:
        self.opes.saveState(prefix)

    def load(self, prefix: Path) -> None:
        self.opes.loadState(prefix)


#: strategy name (plan.json ``strategy``) -> the class that biases such a round
ROUND_BIASES: dict[str, type[RoundBias]] = {
    "unbiased": RoundBias,
    "metadynamics": MetadynamicsBias,
    "frontier": FrontierBias,
    "opes": OPESBias,
}

# ``pocket`` rounds (OPES/metadynamics on the openness-anchored dimension) live in their own module
from .pocketbias import PocketBias  # noqa: E402

ROUND_BIASES["pocket"] = PocketBias

# the umbrella converge phase (restraint windows along a latent path) lives in its own module, too
from .umbrellaconv import UmbrellaBias  # noqa: E402

ROUND_BIASES["umbrella"] = UmbrellaBias
