"""Write the inputs of the GPU check (cuda_check.py) on a machine with latentbias and its native plugin.

The lent GPU machine has torch and nvcc but neither latentbias' dependencies nor pdbfixer/openmmtools, so the models
are exported here with latentbias' own ``save_model`` (TorchScript + latentbias.json) and each LatentBiasForce is
written as OpenMM XML (``XmlSerializer``; the model travels inside it, base64). cuda_check.py deserializes them with
nothing but openmm, torch and the built plugin.

Usage: python benchmarks/gpu/prepare_device_inputs.py OUTDIR

OUTDIR receives
* ala2.prmtop, ala2.crd, JAC.prmtop, JAC.inpcrd      (openmmtools data: ala2 ff96 vacuum, DHFR/JAC in PME)
* ala2_d2_f64.pt / ala2_d2_f32.pt                    45 heavy-atom distances -> 32 -> 32 -> 2 (tanh), random weights
* dhfr_d2_f32.pt / dhfr_d2_f64.pt                    105 minimum-image C-alpha distances -> 32 -> 32 -> 2
* force_<model>.xml                                  LatentBiasForce: 2-D grid (bumpy values) + 1 restraint, group 3
* manifest.json                                      z of each model at the reference positions, grid settings
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import openmm
import torch
from openmm import app

import latentbias as lb
from latentbias import native
from latentbias.testsystems import _package_dir

GROUP = 3


def model_for(featurizer, n_atoms, xyz, seed, hidden=(32, 32)):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    frames = xyz[None] + 0.02 * rng.standard_normal((64,) + xyz.shape)
    ae = lb.FeatureAutoencoder(featurizer.n_features, 2, hidden=hidden, activation="tanh")
    ae.standardizer.fit(lb.features.featurize(featurizer, frames))
    return lb.LatentModel(featurizer, ae, n_atoms).double()


def bumpy(z, n=41, seed=0):
    """2-D grid around z (±1.2, n points per axis) and a sum of Gaussians on it, values[i0 + n*i1] (kJ/mol)."""
    rng = np.random.default_rng(seed)
    lo = [z[k] - 1.2 for k in range(2)]
    hi = [z[k] + 1.2 for k in range(2)]
    x0 = np.linspace(lo[0], hi[0], n)
    x1 = np.linspace(lo[1], hi[1], n)
    g0, g1 = np.meshgrid(x0, x1, indexing="ij")
    v = np.zeros_like(g0)
    for _ in range(8):
        c = [z[k] + rng.uniform(-0.8, 0.8) for k in range(2)]
        v += rng.uniform(2.0, 8.0) * np.exp(-((g0 - c[0]) ** 2 + (g1 - c[1]) ** 2) / (2 * 0.25**2))
    return lo, hi, v.flatten(order="F")  # first axis fastest


def make_force(path: Path, z, periodic_box: bool):
    f = native.LatentBiasForce(str(path))
    lo, hi, values = bumpy(z)
    for k in range(2):
        f.addGridDimension(k, lo[k], hi[k], 41, False)
    f.setGridValues(values)
    f.addRestraint(0, "latent_z0_0", float(z[0]) + 0.3, "latent_k_0", 50.0, 0.0, -1e30, 1e30, 0.0)
    f.setUsesPeriodicBoundaryConditions(periodic_box)
    f.setForceGroup(GROUP)
    return openmm.XmlSerializer.serialize(f)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    data = _package_dir("openmmtools") / "data"
    shutil.copy(data / "alanine-dipeptide-gbsa" / "alanine-dipeptide.prmtop", out / "ala2.prmtop")
    shutil.copy(data / "alanine-dipeptide-gbsa" / "alanine-dipeptide.crd", out / "ala2.crd")
    shutil.copy(data / "dhfr" / "JAC.prmtop", out / "JAC.prmtop")
    shutil.copy(data / "dhfr" / "JAC.inpcrd", out / "JAC.inpcrd")
    manifest = {}

    # ala2: heavy-atom distances (no box)
    prmtop = app.AmberPrmtopFile(str(out / "ala2.prmtop"))
    xyz = np.array(app.AmberInpcrdFile(str(out / "ala2.crd")).positions.value_in_unit(openmm.unit.nanometer))
    import mdtraj

    top = mdtraj.Topology.from_openmm(prmtop.topology)
    feat = lb.Distances.from_selection(top, "element != H")
    model = model_for(feat, top.n_atoms, xyz, seed=11)
    entries = [("ala2", model, xyz, None, False)]

    # DHFR/JAC: 105 C-alpha pair distances with minimum image (15 C-alpha atoms spread along the chain)
    jac = app.AmberPrmtopFile(str(out / "JAC.prmtop"))
    crd = app.AmberInpcrdFile(str(out / "JAC.inpcrd"))
    jxyz = np.array(crd.positions.value_in_unit(openmm.unit.nanometer))
    box = np.array(crd.boxVectors.value_in_unit(openmm.unit.nanometer))
    ca = [a.index for a in jac.topology.atoms() if a.name == "CA" and a.residue.name not in ("HOH", "WAT")]
    ca = ca[:: max(1, len(ca) // 15)][:15]
    pairs = [(ca[i], ca[j]) for i in range(len(ca)) for j in range(i + 1, len(ca))]
    dfeat = lb.Distances(pairs)
    dmodel = model_for(dfeat, jac.topology.getNumAtoms(), jxyz, seed=12)
    entries.append(("dhfr", dmodel, jxyz, box, True))

    for name, m, x, bx, periodic in entries:
        for dtype in ("float64", "float32"):
            tag = f"{name}_d2_{'f64' if dtype == 'float64' else 'f32'}"
            path = out / f"{tag}.pt"
            lb.save_model(m, path, dtype=dtype)
            loaded = torch.jit.load(str(path))
            args = [torch.tensor(x)]
            if bx is not None:
                args.append(torch.tensor(bx))
            z = loaded(*args).detach().double().numpy()
            (out / f"force_{tag}.xml").write_text(make_force(path, z, periodic))
            manifest[tag] = {"model": path.name, "force_xml": f"force_{tag}.xml", "z_ref": z.tolist(),
                             "n_features": int(m.featurizer.n_features) if hasattr(m, "featurizer") else None,
                             "periodic": periodic, "force_group": GROUP}
            print(tag, "z =", z)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
