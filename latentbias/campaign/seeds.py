"""Random seeds of a campaign, all derived from the one ``[md] seed`` by :class:`numpy.random.SeedSequence`.

Each random stream gets its own child sequence ``SeedSequence(seed, spawn_key=(round, stream[, segment]))`` —
the same child ``SeedSequence(seed).spawn(...)`` would give, but addressable without spawning in order, so a
resumed run derives exactly the seeds of an uninterrupted one. Streams:

=========================  ======================================================================================
``integrator``             Langevin integrator of round r (``LangevinMiddleIntegrator.setRandomNumberSeed``)
``velocities``             initial Maxwell-Boltzmann velocities of round r
``training``               encoder training after round r (weight initialisation, validation split, minibatches)
``restart_velocities(k)``  velocities drawn when a frontier run restarts from a sampled frame in segment k of r
``exchange(s)``            the Metropolis draws of the umbrella windows' exchange attempts before sweep s of r
=========================  ======================================================================================

Parallel walkers (``[execution] walkers`` > 1, :mod:`latentbias.campaign.walkers`): walker w of round r draws its
streams from ``spawn_key=(round, WALKERS, w, stream[, segment])`` (:meth:`RoundSeeds.for_walker`): independent
of the other walkers and of the single-walker streams, which keep their keys (a one-walker campaign is unchanged).

Seeds are integers in [1, 2**31 - 1]: OpenMM takes a 32-bit signed seed and treats 0 as "pick one at random".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["RoundSeeds", "MAX_SEED", "derived_seed"]

#: largest seed OpenMM accepts (int32); campaign seeds are in [1, MAX_SEED]
MAX_SEED = 2**31 - 1

_INTEGRATOR, _VELOCITIES, _TRAINING, _RESTART, _WALKERS, _EXCHANGE = range(6)


def _seed(entropy: int, key: tuple[int, ...]) -> int:
    state = np.random.SeedSequence(entropy, spawn_key=key).generate_state(1, np.uint64)[0]
    return int(state % MAX_SEED) + 1


def derived_seed(seed: int, *key: int) -> int:
    """An OpenMM seed in [1, MAX_SEED] for the random stream ``key`` (non-negative ints) of base seed ``seed``:
    ``SeedSequence(seed, spawn_key=key)``, so distinct keys give independent streams and nearby base seeds do not
    share any (``seed + k`` would: seed 1 stream 1 = seed 2 stream 0)."""
    return _seed(int(seed), tuple(int(k) for k in key))


@dataclass(frozen=True)
class RoundSeeds:
    """The seeds of round ``r`` of a campaign with base seed ``seed`` (see the module docstring)."""

    seed: int
    r: int
    #: parallel walker index (None: the single-walker streams)
    walker: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= int(self.seed) <= MAX_SEED or self.r < 0:
            raise ValueError(f"seed must be in [1, {MAX_SEED}] and round >= 0, got seed={self.seed}, round={self.r}")
        if self.walker is not None and self.walker < 0:
            raise ValueError(f"walker index must be >= 0, got {self.walker}")

    def for_walker(self, walker: int) -> "RoundSeeds":
        """The seeds of parallel walker ``walker`` of this round."""
        return RoundSeeds(self.seed, self.r, int(walker))

    def _key(self, *stream: int) -> tuple[int, ...]:
        prefix = (self.r,) if self.walker is None else (self.r, _WALKERS, int(self.walker))
        return prefix + tuple(int(x) for x in stream)

    @property
    def integrator(self) -> int:
        return _seed(self.seed, self._key(_INTEGRATOR))

    @property
    def velocities(self) -> int:
        return _seed(self.seed, self._key(_VELOCITIES))

    @property
    def training(self) -> int:
        return _seed(self.seed, (self.r, _TRAINING))  # training happens once per round, on the driver

    def restart_velocities(self, k: int) -> int:
        return _seed(self.seed, self._key(_RESTART, k))

    def exchange(self, sweep: int) -> int:
        return _seed(self.seed, self._key(_EXCHANGE, sweep))
