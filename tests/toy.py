"""Analytic toy systems for bias validation: particles in CustomExternalForce potentials, identity 'encoders'."""

from __future__ import annotations

from typing import Optional

import numpy as np
import openmm
import torch
from openmm import app, unit
from torch import Tensor

import latentbias as lb
from latentbias.export import save_cv_module

KT_300 = 0.00831446261815324 * 300.0  # kJ/mol


class ParticleCoordinates(torch.nn.Module):
    """z = the first `dims` Cartesian coordinates (nm) of particle 0: an exact, trivial 'encoder'."""

    def __init__(self, dims: int):
        super().__init__()
        self.dims = dims

    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tensor:
        return positions[0, : self.dims].to(torch.float64)


def identity_model(path, n_particles: int, dims: int):
    return save_cv_module(ParticleCoordinates(dims), path, n_atoms=n_particles, latent_dim=dims,
                          atom_indices=[0], description=f"x[:{dims}] of particle 0 (nm)")


def particle_system(expression: str, n_particles: int = 1, mass: float = 10.0):
    """System of non-interacting particles, each in the external potential `expression` (kJ/mol, nm)."""
    system = openmm.System()
    force = openmm.CustomExternalForce(expression)
    for i in range(n_particles):
        system.addParticle(mass)
        force.addParticle(i, [])
    system.addForce(force)
    return system


def particle_simulation(system, x0, seed=1, temperature=300.0, friction=10.0, dt=0.004):
    n = system.getNumParticles()
    top = app.Topology()
    chain = top.addChain()
    for _ in range(n):
        res = top.addResidue("P", chain)
        top.addAtom("P", app.element.argon, res)
    integrator = openmm.LangevinMiddleIntegrator(temperature * unit.kelvin, friction / unit.picosecond,
                                                 dt * unit.picoseconds)
    integrator.setRandomNumberSeed(seed)
    sim = app.Simulation(top, system, integrator, openmm.Platform.getPlatformByName("Reference"))
    pos = np.zeros((n, 3))
    pos[0, : len(x0)] = x0
    sim.context.setPositions(pos)
    sim.context.setVelocitiesToTemperature(temperature * unit.kelvin, seed)
    return sim


# 1-D double well along x (kJ/mol, nm); y and z harmonic. Barrier 10 kJ/mol at x = 0, minima at x = ±0.5 nm.
DOUBLE_WELL_1D = "10*(4*x^2-1)^2 + 50*(y^2+z^2)"


def double_well_1d(x: np.ndarray) -> np.ndarray:
    return 10.0 * (4.0 * x**2 - 1.0) ** 2


# 2-D three-well potential in x, y (kJ/mol, nm); z harmonic. Barriers ~9-10 kJ/mol between the wells.
MULTI_WELL_2D = ("-15*exp(-((x-0.6)^2+(y-0.3)^2)/0.15) - 15*exp(-((x+0.6)^2+(y-0.3)^2)/0.15)"
                 " - 12*exp(-(x^2+(y+0.6)^2)/0.15) + 4*(x^2+y^2)^2 + 50*z^2")


def multi_well_2d(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (-15 * np.exp(-((x - 0.6) ** 2 + (y - 0.3) ** 2) / 0.15) - 15 * np.exp(-((x + 0.6) ** 2 + (y - 0.3) ** 2) / 0.15)
            - 12 * np.exp(-(x**2 + (y + 0.6) ** 2) / 0.15) + 4 * (x**2 + y**2) ** 2)


def analytic_fes_1d(x: np.ndarray, temperature: float = 300.0) -> np.ndarray:
    """Free energy along x of DOUBLE_WELL_1D (the y, z factors are constant), min 0."""
    f = double_well_1d(x)
    return f - f.min()


def bin_averaged_fes(potential, edges: np.ndarray, temperature: float = 300.0, n_sub: int = 200) -> np.ndarray:
    """Exact histogram free energy of a 1-D potential: -kT ln(mean over each bin of exp(-U/kT)), min 0."""
    kt = 0.00831446261815324 * temperature
    out = []
    for a, b in zip(edges[:-1], edges[1:]):
        x = np.linspace(a, b, n_sub)
        out.append(-kt * np.log(np.mean(np.exp(-potential(x) / kt))))
    out = np.array(out)
    return out - out.min()


def bin_averaged_fes_2d(potential, edges_x: np.ndarray, edges_y: np.ndarray, temperature: float = 300.0,
                        n_sub: int = 12) -> np.ndarray:
    """Exact 2-D histogram free energy: -kT ln(mean over each bin of exp(-U(x, y)/kT)), min 0, indexed [ix, iy]."""
    kt = 0.00831446261815324 * temperature
    out = np.empty((len(edges_x) - 1, len(edges_y) - 1))
    for i, (a, b) in enumerate(zip(edges_x[:-1], edges_x[1:])):
        for j, (c, d) in enumerate(zip(edges_y[:-1], edges_y[1:])):
            gx, gy = np.meshgrid(np.linspace(a, b, n_sub), np.linspace(c, d, n_sub), indexing="ij")
            out[i, j] = -kt * np.log(np.mean(np.exp(-potential(gx, gy) / kt)))
    return out - out.min()
