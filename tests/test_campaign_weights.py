"""The campaign's equilibrium estimate on a 1-D double well with a 30 kJ/mol barrier (exact ΔF by quadrature):
frames that are not equilibrium samples of any state (round 0 confined to its start basin, frontier pulls and
releases) are kept out, so ΔF does not depend on how long releases run; with them counted as unbiased samples
(the old estimator) it does. Also: the converge phase's c(t) weights and the per-frame exclusion codes."""

from __future__ import annotations

import numpy as np
import pytest

from latentbias.analysis import kt_kjmol
from latentbias.bias.grid import BiasGrid, LatentVariable
from latentbias.campaign.config import CampaignConfig
from latentbias.campaign.records import KIND_METAD, KIND_RESTRAINT, KIND_UNBIASED, load_frames, unbiased_frames
from latentbias.campaign.rundir import RunDir
from latentbias.campaign.weights import (EXCLUSIONS, bias_states, converge_logweights, cross_round_logweights,
                                         frame_exclusions, write_weights)

T = 300.0
KT = kt_kjmol(T)
BARRIER, TILT = 30.0, 4.0  # kJ/mol; minima near x = -1 (lower) and x = +1
VARIABLES = [{"index": 0, "minValue": -2.0, "maxValue": 2.0, "biasWidth": 0.1, "periodic": False, "gridWidth": 81}]


def potential(x):
    return BARRIER * (x**2 - 1.0) ** 2 + TILT * x


def exact_df() -> float:
    x = np.linspace(-2.5, 2.5, 200001)
    p = np.exp(-potential(x) / KT)
    return float(-KT * np.log(p[x > 0].sum() / p[x < 0].sum()))


def static_bias() -> np.ndarray:
    """A flattening bias on the grid: -0.9 U (well-tempered-like, leaves ~3 kJ/mol barrier)."""
    grid = BiasGrid([LatentVariable(**VARIABLES[0])])
    return -0.9 * potential(grid.axes[0])


def sample_biased(rng, n, bias_grid):
    """n independent samples of exp(-β(U + V)) (V: the grid bias, linear interpolation as the estimator uses)."""
    grid = BiasGrid([LatentVariable(**VARIABLES[0])])
    x = np.linspace(-1.95, 1.95, 40001)
    u = potential(x) + grid.interpolate(x[:, None], bias_grid)
    p = np.exp(-(u - u.min()) / KT)
    cdf = np.cumsum(p) / p.sum()
    return np.interp(rng.random(n), cdf, x)


def langevin(rng, x0, n_frames, restraint=None, stride=20, d_dt=2e-5):
    """Overdamped Langevin frames (every ``stride`` steps) from x0; optional harmonic restraint (k, centre)."""
    out = np.empty(n_frames)
    x = x0
    for i in range(n_frames * stride):
        force = -(4 * BARRIER * x * (x**2 - 1.0) + TILT)
        if restraint is not None:
            force -= restraint[0] * (x - restraint[1])
        x = x + d_dt * force / KT + np.sqrt(2 * d_dt) * rng.standard_normal()
        if (i + 1) % stride == 0:
            out[i // stride] = x
    return out


def as_positions(x):
    xyz = np.zeros((len(x), 1, 3), dtype=np.float32)
    xyz[:, 0, 0] = x
    return xyz


def columns(x, kind, scale=1.0, target=-1):
    seg = unbiased_frames(as_positions(x))
    seg["kind"] = np.full(len(x), kind)
    seg["scale"] = np.full(len(x), scale)
    seg["target"] = np.full(len(x), target)
    return seg


def build_campaign(tmp_path, release_frames, seed=1, n_meta=3000):
    """Round 0 unbiased in the left well; round 1 metadynamics-like (3 segments of a static flattening bias);
    round 2 frontier: a pull to the barrier top, then a release of ``release_frames`` frames."""
    rng = np.random.default_rng(seed)
    run_dir = RunDir(tmp_path / f"run_{release_frames}")

    v = static_bias()
    run_dir.write_plan(0, {"round": 0, "strategy": "unbiased", "segments": 1})
    run_dir.save_npz(run_dir.segment_file(0, 0), **columns(langevin(rng, -1.0, 400), KIND_UNBIASED))
    run_dir.round_dir(1).mkdir(exist_ok=True)
    run_dir.save_npz(run_dir.round_dir(1) / "initial_bias.npz", grid=v)
    run_dir.write_plan(1, {"round": 1, "strategy": "metadynamics", "segments": 3, "variables": VARIABLES,
                           "initial_bias": "initial_bias.npz"})
    for k in range(3):
        seg = columns(sample_biased(rng, n_meta // 3, v), KIND_METAD)
        run_dir.save_npz(run_dir.segment_file(1, k), grid_end=v, **seg)
    pull = langevin(rng, -1.0, 100, restraint=(2000.0, 0.0))
    release = langevin(rng, pull[-1], release_frames)
    run_dir.write_plan(2, {"round": 2, "strategy": "frontier", "segments": 2, "targets": [[0.0]],
                           "schedule": [[0, "pull"], [0, "release"]], "start_frames": [0]})
    run_dir.save_npz(run_dir.segment_file(2, 0), **columns(pull, KIND_RESTRAINT, target=0))
    run_dir.save_npz(run_dir.segment_file(2, 1), **columns(release, KIND_UNBIASED, scale=0.0, target=0))
    frames = load_frames((r, k, run_dir.read_segment(r, k)) for r, n in ((0, 1), (1, 3), (2, 2)) for k in range(n))
    return run_dir, frames


def delta_f(x, logw):
    w = np.exp(logw - np.max(logw))
    return float(-KT * np.log(w[x > 0].sum() / w[x < 0].sum()))


def bootstrap_error(x, logw, rng, n=200):
    idx = np.flatnonzero(np.isfinite(logw))
    values = [delta_f(x[s], logw[s]) for s in (rng.choice(idx, len(idx)) for _ in range(n))]
    return float(np.std(values, ddof=1))


def test_release_length_does_not_change_the_estimate(tmp_path):
    truth = exact_df()
    assert 7.0 < truth < 9.0
    config = CampaignConfig()
    results, old = {}, {}
    rng = np.random.default_rng(0)
    for release in (100, 250, 500, 1000):
        run_dir, frames = build_campaign(tmp_path, release)
        x = frames["positions"][:, 0, 0].astype(float)
        info = write_weights(run_dir, config, 2, frames, lambda q: x[:, None])
        table = np.loadtxt(run_dir.round_dir(2) / "frames.csv", delimiter=",", skiprows=2, ndmin=2)
        assert np.all(np.isneginf(table[:, 4]))  # frontier frames: logweight -inf ...
        assert set(table[:, 7].astype(int)) == {2, 3}  # ... with their reasons (pull, release)
        assert info["frames_excluded"] == {"round0-unbiased": 400, "frontier-pull": 100, "frontier-release": release}
        logw = np.concatenate([np.loadtxt(run_dir.round_dir(r) / "frames.csv", delimiter=",", skiprows=2,
                                          ndmin=2)[:, 4] for r in range(3)])
        results[release] = (delta_f(x, logw), bootstrap_error(x, logw, rng))
        # the old estimator: round 0 and releases as unbiased samples, pulls as restraint-state samples
        states, _ = bias_states(frames, run_dir, config)
        from latentbias.campaign.weights import BiasState

        states.append(BiasState("restraint", 1, np.array([0.0]), 2000.0))
        state_of = np.where(frames["kind"] == KIND_METAD, 1, 0)
        state_of[frames["kind"] == KIND_RESTRAINT] = len(states) - 1
        logw_old, _ = cross_round_logweights(states, state_of, lambda q: x[:, None], T)
        old[release] = delta_f(x, logw_old)
    for release, (df, err) in results.items():
        assert 0.02 < err < 1.0
        assert abs(df - truth) < 3 * err, (release, df, err, truth)
        assert df == pytest.approx(results[100][0], abs=1e-9)  # excluded frames cannot move it
    # the test can fail: counted as equilibrium samples, long releases and round 0 drag ΔF away from the truth
    spread = max(old.values()) - min(old.values())
    assert spread > 3 * results[100][1] or max(abs(v - truth) for v in old.values()) > 3 * results[100][1], old


def test_converge_logweights_use_ct_and_exclusion_codes():
    rng = np.random.default_rng(3)
    n = 400
    frames = {"round": np.r_[np.zeros(100, int), np.ones(100, int), np.full(200, 2)],
              "kind": np.r_[np.zeros(100, int), np.full(100, KIND_METAD), np.full(200, 3)],
              "scale": np.ones(n), "time_ps": np.r_[np.arange(100.0), np.arange(100.0), np.arange(200.0)],
              "bias_kjmol": rng.normal(0, 3, n), "ct_kjmol": rng.normal(0, 1, n)}
    plans = {0: {"strategy": "unbiased"}, 1: {"strategy": "metadynamics"},
             2: {"strategy": "opes", "converge": True}}
    codes = frame_exclusions(frames, plans, burn_in=0.25)
    assert EXCLUSIONS[int(codes[0])] == "round0-unbiased" and EXCLUSIONS[int(codes[150])] == "exploration"
    assert np.count_nonzero(codes == 6) == 50 and np.all(codes[250:] == 0)  # first quarter of the converge run
    logw = converge_logweights(frames, T, codes == 0)
    assert np.all(np.isneginf(logw[codes != 0]))
    expected = (frames["bias_kjmol"] - frames["ct_kjmol"])[codes == 0] / KT
    np.testing.assert_allclose(logw[codes == 0] - logw[codes == 0][0], expected - expected[0], atol=1e-12)
    assert np.logaddexp.reduce(logw[codes == 0]) == pytest.approx(0.0, abs=1e-12)
