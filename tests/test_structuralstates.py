"""The converge phase also counts round trips between structural microstates of the encoder's input features
(latentbias.campaign.structuralstates; issue 8, helper demo8s): states the latent space does not resolve.

Toy: a 2-D system with a slow double well along x and a fast one along y, where the "encoder" kept the wrong
axis (z = y). A 4-state Markov jump process on the wells (x flips rarely, y often; the x = +1 side holds
P_R = 0.2 of the weight), positions = well centre + Gaussian noise:

* the latent count (latent basins of z = y, :mod:`latentbias.campaign.roundtrips`) reaches 26 transitions long
  before the x barrier was crossed 26 times — the latent rule stops early;
* the structural count (k-means microstates of (x, y)) runs through the x barrier (the y split and the noise
  splits inside a well are crossed far more often), never exceeds an independent hand count of x-core
  transitions, and stops the run only once x was crossed ≥ 26 times;
* stopped by the structural rule, ΔF(x = +1 side − rest) over independent replicas scatters by ≈ 2kT/√K and
  2kT/√K covers the exact value at the 1σ/2σ rates of a Gaussian.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from latentbias.analysis.constants import kt_kjmol
from latentbias.analysis.uncertainty import two_state_error
from latentbias.campaign.roundtrips import latent_cores, latent_round_trips
from latentbias.campaign.structuralstates import MicroStates, kmeans, microstates, structural_round_trips

T = 300.0
KT = kt_kjmol(T)
P_R, FLIP_X, FLIP_Y, NOISE = 0.2, 0.002, 0.15, 0.3  # P(x = +1 side); per-frame flip rates out of x = −1 / y wells
K_NEEDED = 26  # 2 × min_round_trips = 13


def chain(n: int, seed: int) -> np.ndarray:
    """Frames of the 4-state jump process in 2-D, shape=(n, 2): x well ±1.5 (stationary P(+) = P_R, detailed
    balance: leaving + at FLIP_X (1 − P_R)/P_R), y well ±1.5 (symmetric, FLIP_Y), plus Gaussian noise NOISE."""
    rng = np.random.default_rng(seed)
    sx = np.empty(n, dtype=int)
    sy = np.empty(n, dtype=int)
    sx[0] = rng.random() < P_R
    sy[0] = rng.random() < 0.5
    out_r = FLIP_X * (1 - P_R) / P_R
    u, v = rng.random(n), rng.random(n)
    for i in range(1, n):
        sx[i] = (1 - sx[i - 1]) if u[i] < (out_r if sx[i - 1] else FLIP_X) else sx[i - 1]
        sy[i] = (1 - sy[i - 1]) if v[i] < FLIP_Y else sy[i - 1]
    centre = np.column_stack([np.where(sx == 1, 1.5, -1.5), np.where(sy == 1, 1.5, -1.5)])
    return centre + NOISE * rng.standard_normal((n, 2))


def hand_x_transitions(x: np.ndarray) -> int:
    """Transitions between the cores x < −0.75 and x > 0.75, with hysteresis."""
    s = np.where(x < -0.75, 0, np.where(x > 0.75, 1, -1))
    s = s[s >= 0]
    return int(np.count_nonzero(np.diff(s)))


def exploration(n: int, seed: int) -> np.ndarray:
    """Independent equilibrium frames of all four wells: what the exploration rounds contribute to the
    clustering (the converge phase's count knows the states the campaign has seen, not only those it revisits)."""
    rng = np.random.default_rng(seed)
    centre = np.column_stack([np.where(rng.random(n) < P_R, 1.5, -1.5), np.where(rng.random(n) < 0.5, 1.5, -1.5)])
    return centre + NOISE * rng.standard_normal((n, 2))


def structural_count(x: np.ndarray, explored: np.ndarray, n_states: int = 20) -> dict:
    """The converge phase's structural count: microstates of the exploration and converge frames (every frame
    weight 1), transitions counted along the converge frames x."""
    both = np.concatenate([explored, x])
    first = np.arange(len(both)) < len(explored)
    st = microstates(both, [(first, np.zeros(len(both))), (~first, np.zeros(len(both)))], n_states)
    return structural_round_trips(st, x, None, st.taking_part(T, 25.0, 10))


def test_kmeans_is_deterministic_and_finds_separated_clusters():
    rng = np.random.default_rng(1)
    centres = np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]])
    x = centres[rng.integers(3, size=900)] + 0.2 * rng.standard_normal((900, 2))
    c = kmeans(x, 3, seed=4)
    np.testing.assert_array_equal(c, kmeans(x, 3, seed=4))
    found = np.sort(np.round(c).astype(int), axis=0)
    np.testing.assert_array_equal(found, np.sort(centres.astype(int), axis=0))
    assert len(kmeans(x[:2], 5)) <= 2  # at most as many centres as points
    with pytest.raises(ValueError, match="k >= 1"):
        kmeans(x, 0)


def test_cores_have_a_buffer_and_rare_or_weightless_microstates_do_not_take_part():
    st = MicroStates(np.array([[0.0], [2.0], [10.0]]), np.zeros(1), np.ones(1), np.array([0.6, 0.4, 1e-6]),
                     np.array([100, 5, 100]))
    # nearest 0 at d1 = 0.5, second at 1.5: core; at the Voronoi face (x = 1) and within the band: no core
    assert st.assign(np.array([[0.5], [1.0], [0.95], [1.9], [np.nan]])).tolist() == [0, -1, -1, 1, -1]
    assert st.assign(np.array([[1.0]]), cores=False).tolist() in ([[0]], [0], [1])
    # state 1: 5 core frames (< 10); state 2: population 1e-6 < exp(-25 kJ/mol / kT) = 4.4e-5
    assert st.taking_part(T, 25.0, 10) == [0]
    assert st.taking_part(T, 40.0, 5) == [0, 1, 2]
    with pytest.raises(ValueError, match="n_states >= 2"):
        microstates(np.zeros((10, 2)), [], 1)


def test_populations_are_the_larger_of_the_reweighted_estimates():
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(-3, 0.2, 300), rng.normal(3, 0.2, 300)])[:, None]
    first = np.arange(600) < 400  # estimate 1: 300 frames at −3 and 100 at +3, the latter down-weighted by e^-2
    lw1 = np.where(first, np.where(x[:, 0] > 0, -2.0, 0.0), -np.inf)
    lw2 = np.where(~first, 0.0, -np.inf)  # estimate 2: only frames at +3
    st = microstates(x, [(first, lw1), (~first, lw2)], 2)
    right = int(np.argmax(st.centres[:, 0]))
    p1 = 100 * np.exp(-2) / (300 + 100 * np.exp(-2))
    np.testing.assert_allclose(st.populations[right], 1.0)  # max(p1, 1)
    np.testing.assert_allclose(st.populations[1 - right], 1 - p1)


def test_wrong_latent_axis_latent_rule_stops_early_structural_rule_waits():
    x, explored = chain(16000, seed=7), exploration(2000, seed=9)
    cores = latent_cores(explored[:, 1:], np.zeros(len(explored)), T)  # the encoder kept y: z = y
    assert cores.n_basins == 2
    check = np.arange(1000, len(x) + 1, 1000)
    latent = np.array([latent_round_trips(cores, x[:n, 1:])["transitions"] for n in check])
    struct = [structural_count(x[:n], explored) for n in check]
    hand = np.array([hand_x_transitions(x[:n, 0]) for n in check])
    cut = np.array([s["transitions"] for s in struct])
    stop_latent = int(np.argmax(latent >= K_NEEDED))
    assert latent[stop_latent] >= K_NEEDED and hand[stop_latent] < K_NEEDED // 2, (latent, hand)
    assert (cut >= K_NEEDED).any(), cut[-1]
    stop = int(np.argmax(cut >= K_NEEDED))
    assert check[stop] > 4 * check[stop_latent]
    assert hand[stop] >= K_NEEDED
    # the cut is the x barrier: never more transitions than the hand count across it, and of the same size
    assert np.all(cut <= hand) and np.all(cut[hand >= 10] >= 0.6 * hand[hand >= 10]), np.column_stack([cut, hand])
    # the bottleneck is one x side: its microstates all lie on one side of x = 0
    both = np.concatenate([explored, x[: check[stop]]])
    st = microstates(both, [(np.ones(len(both), bool), np.zeros(len(both)))], 20)
    side = np.array(struct[stop]["bottleneck"])
    assert len(side) and len(np.unique(np.sign(st.centres[side, 0]))) == 1


def _replica_at_structural_stop(seed: int, step: int = 1000, n_max: int = 60000) -> tuple[float, int]:
    """ΔF(x > 0 − rest) of one replica stopped by the structural rule, and the cut's transitions at the stop."""
    x, explored = chain(n_max, seed), exploration(1000, seed + 10**6)
    for n in range(step, n_max + 1, step):
        out = structural_count(x[:n], explored, 12)
        if out["transitions"] >= K_NEEDED:
            break
    p = float(np.mean(x[:n, 0] > 0))
    return -KT * np.log(p / (1 - p)), out["transitions"]


def _coverage(seeds: range) -> tuple[float, float, float]:
    exact = -KT * np.log(P_R / (1 - P_R))
    rows = np.array([_replica_at_structural_stop(s) for s in seeds])
    dev = rows[:, 0] - exact
    err = np.array([two_state_error(int(k), T) for k in rows[:, 1]])
    return float(np.std(dev) / np.mean(err)), float(np.mean(np.abs(dev) <= err)), float(np.mean(np.abs(dev) <= 2 * err))


def test_stopped_on_the_structural_cut_the_two_state_error_covers():
    """40 replicas: a fast version of the slow test below (loose bounds: 40 replicas)."""
    ratio, c1, c2 = _coverage(range(100, 140))
    assert 0.6 < ratio < 1.5 and c1 >= 0.5 and c2 >= 0.85, (ratio, c1, c2)


@pytest.mark.slow
def test_stopped_on_the_structural_cut_the_two_state_error_covers_400_replicas():
    ratio, c1, c2 = _coverage(range(1000, 1400))
    assert 0.8 < ratio < 1.25 and 0.6 <= c1 <= 0.8 and c2 >= 0.9, (ratio, c1, c2)


def _write_converge_run(folder, x: np.ndarray, explored: np.ndarray, per_segment: int = 500):
    """A converge round 1 whose frames are the chain x (no bias) with z = y; atoms 1 and 2 sit at distances
    x + 5 and y + 5 nm from atom 0 (the Distances featurizer gives (x + 5, y + 5)); the exploration frames are
    stored as the plan does."""
    from latentbias.campaign.records import KIND_OPES
    from latentbias.campaign.rundir import RunDir
    from latentbias.campaign.structuralstates import EXPLORATION_FILE

    run = RunDir(folder)
    run.round_dir(1).mkdir(parents=True, exist_ok=True)
    cores = latent_cores(explored[:, 1:], np.zeros(len(explored)), T)
    run.write_plan(1, {"round": 1, "segments": len(x) // per_segment, "strategy": "opes", "converge": True,
                       "model_round": 0,
                       "variables": [{"index": 0, "minValue": float(x[:, 1].min()) - 0.1,
                                      "maxValue": float(x[:, 1].max()) + 0.1}],
                       "round_trip_cores": cores.to_dict(),
                       "structural_states": {"n_states": 20, "file": EXPLORATION_FILE}})
    run.save_npz(run.round_dir(1) / EXPLORATION_FILE, features=explored + 5.0, logweight=np.zeros(len(explored)))
    for k in range(len(x) // per_segment):
        xs = x[k * per_segment:(k + 1) * per_segment]
        m = len(xs)
        pos = np.zeros((m, 3, 3), np.float32)
        pos[:, 1, 0] = xs[:, 0] + 5.0
        pos[:, 2, 1] = xs[:, 1] + 5.0
        step = (k * per_segment + np.arange(1, m + 1)) * 10
        run.save_npz(run.segment_file(1, k), positions=pos, step=step.astype(np.int64), time_ps=step * 0.002,
                     z=xs[:, 1:].copy(), bias_kjmol=np.zeros(m), ood=np.zeros(m, bool), recon_error=np.zeros(m),
                     scale=np.ones(m), target=np.full(m, -1, np.int64), kind=np.full(m, KIND_OPES, np.int64),
                     box=np.zeros((m, 3, 3)), ct_kjmol=np.zeros(m), walker=np.zeros(m, np.int64))
    return run


def test_convergence_check_waits_for_the_structural_cut(tmp_path):
    """The campaign glue: with the plan's ``structural_states`` the converge check (and the weights.json summary)
    needs the structural cut too; the latent count alone (the same run, count switched off in the plan) stops
    at the first check."""
    from latentbias.campaign.converge import convergence_check, structural_summary
    from latentbias.campaign.config import CampaignConfig, ConvergeConfig, LoopConfig
    from latentbias.features import Distances

    x, explored = chain(20000, seed=7), exploration(2000, seed=9)
    run = _write_converge_run(tmp_path, x, explored, per_segment=1000)
    cfg = CampaignConfig(campaign=LoopConfig(checkpoint_interval=5000),
                         converge=ConvergeConfig(enabled=True, min_steps=0, max_steps=10**9, tolerance=1e9,
                                                 min_round_trips=13),
                         md=dataclasses.replace(CampaignConfig().md, temperature=T))
    feat = Distances([[0, 1], [0, 2]])
    n_seg = len(x) // 1000
    stops = [convergence_check(run, cfg, 1, k, featurizer=feat) for k in range(1, n_seg + 1)]
    assert "converged" in stops, "the structural cut never reached 26 transitions"
    first = stops.index("converged") + 1
    # independently: the first segment count whose frames after the burn-in hold 26 transitions across x
    hand = [hand_x_transitions(x[int(np.ceil(0.2 * (k * 1000 - 1))):k * 1000, 0]) for k in range(1, n_seg + 1)]
    assert hand[first - 1] >= K_NEEDED and first >= 4
    summary = structural_summary(run, cfg, 1, "converged", featurizer=feat)
    assert summary["enough"] and summary["transitions"] <= hand[-1] and summary["required"] == 13
    plan = run.read_plan(1)
    del plan["structural_states"]
    run.write_plan(1, plan)
    assert convergence_check(run, cfg, 1, 1, featurizer=feat) == "converged"  # latent count alone: stops at once
    assert structural_summary(run, cfg, 1, "converged") is None
    short = structural_summary(_write_converge_run(tmp_path / "short", x[:1500], explored), cfg, 1, "budget",
                               featurizer=feat)
    assert not short["enough"] and "raise [converge] max_steps" in short["warning"]


def test_ood_weight_share_is_the_weighted_fraction_per_state():
    """Per state: sum of the weights of its out-of-distribution frames over the sum of its weights; frames out of
    the estimate (-inf) and unlabelled frames (-1) count nowhere; a state without weight gives None."""
    from latentbias.campaign.structuralstates import ood_weight_share

    labels = np.array([0, 0, 0, 1, 1, -1, 2])
    ood = np.array([True, False, False, True, True, True, True])
    logw = np.log(np.array([1.0, 2.0, 1.0, 0.5, 0.5, 9.0, 1.0]))
    logw[6] = -np.inf
    share = ood_weight_share(labels, ood, logw, 4)
    assert share[0] == pytest.approx(0.25) and share[1] == pytest.approx(1.0)
    assert share[2] is None and share[3] is None


def test_structural_round_trips_reports_the_ood_share_of_each_microstate():
    """With the frames' OOD flags and log-weights, the structural count also gives each microstate's OOD weight
    share (frames assigned to their nearest centre), and weights.json keeps it for the microstates taking part."""
    from latentbias.campaign.weights import _ood_weight

    states = MicroStates(np.array([[0.0], [10.0]]), np.zeros(1), np.ones(1), np.array([0.9, 0.1]), np.array([5, 5]))
    x = np.array([[0.0], [0.5], [9.5], [10.0], [10.2]])
    ood = np.array([False, True, True, True, False])
    logw = np.log(np.array([3.0, 1.0, 1.0, 2.0, 1.0]))
    out = structural_round_trips(states, x, None, [0, 1], ood, logw)
    assert out["ood_weight_share"] == pytest.approx([0.25, 0.75])
    info = _ood_weight(logw, ood, np.ones(5, bool), {**out, "counted": [1]})
    assert info["microstates"] == {"1": pytest.approx(0.75)} and info["estimate"] == pytest.approx(4 / 8)
    assert "ood_weight_share" not in structural_round_trips(states, x, None, [0, 1])
