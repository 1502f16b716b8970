"""The CustomCVForce grid backend against closed forms: a tabulated plane plus edge walls on z = particle coordinates.

OpenMM's splines reproduce a linear table exactly, so the energy and force of the backend at any point inside the
grid are those of the plane, and beyond an edge they are the plane at the edge plus the harmonic wall
½ k (z − edge)² (OpenMM issue 3805: the table alone would exert no force there). Also the scale parameter, table
updates in a live Context, the free force group and the input contract. Fast (one-particle System); they run
first in the mutation session of ``bias/backends.py`` (TESTING.md, "Mutation testing").
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import openmm
import pytest
import torch
from torch import Tensor

from latentbias.bias import BiasGrid, LatentVariable
from latentbias.bias.backends import CustomCVBackend, free_force_group
from latentbias.export import save_cv_module
from latentbias.forces import as_model_file

from test_export_forces import bare_system, energy_and_forces, make_context


class FirstParticle(torch.nn.Module):
    """z = the coordinates of particle 0 (nm)."""

    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tensor:
        return positions[0].to(torch.float64)


@pytest.fixture(scope="module")
def xyz_model(tmp_path_factory):
    path = save_cv_module(FirstParticle(), tmp_path_factory.mktemp("m") / "xyz.pt", n_atoms=1, latent_dim=3)
    return as_model_file(path)


A, B, C = 2.0, 3.0, -1.5  # the plane V = A + B z0 + C z1, kJ/mol


def plane_grid():
    grid = BiasGrid([LatentVariable(0, -1.0, 1.0, 0.1, gridWidth=21), LatentVariable(1, 0.0, 2.0, 0.1, gridWidth=11)])
    z0, z1 = np.meshgrid(*grid.axes, indexing="ij")
    return grid, A + B * z0 + C * z1


def test_free_force_group_prefers_31_then_the_highest_unused():
    system = bare_system(1)
    assert free_force_group(system) == 31
    assert free_force_group(system, preferred=7) == 7
    for group in (31, 30, 5):
        f = openmm.CustomExternalForce("0")
        f.setForceGroup(group)
        system.addForce(f)
    assert free_force_group(system) == 29
    assert free_force_group(system, preferred=5) == 29
    assert free_force_group(system, preferred=6) == 6
    only5 = bare_system(1)
    f = openmm.CustomExternalForce("0")
    f.setForceGroup(5)
    only5.addForce(f)
    assert free_force_group(only5, preferred=5) == 31
    for group in range(32):
        f = openmm.CustomExternalForce("0")
        f.setForceGroup(group)
        system.addForce(f)
    with pytest.raises(RuntimeError, match="all 32 force groups"):
        free_force_group(system)


def test_tabulated_plane_and_edge_walls_give_the_closed_form_energy_and_force(xyz_model):
    grid, values = plane_grid()
    system = bare_system(1)
    backend = CustomCVBackend(xyz_model, system, grid, wallForceConstant=500.0)
    assert backend.force_group == 31 and backend.forces() == [backend.force]
    assert backend.scale_parameter == "latent_bias_scale_31"
    ctx, _ = make_context(system, np.zeros((1, 3)), "Reference")
    assert backend.scale == ctx.getParameter(backend.scale_parameter) == 1.0  # unscaled until set_scale
    assert backend.energy(ctx) == pytest.approx(0.0, abs=1e-12)  # a new backend's table is zero
    backend.set_grid(values, ctx)
    # inside the grid (including the last cell of each axis): the plane and its gradient
    for z in ([0.13, 0.77], [0.95, 1.93], [-0.97, 0.04]):
        ctx.setPositions([[z[0], z[1], 0.4]])
        e, f = energy_and_forces(ctx, 1 << 31)
        assert e == pytest.approx(A + B * z[0] + C * z[1], rel=1e-9)
        np.testing.assert_allclose(f[0], [-B, -C, 0.0], rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(backend.latent_values(ctx), z, rtol=1e-12)
        assert backend.wall_energy(np.array(z)) == 0.0
    # beyond z0's upper edge by 0.3 and z1's lower edge by 0.2: the plane at the corner plus both walls
    z = np.array([1.3, -0.2])
    ctx.setPositions([[z[0], z[1], 0.0]])
    e, f = energy_and_forces(ctx, 1 << 31)
    walls = 0.5 * 500.0 * (0.3**2 + 0.2**2)
    assert backend.wall_energy(z) == pytest.approx(walls, rel=1e-14)
    assert e == pytest.approx(A + B * 1.0 + C * 0.0 + walls, rel=1e-9)
    np.testing.assert_allclose(f[0], [-500.0 * 0.3, 500.0 * 0.2, 0.0], rtol=1e-7)
    assert backend.energy(ctx) == pytest.approx(e, rel=1e-12)
    # the scale multiplies the table, not the walls
    backend.set_scale(0.25, ctx)
    assert backend.scale == 0.25 and ctx.getParameter(backend.scale_parameter) == 0.25
    assert backend.energy(ctx) == pytest.approx(0.25 * (A + B) + walls, rel=1e-9)
    backend.set_scale(1.0, ctx)
    # a Gaussian added by the default add_gaussian replaces the table by values()
    backend.add_gaussian(np.zeros(2), 1.0, lambda: 2.0 * values, ctx)
    ctx.setPositions([[0.13, 0.77, 0.0]])
    assert backend.energy(ctx) == pytest.approx(2.0 * (A + B * 0.13 + C * 0.77), rel=1e-9)


def test_default_wall_constant_explicit_force_group_and_periodic_grids(xyz_model):
    grid = BiasGrid([LatentVariable(2, -1.0, 1.0, 0.2, gridWidth=11)])
    system = bare_system(1)
    backend = CustomCVBackend(xyz_model, system, grid, forceGroup=4)
    assert backend.force_group == 4 and backend.wall_force_constant == 1000.0
    ctx, _ = make_context(system, np.array([[0.0, 0.0, -1.1]]), "Reference")
    assert energy_and_forces(ctx, 1 << 4)[0] == pytest.approx(0.5 * 1000.0 * 0.1**2, rel=1e-9)
    assert backend.wall_energy(np.array([-1.1])) == pytest.approx(0.5 * 1000.0 * 0.1**2, rel=1e-12)
    # periodic variables have no walls: the table repeats with the period
    pgrid = BiasGrid([LatentVariable(0, -np.pi, np.pi, 0.3, periodic=True, gridWidth=40)])
    psys = bare_system(1)
    pb = CustomCVBackend(xyz_model, psys, pgrid, wallForceConstant=1e4)
    assert "max(0" not in pb.expression
    pb_values = np.cos(pgrid.axes[0])
    pctx, _ = make_context(psys, np.array([[0.5, 0.0, 0.0]]), "Reference")
    pb.set_grid(pb_values, pctx)
    e_in = pb.energy(pctx)
    pctx.setPositions([[0.5 + 2 * np.pi, 0.0, 0.0]])
    assert pb.energy(pctx) == pytest.approx(e_in, rel=1e-9)
    assert pb.wall_energy(np.array([10.0])) == 0.0
    assert e_in == pytest.approx(np.cos(0.5), abs=2e-3)  # spline of cos on 40 points
    mixed = BiasGrid([LatentVariable(0, -np.pi, np.pi, 0.3, periodic=True, gridWidth=10),
                      LatentVariable(1, 0.0, 1.0, 0.1, gridWidth=10)])
    with pytest.raises(ValueError, match="cannot mix periodic"):
        CustomCVBackend(xyz_model, bare_system(1), mixed)
