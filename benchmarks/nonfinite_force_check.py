"""Cost of checking the forces of the openmm-torch routes in the same evaluation (issue 9, item 1b).

The TorchForce modules latentbias builds (the ``LatentRestraint`` restraint with ``backend="torchforce"``, the
per-component forces of ``latent_component_force`` / the CustomCVForce backend) return their own forces
(``TorchForce.setOutputsForces(True)``): ``torch.autograd.grad`` inside the module, then one sum to check them
(:mod:`latentbias.nonfinite`). Before, openmm-torch ran the same backward pass itself and nothing checked the
forces. This script times both side by side on alanine dipeptide in vacuum (the ``benchmarks/overhead.py`` setup:
45 heavy-atom distances -> 64 -> 64 -> 3 tanh encoder, float32, LangevinMiddle 2 fs):

* ``restraint, d=3``: one TorchForce restraining z0..z2;
* ``CustomCVForce, d=3``: ``sum_i z_i^2`` of three ``latent_component_force`` variables (three TorchForces).

"unchecked" rebuilds the modules as they were (energy only, openmm-torch's backward). Rows are µs/step over
``--repeats`` blocks of ``--steps`` steps, the two variants run alternately: the minimum (the least disturbed block:
the machine this was written on is shared, medians move by tens of percent) and the median; "ratio" compares the
minima.

Run:  python benchmarks/nonfinite_force_check.py [--steps 400] [--repeats 5] [--platforms Reference CPU]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform as pyplatform
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np
import openmm
import torch
from openmm import app, unit
from torch import Tensor

import latentbias as lb
from latentbias.bias import LatentRestraint
from latentbias.bias.restraint import _collect, _Restraint
from latentbias.export import script_module
from latentbias.forces import _Component, make_torch_force
from latentbias.testsystems import alanine_dipeptide_vacuum

sys.path.insert(0, str(Path(__file__).parent))
from overhead import build_model  # noqa: E402 (the same encoder as benchmarks/overhead.py)


class UncheckedComponent(_Component):
    """The component module as it was: energy only (openmm-torch differentiates it), NaN-z checks kept."""

    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tensor:  # type: ignore[override]
        z = self.model(positions, box)
        lb.nonfinite.check_finite_evaluation(positions, z.narrow(0, self.index, 1), self.component)
        lb.nonfinite.check_latent_limit(positions, z.narrow(0, self.index, 1), self.component, self.limit)
        return z[self.index]


class UncheckedRestraint(_Restraint):
    """The restraint module as it was: energy only (openmm-torch differentiates it)."""

    def forward(self, positions: Tensor, p0: Optional[Tensor] = None, p1: Optional[Tensor] = None,  # type: ignore
                p2: Optional[Tensor] = None, p3: Optional[Tensor] = None, p4: Optional[Tensor] = None,
                p5: Optional[Tensor] = None) -> Tensor:
        params = _collect([p0, p1, p2, p3, p4, p5])
        return self.energy(positions, None, params)


def restraint(model: Path, z0: np.ndarray, checked: bool):
    def add(system):
        r = LatentRestraint(model, system, dims=[0, 1, 2], centers=z0, forceConstants=50.0, backend="torchforce",
                            addToSystem=checked)
        if not checked:
            mf = lb.load_model(model)
            module = UncheckedRestraint(mf.module, [0, 1, 2], np.full(3, -1e70), np.full(3, 1e70), np.zeros(3),
                                        np.zeros(3), False)
            force = make_torch_force(script_module(module, "unchecked restraint"), system, None, False)
            for i in range(3):
                force.addGlobalParameter(r.centerName(i), float(z0[i]))
            for i in range(3):
                force.addGlobalParameter(r.forceConstantName(i), 50.0)
            system.addForce(force)
    return add


def customcv(model: Path, checked: bool):
    def add(system):
        cv = openmm.CustomCVForce("z0^2 + z1^2 + z2^2")
        mf = lb.load_model(model)
        for i in range(3):
            if checked:
                force = lb.latent_component_force(mf, system, i)
            else:
                force = make_torch_force(script_module(UncheckedComponent(mf.module, i), "unchecked"), system)
            cv.addCollectiveVariable(f"z{i}", force)
        system.addForce(cv)
    return add


def simulation(platform: str, add):
    system, topology, positions = alanine_dipeptide_vacuum()
    add(system)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 2 * unit.femtosecond)
    integrator.setRandomNumberSeed(1)
    props = {"Threads": "1"} if platform == "CPU" else {}
    sim = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName(platform), props)
    sim.context.setPositions(positions)
    sim.context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    sim.step(50)  # warm up (TorchScript profiling runs)
    return sim


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--platforms", nargs="+", default=["Reference", "CPU"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        model = build_model(Path(tmp))
        _, _, positions = alanine_dipeptide_vacuum()
        z0 = lb.load_model(model).encode(np.asarray(positions.value_in_unit(unit.nanometer))[None])[0]
        print(f"# {datetime.date.today()}  {pyplatform.node()}  {os.cpu_count()} cores, torch threads 1, "
              f"OpenMM {openmm.__version__}, torch {torch.__version__}, steps {args.steps} x {args.repeats}")
        print(f"{'route':<22} {'platform':<10} {'unchecked min / median':>24} {'checked min / median':>24} "
              f"{'ratio':>7}")
        for platform in args.platforms:
            for name, make in (("restraint, d=3", lambda c: restraint(model, z0, c)),
                               ("CustomCVForce, d=3", lambda c: customcv(model, c))):
                sims = {c: simulation(platform, make(c)) for c in (False, True)}
                times: dict[bool, list[float]] = {False: [], True: []}
                for _ in range(args.repeats):
                    for c in (False, True):
                        t0 = time.perf_counter()
                        sims[c].step(args.steps)
                        times[c].append(1e6 * (time.perf_counter() - t0) / args.steps)
                low = {c: min(times[c]) for c in times}
                cell = {c: f"{low[c]:.0f} / {np.median(times[c]):.0f}" for c in times}
                print(f"{name:<22} {platform:<10} {cell[False]:>24} {cell[True]:>24} {low[True] / low[False]:>7.3f}")


if __name__ == "__main__":
    main()
