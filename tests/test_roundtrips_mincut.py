"""The converge phase counts round trips across the slowest split of the latent basins (minimum cut), not between
the two deepest (latentbias.campaign.roundtrips; issue 8, helper basins8).

Toys with three basins where the deep pair is *not* the slow pair — the ala2 demo's failure: the encoder splits
C7eq/C5 into two deep latent basins that exchange quickly, and C7ax, shallower, exchanges slowly with them:

* a Gaussian-mixture potential in 1-D (exact populations), overdamped Langevin with 32 walkers and z = x: the
  count equals an independent hand count of transitions into and out of the shallow basin's core, the stopping
  rule waits for them where the two-deepest rule stops early, and ΔF(shallow − rest) at the stop is within
  3 × 2kT/√C of the exact one;
* a 3-state Markov jump process, 400 replicas each stopped by the rule: the spread of ΔF(shallow − rest) over the
  replicas is the two-state error 2kT/√(2K) (the statistical claim of the module docstring: the error of a basin
  population scales with the number of independent visits to it), while the two-deepest rule stops replicas that
  visited the shallow state a few times or never.

Plus: the minimum cut against brute force over all bipartitions, the transition graph's hysteresis and walker
breaks, which basins take part (population, frames, the n deepest) and cores stored before populations existed.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from latentbias.analysis.constants import kt_kjmol
from latentbias.campaign.converge import convergence_check, round_trip_summary
from latentbias.campaign.records import KIND_OPES
from latentbias.campaign.roundtrips import LatentCores, latent_cores, latent_round_trips, min_cut, transition_pairs
from latentbias.campaign.rundir import RunDir

sys.path.insert(0, str(Path(__file__).parent))
from test_roundtrips import _config  # noqa: E402 (the converge config of the round-trip tests, T = 300 K, checkpoints of 1000 steps)

T = 300.0
KT = kt_kjmol(T)
# p(x) ∝ sum_i C_i N(x; M_i, S): wells at M with populations C (exactly, up to the tails' overlap). Barriers (in kT,
# from the well): 0 ⇄ 1 ≈ 3.3 / 2.7, 1 ⇄ 2 ≈ 5.6 / 4.0: the deep pair (0, 1) exchanges fast, basin 2 slowly.
M, S, C = np.array([-1.0, 0.9, 3.0]), 0.3, np.array([0.6, 0.33, 0.07])
N_WALKERS, FRAMES, STRIDE, DT = 32, 2400, 20, 4e-3
FRAMES_PER_SEGMENT, CHECKPOINT = 200, 1000  # per walker


def mixture_samples(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return M[rng.choice(3, n, p=C)] + S * rng.standard_normal(n)


def langevin_walkers(seed: int) -> np.ndarray:
    """Overdamped Langevin (Euler–Maruyama, D = 1, reduced units) in −ln p(x), the walkers started from
    independent equilibrium samples (each walker is short against the slow exchange: started all in one well,
    they would carry that start into the pooled populations); returns shape=(N_WALKERS, FRAMES)."""
    rng = np.random.default_rng(seed)
    x = mixture_samples(N_WALKERS, seed + 1)
    out = np.empty((N_WALKERS, FRAMES))
    inv = 1.0 / (S * S)
    for i in range(FRAMES * STRIDE):
        d = x[:, None] - M
        g = C * np.exp(-0.5 * inv * d * d)
        x = x - DT * inv * (g * d).sum(1) / g.sum(1) + rng.standard_normal(N_WALKERS) * math.sqrt(2.0 * DT)
        if i % STRIDE == STRIDE - 1:
            out[:, i // STRIDE] = x
    return out


def exact_df_shallow(cut: float) -> float:
    """F(x > cut) − F(x < cut), kJ/mol, for the mixture."""
    p = float(np.sum(C * 0.5 * np.array([math.erfc((cut - m) / (S * math.sqrt(2.0))) for m in M])))
    return -KT * math.log(p / (1.0 - p))


def core_intervals(cores: LatentCores) -> list[tuple[float, float]]:
    """(lo, hi) of every 1-D core (contiguous here)."""
    e = cores.edges[0]
    return [(float(e[:-1][cores.labels == k].min()), float(e[1:][cores.labels == k].max()))
            for k in range(cores.n_basins)]


def hand_transitions(x: np.ndarray, inside: tuple[float, float], others: list[tuple[float, float]]) -> int:
    """Transitions between one core and the union of the others along each walker's series (rows of x), with
    hysteresis (frames in neither keep the last one visited): by intervals of x, not by the cores' grid."""
    state = np.where((inside[0] <= x) & (x < inside[1]), 1, -1)
    for lo, hi in others:
        state = np.where((lo <= x) & (x < hi), 0, state)
    return int(sum(np.count_nonzero(np.diff(row[row >= 0])) for row in state))


@pytest.fixture(scope="module")
def three_wells():
    cores = latent_cores(mixture_samples(30000, 2)[:, None], np.zeros(30000), T, core_kt=2.0)
    return cores, langevin_walkers(seed=5)


def test_minimum_cut_is_the_smallest_bipartition():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(2, 8))
        w = np.triu(rng.integers(0, 6, (n, n)) * (rng.random((n, n)) < 0.6), 1)
        w = w + w.T
        best = min(int(w[np.ix_(list(s), [j for j in range(n) if j not in s])].sum())
                   for r in range(1, n) for s in itertools.combinations(range(n), r))
        cut, side = min_cut(w)
        assert cut == best
        assert int(w[np.ix_(side, ~side)].sum()) == cut and 0 < side.sum() < n and not side[0]
    # two groups that exchange quickly inside and slowly between: the cut is between the groups, not a single node
    w = np.array([[0, 50, 1, 0], [50, 0, 0, 2], [1, 0, 0, 40], [0, 2, 40, 0]])
    cut, side = min_cut(w)
    assert cut == 3 and side.tolist() == [False, False, True, True]
    assert min_cut(np.zeros((1, 1), int))[0] == 0
    with pytest.raises(ValueError, match="symmetric non-negative"):
        min_cut(np.array([[0, 1], [2, 0]]))


def test_transition_graph_has_hysteresis_and_walker_breaks():
    core = np.array([0, 0, -1, 1, -1, 1, 0, 2, -1, 2, 0, 1])
    pair = transition_pairs(core, n_basins=3)
    # 0 1 0 2 0 1: 0-1 three times (0→1, 1→0, 0→1), 0-2 twice
    assert pair.tolist() == [[0, 3, 2], [3, 0, 0], [2, 0, 0]]
    walker = np.array([0] * 6 + [1] * 6)  # 0 0 - 1 - 1 | 0 2 - 2 0 1
    assert transition_pairs(core, walker, 3).tolist() == [[0, 2, 2], [2, 0, 0], [2, 0, 0]]
    # basin 2 left out: its frames count as in no core (0 1 0 0 1 → 0 1 0 1)
    assert transition_pairs(core, None, 3, basins=[0, 1]).tolist() == [[0, 3, 0], [3, 0, 0], [0, 0, 0]]


def test_three_basins_where_the_deep_pair_is_not_the_slow_pair(three_wells):
    cores, x = three_wells
    assert cores.n_basins == 3
    np.testing.assert_allclose(cores.minima[:, 0], M, atol=0.2)
    np.testing.assert_allclose(cores.populations, C, atol=0.02)
    assert np.all(cores.core_frames > 500)
    z, walker = x.reshape(-1, 1), np.repeat(np.arange(N_WALKERS), FRAMES)
    out = latent_round_trips(cores, z, walker)
    iv = core_intervals(cores)
    hand = hand_transitions(x, iv[2], [iv[0], iv[1]])
    assert out["bottleneck"] == [2] and out["transitions"] == hand and out["round_trips"] == hand // 2
    deep_pair = latent_round_trips(cores, z, walker, basins=[0, 1])
    assert deep_pair["transitions"] == hand_transitions(x, iv[1], [iv[0]])  # basin 2's frames in no core
    # the two-deepest rule sees several times more round trips than basin 2 ever made
    assert deep_pair["round_trips"] > 3 * out["round_trips"] >= 30, (deep_pair["round_trips"], out["round_trips"])
    assert out["basin_transitions"][2] == hand and out["pair_transitions"][0][1] > 3 * hand


def _write_walkers_run(folder: Path, x: np.ndarray, cores: LatentCores, r: int = 1) -> RunDir:
    """Converge round r with the walkers' frames (z = x, no bias) in checkpoint segments (walker 0's frames of a
    segment first, then walker 1's ..., as the parallel-walker campaign writes them)."""
    run = RunDir(folder)
    n_w, n = x.shape
    n_seg = n // FRAMES_PER_SEGMENT
    run.round_dir(r).mkdir(parents=True, exist_ok=True)
    run.write_plan(r, {"round": r, "segments": n_seg, "strategy": "opes", "converge": True, "model_round": r - 1,
                       "variables": [{"index": 0, "minValue": float(x.min()) - 0.1, "maxValue": float(x.max()) + 0.1}],
                       "round_trip_cores": cores.to_dict()})
    stride = CHECKPOINT // FRAMES_PER_SEGMENT
    for k in range(n_seg):
        xs = x[:, k * FRAMES_PER_SEGMENT:(k + 1) * FRAMES_PER_SEGMENT]
        m = xs.size
        step = np.tile(k * CHECKPOINT + stride * (np.arange(FRAMES_PER_SEGMENT) + 1), n_w)
        run.save_npz(run.segment_file(r, k), positions=np.zeros((m, 1, 3), np.float32), step=step.astype(np.int64),
                     time_ps=step * 0.002, z=xs.reshape(-1, 1), bias_kjmol=np.zeros(m), ood=np.zeros(m, bool),
                     recon_error=np.zeros(m), scale=np.ones(m), target=np.full(m, -1, np.int64),
                     kind=np.full(m, KIND_OPES, np.int64), box=np.zeros((m, 3, 3)), ct_kjmol=np.zeros(m),
                     walker=np.repeat(np.arange(n_w), FRAMES_PER_SEGMENT).astype(np.int64))
    return run


@pytest.mark.parametrize("k_needed", [6, 12])
def test_stopping_rule_waits_for_the_slow_basin(three_wells, tmp_path, k_needed):
    cores, x = three_wells
    run = _write_walkers_run(tmp_path, x, cores)
    n_seg = FRAMES // FRAMES_PER_SEGMENT
    iv = core_intervals(cores)
    expected = None
    for k in range(1, n_seg + 1):  # independent: the frames after the burn-in (by time), hand count into basin 2
        n = k * FRAMES_PER_SEGMENT
        used = x[:, int(math.ceil(0.2 * (n - 1))):n]
        if hand_transitions(used, iv[2], [iv[0], iv[1]]) // 2 >= k_needed:
            expected = k
            break
    assert expected is not None and expected > 3
    stops = [convergence_check(run, _config(min_round_trips=k_needed), 1, k) for k in range(1, n_seg + 1)]
    assert stops.index("converged") + 1 == expected
    deep = [convergence_check(run, _config(min_round_trips=k_needed, round_trip_basins=2), 1, k)
            for k in range(1, n_seg + 1)]
    assert deep.index("converged") + 1 < expected / 2  # the two-deepest rule stops far too early
    # ΔF(basin 2 − rest) at the stop, within 3 × 2kT/sqrt(C) of the exact one (C: transitions at the stop)
    n = expected * FRAMES_PER_SEGMENT
    used = x[:, int(math.ceil(0.2 * (n - 1))):n]
    c_stop = hand_transitions(used, iv[2], [iv[0], iv[1]])
    cut = 0.5 * (M[1] + M[2])
    df = -KT * math.log(np.count_nonzero(used > cut) / np.count_nonzero(used < cut))
    assert abs(df - exact_df_shallow(cut)) < 3 * 2 * KT / math.sqrt(c_stop), (df, exact_df_shallow(cut), c_stop)
    summary = round_trip_summary(run, _config(min_round_trips=k_needed), 1, "converged")  # the whole run
    assert summary["enough"] and summary["bottleneck"] == [2] and summary["counted"] == [0, 1, 2]


def test_basins_without_weight_or_frames_do_not_take_part(three_wells, tmp_path):
    cores, x = three_wells
    assert cores.taking_part(T, 25.0, 10) == [0, 1, 2]
    assert cores.taking_part(T, 25.0, 10, n_deepest=2) == [0, 1]
    # basin 2 (7 % of the weight) made a noise basin: too few frames, or too little population for the cutoff
    few = dataclasses.replace(cores, core_frames=np.array([10**4, 10**4, 9]))
    assert few.taking_part(T, 25.0, 10) == [0, 1]
    noisy_second = dataclasses.replace(cores, core_frames=np.array([10**4, 9, 10**4]))
    assert noisy_second.taking_part(T, 25.0, 10, n_deepest=2) == [0, 2]  # the two deepest of those taking part
    light = -KT * math.log(C[2]) - 0.5  # kJ/mol: a cutoff just below basin 2's population free energy
    assert cores.taking_part(T, light, 10) == [0, 1] and cores.taking_part(T, light + 1.0, 10) == [0, 1, 2]
    # a basin left out cannot hold the run to its budget: the rule counts the deep pair only
    run = _write_walkers_run(tmp_path, x, few)
    assert convergence_check(run, _config(min_round_trips=13), 1, 6) == "converged"
    # no basin takes part: nothing to count, the run goes to its budget and the warning says a budget cannot help
    none = round_trip_summary(run, _config(min_round_trips=13, basin_min_frames=10**9), 1, "budget")
    assert none["counted"] == [] and none["round_trips"] == 0 and not none["enough"]
    assert "without a latent round trip to count" in none["warning"] and "does not change" in none["warning"]
    # cores stored before populations and frame counts were recorded: every basin takes part
    old = {key: v for key, v in cores.to_dict().items() if key not in ("populations", "core_frames")}
    assert LatentCores.from_dict(old).taking_part(T, 25.0, 10) == [0, 1, 2]
    again = LatentCores.from_dict(cores.to_dict())
    np.testing.assert_allclose(again.populations, cores.populations)
    np.testing.assert_array_equal(again.core_frames, cores.core_frames)


def test_a_basin_never_reached_keeps_the_run_to_its_budget(three_wells, tmp_path):
    cores, x = three_wells
    trapped = np.where(x > 0.5 * (M[1] + M[2]), M[1], x)  # the walkers never reach basin 2
    run = _write_walkers_run(tmp_path, trapped, cores)
    n_seg = FRAMES // FRAMES_PER_SEGMENT
    assert all(convergence_check(run, _config(), 1, k) is None for k in (n_seg // 2, n_seg))
    out = round_trip_summary(run, _config(), 1, "budget")
    assert out["round_trips"] == 0 and out["bottleneck"] == [2] and not out["enough"]
    assert "latent basin(s) [2]" in out["warning"] and "max_steps" in out["warning"]


def _markov_replica(rng: np.random.Generator, rates: np.ndarray, stop_deg: int, stop_pair: int) -> tuple:
    """One continuous-time Markov jump process on 3 states (rates[i, j]: i → j per unit time) from state 0; returns
    (time in each state and the state sequence) at the first jump after which the minimum cut reaches ``stop_deg``
    transitions (for 3 states: the smallest number of transitions of any one state) and at the first jump after
    which the direct 0 ⇄ 1 transitions reach ``stop_pair``."""
    state, occ, deg, seq = 0, np.zeros(3), np.zeros(3, int), [0]
    pair01, at_pair, at_cut = 0, None, None
    total = rates.sum(1)
    cum = np.cumsum(rates, axis=1) / total[:, None]
    while at_pair is None or at_cut is None:
        occ[state] += rng.exponential(1.0 / total[state])
        new = min(int(np.searchsorted(cum[state], rng.random(), side="right")), 2)
        deg[state] += 1
        deg[new] += 1
        pair01 += {state, new} == {0, 1}
        state = new
        seq.append(new)
        if at_pair is None and pair01 >= stop_pair:
            at_pair = (occ.copy(), list(seq))
        if at_cut is None and deg.min() >= stop_deg:
            at_cut = (occ.copy(), list(seq))
    return at_cut, at_pair


def test_markov_replicas_stopped_by_the_rule_have_the_two_state_error():
    """400 replicas of 0 ⇄ 1 fast (the deep pair, populations 0.6/0.33) and 2 slow (population 0.07, exchanging
    with 0 and 1): stopped after K = 13 round trips across the minimum cut, sd(ΔF_2) over the replicas matches
    2kT/√(2K) = 0.98 kJ/mol within the 400-replica noise and the non-exponential excursions (0.75–1.3 ×); the
    library's count on the stopped sequences agrees with the independent one; stopped by the deep pair instead,
    ΔF_2 is off by several times that or undefined (no visit)."""
    k_rt = 13
    pi = np.array([0.6, 0.33, 0.07])
    rates = np.zeros((3, 3))
    rates[0, 1], rates[1, 0] = 0.33 * 0.15, 0.6 * 0.15  # detailed balance with pi: pi_i k_ij = pi_j k_ji
    rates[2, 0], rates[2, 1] = 0.02, 0.02
    rates[0, 2], rates[1, 2] = pi[2] * rates[2, 0] / pi[0], pi[2] * rates[2, 1] / pi[1]
    exact = -KT * math.log(pi[2] / (1 - pi[2]))
    rng = np.random.default_rng(17)
    cut_df, pair_df = [], []
    for rep in range(400):
        (occ_c, seq_c), (occ_p, _) = _markov_replica(rng, rates, 2 * k_rt, 2 * k_rt)
        cut_df.append(-KT * math.log(occ_c[2] / (occ_c[0] + occ_c[1])))
        pair_df.append(-KT * math.log(occ_p[2] / (occ_p[0] + occ_p[1])) if occ_p[2] > 0 else math.inf)
        if rep < 20:  # the library's minimum cut agrees at the stop and not one jump before
            seq = np.array(seq_c)
            pair = transition_pairs(seq, n_basins=3)
            assert min_cut(pair)[0] >= 2 * k_rt > min_cut(transition_pairs(seq[:-1], n_basins=3))[0]
    cut_df, pair_df = np.array(cut_df), np.array(pair_df)
    bound = 2 * KT / math.sqrt(2 * k_rt)
    sd = cut_df.std(ddof=1)
    assert 0.75 * bound < sd < 1.3 * bound, (sd, bound)
    assert abs(cut_df.mean() - exact) < 0.25 * bound + 3 * sd / math.sqrt(len(cut_df)), (cut_df.mean(), exact)
    # the deep pair reaches 13 round trips long before state 2 is sampled: errors several times larger
    finite = np.isfinite(pair_df)
    rms = math.sqrt(np.mean((pair_df[finite] - exact) ** 2))
    assert np.mean(~finite) > 0.2 or rms > 2.5 * bound, (np.mean(~finite), rms, bound)
