"""Issue 9 item 7c: seeds from ``numpy.random.SeedSequence``, not ``seed + k`` (the path relaxation's windows are
checked in tests/test_path_reproducibility.py)."""

from __future__ import annotations




def test_model_probe_streams_do_not_overlap():
    """The probes' three streams (stored frames, aligned references, random configurations) used 20261130 + k,
    20261140 + k and 20261129 + k: random configuration 1 reused stored frame 0's filler seed."""
    from latentbias.model_probes import _ALIGNED, _RANDOM, _STORED, _probe_seed

    seeds = [_probe_seed(s, k) for s in (_STORED, _ALIGNED, _RANDOM) for k in range(12)]
    assert len(set(seeds)) == len(seeds)
