"""Latent metadynamics: analytic FES, edge walls, exact restart, multiple walkers, records, forces."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import openmm
import pytest
from openmm import unit

import latentbias as lb
from latentbias.analysis import free_energy_surface, kt_kjmol
from latentbias.bias import LatentMetadynamics, LatentVariable

from test_export_forces import bare_system, check_finite_differences, energy_and_forces, make_context
from toy import (DOUBLE_WELL_1D, bin_averaged_fes, MULTI_WELL_2D, double_well_1d, identity_model, multi_well_2d, particle_simulation,
                 particle_system)

TESTS = Path(__file__).resolve().parent


def rmse_below(fe: np.ndarray, ref: np.ndarray, cutoff: float) -> float:
    """RMSE between two surfaces over the region where ref - min(ref) < cutoff, after the best constant shift."""
    fe = np.asarray(fe, dtype=float)
    mask = (ref - ref.min() < cutoff) & np.isfinite(fe)
    shift = np.mean(fe[mask] - ref[mask])
    return float(np.sqrt(np.mean((fe[mask] - shift - ref[mask]) ** 2)))


def make_1d_metad(tmp_path, seed=1, **kw):
    model = tmp_path / "x.pt"
    if not model.exists():
        identity_model(model, 1, 1)
    system = particle_system(DOUBLE_WELL_1D)
    meta = LatentMetadynamics(system, model, [LatentVariable(0, -1.0, 1.0, 0.05, gridWidth=101)], 300.0,
                              biasFactor=6.0, height=0.5, frequency=100, **kw)
    return meta, particle_simulation(system, [-0.5], seed=seed)


def test_1d_double_well_free_energy_matches_analytic(tmp_path):
    """250k steps (1 ns); FES averaged over the second half of the run. Tolerance: RMSE <= 1 kJ/mol, F < 15."""
    meta, sim = make_1d_metad(tmp_path)
    snapshots = []
    for k in range(10):
        meta.step(sim, 25_000)
        if k >= 5:
            snapshots.append(meta.getFreeEnergy().value_in_unit(unit.kilojoule_per_mole))
    x = meta.getGridAxes()[0]
    assert rmse_below(np.mean(snapshots, axis=0), double_well_1d(x), 15.0) <= 1.0
    assert meta.numDeposits == 2500
    # c(t) reweighting of the deposited frames (first quarter discarded) recovers the same FES: RMSE <= 1 kJ/mol
    rec = meta.getRecords()
    start = len(rec["step"]) // 4
    fes = free_energy_surface(rec["z"][start:, 0], meta.getLogWeights("ct")[start:], bins=40, range=(-0.9, 0.9),
                              temperature=300.0)
    ref = bin_averaged_fes(double_well_1d, fes.edges[0])
    assert np.isfinite(fes.free_energy[ref < 12]).all()
    assert rmse_below(fes.free_energy, ref, 15.0) <= 1.0


def test_records_and_record_file(tmp_path):
    meta, sim = make_1d_metad(tmp_path, recordFile=tmp_path / "hills.csv")
    meta.step(sim, 5000)
    rec = meta.getRecords()
    assert len(rec["step"]) == 50 and np.array_equal(rec["step"], np.arange(100, 5001, 100))
    assert rec["bias_kjmol"][0] == pytest.approx(0.0, abs=1e-9) and rec["bias_kjmol"][-1] > 0
    np.testing.assert_allclose(rec["logweight"], (rec["bias_kjmol"] + rec["wall_kjmol"] - rec["ct_kjmol"])
                               / kt_kjmol(300.0), atol=1e-9)
    lines = (tmp_path / "hills.csv").read_text().splitlines()
    assert lines[0].startswith("#") and "kJ/mol" in lines[0]
    assert lines[1] == "step,time_ps,z0,bias_kjmol,wall_kjmol,ct_kjmol,logweight"
    table = np.loadtxt(tmp_path / "hills.csv", delimiter=",", skiprows=2)
    np.testing.assert_allclose(table[:, 2], rec["z"][:, 0], rtol=1e-8)
    np.testing.assert_allclose(table[:, 1], 0.004 * rec["step"], rtol=1e-6)
    with pytest.raises(FileExistsError, match="appendRecord"):
        make_1d_metad(tmp_path / "..", recordFile=tmp_path / "hills.csv")


def test_bias_at_deposits_equals_grid_interpolation(tmp_path):
    """The recorded V(z,t), read from the Context (cubic spline), agrees with linear interpolation of the grid."""
    meta, sim = make_1d_metad(tmp_path)
    meta.step(sim, 20_000)
    rec = meta.getRecords()
    # rebuild the bias deposit by deposit from the records and compare V at each recorded z
    grid = np.zeros(meta.grid.shape)
    for z, v in zip(rec["z"], rec["bias_kjmol"]):
        assert meta.grid.interpolate(z[None], grid)[0] == pytest.approx(v, abs=0.05)
        grid += 0.5 * np.exp(-v / kt_kjmol(300.0 * 5.0)) * meta.grid.gaussian(z)
    np.testing.assert_allclose(grid, meta.getBias(), atol=1e-9)


def test_walls_restore_beyond_the_grid_edges(tmp_path):
    model = identity_model(tmp_path / "x.pt", 1, 1)
    system = bare_system(1)
    meta = LatentMetadynamics(system, model, [LatentVariable(0, -0.5, 0.5, 0.05)], 300.0, 5.0, 1.0, 10,
                              wallForceConstant=2000.0)
    ctx, _ = make_context(system, np.array([[0.7, 0, 0]]), "Reference")
    e, f = energy_and_forces(ctx)
    assert e == pytest.approx(0.5 * 2000 * 0.2**2, rel=1e-9)
    assert f[0, 0] == pytest.approx(-2000 * 0.2, rel=1e-9)  # pushes back, never zero (OpenMM issue 3805)
    ctx.setPositions(np.array([[-0.8, 0, 0]]))
    assert energy_and_forces(ctx)[1][0, 0] == pytest.approx(2000 * 0.3, rel=1e-9)
    # with a bias on the grid, the total force outside is wall only and continuous across the edge
    meta.backend.set_grid(np.linspace(0, 3, meta.grid.shape[0]), ctx)
    check_finite_differences(ctx, np.array([[0.5 + 1e-3, 0.0, 0.0]]), -1, h=1e-6, rtol=1e-3)


def test_logweights_include_edge_walls_exactly_as_the_force(tmp_path):
    """Issue 8 c: frames beyond the grid edge carry the wall energy in their c(t) log-weight. Grid [-0.3, 0.3] on
    the double well (minima ±0.5): with the bias frozen, kT·logweight + c(t) equals the bias force group's energy
    in the Context (Reference platform) for every frame, the campaign's BiasState energy (which MBAR uses) agrees,
    and with the bias switched off (scale 0) the log-weight is the wall alone."""
    from latentbias.campaign.weights import BiasState

    model = identity_model(tmp_path / "x.pt", 1, 1)
    system = particle_system(DOUBLE_WELL_1D)
    variable = LatentVariable(0, -0.3, 0.3, 0.05, gridWidth=61)
    meta = LatentMetadynamics(system, model, [variable], 300.0, biasFactor=6.0, height=1.0, frequency=50,
                              wallForceConstant=200.0)
    sim = particle_simulation(system, [-0.5], seed=7)
    meta.step(sim, 2000)
    meta.depositionEnabled = False
    kt = kt_kjmol(300.0)
    beyond = 0
    for scale in (1.0, 0.0):
        meta.setBiasScale(sim.context, scale)
        for _ in range(40):
            meta.step(sim, 50)
            rec = meta.getRecords()
            z = rec["z"][-1]
            acting = meta.backend.energy(sim.context)
            wall = 0.5 * 200.0 * (max(0.0, z[0] - 0.3) + max(0.0, -0.3 - z[0])) ** 2
            assert rec["wall_kjmol"][-1] == pytest.approx(wall, abs=1e-9)
            assert kt * rec["logweight"][-1] + rec["ct_kjmol"][-1] == pytest.approx(acting, rel=1e-9, abs=1e-9)
            if scale == 0.0:
                assert rec["ct_kjmol"][-1] == 0.0 and kt * rec["logweight"][-1] == pytest.approx(wall, abs=1e-9)
            if abs(z[0]) > 0.3:
                beyond += 1
                assert wall > 0
                state = BiasState("metad", variables=[variable.toDict()], grid=meta.getBias(), wall_k=200.0,
                                  scale=scale)
                assert state.energy(z[None])[0] == pytest.approx(acting, rel=1e-9, abs=1e-9)
    assert beyond >= 20  # most frames sit beyond the edge, where the walls act
    final = meta.getLogWeights("final")
    np.testing.assert_allclose(kt * final, meta.biasAt(rec["z"]) + rec["wall_kjmol"], rtol=1e-12, atol=1e-12)


def test_bias_force_matches_finite_differences_on_ala2(ala2, ala2_model):
    """CustomCVForce(table(z0, z1)) over two TorchForces after a few Gaussians: forces vs central differences."""
    system, _, xyz = ala2
    sys_ = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    mf = lb.load_model(ala2_model)
    z = mf.encode(xyz)
    variables = [LatentVariable(i, z[i] - 2, z[i] + 2, 0.2) for i in range(2)]
    meta = LatentMetadynamics(sys_, mf, variables, 300.0, 10.0, 2.0, 10)
    for shift in (0.0, 0.1, -0.15):
        meta._selfBias += meta.grid.gaussian(z + shift)
    ctx, _ = make_context(sys_, xyz, "Reference")
    meta.backend.set_grid(meta.getBias(), ctx)
    group = 1 << meta.backend.force_group
    e, _ = energy_and_forces(ctx, group)
    assert e == pytest.approx(meta.grid.interpolate(z[None], meta.getBias())[0], rel=2e-2)
    check_finite_differences(ctx, xyz, group, rtol=1e-4)


def test_restart_continues_with_identical_bias(tmp_path):
    """Run 2N steps straight vs N steps, save (bias state + OpenMM checkpoint), restore in new objects, N more."""
    meta, sim = make_1d_metad(tmp_path, seed=7)
    meta.step(sim, 4000)
    meta.saveState(tmp_path / "state")
    checkpoint = sim.context.createCheckpoint()
    meta.step(sim, 4000)
    straight = meta.getBias().copy()

    meta2, sim2 = make_1d_metad(tmp_path, seed=99)
    meta2.loadState(tmp_path / "state")
    sim2.context.loadCheckpoint(checkpoint)
    assert sim2.currentStep == 4000  # the step count travels with the checkpoint
    meta2.step(sim2, 4000)
    np.testing.assert_array_equal(meta2.getBias(), straight)
    assert meta2.numDeposits == meta.numDeposits == 80
    for key in ("step", "bias_kjmol", "ct_kjmol"):
        np.testing.assert_array_equal(meta2.getRecords()[key], meta.getRecords()[key])


def test_load_state_refuses_mismatch_and_torn_files(tmp_path):
    meta, sim = make_1d_metad(tmp_path)
    meta.step(sim, 1000)
    meta.saveState(tmp_path / "s")
    model = identity_model(tmp_path / "y.pt", 1, 1)
    other = LatentMetadynamics(particle_system(DOUBLE_WELL_1D), model, [LatentVariable(0, -1.0, 1.0, 0.05, gridWidth=101)],
                               300.0, biasFactor=8.0, height=0.5, frequency=100)
    with pytest.raises(ValueError, match="biasFactor"):
        other.loadState(tmp_path / "s")
    npz = tmp_path / "s.npz"
    npz.write_bytes(npz.read_bytes()[:-10])
    with pytest.raises(ValueError, match="does not match"):
        meta.loadState(tmp_path / "s")


WALKER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    import numpy as np
    from latentbias.bias import LatentMetadynamics, LatentVariable
    from toy import DOUBLE_WELL_1D, identity_model, particle_simulation, particle_system
    name, seed, folder = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    system = particle_system(DOUBLE_WELL_1D)
    meta = LatentMetadynamics(system, folder + "/x.pt", [LatentVariable(0, -1.0, 1.0, 0.05, gridWidth=101)], 300.0,
                              biasFactor=6.0, height=0.5, frequency=50, saveFrequency=500, biasDir=folder + "/bias",
                              walkerId=name)
    sim = particle_simulation(system, [-0.5 if seed == 1 else 0.5], seed=seed)
    meta.step(sim, 20000)
    np.save(folder + "/" + name + "_total.npy", meta.getBias())
    np.save(folder + "/" + name + "_self.npy", meta._selfBias)
    """
)


def test_two_walker_processes_share_one_bias(tmp_path):
    identity_model(tmp_path / "x.pt", 1, 1)
    script = tmp_path / "walker.py"
    script.write_text(WALKER.format(tests=str(TESTS)))
    procs = [subprocess.Popen([sys.executable, str(script), name, str(seed), str(tmp_path)], stderr=subprocess.PIPE,
                              text=True) for name, seed in (("A", 1), ("B", 2))]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
    a_self, b_self = np.load(tmp_path / "A_self.npy"), np.load(tmp_path / "B_self.npy")
    a_total = np.load(tmp_path / "A_total.npy")
    # A's total includes (a saved snapshot of) B's bias: more than its own, at most its own plus B's final
    assert (a_total - a_self).max() > 1.0
    assert np.all(a_total - a_self <= b_self + 1e-9)
    # the walkers explored different wells first, so each one's bias is broad
    assert a_self.sum() > 0 and b_self.sum() > 0
    # a new walker sees exactly the sum of both final files
    system = particle_system(DOUBLE_WELL_1D)
    c = LatentMetadynamics(system, tmp_path / "x.pt", [LatentVariable(0, -1.0, 1.0, 0.05, gridWidth=101)], 300.0,
                           6.0, 0.5, 50, saveFrequency=500, biasDir=tmp_path / "bias", walkerId="C")
    np.testing.assert_allclose(c.getBias(), a_self + b_self, atol=1e-12)


def run_2d_multiwell(tmp_path, steps: int) -> float:
    """2-D three-well potential, identity encoder on (x, y), friction 1/ps; RMSE (kJ/mol) where F < 15 kJ/mol of
    the FES averaged over the second half of the run."""
    model = identity_model(tmp_path / "xy.pt", 1, 2)
    system = particle_system(MULTI_WELL_2D)
    variables = [LatentVariable(0, -1.2, 1.2, 0.05, gridWidth=61), LatentVariable(1, -1.2, 1.2, 0.05, gridWidth=61)]
    meta = LatentMetadynamics(system, model, variables, 300.0, biasFactor=10.0, height=0.5, frequency=100)
    sim = particle_simulation(system, [0.6, 0.3], seed=5, friction=1.0)
    snapshots = []
    for k in range(10):
        meta.step(sim, steps // 10)
        if k >= 5:
            snapshots.append(meta.getFreeEnergy().value_in_unit(unit.kilojoule_per_mole))
    gx, gy = np.meshgrid(*meta.getGridAxes(), indexing="ij")
    return rmse_below(np.mean(snapshots, axis=0), multi_well_2d(gx, gy), 15.0)


def test_2d_multiwell_free_energy_short(tmp_path):
    """Short version for the default suite: 400k steps (1.6 ns), RMSE <= 1.5 kJ/mol where F < 15 kJ/mol."""
    assert run_2d_multiwell(tmp_path, 400_000) <= 1.5


@pytest.mark.slow
def test_2d_multiwell_free_energy_matches_analytic(tmp_path):
    """1.2M steps (4.8 ns): RMSE <= 1 kJ/mol where F < 15 kJ/mol."""
    assert run_2d_multiwell(tmp_path, 1_200_000) <= 1.0


def test_bad_metadynamics_input(tmp_path):
    model = identity_model(tmp_path / "x.pt", 1, 1)
    v = [LatentVariable(0, -1, 1, 0.1)]
    with pytest.raises(ValueError, match="biasFactor"):
        LatentMetadynamics(bare_system(1), model, v, 300, 1.0, 1.0, 10)
    with pytest.raises(ValueError, match="latent_dim=1"):
        LatentMetadynamics(bare_system(1), model, [LatentVariable(1, -1, 1, 0.1)], 300, 5.0, 1.0, 10)
    with pytest.raises(ValueError, match="saveFrequency and biasDir"):
        LatentMetadynamics(bare_system(1), model, v, 300, 5.0, 1.0, 10, saveFrequency=100)
    with pytest.raises(ValueError, match="multiple of frequency"):
        LatentMetadynamics(bare_system(1), model, v, 300, 5.0, 1.0, 10, saveFrequency=15, biasDir=tmp_path / "b")
    with pytest.raises(ValueError, match="minValue < maxValue"):
        LatentVariable(0, 1, -1, 0.1)
    with pytest.raises(ValueError, match="built for 1 atoms"):
        LatentMetadynamics(bare_system(2), model, v, 300, 5.0, 1.0, 10)


def test_damaged_walker_file_is_never_used_and_named(tmp_path, caplog):
    """biasDir walker files carry a checksum of their arrays (issue 9 item 3): a file whose bias values changed on
    disk is left out, with a warning naming it, instead of silently biasing every other walker."""
    import logging

    identity_model(tmp_path / "x.pt", 1, 1)
    variables = [LatentVariable(0, -1.0, 1.0, 0.05, gridWidth=101)]

    def walker(name):
        system = particle_system(DOUBLE_WELL_1D)
        meta = LatentMetadynamics(system, tmp_path / "x.pt", variables, 300.0, 6.0, 0.5, 50, saveFrequency=100,
                                  biasDir=tmp_path / "bias", walkerId=name)
        return meta, particle_simulation(system, [-0.5], seed=3)

    a, sim = walker("A")
    a.step(sim, 400)
    path = tmp_path / "bias" / "bias_A.npz"
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    assert "__sha256__" in arrays  # latentbias.io.NPZ_CHECKSUM_KEY
    np.testing.assert_allclose(walker("B")[0].getBias(), a.getBias(), atol=1e-12)  # intact: used as it is
    arrays["selfBias"] = arrays["selfBias"] * 2.0  # a valid npz, the old checksum
    np.savez(path, **arrays)
    with caplog.at_level(logging.WARNING, logger="latentbias.bias.metadynamics"):
        c, _ = walker("C")
    assert np.all(c.getBias() == 0.0)
    assert any(str(path) in r.getMessage() and "left out" in r.getMessage() for r in caplog.records)
