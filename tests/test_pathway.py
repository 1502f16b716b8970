"""Transition paths: rebuilding structures, physical checks, the MBAR profile along a path against an analytic F,
and the whole workflow (API + ``latentbias path``) on a tiny alanine-dipeptide campaign."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from latentbias.analysis.constants import kt_kjmol
from latentbias.bias.umbrella import UmbrellaResult
from latentbias.pathway import (bond_deviations, check_structure, clashes, kabsch_fit, nearest_frames, path_barrier,
                                rebuild_structure, umbrella_profile)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _rotation(seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def test_kabsch_fit_and_rebuild_recover_a_rigid_motion(ala2):
    _, _, xyz = ala2
    rot, shift = _rotation(1), np.array([0.3, -1.2, 0.5])
    moved = xyz @ rot.T + shift
    r, t = kabsch_fit(xyz, moved)
    np.testing.assert_allclose(r, rot, atol=1e-10)
    np.testing.assert_allclose(t, shift, atol=1e-10)
    heavy = np.array([1, 4, 5, 6, 8, 10, 14, 15, 16, 18])
    full = rebuild_structure(moved[heavy], heavy, xyz)  # decoded atoms in another frame: template follows them
    np.testing.assert_allclose(full, moved, atol=1e-10)
    noisy = moved[heavy] + 0.01
    assert np.allclose(rebuild_structure(noisy, heavy, xyz)[heavy], noisy)
    with pytest.raises(ValueError, match="one row per decoded atom"):
        rebuild_structure(moved[heavy[:3]], heavy, xyz)
    assert list(nearest_frames([[0, 0], [1, 1], [5, 5]], [[0.9, 1.2], [4, 4], [-1, 0]])) == [1, 2, 0]
    assert list(nearest_frames([[-3.0], [3.0]], [[3.1]], period=[6.3])) == [1]  # minimum image


def test_rebuild_per_residue_follows_a_moved_residue(ala2):
    """Decoded heavy atoms in which the ACE residue turned by 25 deg about its carbonyl C (a floppy terminus): with
    groups = residues the ACE methyl hydrogens follow their residue exactly (C-H lengths and angles of the template);
    one global fit leaves them behind. Groups with < 3 decoded atoms (NME: N, CH3) keep the global fit."""
    _, top, xyz = ala2
    heavy = np.array([1, 4, 5, 6, 8, 10, 14, 15, 16, 18])
    residues = np.array([a.residue.index for a in top.atoms])
    axis = np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8])
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    a = np.radians(25.0)
    rot = np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k
    decoded = xyz[heavy].copy()
    ace = [0, 1, 2]  # rows of CH3, C, O in ``heavy``
    decoded[ace] = (decoded[ace] - xyz[4]) @ rot.T + xyz[4]
    local = rebuild_structure(decoded, heavy, xyz, groups=residues)
    glob = rebuild_structure(decoded, heavy, xyz)
    moved_ace = (xyz[:6] - xyz[4]) @ rot.T + xyz[4]
    np.testing.assert_allclose(local[[0, 2, 3]], moved_ace[[0, 2, 3]], atol=1e-10)  # exact rigid follow
    assert np.linalg.norm(glob[[0, 2, 3]] - moved_ace[[0, 2, 3]], axis=1).max() > 0.02
    np.testing.assert_allclose(local[heavy], decoded)
    np.testing.assert_allclose(local[[17, 19, 20, 21]], glob[[17, 19, 20, 21]])  # NME: 2 decoded atoms -> global
    with pytest.raises(ValueError, match="one group per atom"):
        rebuild_structure(decoded, heavy, xyz, groups=residues[:5])


def test_checks_flag_stretched_bonds_and_clashes(ala2):
    import openmm
    from openmm import unit

    system, top, xyz = ala2
    omm_top = top.to_openmm()
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(xyz)
    openmm.LocalEnergyMinimizer.minimize(ctx, 1.0, 2000)
    x = ctx.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    ok = check_structure(system, omm_top, x)
    assert ok.physical and ok.max_bond_deviation < 0.005 and ok.n_clashes == 0
    bad = x.copy()
    bad[4] += [0.03, 0.0, 0.0]  # stretch the bonds of atom 4 by up to 0.3 A
    assert bond_deviations(system, bad).max() > 0.01 and not check_structure(system, omm_top, bad).physical
    clash = x.copy()
    clash[18] = clash[1] + [0.05, 0.0, 0.0]  # N of NME onto the ACE methyl carbon
    res = check_structure(system, omm_top, clash)
    assert res.n_clashes >= 1 and not res.physical
    h_on_h = x.copy()
    h_on_h[17] = h_on_h[0] + [0.05, 0.0, 0.0]  # amide H of NME onto a methyl H of ACE: the force field's sigma
    assert any({i, j} == {0, 17} for i, j, _ in clashes(system, omm_top, h_on_h))


def test_umbrella_profile_recovers_an_analytic_barrier():
    """Windows along x with exact samples of the biased densities; F(x) = h (x^2 - 1)^2, y harmonic."""
    temperature, h, k = 300.0, 12.0, 60.0
    kt = kt_kjmol(temperature)
    rng = np.random.default_rng(3)
    centers = np.column_stack([np.linspace(-1.3, 1.3, 14), np.zeros(14)])
    grid = np.linspace(-2.5, 2.5, 20001)
    zs, steps = [], []
    for c in centers:
        u = (h * (grid**2 - 1) ** 2 + 0.5 * k * (grid - c[0]) ** 2) / kt
        cdf = np.cumsum(np.exp(-(u - u.min())))
        x = np.interp(rng.random(600), cdf / cdf[-1], grid)
        y = rng.normal(0.0, np.sqrt(kt / (20.0 + k)), 600)  # unbiased y: F = 10 y^2
        zs.append(np.column_stack([x, y]))
        steps.append(np.arange(600))
    restraint = {"dims": [0, 1], "lower_walls": [-np.inf] * 2, "upper_walls": [np.inf] * 2,
                 "wall_force_constant": [0.0, 0.0], "period": [0.0, 0.0]}
    result = UmbrellaResult(centers, np.full(centers.shape, k), zs, temperature, restraint, steps)
    prof = umbrella_profile(result, bins=26, n_bootstrap=40, seed=1)
    s = prof.s - 1.3  # arc length from x = -1.3
    exact = h * (s**2 - 1) ** 2
    inside = np.abs(s) < 1.2
    ref = exact[inside] - exact[inside].min()
    got = prof.free_energy[inside] - prof.free_energy[inside][np.argmin(exact[inside])]
    assert np.sqrt(np.mean((got - ref) ** 2)) < 0.6
    # barrier of the binned analytic profile (bin averages of exp(-F/kT)); the estimate within 3 sigma + 0.2
    edges = np.linspace(0, prof.length, 27) - 1.3
    fine = [np.linspace(a, b, 200) for a, b in zip(edges[:-1], edges[1:])]
    binned = np.array([-kt * np.log(np.mean(np.exp(-h * (f**2 - 1) ** 2 / kt))) for f in fine])
    expected = path_barrier(binned)
    assert prof.barrier.error > 0
    assert abs(prof.barrier.value - expected) < 3 * prof.barrier.error + 0.2
    assert path_barrier([0.0, 5.0, 1.0, 7.0, 2.0]) == 7.0 and path_barrier([3.0, np.nan, 1.0, 4.0]) == 3.0


TINY_CAMPAIGN = """
[system]
testsystem = "alanine-dipeptide-vacuum"
constraints = "HBonds"
start = "{start}"

[md]
platform = "Reference"
temperature = 300.0
timestep = 2.0
friction = 1.0
seed = 11

[features]
kind = ["aligned"]
selection = "element != H"

[model]
latent_dim = 2
hidden = [16, 16]
activation = "tanh"
epochs = 30
patience = 10
learning_rate = 0.005

[campaign]
rounds = 2
round0_steps = 2500
steps_per_round = 5000
save_interval = 25
checkpoint_interval = 2500
strategy = ["metadynamics"]

[metadynamics]
bias_factor = 10.0
height = 2.0
frequency = 50
sigma = 0.15
grid_points = 40
"""


@pytest.fixture(scope="module")
def tiny_rundir(tmp_path_factory):
    from latentbias.campaign import Campaign, load_config

    folder = tmp_path_factory.mktemp("tinycampaign")
    cfg_path = folder / "tiny.toml"
    cfg_path.write_text(TINY_CAMPAIGN.format(start=(EXAMPLES / "ala2_c7eq.pdb").as_posix()))
    rundir = folder / "run"
    Campaign(load_config(cfg_path), rundir, progress=False).run()
    return rundir


def test_compare_profiles_flags_barriers_apart_by_more_than_their_errors():
    from latentbias.analysis.uncertainty import Estimate
    from latentbias.pathway import PathProfile, compare_profiles

    def prof(barrier, error):
        return PathProfile(np.zeros(3), np.zeros(3), np.zeros(3), Estimate(barrier, error, "block-bootstrap", 10), 1.0)

    near = compare_profiles(prof(32.1, 0.3), prof(33.4, 1.6))  # seed 2026 of the ala2 benchmark: agree
    assert near["consistent"] and near["deviation_sigma"] == pytest.approx(1.3 / np.hypot(0.3, 1.6))
    far = compare_profiles(prof(43.7, 0.34), prof(31.1, 1.23))  # seed 2031: an aliased latent space
    assert not far["consistent"] and far["deviation_sigma"] > 9 and far["difference_kjmol"] == pytest.approx(12.6)
    assert not compare_profiles(prof(1.0, np.nan), prof(1.0, 0.1))["consistent"]
    assert compare_profiles(prof(30.0, 1.0), prof(34.0, 1.0), n_sigma=3.0)["consistent"]
    with pytest.raises(ValueError, match="n_sigma"):
        compare_profiles(prof(1.0, 1.0), prof(1.0, 1.0), n_sigma=0)


def test_workflow_api_and_cli_on_a_tiny_campaign(tiny_rundir, tmp_path):
    import mdtraj as md

    from latentbias.cli import main
    from latentbias.pathway import samples_from_rundir, transition_path, write_path_outputs

    samples = samples_from_rundir(tiny_rundir)
    assert samples.model.has_decoder and np.isfinite(samples.logweights).sum() > 100
    tp = transition_path(samples, "auto", "auto", n_nodes=5, bins=16, sensitivity_samples=2, n_bootstrap=5,
                         platform="Reference", equilibration_steps=50, production_steps=400, sample_interval=20)
    assert tp.windows.structures.shape == (5, 22, 3)
    assert len(tp.windows.umbrella.z) == 5 and all(len(z) == 20 for z in tp.windows.umbrella.z)
    # every relaxed structure is physical: bonds within 0.1 A of the force field's r0, no clash
    assert all(c.physical for c in tp.checks), tp.checks
    # ... and sits near its node in latent space (restraint: thermal width = half the node spacing)
    spacing = np.mean(np.linalg.norm(np.diff(tp.string.nodes, axis=0), axis=1))
    assert np.all(np.linalg.norm(tp.windows.structure_z - tp.string.nodes, axis=1) < 2.0 * spacing)
    assert np.isfinite(tp.umbrella.barrier.value) and tp.umbrella.barrier.value >= 0
    # two realisations by default (other MD seeds, same structures), pooled into the profile and compared
    assert len(tp.realisations) == 2 and tp.realisations[0] is tp.windows
    assert tp.umbrella.info["n_windows"] == 10 and tp.umbrella.info["n_samples"] == 2 * 5 * 20
    assert not np.array_equal(tp.realisations[0].umbrella.all_z, tp.realisations[1].umbrella.all_z)
    assert tp.realisation_check is not None and tp.summary()["realisations"]["n"] == 2
    check = tp.summary()["profiles_check"]  # umbrella vs reweighted frames along the same path
    assert check["difference_kjmol"] == pytest.approx(tp.umbrella.barrier.value - tp.reweighted.barrier.value)
    files = write_path_outputs(tp, tmp_path / "api")
    assert md.load(str(files["pdb"])).n_frames == 5
    with pytest.raises(FileExistsError):
        write_path_outputs(tp, tmp_path / "api")

    out = tmp_path / "cli"
    frames_in = np.flatnonzero(np.isfinite(samples.logweights))
    args = ["path", str(tiny_rundir), "--from", f"frame:{frames_in[0]}", "--to", "auto", "--nodes", "4",
            "--platform", "Reference", "--equilibration-steps", "20", "--production-steps", "200",
            "--sample-interval", "20", "--bins", "16", "--bootstrap", "4", "--sensitivity-samples", "0",
            "--output", str(out), "--quiet"]
    assert main(args) == 0
    for name in ("path.pdb", "path.dcd", "path.csv", "profile.csv", "profile.png", "path.json"):
        assert (out / name).stat().st_size > 0, name
    pdb = md.load(str(out / "path.pdb"))
    dcd = md.load(str(out / "path.dcd"), top=pdb.topology)
    assert pdb.n_frames == dcd.n_frames == 4
    np.testing.assert_allclose(dcd.xyz, pdb.xyz, atol=2e-4)
    summary = json.loads((out / "path.json").read_text())
    assert summary["relax"]["platform"] == "Reference" and summary["n_nodes"] == 4
    assert summary["realisations"]["n"] == 2 and isinstance(summary["realisations"]["consistent"], bool)
    assert len(list((out / "windows" / "realisation_1").glob("window_*.npz"))) == 4
    lines = (out / "profile.csv").read_text().splitlines()
    assert lines[0].startswith("#") and lines[1].split(",")[:3] == ["s", "free_energy_0_kjmol", "error_0_kjmol"]
    # s, then F and error of: pooled umbrella, reweighted frames, realisation 0, realisation 1
    assert np.loadtxt(out / "profile.csv", delimiter=",", skiprows=2).shape == (8, 9)
    with pytest.raises(SystemExit, match="exists"):
        main(args)
    with pytest.raises(SystemExit, match="frame:N|frames"):
        main(args[:3] + ["frame:999999"] + args[4:] + ["--overwrite"])


def test_a_string_whose_free_ends_meet_is_rerun_with_fixed_ends(tiny_rundir, caplog):
    """An end state on the slope of the start basin: both free end nodes slide into that basin (a path of length
    ~0, whose windows' restraint would be sized to ~infinity: demo seed 2029 got k = 1e13). The string is run
    again with its ends fixed at the given states, with a warning."""
    import logging

    from latentbias.pathway import samples_from_rundir, transition_path
    from latentbias.pathway.workflow import latent_fes

    samples = samples_from_rundir(tiny_rundir)
    fes = latent_fes(samples, bins=16, n_bootstrap=2)
    a = samples.z[np.flatnonzero(np.isfinite(samples.logweights))[0]]
    h = np.array([c[1] - c[0] for c in fes.centers])
    b = a + 0.4 * h
    with caplog.at_level(logging.WARNING, logger="latentbias.pathway.workflow"):
        tp = transition_path(samples, ",".join(map(str, a)), ",".join(map(str, b)), n_nodes=3, bins=16,
                             sensitivity_samples=0, n_bootstrap=3, realisations=1, platform="Reference",
                             equilibration_steps=10, production_steps=100, sample_interval=20)
    assert "free end nodes both slid into the basin" in caplog.text
    assert tp.summary()["string_fixed_ends"]
    np.testing.assert_allclose(tp.string.nodes[[0, -1]], [a, b])
    assert np.isfinite(tp.windows.settings["force_constant"])


def test_workflow_in_a_3d_latent_space(tiny_rundir, tmp_path):
    """latent_dim = 3: a decoder model trained on the tiny campaign's frames; the FES is gridded in 3-D, the string,
    the restraint (3 restrained dimensions), the profiles and the outputs use all three coordinates; d > 3 and
    endpoints of the wrong dimension are refused with clear errors."""
    import dataclasses

    import mdtraj as md

    import latentbias as lb
    from latentbias.pathway import latent_fes, samples_from_rundir, transition_path, write_path_outputs

    base = samples_from_rundir(tiny_rundir)
    top = md.Topology.from_openmm(base.topology)
    feat = lb.AlignedCoordinates.from_selection(top, "element != H", base.positions[0])
    est = lb.LatentModelEstimator(latent_dim=3, hidden=(16, 16), activation="tanh", epochs=30, seed=5,
                                  progress=False)
    model, result = est.fit_trajectories(feat, md.Trajectory(base.positions, top))
    mf = lb.load_model(lb.save_model(model, tmp_path / "m3.pt", training=result))
    assert mf.latent_dim == 3 and mf.has_decoder and mf.metadata["decoder"]["validation_rmsd_angstrom"] > 0
    samples = dataclasses.replace(base, model=mf, z=mf.encode(base.positions), source="3-D model")
    used = np.flatnonzero(np.isfinite(samples.logweights))
    a, b = used[np.argmin(samples.z[used, 0])], used[np.argmax(samples.z[used, 0])]
    tp = transition_path(samples, f"frame:{a}", f"frame:{b}", n_nodes=4, bins=8, fixed_ends=True,
                         sensitivity_samples=2, n_bootstrap=4, platform="Reference", equilibration_steps=20,
                         production_steps=200, sample_interval=20)
    assert tp.fes.free_energy.ndim == 3 and tp.string.nodes.shape == (4, 3)
    width = np.array([e[1] - e[0] for e in tp.fes.edges])  # fixed ends, clipped to the grid's bin centres
    assert np.all(np.abs(tp.string.nodes[[0, -1]] - samples.z[[a, b]]) <= width)
    assert tp.windows.settings["dims"] == [0, 1, 2] and tp.windows.structure_z.shape == (4, 3)
    assert all(c.physical for c in tp.checks), tp.checks
    assert np.isfinite(tp.umbrella.barrier.value) and np.isfinite(tp.reweighted.barrier.value)
    files = write_path_outputs(tp, tmp_path / "out")
    header = [ln for ln in files["csv"].read_text().splitlines() if not ln.startswith("#")][0].split(",")
    assert header[2:5] == ["z0", "z1", "z2"] and "relaxed_z2" in header
    assert files["png"].stat().st_size > 0 and md.load(str(files["pdb"])).n_frames == 4
    with pytest.raises(ValueError, match="needs 3 finite numbers 'z0,z1,z2'"):
        transition_path(samples, "0.1,0.2", "auto", n_nodes=4, bins=8)
    four = dataclasses.replace(samples, z=np.column_stack([samples.z, samples.z[:, 0]]))
    with pytest.raises(ValueError, match="2 or 3 dimensions"):
        latent_fes(four)


@pytest.mark.slow
def test_ala2_c7eq_to_c7ax_path_against_the_reference_fes(tmp_path):
    """The demo campaign (2-D latent space), then the C7eq -> C7ax path: phi of the relaxed structures goes from
    < 0 to > 0 without stepping back more than 20 deg, the relaxed structures are physical, and the umbrella barrier
    along the path is within 3 kJ/mol of the minimax barrier of the reference phi/psi FES (~3 min on 2 cores)."""
    import dataclasses

    import mdtraj as md

    from latentbias.analysis.barriers import minimax_barrier, nearest_cell
    from latentbias.campaign import Campaign, load_config
    from latentbias.pathway import samples_from_rundir, transition_path

    cfg = load_config(EXAMPLES / "ala2_campaign.toml")
    # a 2-D latent space: the demo's 3-D one is better for dF but its paths are not (README, "Transition paths");
    # the 1.5-2.8 ns converge phase the README's path numbers were measured with (the demo now runs 7.9 ns)
    cfg = dataclasses.replace(cfg, md=dataclasses.replace(cfg.md, seed=2024),
                              model=dataclasses.replace(cfg.model, latent_dim=2),
                              converge=dataclasses.replace(cfg.converge, max_steps=1_400_000, min_steps=750_000))
    Campaign(cfg, tmp_path / "run", progress=False).run()
    samples = samples_from_rundir(tmp_path / "run")
    top = md.Topology.from_openmm(samples.topology)

    def phipsi(xyz):
        ang = np.degrees(md.compute_dihedrals(md.Trajectory(xyz, top), [[4, 6, 8, 14], [6, 8, 14, 16]]))
        return ang[:, 0], ang[:, 1]

    phi, psi = phipsi(samples.positions)
    used = np.isfinite(samples.logweights)

    def nearest(p0, q0):
        d = np.hypot((phi - p0 + 180) % 360 - 180, (psi - q0 + 180) % 360 - 180)
        return int(np.argmin(np.where(used, d, np.inf)))

    tp = transition_path(samples, f"frame:{nearest(-80, 70)}", f"frame:{nearest(70, -70)}", n_nodes=20,
                         platform="Reference", production_steps=50000, equilibration_steps=5000)
    p_phi, _ = phipsi(tp.windows.structures)
    steps = (np.diff(p_phi) + 180) % 360 - 180
    assert p_phi[0] < 0 < p_phi[-1]
    assert steps.sum() > 0 and steps.min() > -20.0, p_phi
    assert all(c.physical for c in tp.checks)
    ref = np.load(EXAMPLES / "reference" / "ala2_ff96_phipsi_fes.npz")
    axes = [ref["phi_deg"], ref["psi_deg"]]
    barrier = minimax_barrier(ref["fes_kjmol"], nearest_cell(axes, (-80, 70), (True, True)),
                              nearest_cell(axes, (70, -70), (True, True)), periodic=True).forward
    assert abs(tp.umbrella.barrier.value - barrier) < 3.0, (tp.umbrella.barrier, barrier)
    assert tp.info["heldout_rmsd_angstrom"] < 1.0
