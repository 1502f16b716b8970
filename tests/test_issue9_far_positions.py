"""Issue 9 reproducer "positions at 1e8 nm give NaN/inf forces with a finite energy and no error", on every route
that runs without a GPU: the native LatentBiasForce (Reference and CPU, TorchScript and native evaluation paths;
OpenCL when present), the TorchForce of a LatentRestraint and the CustomCVForce metadynamics backend.

One atom of alanine dipeptide is moved to x = 1e8 nm. Two outcomes are allowed, never NaN/inf forces, a silent
zero force, a hang or a crash:

* the energy overflows (``PowerDistance``: z = r^20 is finite, ½ k z² is not): an exception that names the atoms
  (native) or the latent component, its value and the far atom (openmm-torch routes);
* the energy is finite (a latentbias model with unbounded SiLU activations, z ~ 1e9): finite forces equal to
  -dE/dx of the model's own float64 autograd (relative 1e-6 of the largest force; the native path agrees with
  TorchScript to 1e-9, tests/test_native_path.py), so a zero or NaN force on any route fails.
"""

from __future__ import annotations

import re
from typing import Optional

import numpy as np
import openmm
import pytest
import torch
from torch import Tensor

import latentbias as lb
from latentbias import native
from latentbias.bias.backends import CustomCVBackend
from latentbias.bias.grid import BiasGrid, LatentVariable
from latentbias.bias.restraint import LatentRestraint
from latentbias.export import save_cv_module
from latentbias.nonfinite import overflow_limit

from conftest import perturbed_frames
from test_export_forces import bare_system

FAR_ATOM, FAR = 5, 1.0e8  # nm
K_RESTRAINT = 40.0  # kJ/mol per z^2
K_WALL = 1000.0  # CustomCVBackend's default wall constant
GRID = (-5.0, 5.0, 21)
RTOL = 1e-6


class PowerDistance(torch.nn.Module):
    """z0 = |x5 - x0|^20 (nm^20): 1e160 at 1e8 nm, finite, but ½ k z0² overflows float64."""

    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tensor:
        p = positions.to(torch.float64)
        return (torch.sqrt(((p[5] - p[0]) ** 2).sum()) ** 20.0).reshape(1)


def _cpu_platforms():
    names = {openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())}
    return [p for p in ("Reference", "CPU") if p in names]


@pytest.fixture(scope="module")
def ala2_far(ala2):
    _, top, xyz = ala2
    far = xyz.copy()
    far[FAR_ATOM] = [FAR, 0.0, 0.0]
    return top, xyz, far


@pytest.fixture(scope="module")
def silu_model(ala2_far, tmp_path_factory):
    """A latentbias model (distances -> SiLU encoder, float64, native description) with random weights."""
    top, xyz, _ = ala2_far
    feat = lb.Distances.from_selection(top, "element != H")
    torch.manual_seed(3)
    ae = lb.FeatureAutoencoder(feat.n_features, 2, hidden=(16, 12), activation="silu", decoder=False)
    ae.standardizer.fit(lb.features.featurize(feat, perturbed_frames(xyz, 40, scale=0.03)))
    path = tmp_path_factory.mktemp("far") / "silu.pt"
    lb.save_model(lb.LatentModel(feat, ae, xyz.shape[0]).double(), path, dtype="float64")
    return path


@pytest.fixture(scope="module")
def power_model(tmp_path_factory):
    return save_cv_module(PowerDistance(), tmp_path_factory.mktemp("far") / "power.pt", n_atoms=22, latent_dim=1)


def _evaluate(system, positions, platform):
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform))
    ctx.setPositions(positions)
    state = ctx.getState(getEnergy=True, getForces=True)
    return state.getPotentialEnergy()._value, state.getForces(asNumpy=True)._value


def _native_restraint(path, centers, evaluation_path):
    system = bare_system(22)
    force = native.load().LatentBiasForce.fromModelData(path.read_bytes())
    force.setEvaluationPath(evaluation_path)
    for c, z0 in enumerate(centers):
        force.addRestraint(c, "", float(z0), "", K_RESTRAINT)
    system.addForce(force)
    return system


def _torchforce_restraint(path, centers):
    system = bare_system(22)
    LatentRestraint(lb.load_model(path), system, centers=list(centers), forceConstants=K_RESTRAINT,
                    backend="torchforce")
    return system


def _customcv(path, dims):
    system = bare_system(22)
    CustomCVBackend(lb.load_model(path), system,
                    BiasGrid([LatentVariable(i, GRID[0], GRID[1], (GRID[1] - GRID[0]) / (GRID[2] - 1),
                                             gridWidth=GRID[2]) for i in range(dims)]))
    return system


def _reference(path, positions, energy_of_z):
    """Energy and forces (-dE/dx) from the model's own TorchScript module in float64 autograd."""
    x = torch.tensor(positions, dtype=torch.float64, requires_grad=True)
    e = energy_of_z(lb.load_model(path).module(x, None).to(torch.float64))
    (g,) = torch.autograd.grad(e, x)
    return float(e.detach()), -g.numpy()


def _restraint_energy(centers):
    c = torch.as_tensor(centers, dtype=torch.float64)
    return lambda z: 0.5 * K_RESTRAINT * ((z - c) ** 2).sum()


def _wall_energy(z):  # the grid holds zeros: only the edge walls act outside [GRID[0], GRID[1]]
    return 0.5 * K_WALL * (torch.clamp(z - GRID[1], min=0.0) ** 2 + torch.clamp(GRID[0] - z, min=0.0) ** 2).sum()


def _assert_matches(got, want):
    (e, f), (e_ref, f_ref) = got, want
    assert np.isfinite(e) and np.all(np.isfinite(f))
    scale = np.abs(f_ref).max()
    assert scale > 1e6  # the true force at 1e8 nm is large, never zero for this model
    assert e == pytest.approx(e_ref, rel=RTOL)
    np.testing.assert_allclose(f, f_ref, rtol=0, atol=RTOL * scale)


# ------------------------------------------------------------------------------ finite energy: exact forces

@pytest.mark.skipif(not native.is_available(), reason="native plugin not built")
@pytest.mark.parametrize("platform", _cpu_platforms())
@pytest.mark.parametrize("evaluation_path", ["native", "torch"])
def test_native_force_at_1e8_nm_gives_the_models_exact_finite_forces(silu_model, ala2_far, platform,
                                                                       evaluation_path):
    _, xyz, far = ala2_far
    centers = lb.load_model(silu_model).encode(xyz) + 0.3
    got = _evaluate(_native_restraint(silu_model, centers, evaluation_path), far, platform)
    _assert_matches(got, _reference(silu_model, far, _restraint_energy(centers)))


def test_torchforce_restraint_at_1e8_nm_gives_the_models_exact_finite_forces(silu_model, ala2_far):
    _, xyz, far = ala2_far
    centers = lb.load_model(silu_model).encode(xyz) + 0.3
    got = _evaluate(_torchforce_restraint(silu_model, centers), far, "Reference")
    _assert_matches(got, _reference(silu_model, far, _restraint_energy(centers)))


def test_customcv_walls_at_1e8_nm_give_the_models_exact_finite_forces(silu_model, ala2_far):
    _, _, far = ala2_far
    z = lb.load_model(silu_model).encode(far)
    assert np.abs(z).max() > 1e6 and np.abs(z).max() < overflow_limit(K_WALL, 2)  # far outside the grid, finite
    got = _evaluate(_customcv(silu_model, 2), far, "Reference")
    _assert_matches(got, _reference(silu_model, far, _wall_energy))


@pytest.mark.skipif(not native.is_available(), reason="native plugin not built")
def test_opencl_native_path_at_1e8_nm_is_finite(silu_model, ala2_far):
    """float32 on the device: 1e8 nm has an 8 nm rounding step, so only finiteness and the energy (1e-3) are
    compared."""
    try:
        openmm.Platform.getPlatformByName("OpenCL")
    except openmm.OpenMMException:
        pytest.skip("no OpenCL platform")
    _, xyz, far = ala2_far
    centers = lb.load_model(silu_model).encode(xyz) + 0.3
    try:
        e, f = _evaluate(_native_restraint(silu_model, centers, "native"), far, "OpenCL")
    except openmm.OpenMMException as exc:  # a device without a usable OpenCL context
        if "non-finite" in str(exc) or "not finite" in str(exc):
            raise
        pytest.skip(f"OpenCL context unavailable: {str(exc).splitlines()[0]}")
    e_ref, _ = _reference(silu_model, far, _restraint_energy(centers))
    assert np.isfinite(e) and np.all(np.isfinite(f)) and np.abs(f).max() > 1e6
    assert e == pytest.approx(e_ref, rel=1e-3)


# ---------------------------------------------------------------------------- overflowing energy: an error

@pytest.mark.skipif(not native.is_available(), reason="native plugin not built")
@pytest.mark.parametrize("platform", _cpu_platforms())
def test_native_force_at_1e8_nm_with_an_overflowing_energy_names_the_atoms(power_model, ala2_far, platform):
    _, xyz, far = ala2_far
    system = _native_restraint(power_model, [0.0], "torch")
    assert np.isfinite(_evaluate(system, xyz, platform)[0])
    with pytest.raises(openmm.OpenMMException, match=r"energy is inf .*not finite on 2 atom\(s\) \(indices 0, 5\)"):
        _evaluate(system, far, platform)


@pytest.mark.parametrize("route", ["torchforce-restraint", "customcv"])
def test_openmm_torch_routes_at_1e8_nm_with_an_overflowing_energy_name_the_component_and_the_atom(
        power_model, ala2_far, route):
    """Before: energy inf and inf forces with no error on both routes (the module checked z, which is finite)."""
    _, xyz, far = ala2_far
    system = _torchforce_restraint(power_model, [0.0]) if route == "torchforce-restraint" else _customcv(power_model, 1)
    assert np.isfinite(_evaluate(system, xyz, "Reference")[0])
    with pytest.raises(openmm.OpenMMException) as info:
        _evaluate(system, far, "Reference")
    what = (r"the bias energy is inf at the finite latent values z\[0\] = \[9\.9999\d*e\+159\] \(too large"
            if route == "torchforce-restraint" else
            r"latent component\(s\) z\[0\] = \[9\.9999\d*e\+159\] exceed \|z\| <= 2\.998\d*e\+152, beyond which")
    assert re.search(what, str(info.value))
    assert re.search(rf"the atom farthest from the origin is {FAR_ATOM} at 100000000\.0? nm", str(info.value))


def test_overflow_limit_is_the_largest_z_with_a_finite_wall_energy():
    lim = overflow_limit(K_WALL, 3)
    wall = lambda z: 3 * 0.5 * K_WALL * (z - GRID[1]) ** 2  # noqa: E731
    with np.errstate(over="ignore"):
        assert np.isfinite(wall(lim)) and not np.isfinite(wall(2.5 * lim))
    assert overflow_limit(0.0) == float("inf")
