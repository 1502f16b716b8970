"""Issue 9 item 7c: seeds from ``numpy.random.SeedSequence``, not ``seed + k`` (the path relaxation's windows)."""

from __future__ import annotations

from latentbias.campaign.seeds import MAX_SEED, derived_seed
from latentbias.pathway.relax import window_velocity_seed


def test_window_velocity_seeds_are_distinct_reproducible_valid_and_random_for_seed_zero():
    seeds = {(s, w): window_velocity_seed(s, w) for s in range(1, 6) for w in range(20)}
    assert len(set(seeds.values())) == len(seeds)  # seed + w gave seed 1 window 1 == seed 2 window 0
    assert all(1 <= v <= MAX_SEED for v in seeds.values())
    assert seeds == {(s, w): window_velocity_seed(s, w) for s in range(1, 6) for w in range(20)}
    # seed 0 is OpenMM's "random": every window draws random velocities (seed + w made windows 1.. fixed)
    assert [window_velocity_seed(0, w) for w in range(5)] == [0] * 5
    assert window_velocity_seed(7, 3) == derived_seed(7, 3)


def test_model_probe_streams_do_not_overlap():
    """The probes' three streams (stored frames, aligned references, random configurations) used 20261130 + k,
    20261140 + k and 20261129 + k: random configuration 1 reused stored frame 0's filler seed."""
    from latentbias.model_probes import _ALIGNED, _RANDOM, _STORED, _probe_seed

    seeds = [_probe_seed(s, k) for s in (_STORED, _ALIGNED, _RANDOM) for k in range(12)]
    assert len(set(seeds)) == len(seeds)
