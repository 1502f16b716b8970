"""Cheap deposits (issue 10 item 6) must not change what metadynamics records or saves.

* :class:`~latentbias.bias.ctcache.RunningCt` (c(t) updated on each deposit's window) equals the full-grid
  log-sum-exp of :func:`~latentbias.analysis.reweight.well_tempered_ct` to rounding, through rescales, periodic
  full evaluations, scale changes and invalidations.
* ``LatentMetadynamics`` on the native path: every recorded c(t) equals ``well_tempered_ct`` of the bias grid at
  that deposit (1e-10 kJ/mol), and the saved bias grid equals, bit for bit, the sum of ``height · grid.gaussian(z)``
  over the recorded deposits (the arithmetic of the per-deposit full-grid update it replaces).
"""

from __future__ import annotations

import numpy as np
import pytest

import latentbias as lb
from latentbias import native
from latentbias.analysis.constants import kt_kjmol
from latentbias.analysis.reweight import well_tempered_ct
from latentbias.bias import LatentVariable
from latentbias.bias.ctcache import FULL_INTERVAL, RunningCt, gaussian_window
from latentbias.bias.grid import BiasGrid

from conftest import perturbed_frames, random_latent_model


@pytest.fixture(scope="module")
def ala2_model_d3(ala2, tmp_path_factory):
    """float64 model with d = 3 on ala2 heavy-atom distances (random weights)."""
    _, top, xyz = ala2
    feat = lb.Distances.from_selection(top, "element != H")
    model = random_latent_model(feat, top.n_atoms, perturbed_frames(xyz, 50), latent_dim=3, seed=3)
    path = tmp_path_factory.mktemp("deposits") / "ala2_d3.pt"
    lb.save_model(model, path, dtype="float64")
    return path


@pytest.mark.parametrize("shape,periodic,width", [
    ((60,), False, 0.15), ((25, 20), True, 0.15), ((12, 10, 9), False, 0.15), ((11, 10, 12), True, 0.15),  # whole grid
    ((400,), False, 0.02), ((90, 80), True, 0.03), ((40, 36, 30), False, 0.04),  # windows (strided updates)
])
@pytest.mark.parametrize("scale", [1.0, 0.4, 0.0, 2.0])
def test_running_ct_equals_full_logsumexp(shape, periodic, width, scale):
    """c(t) from window updates == well_tempered_ct of the same grid after every deposit (rel 1e-13), for
    many deposits (past FULL_INTERVAL), tall ones (past the rescale margin) and centres beyond the edges; both
    update branches (a window that is most of the grid, and a small window)."""
    variables = [LatentVariable(i, -1.0, 1.0, width, periodic=periodic, gridWidth=n) for i, n in enumerate(shape)]
    grid = BiasGrid(variables)
    rng = np.random.default_rng(3)
    temperature, gamma = 300.0, 8.0
    bias = np.zeros(grid.shape)
    running = RunningCt(temperature, gamma)
    scratch = np.empty(grid.shape)
    for k in range(FULL_INTERVAL + 30):
        expected = well_tempered_ct(bias, temperature, gamma, scale=scale)
        got = running.value(bias, scale)
        assert got == pytest.approx(expected, rel=1e-13, abs=1e-12), k
        height = 400.0 if k in (50, 51, 52) else rng.uniform(0.1, 2.0)  # tall: exponents beyond the margin
        centre = rng.uniform(-1.3, 1.3, size=len(shape))
        grid.add_gaussian(bias, centre, height, scratch)
        running.update(bias, running.window(grid, centre, height), height)
    bias += 5.0  # a change the cache was not told about ...
    running.invalidate()  # ... is followed by invalidate()
    assert running.value(bias, scale) == pytest.approx(well_tempered_ct(bias, temperature, gamma, scale=scale),
                                                       rel=1e-13, abs=1e-12)


def test_add_gaussian_is_bitwise_the_full_grid_update():
    """BiasGrid.add_gaussian (in place, scratch buffer) == values + height * gaussian(position), bit for bit."""
    for periodic, shape in ((False, (30,)), (True, (17, 13)), (False, (9, 11, 7))):
        grid = BiasGrid([LatentVariable(i, -2.0, 1.5, 0.3, periodic=periodic, gridWidth=n)
                         for i, n in enumerate(shape)])
        rng = np.random.default_rng(1)
        a = rng.normal(size=grid.shape)
        b = a.copy()
        for _ in range(5):
            centre, height = rng.uniform(-2.5, 2.0, size=len(shape)), rng.uniform(0.1, 3.0)
            a += height * grid.gaussian(centre)
            grid.add_gaussian(b, centre, height, np.empty(grid.shape))
        np.testing.assert_array_equal(a, b)


def test_gaussian_window_covers_the_support():
    """Outside gaussian_window(cut) every node's axis factor is below cut (centres inside, beyond an edge and
    across a periodic boundary), and the window of a narrow Gaussian is not the whole axis."""
    grid = BiasGrid([LatentVariable(0, 0.0, 10.0, 0.2, gridWidth=200),
                     LatentVariable(1, 0.0, 1.0, 0.05, periodic=True, gridWidth=41)])
    for centre in ([5.0, 0.5], [0.3, 0.01], [10.4, 0.99], [-0.5, 1.37], [13.0, -0.2]):
        for cut in (1e-17, 1e-12, 1e-3):
            factors = grid.gaussian_factors(centre)
            window = gaussian_window(grid, centre, cut)
            for g, w in zip(factors, window):
                outside = np.ones(len(g), bool)
                outside[w] = False
                assert np.all(g[outside] < cut), (centre, cut)
    assert gaussian_window(grid, [5.0, 0.5], 1e-17)[0].stop - gaussian_window(grid, [5.0, 0.5], 1e-17)[0].start < 80
    assert gaussian_window(grid, [5.0, 0.01], 1e-17)[1] == slice(0, 41)  # wraps the periodic axis
    with pytest.raises(ValueError, match="cut"):
        gaussian_window(grid, [5.0, 0.5], 1.0)


@pytest.mark.skipif(not native.is_available(), reason="native plugin not built")
@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_metadynamics_records_equal_full_recomputation(ala2_model_d3, scale):
    """Native path, d = 3, Reference: the recorded c(t) of every deposit equals well_tempered_ct of the grid at
    that moment (1e-10 kJ/mol; the deposit path updates it on the Gaussian's window only), the log-weights
    follow, and the bias grid equals the replayed full-grid sum of the recorded Gaussians bit for bit."""
    import openmm
    from openmm import app, unit

    from latentbias.bias import LatentMetadynamics
    from latentbias.bias.fused import FusedBackend
    from latentbias.testsystems import alanine_dipeptide_vacuum

    system, topology, positions = alanine_dipeptide_vacuum()
    mf = lb.load_model(ala2_model_d3)
    z = mf.encode(positions)
    variables = [LatentVariable(i, z[i] - 1.0, z[i] + 1.0, 0.15, gridWidth=24) for i in range(3)]
    meta = LatentMetadynamics(system, mf, variables, 300.0, 6.0, 3.0, 5, backend=FusedBackend)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.002 * unit.picoseconds)
    integrator.setRandomNumberSeed(5)
    sim = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName("Reference"))
    sim.context.setPositions(positions)
    expected = []
    deposit = meta._deposit

    def checked_deposit(simulation):
        expected.append(well_tempered_ct(meta.getBias(), meta.temperature, meta.biasFactor, scale=meta.biasScale))
        deposit(simulation)

    meta._deposit = checked_deposit
    meta.step(sim, 60)
    meta.setBiasScale(sim.context, scale)
    meta.step(sim, 140)
    rec = meta.getRecords()
    assert len(rec["ct_kjmol"]) == 40 and meta.numDeposits == 40
    np.testing.assert_allclose(rec["ct_kjmol"], expected, rtol=0, atol=1e-10)
    assert rec["ct_kjmol"][-1] > 0.5
    scales = np.where(np.arange(40) < 12, 1.0, scale)
    acting = scales * rec["bias_kjmol"] + rec["wall_kjmol"]
    np.testing.assert_allclose(rec["logweight"], (acting - np.asarray(expected)) / meta._kt, rtol=0, atol=1e-9)
    replay = np.zeros(meta.grid.shape)
    for zk, bias in zip(rec["z"], rec["bias_kjmol"]):
        replay += (meta.height * np.exp(-bias / kt_kjmol(meta._deltaT))) * meta.grid.gaussian(zk)
    np.testing.assert_array_equal(meta.getBias(), replay)
