"""The converge phase's round-trip condition (latentbias.campaign.roundtrips, issue 8 item 3): cores of latent
basins, round trips between them with hysteresis, a stopping rule that waits for them and a budget that warns.

The stopping-rule tests drive :func:`latentbias.campaign.converge.convergence_check` on a run directory whose
converge-round segments hold an overdamped Langevin trajectory in a 1-D asymmetric double well, with the identity
as the "encoder" (z = x): the exact ΔF is known by quadrature, and the rule must stop at the first segment after
which the frames past the burn-in hold ``min_round_trips`` round trips — counted here by an independent loop.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from latentbias.analysis.constants import kt_kjmol
from latentbias.campaign.config import CampaignConfig, ConfigError, ConvergeConfig, LoopConfig, from_dict
from latentbias.campaign.converge import convergence_check, convergence_history, round_trip_summary
from latentbias.campaign.records import KIND_OPES
from latentbias.campaign.roundtrips import LatentCores, latent_cores, latent_round_trips
from latentbias.campaign.rundir import RunDir

sys.path.insert(0, str(Path(__file__).parent))

T = 300.0
KT = kt_kjmol(T)
BARRIER, TILT = 3.0 * KT, 0.4 * KT  # U(x) = BARRIER (x^2 - 1)^2 + TILT x  (kJ/mol)


def potential(x: np.ndarray) -> np.ndarray:
    return BARRIER * (x * x - 1.0) ** 2 + TILT * x


def exact_df() -> float:
    """F(x > 0) − F(x < 0), kJ/mol, by quadrature of the Boltzmann factor."""
    x = np.linspace(-2.5, 2.5, 200001)
    p = np.exp(-potential(x) / KT)
    return float(-KT * np.log(p[x > 0].sum() / p[x < 0].sum()))


def boltzmann_samples(n: int, seed: int) -> np.ndarray:
    """Independent samples of the double well (inverse CDF on a fine grid): a perfectly reweighted exploration."""
    x = np.linspace(-2.5, 2.5, 20001)
    cdf = np.cumsum(np.exp(-potential(x) / KT))
    return np.interp(np.random.default_rng(seed).random(n), cdf / cdf[-1], x)


def langevin(n_frames: int, stride: int, seed: int, dt: float = 2e-3) -> np.ndarray:
    """Overdamped Langevin (Euler–Maruyama, D = 1, reduced time) in U/kT, one frame every ``stride`` steps."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(n_frames * stride) * math.sqrt(2.0 * dt)
    b, c = BARRIER / KT, TILT / KT
    out = np.empty(n_frames)
    x = -1.0
    for i in range(n_frames * stride):
        x += -dt * (4.0 * b * x * (x * x - 1.0) + c) + noise[i]
        if i % stride == stride - 1:
            out[i // stride] = x
    return out


def hand_round_trips(x: np.ndarray, a_hi: float, b_lo: float) -> int:
    """Round trips between core A (x <= a_hi) and core B (x >= b_lo), hysteresis: an independent count."""
    state, transitions = None, 0
    for v in x:
        now = "A" if v <= a_hi else "B" if v >= b_lo else None
        if now is not None:
            transitions += state is not None and now != state
            state = now
    return transitions // 2


def test_cores_of_a_2d_double_well_sit_in_the_wells_and_leave_a_gap():
    """Biased samples (a flat-ish sampling reweighted to the Boltzmann distribution): two basins at the wells'
    minima, ordered by depth, ΔF between the minima near the exact one, cores >= 2 kT below the saddle and apart."""
    rng = np.random.default_rng(3)
    x = rng.uniform(-2.0, 2.0, 40000)
    y = rng.normal(0.0, 0.3, 40000)
    logw = -potential(x) / KT  # uniform proposal in x: weight = Boltzmann factor (y already Boltzmann)
    cores = latent_cores(np.column_stack([x, y]), logw, T, core_kt=2.0)
    assert cores.n_basins == 2
    # the tilt makes x = -1 the deeper well
    np.testing.assert_allclose(cores.minima[:, 0], [-1.0, 1.0], atol=0.15)
    u = potential(np.array([-1.0, 1.0]))
    assert abs(cores.free_energies[1] - (u[1] - u[0])) < 1.0  # smoothed histogram minima, 1 kJ/mol
    assert np.all(cores.levels > 0)
    lab = cores.assign(np.column_stack([x, y]))
    # core edges: U <= U(saddle) - 2 kT = 1 kT above the deeper well (|x| >= 0.65 there), up to the cell size
    assert not np.any(lab[np.abs(x) < 0.5] >= 0)
    assert np.all(lab[(np.abs(x + 1.0) < 0.15) & (np.abs(y) < 0.3)] == 0)  # the minima are in their cores
    # the shallower well's barrier is 2.2 kT: its core is the few cells within ~0.2 kT of its minimum
    near_b = (np.abs(x - 1.0) < 0.15) & (np.abs(y) < 0.3)
    assert set(np.unique(lab[near_b])) <= {-1, 1} and np.mean(lab[near_b] == 1) > 0.5
    assert set(np.unique(lab[(lab >= 0) & (x < 0)])) == {0} and set(np.unique(lab[(lab >= 0) & (x > 0)])) == {1}
    assert cores.assign(np.array([[50.0, 0.0], [np.nan, 0.0]])).tolist() == [-1, -1]  # outside the grid
    again = LatentCores.from_dict(json.loads(json.dumps(cores.to_dict())))
    np.testing.assert_array_equal(again.assign(np.column_stack([x, y])), lab)


def test_a_single_well_has_one_basin_and_no_round_trips():
    z = np.random.default_rng(0).normal(size=(5000, 2))
    cores = latent_cores(z, np.zeros(len(z)), T)
    assert cores.n_basins == 1
    out = latent_round_trips(cores, z)
    assert out["round_trips"] == 0 and out["transitions"] == 0 and out["bottleneck"] == [] and out["basins"] == 1


def test_round_trips_count_committed_transitions_not_recrossings():
    cores = latent_cores(boltzmann_samples(20000, 1)[:, None], np.zeros(20000), T)
    assert cores.n_basins == 2
    a, b = -1.0, 1.0
    path = [a, 0.05, -0.05, 0.05, a, b, 0.0, b, 0.0, b, a, b, a]  # A B A B A: 4 transitions, 2 round trips
    out = latent_round_trips(cores, np.array(path)[:, None])
    assert out["transitions"] == 4 and out["round_trips"] == 2 and out["bottleneck"] == [1]
    # two walkers: a jump from one walker's last frame to the next walker's first is no transition
    out = latent_round_trips(cores, np.array([a, b, a, b])[:, None], walker=np.array([0, 0, 1, 1]))
    assert out["transitions"] == 2 and out["round_trips"] == 1
    with pytest.raises(ValueError, match="basins must be indices in 0..1"):
        latent_round_trips(cores, np.array(path)[:, None], basins=[0, 2])
    assert latent_round_trips(cores, np.array(path)[:, None], basins=[1])["round_trips"] == 0  # one basin: none


FRAMES_PER_SEGMENT, CHECKPOINT = 250, 1000


def _write_converge_run(folder: Path, x: np.ndarray, cores: LatentCores, r: int = 1) -> RunDir:
    """A run directory whose converge round r holds the frames x (z = x, no bias) in checkpoint segments."""
    run = RunDir(folder)
    n_seg = len(x) // FRAMES_PER_SEGMENT
    lo, hi = float(x.min()) - 0.1, float(x.max()) + 0.1
    run.round_dir(r).mkdir(parents=True, exist_ok=True)
    run.write_plan(r, {"round": r, "segments": n_seg, "strategy": "opes", "converge": True, "model_round": r - 1,
                       "variables": [{"index": 0, "minValue": lo, "maxValue": hi}],
                       "round_trip_cores": cores.to_dict()})
    stride = CHECKPOINT // FRAMES_PER_SEGMENT
    for k in range(n_seg):
        xs = x[k * FRAMES_PER_SEGMENT:(k + 1) * FRAMES_PER_SEGMENT]
        n = len(xs)
        step = k * CHECKPOINT + stride * (np.arange(n) + 1)
        run.save_npz(run.segment_file(r, k), positions=np.zeros((n, 1, 3), np.float32), step=step.astype(np.int64),
                     time_ps=step * 0.002, z=xs[:, None].astype(float), bias_kjmol=np.zeros(n), ood=np.zeros(n, bool),
                     recon_error=np.zeros(n), scale=np.ones(n), target=np.full(n, -1, np.int64),
                     kind=np.full(n, KIND_OPES, np.int64), box=np.zeros((n, 3, 3)), ct_kjmol=np.zeros(n),
                     walker=np.zeros(n, np.int64))
    return run


def _config(**converge) -> CampaignConfig:
    conv = dict(enabled=True, min_steps=0, max_steps=10**9, burn_in=0.2, tolerance=1e9, fes_bins=20,
                min_round_trips=13)
    conv.update(converge)
    return CampaignConfig(campaign=LoopConfig(checkpoint_interval=CHECKPOINT), converge=ConvergeConfig(**conv),
                          md=dataclasses.replace(CampaignConfig().md, temperature=T))


@pytest.fixture(scope="module")
def double_well_run(tmp_path_factory):
    cores = latent_cores(boltzmann_samples(20000, 7)[:, None], np.zeros(20000), T, core_kt=2.0)
    x = langevin(40 * FRAMES_PER_SEGMENT, stride=25, seed=11)
    run = _write_converge_run(tmp_path_factory.mktemp("dw"), x, cores)
    return run, x, cores


def test_double_well_cores_match_the_potential(double_well_run):
    _, _, cores = double_well_run
    assert cores.n_basins == 2
    np.testing.assert_allclose(cores.minima[:, 0], [-1.0, 1.0], atol=0.15)
    a_hi = cores.edges[0][1:][cores.labels == 0].max()
    b_lo = cores.edges[0][:-1][cores.labels == 1].min()
    assert a_hi < -0.3 and b_lo > 0.3  # a gap over the barrier (x = 0)


@pytest.mark.parametrize("k_needed", [5, 13])
def test_converge_phase_stops_only_after_k_round_trips(double_well_run, k_needed):
    run, x, cores = double_well_run
    config = _config(min_round_trips=k_needed)
    a_hi = cores.edges[0][1:][cores.labels == 0].max()
    b_lo = cores.edges[0][:-1][cores.labels == 1].min()
    n_seg = len(x) // FRAMES_PER_SEGMENT
    expected, counts = None, []
    for k in range(1, n_seg + 1):
        frames = x[:k * FRAMES_PER_SEGMENT]
        t = np.arange(len(frames))
        used = frames[t >= 0.2 * (len(frames) - 1)]  # the burn-in, by time (frames equally spaced)
        counts.append(hand_round_trips(used, a_hi, b_lo))
        if expected is None and counts[-1] >= k_needed:
            expected = k
    assert expected is not None and expected > 2, counts  # the trajectory makes enough round trips, not at once
    stops = [convergence_check(run, config, 1, k) for k in range(1, n_seg + 1)]
    first = stops.index("converged") + 1
    assert first == expected, (first, expected, counts)
    assert all(s is None for s in stops[:first - 1])
    # without the round-trip condition the (here always satisfied) drift criterion stops at the first check
    assert convergence_check(run, _config(min_round_trips=0), 1, 2) == "converged"
    # the estimate at the stop: ΔF of the frames after the burn-in against the exact value, within 3 x 2kT/sqrt(K)
    frames = x[:first * FRAMES_PER_SEGMENT]
    used = frames[int(math.ceil(0.2 * (len(frames) - 1))):]
    df = -KT * math.log(np.count_nonzero(used > 0) / np.count_nonzero(used < 0))
    transitions = round_trip_summary(run, config, 1, "converged")["transitions"]
    assert transitions >= 2 * k_needed
    assert abs(df - exact_df()) < 3 * 2 * KT / math.sqrt(transitions), (df, exact_df(), transitions)
    hist = convergence_history(run, config, 1)
    assert hist["round_trips"][first - 1] >= k_needed and hist["round_trips"][first - 2] < k_needed


def test_budget_ends_first_and_the_summary_warns(double_well_run):
    run, x, _ = double_well_run
    config = _config(min_round_trips=10**6)
    n_seg = len(x) // FRAMES_PER_SEGMENT
    assert all(convergence_check(run, config, 1, k) is None for k in (n_seg // 2, n_seg))
    out = round_trip_summary(run, config, 1, "budget")
    assert not out["enough"] and out["required"] == 10**6 and 0 < out["round_trips"] < 10**6
    assert "min_round_trips = 1000000" in out["warning"] and "budget" in out["warning"]
    ok = round_trip_summary(run, _config(min_round_trips=1), 1, "converged")
    assert ok["enough"] and "warning" not in ok


def test_campaign_reports_round_trips_and_warns_when_the_budget_ends_first(tmp_path):
    """End to end on the toy (4 distance features, 2-D latent encoder): the converge round's plan holds the
    latent cores, the budget ends a run that asks for far more round trips than it can make, and weights.json
    says so; campaign_basin_estimate passes the count on."""
    from campaign_toy import toy_config_text, write_toy_system

    from latentbias.campaign import Campaign, load_config
    from latentbias.campaign.estimate import campaign_basin_estimate

    write_toy_system(tmp_path)
    text = toy_config_text(rounds=2, steps=4000, round0=4000, checkpoint=1000, converge_steps=4000)
    (tmp_path / "toy.toml").write_text(text.replace("tolerance = 0.3", "tolerance = 0.3\nmin_round_trips = 1000"))
    campaign = Campaign(load_config(tmp_path / "toy.toml"), tmp_path / "run", progress=False)
    campaign.run()
    r = campaign.converge_round
    plan = campaign.run_dir.read_plan(r)
    assert plan["round_trip_cores"]["dims"] == [0, 1]
    assert campaign.run_dir.round_segments(r) == plan["segments"]  # ran to its budget
    info = json.loads((tmp_path / "run" / "weights.json").read_text())
    trips = info["latent_round_trips"]
    assert info["converge_end"] == "budget" and trips["required"] == 1000 and not trips["enough"]
    assert "min_round_trips = 1000" in info["warning"]
    header = (tmp_path / "run" / "round_002" / "convergence.csv").read_text().splitlines()[1]
    assert header.split(",")[-2:] == ["round_trips", "structural_round_trips"]
    y = campaign.all_frames(r)["positions"][:, 0, 1].astype(float)  # frames in weights.csv order
    cut = float(np.median(y[np.isfinite(campaign_weights(tmp_path / "run"))]))
    est = campaign_basin_estimate([tmp_path / "run"], lambda d: y, lambda v: v < cut, lambda v: v >= cut, T)
    assert est.runs[0]["latent_round_trips"] == trips
    from latentbias.campaign.report import write_report

    text = write_report(tmp_path / "run").read_text()
    assert "Round trips across the slowest split" in text and "min_round_trips = 1000" in text


def campaign_weights(rundir: Path) -> np.ndarray:
    from latentbias.campaign.estimate import final_weights

    return final_weights(rundir)["logweight"]


@pytest.mark.parametrize("converge, message", [
    ({"min_round_trips": -1}, r"\[converge\] min_round_trips must be an integer >= 0"),
    ({"round_trip_basins": 1}, r"\[converge\] round_trip_basins must be 0 \(every latent basin with weight\) or an integer >= 2"),
    ({"basin_min_frames": -1}, r"\[converge\] basin_min_frames must be an integer >= 0"),
    ({"core_kt": 0.0}, r"\[converge\] core_kt must be > 0"),
    ({"min_roundtrips": 3}, r"min_roundtrips"),
])
def test_round_trip_config_is_validated(converge, message):
    with pytest.raises(ConfigError, match=message):
        from_dict({"system": {"testsystem": "alanine-dipeptide-vacuum"}, "converge": converge})
