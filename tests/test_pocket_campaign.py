"""The ``pocket`` campaign strategy: [pocket] config, openness-anchored training, OPES/metadynamics on the anchored
dimension with a restart, openness in frames.csv, the report's pocket section; T4L L99A as the example.

The fast tests use the 2-D toy of campaign_toy.py with the openness = distance between the mobile particle (residue
1) and the fixed anchor A1 (residue 2, at (2, 0, 0) nm): well A (start) is at 1.43 nm, C at 2.09 nm, B at 2.62 nm.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from latentbias.analysis import free_energy_surface, kt_kjmol
from latentbias.campaign import Campaign, ConfigError, load_config
from latentbias.campaign.alignment import apply_alignment
from latentbias.campaign.config import from_dict
from latentbias.campaign.pocket import anchored_alignment
from latentbias.campaign.pocketreport import most_open_frames

from campaign_toy import toy_config_text, write_toy_system
from toy import multi_well_2d

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

POCKET_TOY = """
[pocket]
measure = "distance"
group_a = [1]
group_b = [2]
anchor_dim = 0
bias = "{bias}"
restart_segments = 1
n_structures = 3

[opes]
barrier = 20.0
pace = 100
sigma = 0.05
grid_points = 50
"""


def run_toy(folder: Path, rounds: int, steps: int, bias: str = "opes") -> tuple[Campaign, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    write_toy_system(folder)
    (folder / "toy.toml").write_text(toy_config_text(rounds=rounds, steps=steps, round0=10000, strategy="pocket",
                                                     extra=POCKET_TOY.format(bias=bias)))
    campaign = Campaign(load_config(folder / "toy.toml"), folder / "run", progress=False)
    campaign.run()
    return campaign, folder / "run"


def read_csv(path: Path) -> dict[str, np.ndarray]:
    """A latentbias CSV (``#`` comment lines, then a header row) as columns."""
    lines = path.read_text().splitlines()
    n_comments = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    header = lines[n_comments].split(",")
    data = np.loadtxt(path, delimiter=",", skiprows=n_comments + 1, ndmin=2)
    return {h: data[:, i] for i, h in enumerate(header)}


@pytest.fixture(scope="module")
def toy_pocket(tmp_path_factory):
    return run_toy(tmp_path_factory.mktemp("pocket_toy"), rounds=3, steps=20000)


# ------------------------------------------------------------------------------------------------------ config


def _raw(**pocket):
    opes = {"pace": pocket.pop("pace")} if "pace" in pocket else {}
    return {"system": {"testsystem": "alanine-dipeptide-vacuum"},
            "campaign": {"strategy": "pocket", "rounds": 2, "steps_per_round": 10000, "round0_steps": 5000,
                         "save_interval": 25, "checkpoint_interval": 5000},
            "pocket": pocket, "opes": opes}


@pytest.mark.parametrize("pocket, match", [
    ({}, "needs a \\[pocket\\] region"),
    ({"residues": [1, 2], "measure": "sasa"}, "measure"),
    ({"residues": [1, 2], "bias": "umbrella"}, "bias"),
    ({"residues": [1, 2], "anchor_dim": 2}, "anchor_dim"),
    ({"residues": [1, 2], "center": [0.0, 0.0, 0.0], "radius": 1.0}, "either residues"),
    ({"center": [0.0, 0.0], "radius": 1.0}, "center must be 3"),
    ({"center": [0.0, 0.0, 0.0]}, "radius"),
    ({"measure": "distance", "group_a": [1]}, "group_a and group_b"),
    ({"residues": [1, 2], "step": 0.6}, "coarser"),
    ({"residues": [1, 2], "restart_segments": 5}, "restart_segments"),
    ({"residues": [1, 2], "probe_out": 0.1}, "probe_out"),
    ({"residues": [1, 2], "shape": "round"}, "unknown key"),
    ({"residues": [1, 2], "pace": 25}, "sigma-sampling"),
])
def test_pocket_config_errors_name_the_key(pocket, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(_raw(**pocket))


def test_pocket_config_valid_and_other_strategies_untouched():
    cfg = from_dict(_raw(residues=[1, 2, 3], target=0.3))
    assert cfg.pocket.unit == "nm^3" and cfg.strategy_for_round(1) == "pocket"
    plain = from_dict({"system": {"testsystem": "alanine-dipeptide-vacuum"}})
    from latentbias.campaign.pocket import pocket_enabled

    assert not pocket_enabled(plain)


# --------------------------------------------------------------------------------------------------- alignment


def test_anchored_alignment_leaves_the_anchored_dimension_and_recovers_the_free_ones():
    """z_old = (openness, free); z_new has the same openness and the free coordinate scaled, flipped and shifted;
    the fit must leave z0 alone (identity row/column) and map the free one back exactly."""
    import torch

    from latentbias.models import FeatureAutoencoder

    rng = np.random.default_rng(3)
    z_old = rng.normal(size=(200, 3))
    z_new = z_old.copy()
    z_new[:, 1:] = -1.7 * z_old[:, 1:] @ np.array([[0.6, -0.8], [0.8, 0.6]]).T + np.array([0.4, -2.0])
    fit = anchored_alignment(z_new, z_old, [0])
    np.testing.assert_allclose(fit(z_new), z_old, atol=1e-10)
    np.testing.assert_allclose(fit.rotation[0], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(fit.rotation[:, 0], [1.0, 0.0, 0.0])
    assert fit.shift[0] == 0.0 and fit.r2 == pytest.approx(1.0)
    # folded into a model: the anchored output is unchanged, the free outputs follow the map
    torch.manual_seed(0)
    ae = FeatureAutoencoder(5, 3, [8], "tanh").double()
    x = torch.randn(20, 5, dtype=torch.float64)
    with torch.no_grad():
        before = ae.encode(x).numpy()
    apply_alignment(ae, fit)
    with torch.no_grad():
        after = ae.encode(x).numpy()
    np.testing.assert_allclose(after, fit(before), atol=1e-10)
    np.testing.assert_allclose(after[:, 0], before[:, 0], atol=1e-12)


def test_most_open_frames_order():
    assert most_open_frames(np.array([0.1, 0.5, 0.3, 0.5]), 3).tolist() == [1, 3, 2]
    assert most_open_frames(np.array([0.1]), 5).tolist() == [0]


# ------------------------------------------------------------------------------------------- toy campaign


def test_pocket_plan_biases_only_the_anchored_dimension(toy_pocket):
    campaign, rundir = toy_pocket
    for r in (1, 2):
        plan = campaign.run_dir.read_plan(r)
        assert plan["strategy"] == "pocket" and plan["bias"] == "opes"
        assert [v["index"] for v in plan["variables"]] == [0]
        info = campaign.model(r - 1).info
        assert plan["variables"][0]["minValue"] < info["z_min"][0] and plan["variables"][0]["maxValue"] > info["z_max"][0]
        predicted = [t[0] for t in plan["targets"]]
        assert predicted == sorted(predicted, reverse=True)  # ranked by predicted openness
        assert plan["start_frame"] == plan["target_frames"][0]
        # the round starts from that earlier frame
        first = campaign.run_dir.read_segment(r, 0)["positions"][0]
        start = campaign.all_frames(r - 1)["positions"][plan["start_frame"]]
        assert np.linalg.norm(first[0] - start[0]) < 0.5


def test_openness_column_and_anchor(toy_pocket):
    """frames.csv carries the openness (recomputed here from the stored positions); the anchored dimension tracks
    it (Pearson > 0.9 once the data leave the start basin; measured 0.975 / 0.980 after rounds 1 / 2)."""
    campaign, rundir = toy_pocket
    frames = campaign.all_frames(campaign.last_round)
    d = np.linalg.norm(frames["positions"][:, 0].astype(float) - frames["positions"][:, 1].astype(float), axis=1)
    for r in range(3):
        table = read_csv(rundir / f"round_{r:03d}" / "frames.csv")
        np.testing.assert_allclose(table["openness_nm"], d[frames["round"] == r], atol=1e-6)
    weights = read_csv(rundir / "weights.csv")
    np.testing.assert_allclose(weights["openness_nm"], d, atol=1e-6)
    for r in (1, 2):
        anchor = campaign.model(r).info["pocket_anchor"]
        assert anchor["dim"] == 0 and anchor["pearson"] > 0.9 and anchor["val_pearson"] > 0.9
        z = campaign.encode(r, frames)[:, 0]
        assert np.sqrt(np.mean((z - d) ** 2)) < 0.25  # in the openness's own units (nm), not just correlated
    # the pocket rounds reach beyond the start basin's range (round 0 stays near well A at 1.43 nm)
    assert d[frames["round"] == 0].max() < 2.0
    assert d[frames["round"] > 0].max() > 2.4


def test_restart_transient_is_kept_out_of_the_estimate(toy_pocket):
    campaign, rundir = toy_pocket
    frames = campaign.all_frames(campaign.last_round)
    w = read_csv(rundir / "weights.csv")
    pocket = frames["round"] > 0
    first = pocket & (frames["segment"] == 0)
    assert np.all(w["excluded"][first] == 8) and np.all(~np.isfinite(w["logweight"][first]))
    rest = pocket & ~first
    assert np.all(w["excluded"][rest] == 0) and np.all(np.isfinite(w["logweight"][rest]))
    assert np.all(w["excluded"][frames["round"] == 0] == 1)


def test_report_pocket_section(toy_pocket):
    import mdtraj as md

    from latentbias.campaign.report import write_report

    campaign, rundir = toy_pocket
    text = write_report(rundir).read_text()
    assert "## Pocket openness" in text and "reweighted F(openness)" not in text.split("## Pocket")[0]
    out = rundir / "report"
    for name in ("pocket_openness.png", "pocket_fes.png", "pocket_fes.csv", "pocket_open_00.pdb", "pocket_open_02.pdb"):
        assert (out / name).is_file(), name
    fes = read_csv(out / "pocket_fes.csv")
    assert np.isfinite(fes["error_kjmol"]).sum() >= 3
    top = md.load(str(out / "pocket_open_00.pdb"))
    frames = campaign.all_frames(campaign.last_round)
    d = np.linalg.norm(frames["positions"][:, 0] - frames["positions"][:, 1], axis=1)
    np.testing.assert_allclose(np.linalg.norm(top.xyz[0, 0] - top.xyz[0, 1]), d.max(), atol=2e-3)


def test_pocket_metadynamics_bias_runs(tmp_path):
    campaign, rundir = run_toy(tmp_path, rounds=2, steps=10000, bias="metadynamics")
    plan = campaign.run_dir.read_plan(1)
    assert plan["bias"] == "metadynamics" and [v["index"] for v in plan["variables"]] == [0]
    seg = campaign.run_dir.read_segment(1, 1)
    assert seg["grid_end"].shape == (plan["variables"][0]["gridWidth"],) and seg["grid_end"].max() > 0
    w = read_csv(rundir / "weights.csv")
    assert np.isfinite(w["logweight"]).sum() > 0


POCKET_CONVERGE = """
[converge]
enabled = true
method = "opes"
max_steps = 4000
min_steps = 2000
burn_in = 0.2
tolerance = 0.3
"""


def test_pocket_converge_phase_biases_only_the_anchored_dimension(tmp_path):
    """The converge phase of a pocket campaign runs OPES on the openness-anchored dimension only, on the pocket
    rounds' variable (grid up to [pocket] target), and its frames make the estimate; a campaign with a [pocket]
    region but no pocket rounds keeps the all-dimension converge phase."""
    from latentbias.campaign.plan import metadynamics_variables
    from latentbias.campaign.pocket import pocket_converge_variables, pocket_variable

    write_toy_system(tmp_path)
    extra = POCKET_TOY.format(bias="opes").replace("n_structures = 3", "n_structures = 3\ntarget = 3.0")
    (tmp_path / "toy.toml").write_text(toy_config_text(rounds=2, steps=6000, round0=6000, strategy="pocket",
                                                       extra=extra + POCKET_CONVERGE))
    cfg = load_config(tmp_path / "toy.toml")
    campaign = Campaign(cfg, tmp_path / "run", progress=False)
    campaign.run()
    plan = campaign.run_dir.read_plan(2)
    assert plan["converge"] and plan["strategy"] == "opes"
    info = campaign.model(1).info
    assert plan["variables"] == [pocket_variable(cfg, info["z_min"][0], info["z_max"][0], "opes")]
    # the grid reaches the target, whether or not the pocket rounds sampled beyond it (this run's z_max is 3.03
    # with OPES' local Context updates, below 3.0 with the refit route: different trajectories)
    assert plan["variables"][0]["maxValue"] > max(3.0, info["z_max"][0])
    w = read_csv(tmp_path / "run" / "weights.csv")
    frames = campaign.all_frames(campaign.last_round)
    used = np.isfinite(w["logweight"])
    assert used.any() and np.all(frames["round"][used] == 2)  # the converge phase alone makes the estimate
    assert (tmp_path / "run" / "round_002" / "convergence.csv").is_file()
    # the same config without pocket rounds: the default converge variables (every latent dimension)
    other = from_dict({**_raw(residues=[1, 2, 3]), "campaign": {"strategy": "opes"}})
    assert pocket_converge_variables(other, [0.0, 0.0], [1.0, 1.0]) is None
    assert len(metadynamics_variables(other, [0.0, 0.0], [1.0, 1.0], "opes")) == 2


@pytest.mark.slow
def test_pocket_campaign_recovers_the_analytic_free_energy_of_the_openness(tmp_path):
    """5 rounds of 160 ps: F(d) from the cross-round MBAR weights against the exact Boltzmann F(d) (3-D quadrature
    of the toy potential), RMSE after the best constant shift <= 2.5 kJ/mol where F_ref < 10 kJ/mol (measured
    1.67 with this seed)."""
    campaign, rundir = run_toy(tmp_path, rounds=5, steps=40000)
    w = read_csv(rundir / "weights.csv")
    used = np.isfinite(w["logweight"])
    kt = kt_kjmol(300.0)
    fes = free_energy_surface(w["openness_nm"][used], w["logweight"][used], bins=15, range=(1.0, 3.0),
                              temperature=300.0)
    g, gz = np.linspace(-1.8, 1.8, 361), np.linspace(-0.7, 0.7, 71)
    x, y, z = np.meshgrid(g, g, gz, indexing="ij")
    boltz = np.exp(-(multi_well_2d(x, y) + 50 * z**2) / kt)
    hist, _ = np.histogram(np.sqrt((x - 2) ** 2 + y**2 + z**2).ravel(), bins=fes.edges[0], weights=boltz.ravel())
    ref = -kt * np.log(hist)
    ref -= ref.min()
    ok = np.isfinite(fes.free_energy) & (ref < 10)
    dev = fes.free_energy[ok] - ref[ok]
    assert ok.sum() >= 10
    assert np.sqrt(np.mean((dev - dev.mean()) ** 2)) <= 2.5


# ----------------------------------------------------------------------------------------------- T4L L99A


def test_t4l_example_config_measures_the_crystal_cavity():
    """The CI example's measure on the starting (crystal) structure: 144.94 Å^3, as pyKVFinder gives with the same
    settings (benchmarks/RESULTS.md, pocket cavity volume)."""
    from latentbias.campaign.pocket import pocket_measure

    cfg = load_config(EXAMPLES / "t4l_pocket_ci.toml")
    assert cfg.md.platform == "CPU" and cfg.campaign.strategy == ["pocket"]
    campaign = Campaign.__new__(Campaign)  # only the system and the measure: no run directory
    campaign.cfg, campaign._system_cache = cfg, None
    _, top, xyz = campaign.system()
    assert top.getNumAtoms() == 2603
    measure = pocket_measure(campaign)
    assert measure(xyz[None])[0] * 1000 == pytest.approx(144.94, abs=0.05)
    # a tumbling protein: the frame rotated and shifted measures the same after superposition on the start
    from scipy.spatial.transform import Rotation

    rotated = Rotation.from_euler("xyz", [40, -25, 70], degrees=True).apply(xyz - xyz.mean(0)) + [1.0, -2.0, 0.5]
    v_rot = measure(rotated[None])[0]
    assert v_rot * 1000 == pytest.approx(144.94, rel=0.02)
    from latentbias.campaign.pocket import PocketMeasure

    unaligned = PocketMeasure(cfg.pocket, top)(rotated[None])[0]  # no reference: the axis-aligned box turns with it
    assert abs(unaligned - v_rot) > 0.005


def test_t4l_gpu_config_budget():
    """The GPU-sized example loads (CUDA named) and its MD budget is the 42.5 ns its header's run-time estimate uses."""
    cfg = load_config(EXAMPLES / "t4l_pocket_gpu.toml")
    assert cfg.md.platform == "CUDA" and cfg.converge.enabled
    c = cfg.campaign
    steps = c.round0_steps + (c.rounds - 1) * c.steps_per_round + cfg.converge.max_steps
    assert steps * cfg.md.timestep / 1e6 == pytest.approx(42.5)


@pytest.mark.slow
def test_t4l_pocket_campaign_ci_config(tmp_path):
    """The CI-sized T4L L99A example end to end (CPU platform; ~1500 MD steps, tens of minutes on a loaded 2-core
    machine): openness per frame in frames.csv equals the cavity volume of the stored frames, the anchored
    dimension is trained, the report writes the most open structure with its cavity as pseudo-atoms."""
    import mdtraj as md

    from latentbias.analysis.pockets import CavityVolume, PocketRegion, atom_radii
    from latentbias.campaign.report import write_report

    cfg_path = tmp_path / "t4l.toml"
    shutil.copy(EXAMPLES / "t4l_pocket_ci.toml", cfg_path)
    campaign = Campaign(load_config(cfg_path), tmp_path / "run", progress=False)
    campaign.run()
    rundir = tmp_path / "run"
    traj = md.load(str(rundir / "round_002" / "frames.dcd"), top=str(rundir / "round_002" / "topology.pdb"))
    p = campaign.cfg.pocket  # every setting from the config: a default here must not stand in for it
    region = PocketRegion.from_residues(traj.topology, p.residues, padding=p.padding)
    start = md.Trajectory(campaign.system()[2][None].astype(np.float32), traj.topology)
    traj.superpose(start, 0, atom_indices=region.atoms)  # the campaign measures in the start's orientation
    measure = CavityVolume(region, atom_radii(traj.topology), step=p.step, probe_in=p.probe_in,
                           probe_out=p.probe_out, removal_distance=p.removal_distance, volume_cutoff=p.volume_cutoff)
    table = read_csv(rundir / "round_002" / "frames.csv")
    # Tolerance 2 grid points (2 x 0.216 Å^3): the DCD holds float32 Å. Measured: float32 rounding of the stored
    # frames changed no volume in 900 frame-trials, a rigid motion of the frames none in 120; a 1° difference in the
    # superposition's orientation changes volumes by up to 0.018 nm^3 (tests/test_pockets.py::
    # test_pocket_measure_is_invariant_under_rigid_motion), so this comparison does see a mis-superposition.
    np.testing.assert_allclose(table["openness_nm3"], measure(traj), atol=2 * p.step**3)
    assert "pocket_anchor" in campaign.model(2).info
    write_report(rundir)
    pdb = (rundir / "report" / "pocket_open_00.pdb").read_text()
    assert pdb.count(" CAV Z ") > 100  # the cavity's grid points (0.06 nm spacing: ~670 points for 145 Å^3)
