"""The bias of a ``pocket`` round: OPES or metadynamics on the anchored (openness) latent dimension, with a restart.

:class:`PocketBias` picks, from the plan's ``bias``, :class:`PocketOPESBias` (OPES-METAD/explore, ``[opes]``) or
:class:`PocketMetadynamicsBias` (well-tempered metadynamics, ``[metadynamics]``). Both are the ordinary round
biases of :mod:`latentbias.campaign.roundbias` on the plan's one variable (the anchored dimension, see
:func:`latentbias.campaign.pocket.pocket_plan`); when the plan has a ``start_frame`` the round's first segment
starts from that earlier frame (the one nearest the most open frontier target) with fresh velocities
(:meth:`~latentbias.campaign.seeds.RoundSeeds.restart_velocities`). Frames are recorded as ``KIND_OPES`` /
``KIND_METAD``; the reweighting keeps the first ``restart_segments`` segments out
(:func:`latentbias.campaign.pocket.restart_exclusion`).
"""

from __future__ import annotations

import logging
from typing import Any

from .roundbias import MetadynamicsBias, OPESBias, RoundBias, RoundSetup

logger = logging.getLogger(__name__)

__all__ = ["PocketBias", "PocketOPESBias", "PocketMetadynamicsBias"]


class PocketBias(RoundBias):
    """A pocket round's bias; constructing it returns a :class:`PocketOPESBias` or :class:`PocketMetadynamicsBias`
    after the plan's ``bias``."""

    def __new__(cls, setup: RoundSetup):
        if cls is PocketBias:
            bias = setup.plan.get("bias", "opes")
            if bias not in ("opes", "metadynamics"):
                raise ValueError(f"pocket plan bias {bias!r} is not 'opes' or 'metadynamics'")
            cls = PocketOPESBias if bias == "opes" else PocketMetadynamicsBias
        return super().__new__(cls)

    def _restart(self, k: int, sim: Any, setup_positions: Any, seeds: Any) -> None:
        from openmm import unit

        if k != 0 or "start_frame" not in self.plan:
            return
        xyz = setup_positions()[int(self.plan["start_frame"])].astype(float)
        sim.context.setPositions(xyz * unit.nanometer)
        sim.context.setVelocitiesToTemperature(self.cfg.md.temperature * unit.kelvin, seeds.restart_velocities(0))
        logger.info("pocket round %d starts from earlier frame %d", self.plan["round"], self.plan["start_frame"])


class PocketOPESBias(PocketBias, OPESBias):
    """OPES on the anchored dimension (``[opes]`` settings), restarted from the plan's start frame."""

    def __init__(self, setup: RoundSetup):
        OPESBias.__init__(self, setup)
        self._earlier, self._seeds = setup.earlier_positions, setup.seeds

    def begin_segment(self, k: int, sim: Any) -> None:
        self._restart(k, sim, self._earlier, self._seeds)
        OPESBias.begin_segment(self, k, sim)


class PocketMetadynamicsBias(PocketBias, MetadynamicsBias):
    """Well-tempered metadynamics on the anchored dimension (``[metadynamics]``), restarted likewise."""

    def __init__(self, setup: RoundSetup):
        MetadynamicsBias.__init__(self, setup)
        self._earlier, self._seeds = setup.earlier_positions, setup.seeds

    def begin_segment(self, k: int, sim: Any) -> None:
        self._restart(k, sim, self._earlier, self._seeds)
        MetadynamicsBias.begin_segment(self, k, sim)
