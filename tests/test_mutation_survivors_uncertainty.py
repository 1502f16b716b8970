"""Exact and statistical checks of ``latentbias.analysis.uncertainty`` (issue 15, mutation testing, helper mut15e).

The error bars users publish come from this module, so every part is checked against something it must equal:

* the statistical inefficiency against pymbar's ``statistical_inefficiency(fast=False)`` (the documented peer, rel
  1e-12) and against the exact AR(1) value g = 1 + 2ρ/(1 − ρ) (long series, 10 %);
* ``block_variance_ratio`` against the exact variance of an AR(1) block sum, L + 2 Σ_{t<L} (L − t) ρ^t (rel 1e-12);
* block lengths L_k = min(⌈f g_k⌉, max(1, N_k // 5)) per state, with unequal states and interleaved frames;
* the block bootstrap's resamples: N_k frames per state, grouped in sorted label order, runs starting at block
  starts; its error of a mean against the textbook standard error of the block means (statistical, 5 %);
* the error formula sd · √(n̄/(n̄ − 1)) / √r̄ on estimators whose resample values are known (rel 1e-12), the n − 1
  denominators, the finite fraction, the replica route (Student t, with t₁'s closed form tan(π(Φ(1) − ½)));
* the regenerative bootstrap: round-trip counts of hand-built series, its error of a mean over equal cycles against
  s/√k (statistical, 5 %), and exact values from known resample values;
* ``mbar_reweighter`` on subsets (a state missing, unsorted indices with repeats) against pymbar's MBAR solved on
  that subset by hand (rel 1e-8).
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from scipy import stats

from latentbias.analysis.constants import kt_kjmol
from latentbias.analysis.uncertainty import (
    Estimate,
    block_bootstrap_indices,
    block_lengths,
    block_variance_ratio,
    estimate_uncertainty,
    mbar_reweighter,
    regenerative_error,
    replica_estimate,
    statistical_inefficiency,
    transition_count,
    two_state_error,
)


def _ar1(n: int, rho: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.empty(n)
    x[0] = rng.normal()
    noise = rng.normal(size=n) * math.sqrt(1.0 - rho**2)
    for i in range(1, n):
        x[i] = rho * x[i - 1] + noise[i]
    return x


def _pymbar_g(x: np.ndarray) -> float:
    from pymbar import timeseries

    return float(timeseries.statistical_inefficiency(np.asarray(x, dtype=np.float64), fast=False))


class Scripted:
    """An estimator whose value on the full data and on each resample is given: the error formula can then be
    checked exactly. It records the indices it was called with."""

    def __init__(self, full, resamples):
        self.values = [full, *resamples]
        self.calls: list[np.ndarray] = []

    def __call__(self, indices):
        self.calls.append(np.asarray(indices).copy())
        return self.values[len(self.calls) - 1]


# ------------------------------------------------------------------------------------ statistical inefficiency

def test_statistical_inefficiency_is_pymbars_and_the_exact_ar1_value():
    """pymbar's estimator (fast=False) to rel 1e-12; g of a long AR(1) series within 10 % of 1 + 2ρ/(1 − ρ)."""
    x = _ar1(4000, 0.8, seed=4)
    g = statistical_inefficiency(x)
    assert g == pytest.approx(_pymbar_g(x), rel=1e-12)
    from pymbar import timeseries

    assert abs(float(timeseries.statistical_inefficiency(x, fast=True)) - g) > 1e-3 * g  # the test sees `fast`
    long = _ar1(60_000, 0.7, seed=5)
    assert statistical_inefficiency(long) == pytest.approx(1 + 2 * 0.7 / 0.3, rel=0.1)
    # a column vector is the same series; a quantity-free list too
    assert statistical_inefficiency(x[:, None]) == pytest.approx(g, rel=1e-12)


def test_statistical_inefficiency_is_the_largest_over_columns_and_skips_constant_ones():
    slow, fast = _ar1(3000, 0.9, seed=6), _ar1(3000, 0.3, seed=7)
    g_slow, g_fast = _pymbar_g(slow), _pymbar_g(fast)
    assert g_slow > 2 * g_fast > 2
    for cols in ([slow, fast], [fast, slow], [np.full(3000, 2.5), slow, fast]):
        assert statistical_inefficiency(np.column_stack(cols)) == pytest.approx(g_slow, rel=1e-12)
    assert statistical_inefficiency(np.column_stack([fast, np.full(3000, -1.0)])) == pytest.approx(g_fast, rel=1e-12)
    assert statistical_inefficiency(np.full((40, 2), 3.0)) == 1.0  # constant: g = 1 (not 0, not an error)
    # anticorrelated frames: pymbar's g would be < 1; the statistical inefficiency is never below 1
    assert statistical_inefficiency(np.tile([1.0, -1.0], 50)) == 1.0


def test_statistical_inefficiency_of_a_basin_indicator():
    """A 0/1 basin indicator (range exactly 1) of a symmetric two-state Markov chain flipping with probability 0.05
    per step: pymbar's g (rel 1e-12), near the exact (1 + λ)/(1 − λ) = 19 with λ = 1 − 2 · 0.05 = 0.9 (20 000 steps,
    25 %)."""
    rng = np.random.default_rng(15)
    flips = rng.random(20_000) < 0.05
    ind = (np.cumsum(flips) % 2).astype(float)
    g = statistical_inefficiency(ind)
    assert g == pytest.approx(_pymbar_g(ind), rel=1e-12)
    assert g == pytest.approx(19.0, rel=0.25)
    assert statistical_inefficiency(np.column_stack([ind, 2.0 * ind])) == pytest.approx(g, rel=1e-12)


def test_statistical_inefficiency_of_short_series_is_one_and_bad_input_is_refused():
    """Fewer than 4 frames: g = 1. (For N ≤ 5 pymbar's sum stops before lag N − 1 and, the mean being subtracted,
    equals −2 d₀ d_{N−1} / Σ d² ≤ 1: the cut-off at 4 frames does not change a value.)"""
    assert statistical_inefficiency([0.0, 1.0, 3.0]) == 1.0
    assert statistical_inefficiency(np.arange(4.0)) == 1.0
    with pytest.raises(ValueError, match="non-finite"):
        statistical_inefficiency([0.0, np.nan, 1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="shape"):
        statistical_inefficiency(np.zeros((5, 2, 2)))


# ------------------------------------------------------------------------------------ block lengths and r(g, L)

def test_block_variance_ratio_is_the_exact_ar1_block_sum_variance():
    """r(g, L) = Var(Σ_{i<L} x_i) / (L σ² g) with Var = σ² [L + 2 Σ_{t=1}^{L−1} (L − t) ρ^t], ρ = (g − 1)/(g + 1)."""
    g = np.array([1.5, 3.0, 9.0, 19.0, 4.0])
    lengths = np.array([2, 9, 27, 40, 3])
    rho = (g - 1) / (g + 1)
    exact = []
    for rk, lk, gk in zip(rho, lengths, g):
        t = np.arange(1, lk)
        exact.append((lk + 2 * np.sum((lk - t) * rk**t)) / (lk * gk))
    assert block_variance_ratio(g, lengths) == pytest.approx(np.array(exact), rel=1e-12)
    # one-frame blocks keep 1/g of the variance; below 0.25 the ratio is clipped
    assert block_variance_ratio([2.0, 3.0, 10.0], [1, 1, 1]) == pytest.approx([0.5, 1 / 3, 0.25], rel=1e-12)
    # uncorrelated frames (g = 1), or g below 1, or a length below 1 treated as 1
    assert block_variance_ratio([1.0, 0.0, 0.5], [5, 4, 6]).tolist() == [1.0, 1.0, 1.0]
    assert block_variance_ratio([3.0], [0])[0] == pytest.approx(1 / 3, rel=1e-12)


def test_block_lengths_per_state_with_unequal_states_and_interleaved_frames(caplog):
    """L_k = min(⌈f g_k⌉, max(1, N_k // 5)); g_k from the state's own frames in time order; labels in sorted order."""
    slow = _ar1(400, 0.8, seed=8)
    g_slow = _pymbar_g(slow)
    n = 400 + 60 + 4
    states = np.empty(n, dtype=np.int64)
    obs = np.empty(n)
    # state 9: the slow series on every other frame of the first 800 positions; state 4: 60 flat frames (g = 1)
    order = np.random.default_rng(0).permutation(n)
    slots = np.sort(order[:400]), np.sort(order[400:460]), np.sort(order[460:])
    states[slots[0]], obs[slots[0]] = 9, slow
    states[slots[1]], obs[slots[1]] = 4, 0.5
    states[slots[2]], obs[slots[2]] = 7, [1.0, 2.0, 0.0, 3.0]
    with caplog.at_level(logging.WARNING, logger="latentbias.analysis.uncertainty"):
        lengths, g = block_lengths(obs, states)
    assert g == pytest.approx([1.0, 1.0, g_slow], rel=1e-12)
    assert lengths.tolist() == [min(3, 60 // 5), 1, min(math.ceil(3.0 * g_slow), 80)]
    assert "1 of 3 states" in caplog.text  # state 7 (4 frames): ⌈3⌉ = 3 shortened to 1
    lengths, _ = block_lengths(obs, states, block_factor=0.2)
    assert lengths.tolist() == [1, 1, min(math.ceil(0.2 * g_slow), 80)]


def test_block_lengths_cap_keeps_five_blocks_and_warns_only_when_it_shortens(caplog):
    x = _ar1(30, 0.9, seed=9)
    g = statistical_inefficiency(x)
    assert math.ceil(3 * g) > 6
    with caplog.at_level(logging.WARNING, logger="latentbias.analysis.uncertainty"):
        lengths, gs = block_lengths(x)
    assert lengths.tolist() == [6] and gs.tolist() == [g] and "shortened" in caplog.text
    caplog.clear()
    # a block length exactly at the cap is not shortened: no warning
    flat = np.zeros(15)  # g = 1, ⌈3 · 1⌉ = 3 = 15 // 5
    with caplog.at_level(logging.WARNING, logger="latentbias.analysis.uncertainty"):
        lengths, _ = block_lengths(flat)
    assert lengths.tolist() == [3] and "shortened" not in caplog.text
    # 4 frames: at most one frame per block (not 0, not 2)
    assert block_lengths(None, n_frames=4)[0].tolist() == [1]
    assert block_lengths(None, np.array([0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]), n_frames=12)[0].tolist() == [1, 2]


def test_block_lengths_without_observable_and_bad_input(caplog):
    with caplog.at_level(logging.WARNING, logger="latentbias.analysis.uncertainty"):
        lengths, g = block_lengths(None, n_frames=50)
    assert lengths.tolist() == [3] and g.tolist() == [1.0] and "uncorrelated" in caplog.text
    with pytest.raises(ValueError, match="observable or n_frames"):
        block_lengths(None)
    empty_lengths, empty_g = block_lengths(np.zeros(0))  # no frames: no states
    assert empty_lengths.shape == (0,) and empty_g.shape == (0,)
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="block_factor"):
            block_lengths(np.zeros(20), block_factor=bad)
    with pytest.raises(ValueError, match=r"shape \(20,\)"):
        block_lengths(np.zeros(20), states=np.zeros(19, dtype=int))
    with pytest.raises(ValueError, match="integer"):
        block_lengths(np.zeros(20), states=np.zeros(20))


# ------------------------------------------------------------------------------------ resampling

def test_block_bootstrap_resamples_whole_blocks_from_block_starts():
    """Blocks of L frames start at multiples of L of the state's frame list; with L = 1 single frames are drawn."""
    rng = np.random.default_rng(1)
    n = 41  # 13 blocks of 3 and a last block of 2
    firsts = set()
    for _ in range(200):
        idx = block_bootstrap_indices(None, [3], rng, n_frames=n)
        assert idx.shape == (n,)
        runs = np.split(idx, np.flatnonzero(np.diff(idx) != 1) + 1)
        for run in runs[:-1]:  # every complete run is a whole number of blocks starting at a block start
            assert run[0] % 3 == 0 and (run.size % 3 == 0 or run[-1] == n - 1)
        firsts.add(int(idx[0]))
    assert firsts <= set(range(0, n, 3)) and len(firsts) > 5
    # one-frame blocks: any frame can come first (blocks of 2 would start at even frames only)
    assert {int(block_bootstrap_indices(None, [1], rng, n_frames=n)[0]) % 2 for _ in range(60)} == {0, 1}
    # a length of 0 acts as 1; a length beyond the state resamples the state whole
    assert {int(block_bootstrap_indices(None, [0], rng, n_frames=n)[0]) % 2 for _ in range(60)} == {0, 1}
    whole = block_bootstrap_indices(None, [100], rng, n_frames=7)
    assert whole.tolist() == list(range(7))
    with pytest.raises(ValueError, match="states or n_frames"):
        block_bootstrap_indices(None, [1], rng)


def test_block_bootstrap_groups_states_in_label_order_with_their_counts():
    states = np.array([5, 2, 5, 2, 2, 8, 5, 2, 8, 5, 5])
    idx = block_bootstrap_indices(states, [2, 1, 1], np.random.default_rng(3))
    assert idx.size == states.size
    assert states[idx].tolist() == [2] * 4 + [5] * 5 + [8] * 2
    # state 2's frames are 1, 3, 4, 7: blocks of 2 are (1, 3) and (4, 7)
    part = idx[:4].tolist()
    assert all(tuple(part[i:i + 2]) in {(1, 3), (4, 7)} for i in (0, 2))


def test_bootstrap_error_of_a_mean_is_the_standard_error_of_the_block_means():
    """Uncorrelated frames, one state: E[bootstrap variance] · n_b/(n_b − 1) = s_B²/n_b, the squared standard error
    of the n_b block means (s_B: their sample sd). 3000 resamples: the sd is known to ~1.3 %; tolerance 5 %."""
    x = np.random.default_rng(12).normal(size=120)
    for factor, length in ((1.0, 1), (3.0, 3), (None, 3)):  # None: the default block factor, 3
        kwargs = {} if factor is None else {"block_factor": factor}
        est = estimate_uncertainty(lambda i: float(x[i].mean()), len(x), n_bootstrap=3000, seed=1, **kwargs)
        means = x.reshape(-1, length).mean(axis=1)
        assert est.block_lengths.tolist() == [length] and est.n_independent == 120 // length
        assert est.error == pytest.approx(means.std(ddof=1) / math.sqrt(means.size), rel=0.05)
        assert est.value == pytest.approx(x.mean(), rel=1e-12)


# ------------------------------------------------------------------------------------ the error formula

def test_bootstrap_error_formula_with_known_resample_values():
    """error = sd(resamples, ddof=1) · √(n̄/(n̄ − 1)) / √r̄, with n̄ the frame-weighted mean number of blocks per state
    and r̄ = Σ N_k g_k r_k / Σ N_k g_k (unequal states, one correlated)."""
    slow = _ar1(90, 0.8, seed=13)
    states = np.array([3] * 90 + [1] * 23)
    obs = np.concatenate([slow, np.linspace(0.0, 1.0, 23) ** 0])  # state 1 flat: g = 1
    g0 = statistical_inefficiency(slow)
    assert g0 > 2
    n_k = np.array([23, 90])  # sorted labels: 1, 3
    g = np.array([1.0, g0])
    lengths = np.array([min(3, 23 // 5), min(math.ceil(3 * g0), 90 // 5)])
    n_blocks = -(-n_k // lengths)
    n_bar = float(np.sum(n_k * n_blocks) / n_k.sum())
    r_bar = float(np.sum(n_k * g * block_variance_ratio(g, lengths)) / np.sum(n_k * g))
    assert r_bar < 0.95  # the correction matters here
    vals = [0.3, -1.2, 2.5, 0.0, 1.1]
    est = estimate_uncertainty(Scripted(7.0, vals), len(states), states=states, observable=obs, n_bootstrap=5)
    expected = np.std(vals, ddof=1) * math.sqrt(n_bar / (n_bar - 1)) / math.sqrt(r_bar)
    assert est.error == pytest.approx(expected, rel=1e-12)
    assert est.value == 7.0 and isinstance(est.value, float) and isinstance(est.error, float)
    assert est.method == "block-bootstrap" and est.dof == math.inf
    assert est.block_lengths.tolist() == lengths.tolist() and est.n_independent == int(n_blocks.sum())
    assert est.statistical_inefficiency == pytest.approx(g, rel=1e-12)
    assert est.samples.tolist() == vals
    assert est.halfwidth(2.0) == pytest.approx(2 * expected, rel=1e-12)


def test_the_estimator_sees_all_frames_first_then_resamples_keeping_state_counts():
    states = np.array([0, 1, 1, 0, 1, 1, 1, 0, 1, 1])
    est_fn = Scripted(1.0, [0.0] * 4)
    estimate_uncertainty(est_fn, 10, states=states, n_bootstrap=4, seed=5)
    assert est_fn.calls[0].tolist() == list(range(10))
    assert len(est_fn.calls) == 5
    for call in est_fn.calls[1:]:
        assert np.bincount(states[call]).tolist() == [3, 7] and states[call].tolist() == [0] * 3 + [1] * 7


def test_bootstrap_error_with_two_frames_and_with_one_frame_per_state():
    """Two frames in one state: 2 one-frame blocks, n̄ = 2, error = sd · √2. One frame in each of two states: no
    spread can be estimated (n̄ = 1): NaN."""
    est = estimate_uncertainty(Scripted(0.5, [1.0, 4.0]), 2, n_bootstrap=2)
    assert est.error == pytest.approx(np.std([1.0, 4.0], ddof=1) * math.sqrt(2.0), rel=1e-12)
    est = estimate_uncertainty(Scripted(0.5, [1.0, 4.0]), 2, states=[0, 1], n_bootstrap=2)
    assert math.isnan(est.error) and est.value == 0.5
    with pytest.raises(ValueError, match="at least 2 frames"):
        estimate_uncertainty(Scripted(0.0, []), 1)


def test_vector_estimates_use_the_finite_resamples_of_each_entry():
    """Per entry: sd over its finite resamples (n − 1 denominator); NaN where fewer than min_finite_fraction of them
    are finite (at exactly the fraction the error is kept), without a RuntimeWarning."""
    nan = np.nan
    vals = [np.array([0.0, 1.0, nan, nan]), np.array([1.0, nan, nan, nan]), np.array([2.0, 3.0, 1.0, nan]),
            np.array([6.0, 0.0, nan, nan]), np.array([4.0, 2.0, nan, nan])]
    factor = math.sqrt(10 / 9)  # 30 frames, one state, g = 1: L = 3, n̄ = 10
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est = estimate_uncertainty(Scripted(np.array([1.0, 2.0, 3.0, 4.0]), vals), 30, n_bootstrap=5)
    assert est.value.tolist() == [1.0, 2.0, 3.0, 4.0]
    assert est.error[0] == pytest.approx(np.std([0, 1, 2, 6, 4], ddof=1) * factor, rel=1e-12)
    assert est.error[1] == pytest.approx(np.std([1, 3, 0, 2], ddof=1) * factor, rel=1e-12)  # 4 of 5 = 0.8: kept
    assert math.isnan(est.error[2]) and math.isnan(est.error[3])  # 1 of 5 finite; none
    est = estimate_uncertainty(Scripted(np.zeros(4), vals), 30, n_bootstrap=5, min_finite_fraction=0.2)
    assert est.error[2] == 0.0 and math.isnan(est.error[3])  # one finite resample: sd 0 (denominator max(n − 1, 1))


def test_n_bootstrap_must_be_an_integer_of_at_least_two():
    for bad in (1, 0, True, 2.0, "5"):
        with pytest.raises(ValueError, match="n_bootstrap"):
            estimate_uncertainty(Scripted(0.0, [0.0] * 5), 20, n_bootstrap=bad)
    assert estimate_uncertainty(Scripted(0.0, [1.0, 2.0]), 20, n_bootstrap=np.int64(2)).samples.tolist() == [1, 2]


def test_default_seed_is_reproducible_and_seeds_differ():
    x = _ar1(200, 0.5, seed=14)
    a = estimate_uncertainty(lambda i: x[i].mean(), 200, observable=x, n_bootstrap=20)
    b = estimate_uncertainty(lambda i: x[i].mean(), 200, observable=x, n_bootstrap=20, seed=0)
    c = estimate_uncertainty(lambda i: x[i].mean(), 200, observable=x, n_bootstrap=20, seed=1)
    assert a.error == b.error and a.samples.tolist() == b.samples.tolist() and c.error != a.error
    assert len(a.samples) == 20


def test_default_bootstrap_count_is_200():
    est = estimate_uncertainty(lambda i: 0.0, 30)
    assert est.samples.shape == (200,)


# ------------------------------------------------------------------------------------ replicas

T1 = math.tan(math.pi * (stats.norm.cdf(1.0) - 0.5))  # Student t with 1 dof is Cauchy: closed-form quantile


def test_two_replicas_give_the_cauchy_quantile_times_the_standard_error():
    est = replica_estimate([1.0, 4.0])
    assert T1 == pytest.approx(1.8373, rel=1e-4)
    assert est.value == 2.5 and est.dof == 1.0 and est.n_independent == 2 and est.method == "replicas"
    assert est.error == pytest.approx(T1 * 1.5, rel=1e-12)  # s = 3/√2, s/√2 = 1.5
    t2 = math.tan(math.pi * (stats.norm.cdf(2.0) - 0.5))
    assert est.halfwidth(2.0) == pytest.approx(t2 / T1 * est.error, rel=1e-12)
    assert isinstance(est.value, float) and isinstance(est.error, float)
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="n_sigma"):
            est.halfwidth(bad)
    with pytest.raises(ValueError, match="at least 2 replicas, got 0"):  # a scalar has no replica axis
        replica_estimate(3.0)
    assert est.block_lengths.shape == (0,) and est.statistical_inefficiency.shape == (0,)  # bootstrap-only fields


def test_vector_replica_estimates_count_finite_replicas_per_entry():
    """Entry 0: 4 finite replicas (t₃); entry 1: 2 finite (t₁); entry 2: 1 finite (NaN); pooled value kept."""
    x = np.array([[1.0, 0.0, 5.0], [2.0, np.nan, np.nan], [4.0, 3.0, np.nan], [9.0, np.nan, np.nan]])
    est = replica_estimate(x, pooled=[0.1, 0.2, 0.3])
    t3 = stats.t.ppf(stats.norm.cdf(1.0), 3)
    assert est.error[0] == pytest.approx(t3 * np.std([1, 2, 4, 9], ddof=1) / 2.0, rel=1e-12)
    assert est.error[1] == pytest.approx(T1 * np.std([0, 3], ddof=1) / math.sqrt(2), rel=1e-12)
    assert math.isnan(est.error[2])
    assert est.value.tolist() == [0.1, 0.2, 0.3] and est.dof == 3.0
    est = replica_estimate(x)
    assert est.value[:2] == pytest.approx([4.0, 1.5], rel=1e-12) and est.value[2] == 5.0
    arr = Estimate(value=np.zeros(2), error=np.array([1.0, 2.0]), method="block-bootstrap", n_independent=5)
    assert arr.halfwidth(3.0).tolist() == [3.0, 6.0] and arr.halfwidth().tolist() == [1.0, 2.0]
    assert arr.dof == math.inf and arr.samples.shape == (0,) and arr.block_lengths.shape == (0,)
    assert arr.statistical_inefficiency.shape == (0,)
    # a vector replica error: every entry scaled by the same t quantile ratio
    t3_2 = stats.t.ppf(stats.norm.cdf(2.0), 3) / stats.t.ppf(stats.norm.cdf(1.0), 3)
    np.testing.assert_allclose(est.halfwidth(2.0)[:2], t3_2 * est.error[:2], rtol=1e-12)


def test_replica_route_uses_each_replicas_frames_in_label_order():
    x = np.array([1.0, 2.0, 7.0, 4.0, 9.0, 8.0])
    rep = np.array([7, 7, 3, 7, 3, 3])
    est = estimate_uncertainty(lambda i: float(x[i].mean()), 6, replicas=rep)
    assert est.method == "replicas" and est.samples.tolist() == [8.0, 7 / 3]
    assert est.value == pytest.approx(x.mean(), rel=1e-12)
    assert est.error == pytest.approx(T1 * abs(8.0 - 7 / 3) / 2, rel=1e-12)
    one = estimate_uncertainty(Scripted(0.0, [1.0, 2.0]), 6, replicas=np.zeros(6, dtype=int), n_bootstrap=2)
    assert one.method == "block-bootstrap"
    for bad in (np.zeros(5, dtype=int), np.zeros(6)):
        with pytest.raises(ValueError, match="replicas"):
            estimate_uncertainty(Scripted(0.0, []), 6, replicas=bad)


# ------------------------------------------------------------------------------------ transitions and round trips

def test_transition_count_refuses_masks_of_other_shapes():
    with pytest.raises(ValueError, match="one shape"):
        transition_count(np.zeros(3, bool), np.zeros(4, bool))
    with pytest.raises(ValueError, match="one shape"):
        transition_count(np.zeros((2, 2), bool), np.zeros((2, 2), bool))
    with pytest.raises(ValueError, match="breaks"):
        transition_count(np.zeros(3, bool), np.zeros(3, bool), breaks=[0, 1])
    a = np.array([1, 0, 0, 1, 0, 0], bool)
    b = np.array([0, 0, 1, 0, 0, 1], bool)
    assert transition_count(a, b) == 3 and transition_count(b, a) == 3


def test_two_state_error_is_two_kt_over_root_k():
    for temperature, k in ((300.0, 1), (450.0, 4), (250.0, 9)):
        assert two_state_error(k, temperature) == pytest.approx(2 * kt_kjmol(temperature) / math.sqrt(k), rel=1e-12)
    assert two_state_error(0, 300.0) == math.inf
    with pytest.raises(ValueError, match="transitions must be >= 0"):
        two_state_error(-1, 300.0)


def _cycles_series():
    """A A B . A B B A . B A with a break before frame 8: stretches [0-4), [4-7), [7-8), [8-10), [10-11)."""
    a = np.array([1, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1], bool)
    b = np.array([0, 0, 1, 0, 0, 1, 1, 0, 0, 1, 0], bool)
    breaks = np.array([0] * 8 + [1] * 3)
    return a, b, breaks


def test_regenerative_error_counts_round_trips_and_uses_known_resample_values():
    a, b, breaks = _cycles_series()
    seen = []

    def fn(sel):
        seen.append(np.asarray(sel))
        return [2.0, 5.0, 11.0][len(seen) - 1]

    err, k = regenerative_error(fn, a, b, breaks=breaks, n_bootstrap=3, seed=3)
    assert k == 5 and err == pytest.approx(np.std([2.0, 5.0, 11.0], ddof=1) * math.sqrt(5 / 4), rel=1e-12)
    stretches = [{0, 1, 2, 3}, {4, 5, 6}, {7}, {8, 9}, {10}]
    for sel in seen:  # every resample is a concatenation of 5 whole stretches
        s = list(sel)
        while s:
            st = next(x for x in stretches if s[0] in x)
            assert set(s[:len(st)]) == st
            s = s[len(st):]
    # without breaks frames 7 and 8 are one stretch: A . | B A → 4 stretches
    assert regenerative_error(lambda sel: 0.0, a, b, n_bootstrap=2)[1] == 4


def test_regenerative_error_needs_two_round_trips_and_80_percent_finite_resamples():
    a = np.array([1, 0, 1, 0, 1], bool)
    b = np.array([0, 1, 0, 1, 0], bool)  # A B | A B | A: 3 stretches
    assert regenerative_error(lambda sel: 0.0, a, b, n_bootstrap=2) == (0.0, 3)
    assert regenerative_error(lambda sel: 0.0, a[:4], b[:4], n_bootstrap=2) == (math.inf, 2)  # A B | A B
    calls = []

    def every_fifth_misses(sel):
        calls.append(1)
        return math.nan if len(calls) % 5 == 0 else float(len(calls) % 5)

    err, _ = regenerative_error(every_fifth_misses, a, b, n_bootstrap=10)  # 8 of 10 finite: kept
    assert err == pytest.approx(np.std([1, 2, 3, 4] * 2, ddof=1) * math.sqrt(1.5), rel=1e-12)
    calls.clear()

    def half_missing(sel):
        calls.append(1)
        return math.nan if len(calls) % 2 else 1.0

    assert regenerative_error(half_missing, a, b, n_bootstrap=10)[0] == math.inf
    with pytest.raises(ValueError, match="one shape"):
        regenerative_error(lambda sel: 0.0, a, b[:4])


def test_regenerative_error_of_a_mean_over_equal_cycles_is_the_standard_error():
    """k = 6 round trips of equal length, a value constant within each: the error → s/√k (s: sd of the cycle values,
    ddof 1) as resamples grow; 4000 resamples, tolerance 5 %. The first cycle carries the largest value, so a
    resampler that never draws it (or draws one cycle twice as often) fails."""
    values = np.array([10.0, 0.0, 1.0, 0.5, 2.0, 0.0])
    a = np.tile([True, False, False], 6)
    b = np.tile([False, True, False], 6)
    x = np.repeat(values, 3)
    err, k = regenerative_error(lambda sel: float(x[sel].mean()), a, b, n_bootstrap=4000, seed=2)
    assert k == 6
    assert err == pytest.approx(values.std(ddof=1) / math.sqrt(6), rel=0.05)


# ------------------------------------------------------------------------------------ MBAR on a selection

def _pymbar_logweights(u_kn: np.ndarray, n_k: np.ndarray) -> np.ndarray:
    from pymbar import MBAR

    mbar = MBAR(u_kn, n_k, verbose=False)
    f = mbar.f_k
    logw = -np.logaddexp.reduce(np.log(n_k)[:, None] + f[:, None] - u_kn, axis=0)
    return logw - np.logaddexp.reduce(logw)


def test_mbar_reweighter_on_a_selection_equals_pymbar_on_that_selection():
    """Three harmonic states; a selection missing state 1, unsorted, with repeats: log-weights (in the order of
    the indices) equal MBAR solved by pymbar on exactly those frames and states, rel 1e-8."""
    rng = np.random.default_rng(21)
    centers, k = np.array([-1.0, 0.0, 1.2]), 3.0
    n_per = np.array([40, 25, 35])
    lab = np.repeat([0, 1, 2], n_per)
    x = np.concatenate([rng.normal(c, 1 / math.sqrt(k), size=n) for c, n in zip(centers, n_per)])
    u = 0.5 * k * (x[None, :] - centers[:, None]) ** 2
    rw = mbar_reweighter(u, lab)
    sel = np.concatenate([rng.choice(np.flatnonzero(lab == 2), 30), rng.choice(np.flatnonzero(lab == 0), 50)])
    sel = rng.permutation(sel)
    got = rw(sel)
    order = np.argsort(lab[sel], kind="stable")
    ref_sorted = _pymbar_logweights(u[np.ix_([0, 2], sel[order])], np.array([50, 30]))
    ref = np.empty_like(ref_sorted)
    ref[order] = ref_sorted
    assert got == pytest.approx(ref, rel=1e-8, abs=1e-8)
    # the full data, with a starting guess, and with a target state (state 2 itself: weights of its own frames)
    full = np.arange(100)
    ref_full = _pymbar_logweights(u, n_per)
    assert rw(full) == pytest.approx(ref_full, rel=1e-8, abs=1e-8)
    from pymbar import MBAR

    f = MBAR(u, n_per, verbose=False).f_k
    assert mbar_reweighter(u, lab, initial_f_k=f + 4.0)(full) == pytest.approx(ref_full, rel=1e-8, abs=1e-8)
    # a selection of one state's frames (a replica that stayed in one window), with a starting guess: MBAR with one
    # state reweights by exp(+u_k) to the unbiased target, exactly
    only2 = rng.permutation(np.flatnonzero(lab == 2))
    one = mbar_reweighter(u, lab, initial_f_k=f)(only2)
    assert one == pytest.approx(u[2, only2] - np.logaddexp.reduce(u[2, only2]), rel=1e-10, abs=1e-10)
    tgt = mbar_reweighter(u, lab, target_reduced_potential=u[2])(full)
    ref_t = ref_full - u[2]
    assert tgt == pytest.approx(ref_t - np.logaddexp.reduce(ref_t), rel=1e-8, abs=1e-8)


def test_mbar_reweighter_refuses_inconsistent_input():
    u = np.zeros((2, 5))
    for lab in (np.array([0, 1, 1, 0]), np.array([0, 1, 2, 0, 1]), np.array([0, -1, 1, 0, 1]),
                np.array([0.0, 1, 1, 0, 1])):
        with pytest.raises(ValueError, match="states|reduced_potentials"):
            mbar_reweighter(u, lab)
    with pytest.raises(ValueError, match="reduced_potentials"):
        mbar_reweighter(np.zeros(5), np.zeros(5, dtype=int))
    mbar_reweighter(u, np.array([0, 1, 1, 0, 1]))  # the last state index is accepted
    with pytest.raises(ValueError, match=r"row indices of reduced_potentials \(0\.\.2\)"):  # 3 states, 7 frames
        mbar_reweighter(np.zeros((3, 7)), np.array([0, 1, 2, 3, 0, 1, 2]))
