"""Cluster-balanced training weights (latentbias.sampleweights): balance, bounds, determinism, bad input, and the
point of them — an encoder trained with them resolves a rare region that the frame-averaged loss neglects."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import latentbias as lb
from latentbias.campaign import ConfigError
from latentbias.campaign.config import from_dict
from latentbias.sampleweights import cluster_balanced_weights


def two_regions(n_main: int, n_rare: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Frames of a populated region and a rare, distant one in 6-D (rare: True for the rare frames)."""
    rng = np.random.default_rng(seed)
    main = rng.normal(0.0, 1.0, (n_main, 6))
    rare = rng.normal(0.0, 0.3, (n_rare, 6)) + np.array([30.0, -20.0, 0, 0, 0, 0])
    return np.concatenate([main, rare]), np.r_[np.zeros(n_main, bool), np.ones(n_rare, bool)]


def test_each_cluster_carries_the_same_weight():
    x, rare = two_regions(1900, 100)
    w = cluster_balanced_weights(x, 2, seed=3)
    assert w.mean() == pytest.approx(1.0)
    assert w[rare].sum() == pytest.approx(w[~rare].sum(), rel=1e-9)  # k-means separates the two regions exactly
    assert np.ptp(w[rare]) == 0 and np.ptp(w[~rare]) == 0
    # more clusters: the rare region still weighs at least its share of clusters, the main one not all of it
    w8 = cluster_balanced_weights(x, 8, seed=3)
    assert w8[rare].sum() / w8.sum() >= 1 / 8 - 1e-12
    assert np.array_equal(w8, cluster_balanced_weights(x, 8, seed=3))  # deterministic for a seed


def test_min_count_bounds_the_largest_weight():
    x, rare = two_regions(995, 5)
    w = cluster_balanced_weights(x, 2, seed=0, min_count=50)
    # the 5 rare frames count as a cluster of 50: each weighs 995/50 times a main frame, not 995/5
    assert w[rare][0] / w[~rare][0] == pytest.approx(995 / 50)
    assert np.array_equal(cluster_balanced_weights(x, 1), np.ones(len(x)))
    assert np.array_equal(cluster_balanced_weights(np.ones((10, 3)), 4), np.ones(10))  # nothing to cluster


@pytest.mark.parametrize(
    "args, match",
    [((np.ones(5), 2), "shape"), ((np.full((4, 2), np.nan), 2), "NaN"), ((np.ones((4, 2)), 5), "more than the 4"),
     ((np.ones((4, 2)), 0), "n_clusters")],
)
def test_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        cluster_balanced_weights(*args)


def test_config_key():
    base = {"system": {"testsystem": "alanine-dipeptide-vacuum"}}
    assert from_dict(base).model.balance_clusters == 0  # off by default
    assert from_dict({**base, "model": {"balance_clusters": 12}}).model.balance_clusters == 12
    for bad in (-1, 2.5, True):
        with pytest.raises(ConfigError, match=r"\[model\] balance_clusters"):
            from_dict({**base, "model": {"balance_clusters": bad}})


def test_balanced_weights_make_the_encoder_resolve_the_rare_region():
    """A 1-D encoder of a populated 2-D sheet (u, v) plus a rare region (1.5 % of the frames) displaced along a
    third direction w: with uniform weights the encoder spends itself on the sheet and reconstructs the rare
    frames worse than the mean variance of the data; with cluster-balanced weights it resolves them (measured:
    relative error 3.8 -> 0.009; seeds 1 and 2 of the same construction: 0.11 -> 0.017, 3.1 -> 0.012), at a
    small cost on the sheet."""
    rng = np.random.default_rng(0)
    n_main, n_rare = 1970, 30
    u = np.r_[rng.uniform(-1, 1, n_main), rng.normal(0, 0.05, n_rare)]
    v = np.r_[rng.uniform(-1, 1, n_main), rng.normal(0, 0.05, n_rare)]
    w = np.r_[np.zeros(n_main), 2.0 + rng.normal(0, 0.05, n_rare)]
    x = np.column_stack([u, v, w]) @ rng.standard_normal((3, 8)) + 0.01 * rng.standard_normal((n_main + n_rare, 8))
    rare = np.r_[np.zeros(n_main, bool), np.ones(n_rare, bool)]
    kw = dict(latent_dim=1, hidden=(16, 16), epochs=60, patience=60, learning_rate=3e-3, seed=0, progress=False)

    def relative_errors(weights):
        ae = lb.LatentModelEstimator(**kw).fit(x, weights=weights).model
        with torch.no_grad():
            out = ae.standardizer.inverse(ae.decode(ae.encode(torch.as_tensor(x, dtype=torch.float32)))).numpy()
        err = ((out - x) ** 2).mean(1) / x.var(0).mean()
        return err[rare].mean(), err[~rare].mean()

    rare_uniform, _ = relative_errors(None)
    rare_balanced, main_balanced = relative_errors(cluster_balanced_weights(x, 10, seed=0))
    assert rare_uniform > 1.0
    assert rare_balanced < 0.05
    assert main_balanced < 0.6  # a 1-D code of a 2-D sheet: about 1/3 of its variance is lost either way
