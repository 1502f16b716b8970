"""Tests that kill mutants of ``latentbias/bias/fused.py`` and ``bias/metadynamics.py`` which survived their
mutation sessions (issue 15, helper mut15c, 2026-11-30). TESTING.md lists the mutants each test kills.
"""

from __future__ import annotations

import logging
import re

import numpy as np
import openmm
import pytest

import latentbias as lb
from latentbias import native
from latentbias.analysis import kt_kjmol
from latentbias.bias import BiasGrid, LatentMetadynamics, LatentRestraint, LatentVariable, steer
from latentbias.bias.fused import FusedBackend, default_grid_backend
from latentbias.export import load_model, save_cv_module

from test_restraint_exact import fixed_particles_simulation
from toy import DOUBLE_WELL_1D, identity_model, particle_simulation, particle_system

needs_plugin = pytest.mark.skipif(not native.is_available(), reason="native LatentBiasForce plugin not built")


@needs_plugin
def test_native_path_refused_for_a_model_without_description_names_the_file(tmp_path, caplog):
    """Bad input names the file: ``evaluationPath="native"`` on a TorchScript model without a native description
    (any model not built from latentbias featurizers + MLP) raises a ValueError whose message gives the model's
    path and the fix."""
    path = tmp_path / "plain_model.pt"
    identity_model(path, 1, 1)
    mf = load_model(path)
    assert not mf.has_native_description
    grid = BiasGrid([LatentVariable(0, -1.0, 1.0, 0.1, gridWidth=21)])
    with pytest.raises(ValueError, match=re.escape(str(path)) + r" has no native description.*'auto' or 'torch'"):
        FusedBackend(mf, particle_system(DOUBLE_WELL_1D), grid, evaluationPath="native")
    # the INFO line says why "auto" fell back to TorchScript; an explicit "torch" needs no reason
    for requested, reason in (("auto", True), ("torch", False)):
        with caplog.at_level(logging.INFO, logger="latentbias.bias.fused"):
            caplog.clear()
            backend = FusedBackend(mf, particle_system(DOUBLE_WELL_1D), grid, evaluationPath=requested)
        assert backend.force.getResolvedEvaluationPath() == "torch"
        (line,) = [r.getMessage() for r in caplog.records if "evaluation path" in r.getMessage()]
        assert line.startswith(f"LatentBiasForce for {path}: torch evaluation path (TorchScript through libtorch")
        assert ("the model has no native description" in line) is reason, line


@needs_plugin
def test_the_native_force_is_the_default_grid_backend_when_the_plugin_is_built(tmp_path):
    """Documented default backend: FusedBackend (one encoder pass per step) when the plugin is built."""
    assert default_grid_backend() is FusedBackend
    model = tmp_path / "x.pt"
    identity_model(model, 1, 1)
    meta = LatentMetadynamics(particle_system(DOUBLE_WELL_1D), model,
                              [LatentVariable(0, -1.0, 1.0, 0.05, gridWidth=41)], 300.0, biasFactor=6.0, height=0.5,
                              frequency=10)
    assert type(meta.backend) is FusedBackend


@needs_plugin
def test_fused_metadynamics_records_the_well_tempered_sum_of_its_gaussians(tmp_path):
    """A new FusedBackend acts unscaled (scale 1 = its Context parameter), so the bias recorded at each deposition
    is the sum of the earlier Gaussians at z: V(z_i) = Σ_{j<i} h_j exp(−(z_i − z_j)² / 2σ²) with the
    well-tempered heights h_j = w exp(−V(z_j) / k_B ΔT), ΔT = (γ − 1) T. Spline tolerance: grid step 0.02 for
    σ = 0.05 (relative error below 1e-3 here)."""
    model = tmp_path / "x.pt"
    identity_model(model, 1, 1)
    system = particle_system(DOUBLE_WELL_1D)
    w, sigma, gamma, temperature = 0.5, 0.05, 6.0, 300.0
    meta = LatentMetadynamics(system, model, [LatentVariable(0, -1.0, 1.0, sigma, gridWidth=101)], temperature,
                              biasFactor=gamma, height=w, frequency=5, backend=FusedBackend)
    assert isinstance(meta.backend, FusedBackend)
    sim = particle_simulation(system, [-0.5], seed=3)
    assert meta.biasScale == 1.0 == sim.context.getParameter(meta.backend.scale_parameter)
    meta.step(sim, 40)
    rec = meta.getRecords()
    z, bias = rec["z"][:, 0], rec["bias_kjmol"]
    assert len(z) == 8
    kdt = kt_kjmol((gamma - 1.0) * temperature)
    expected, heights = [], []
    for i in range(len(z)):
        v = sum(h * np.exp(-((z[i] - zj) ** 2) / (2 * sigma**2)) for h, zj in zip(heights, z[:i]))
        expected.append(v)
        heights.append(w * np.exp(-v / kdt))
    assert expected[-1] > 1.0  # the Gaussians overlap: the bias is far from zero
    np.testing.assert_allclose(bias, expected, rtol=2e-3, atol=1e-9)


def test_a_one_step_steering_run_moves_the_centres_to_the_target(tmp_path):
    """``steer`` with ``steps=1`` (any positive count is valid): one update to the target; on fixed (massless)
    particles the work is exactly V(z; end) − V(z; start) = ½ k [(z − 1.3)² − (z − 1.0)²] with z = 1.5 nm."""
    model = save_cv_module(lb.Distances([[0, 1]]), tmp_path / "d.pt", n_atoms=2, latent_dim=1)
    system = openmm.System()
    system.addParticle(0.0)
    system.addParticle(0.0)
    r = LatentRestraint(model, system, centers=[1.0], forceConstants=[100.0], forceGroup=3, backend="torchforce")
    sim = fixed_particles_simulation(system, np.array([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0]]))
    res = steer(sim, r, target=[1.3], steps=1, update_interval=10)
    np.testing.assert_array_equal(res.step, [0, 1])
    np.testing.assert_allclose(res.centers[:, 0], [1.0, 1.3], rtol=1e-15)
    np.testing.assert_allclose(res.work_kjmol, [0.0, 50.0 * (0.2**2 - 0.5**2)], rtol=1e-9)


def test_default_walker_ids_are_twelve_random_hex_digits(tmp_path):
    """The documented default ``walkerId``: 12 random hexadecimal digits (48 bits, so walkers started without an
    id do not overwrite each other's ``bias_<walkerId>.npz``); the docstring states the length."""
    model = tmp_path / "x.pt"
    identity_model(model, 1, 1)
    ids = []
    for _ in range(3):
        meta = LatentMetadynamics(particle_system(DOUBLE_WELL_1D), model,
                                  [LatentVariable(0, -1.0, 1.0, 0.05, gridWidth=41)], 300.0, biasFactor=6.0,
                                  height=0.5, frequency=10)
        ids.append(meta.walkerId)
    assert all(re.fullmatch(r"[0-9a-f]{12}", w) for w in ids), ids
    assert len(set(ids)) == 3
    doc = " ".join(LatentMetadynamics.__doc__.split())
    assert "walkerId : str, optional Name of this walker's file in ``biasDir`` (default: 12 random hexadecimal " \
           "digits" in doc


@pytest.mark.parametrize("backend", ["torchforce"] + (["native"] if native.is_available() else []))
@pytest.mark.parametrize("wall_k", [0.5, 1.0])
def test_soft_walls_act_whatever_their_force_constant(tmp_path, backend, wall_k):
    """A wall with a force constant at or below 1 kJ/mol/z² still acts: z = 1.5 nm beyond an upper wall at
    1.2 nm gives ½ k_c (z − c)² + ½ k_w (z − 1.2)² exactly (fixed particles, Reference platform)."""
    model = save_cv_module(lb.Distances([[0, 1]]), tmp_path / "d.pt", n_atoms=2, latent_dim=1)
    system = openmm.System()
    system.addParticle(0.0)
    system.addParticle(0.0)
    LatentRestraint(model, system, centers=[1.0], forceConstants=[2.0], upperWalls=[1.2],
                    wallForceConstant=wall_k, forceGroup=3, backend=backend)
    sim = fixed_particles_simulation(system, np.array([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0]]))
    energy = sim.context.getState(getEnergy=True, groups={3}).getPotentialEnergy()._value
    assert energy == pytest.approx(0.5 * 2.0 * 0.5**2 + 0.5 * wall_k * 0.3**2, rel=1e-9)


@needs_plugin
def test_a_loaded_model_whose_file_was_removed_still_builds_the_native_force(tmp_path):
    """The force is built from the loaded model's archive when its file is gone (``model_bytes``): z = x of the
    particle (identity model) and the bias of a linear table V = 2 + 3 z, exactly at the nodes."""
    path = tmp_path / "x.pt"
    identity_model(path, 1, 1)
    mf = load_model(path)
    path.unlink()
    system = particle_system("0")
    grid = BiasGrid([LatentVariable(0, -1.0, 1.0, 0.1, gridWidth=21)])
    backend = FusedBackend(mf, system, grid)
    backend.set_grid(2.0 + 3.0 * grid.axes[0], None)
    sim = fixed_particles_simulation(system, np.array([[0.4, 0.0, 0.0]]))
    np.testing.assert_allclose(backend.latent_values(sim.context), [0.4], rtol=1e-12)
    assert backend.energy(sim.context) == pytest.approx(2.0 + 3.0 * 0.4, rel=1e-9)
