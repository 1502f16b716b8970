"""Every force path × every OpenMM platform present (as openmm-torch's TestTorchForce.py), issue 15 item 4.

Routes for a latent bias:

* ``native`` — the fused ``LatentBiasForce`` plugin (restraint: ``LatentRestraint(backend="native")``; grid:
  ``FusedBackend``);
* ``torchforce`` — one openmm-torch ``TorchForce`` computing the whole bias in TorchScript (restraint only);
* ``customcv`` — a ``CustomCVForce`` whose variables are one ``TorchForce`` per latent component (restraint: an
  algebraic expression; grid: ``CustomCVBackend``'s tabulated function).

Each combination that can run must give the energy and forces of one reference computed here from the model
with torch autograd (so all routes agree with each other), and forces equal to central finite differences of
its own energy. Combinations that cannot run are skipped with the reason; a TorchForce is never put in an OpenCL
Context (openmmtorch 1.5's OpenCL plugin is ABI-broken against openmm 8.5.2 and kills the process).

On OpenCL (single precision by default) the native route is compared with the float64 autograd reference and with
the CustomCVForce route run on Reference, to 1e-3 of the largest force (float32 arithmetic), and finite differences
use h = 1e-3 nm with a 1e-2 tolerance (float32 energies resolve ~1e-6 kJ/mol).
"""

from __future__ import annotations

import numpy as np
import openmm
import pytest
import torch

import latentbias as lb
from latentbias import native
from latentbias.bias import LatentRestraint
from latentbias.bias.backends import CustomCVBackend
from latentbias.bias.grid import BiasGrid, LatentVariable

from conftest import perturbed_frames
from test_export_forces import bare_system, check_finite_differences, energy_and_forces, make_context

PLATFORMS = ["Reference", "CPU", "OpenCL"]
ROUTES = ["native", "torchforce", "customcv"]
CENTER_SHIFT = np.array([0.3, -0.2])
K = np.array([50.0, 80.0])  # kJ/mol per (unit of z)^2


def _present(name: str) -> bool:
    return any(openmm.Platform.getPlatform(i).getName() == name for i in range(openmm.Platform.getNumPlatforms()))


def _skip_reason(platform: str, route: str, kind: str) -> str | None:
    if not _present(platform):
        return f"OpenMM platform {platform} is not available here"
    if route == "native" and not native.is_available():
        return f"native LatentBiasForce plugin not built: {native.unavailable_reason()}"
    if platform == "OpenCL" and route in ("torchforce", "customcv"):
        return ("never create a TorchForce Context on OpenCL: openmmtorch 1.5's OpenCL plugin is ABI-broken against "
                "openmm 8.5.2 and kills the process (DESIGN.md section 1)")
    if platform == "OpenCL" and route == "native" and not openmm.Platform.getPlatformByName("OpenCL").supportsKernels(
            [native.KERNEL_NAME]):
        return "the LatentBiasForce plugin was built without its OpenCL kernels (no OpenCL library at build time)"
    if kind == "grid" and route == "torchforce":
        return "no TorchForce-only grid route: the tabulated bias is a CustomCVForce function or the native force"
    return None


def _fd_options(platform: str) -> dict:
    return {"h": 1e-3, "rtol": 1e-2} if platform == "OpenCL" else {}


def _reference(model_file, xyz: np.ndarray, energy_of_z) -> tuple[float, np.ndarray]:
    """Energy and forces (kJ/mol, kJ/mol/nm) by autograd through the exported TorchScript model, float64."""
    x = torch.as_tensor(xyz, dtype=torch.float64).requires_grad_(True)
    e = energy_of_z(model_file.module(x, None).to(torch.float64))
    (grad,) = torch.autograd.grad(e, x)
    return float(e.detach()), -grad.numpy()


def _restraint_force(route: str, mf, system, centers):
    if route in ("native", "torchforce"):
        return LatentRestraint(mf, system, centers=centers, forceConstants=K, forceGroup=3, backend=route).force
    terms = [f"0.5*{float(k)!r}*(z{i}-({float(c)!r}))^2" for i, (k, c) in enumerate(zip(K, centers))]
    force = openmm.CustomCVForce(" + ".join(terms))
    for i, f in enumerate(lb.latent_cv_forces(mf, system)):
        force.addCollectiveVariable(f"z{i}", f)
    force.setForceGroup(3)
    system.addForce(force)
    return force


GRID_VARS = [LatentVariable(0, -3.0, 3.0, 0.4, gridWidth=31), LatentVariable(1, -3.0, 3.0, 0.4, gridWidth=31)]


def _grid_values() -> np.ndarray:
    """A smooth bias on the grid: two Gaussian hills (kJ/mol)."""
    gx, gy = np.meshgrid(GRID_VARS[0].axis, GRID_VARS[1].axis, indexing="ij")
    return 6.0 * np.exp(-((gx - 0.4) ** 2 + (gy + 0.3) ** 2) / 1.2) + 3.0 * np.exp(-((gx + 0.8) ** 2 + gy**2) / 0.8)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("platform", PLATFORMS)
def test_restraint_routes_agree_with_autograd_and_finite_differences(ala2, ala2_model, platform, route):
    reason = _skip_reason(platform, route, "restraint")
    if reason:
        pytest.skip(reason)
    _, _, xyz = ala2
    mf = lb.load_model(ala2_model)
    centers = mf.encode(xyz) + CENTER_SHIFT
    system = bare_system(22)
    _restraint_force(route, mf, system, centers)
    ctx, _ = make_context(system, xyz, platform)
    c, k = torch.as_tensor(centers), torch.as_tensor(K)
    rtol = {"Reference": 1e-9, "CPU": 1e-5, "OpenCL": 1e-3}[platform]  # CPU accumulates forces in single precision
    for frame in perturbed_frames(xyz, 3, scale=0.01, seed=4):
        ctx.setPositions(frame)
        e, f = energy_and_forces(ctx, 1 << 3)
        e_ref, f_ref = _reference(mf, frame, lambda z: 0.5 * (k * (z - c) ** 2).sum())
        assert e == pytest.approx(e_ref, rel=rtol, abs=1e-9)
        np.testing.assert_allclose(f, f_ref, rtol=rtol, atol=rtol * np.abs(f_ref).max())
    check_finite_differences(ctx, xyz, 1 << 3, **_fd_options(platform))


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("platform", PLATFORMS)
def test_grid_routes_agree_with_each_other_and_finite_differences(ala2, ala2_model, platform, route):
    """Grid (metadynamics) bias: the native force and the CustomCVForce route on the same table. Both use
    OpenMM-style bicubic splines, so they are compared with each other (1e-6 relative) rather than with a
    hand-written interpolation; forces against finite differences."""
    reason = _skip_reason(platform, route, "grid")
    if reason:
        pytest.skip(reason)
    _, _, xyz = ala2
    mf = lb.load_model(ala2_model)
    results = {}
    for r in ["customcv", route] if route != "customcv" else ["customcv"]:
        system = bare_system(22)
        if r == "native":
            from latentbias.bias.fused import FusedBackend

            backend = FusedBackend(mf, system, BiasGrid(GRID_VARS), 500.0, 4)
        else:
            backend = CustomCVBackend(mf, system, BiasGrid(GRID_VARS), 500.0, 4)
        backend.set_grid(_grid_values(), None)
        # the CustomCVForce route cannot run on OpenCL (TorchForce): it is the Reference comparison there
        ctx, _ = make_context(system, xyz, "Reference" if (platform == "OpenCL" and r == "customcv") else platform)
        out = []
        for frame in perturbed_frames(xyz, 3, scale=0.01, seed=6):
            ctx.setPositions(frame)
            out.append(energy_and_forces(ctx, 1 << 4))
        results[r] = out
        if r == route:
            e0, _ = energy_and_forces(ctx, 1 << 4)
            assert abs(e0) > 0.1  # the bias acts where the frames are (not a trivially zero energy)
            check_finite_differences(ctx, xyz, 1 << 4, **_fd_options(platform))
    rtol = {"Reference": 1e-6, "CPU": 1e-5, "OpenCL": 1e-3}[platform]
    for (e_a, f_a), (e_b, f_b) in zip(results["customcv"], results[route]):
        assert e_b == pytest.approx(e_a, rel=rtol, abs=1e-9)
        np.testing.assert_allclose(f_b, f_a, rtol=rtol, atol=rtol * np.abs(f_a).max())
