"""The native (libtorch-free) evaluation path of LatentBiasForce against the TorchScript path.

z, energies and forces of the native C++ evaluator must equal those of the TorchScript code (float64 export) to a
relative 1e-9 on Reference and CPU, for every featurizer and every activation, with and without a periodic box —
the box case with alanine dipeptide wrapped atom by atom into a triclinic box, i.e. split across the boundary.
Also: finite differences, serialization, path selection, refused descriptions, and check_platform.
"""

from __future__ import annotations

import json
import logging
import zipfile

import numpy as np
import openmm
import pytest
import torch

import latentbias as lb
from latentbias import native
from latentbias.campaign.alignment import LatentAlignment, apply_alignment
from latentbias.export import _archive_with_checksums, save_cv_module
from latentbias.models import ACTIVATIONS
from latentbias.native_description import NATIVE_NAME, describe_model, validate_description
from latentbias.platforms import check_platform

from conftest import perturbed_frames
from test_export_forces import bare_system, check_finite_differences, energy_and_forces, make_context

if not native.is_available():
    pytest.skip(f"native plugin not available: {native.unavailable_reason()}", allow_module_level=True)

from latentbias.bias.fused import FusedBackend  # noqa: E402
from latentbias.bias.restraint import fused_restraint_force  # noqa: E402
from latentbias.bias.grid import BiasGrid, LatentVariable  # noqa: E402

PLATFORMS = ["Reference", "CPU"]
RTOL = 1e-9
#: triclinic box in OpenMM's reduced form, nm (ala2 spans ~0.9 nm: every distance stays below half a box width)
BOX = np.array([[2.3, 0.0, 0.0], [0.4, 2.2, 0.0], [-0.5, 0.6, 2.1]])


def featurizer(kind: str, top, xyz):
    heavy = "element != H"
    if kind == "distances":
        return lb.Distances.from_selection(top, heavy)
    if kind == "contacts":
        return lb.Contacts.from_selection(top, heavy, r0=0.35, n=5)
    if kind == "dihedrals":
        return lb.Dihedrals.backbone(top)
    if kind == "aligned":
        return lb.AlignedCoordinates.from_selection(top, heavy, xyz)
    return lb.Concatenate([lb.Distances.from_selection(top, "name CA or name C or name N or name CB"),
                           lb.Contacts.from_selection(top, "name O or name N", r0=0.4, n=6),
                           lb.Dihedrals.backbone(top),
                           lb.AlignedCoordinates.from_selection(top, heavy, xyz)])


def export(path, feat, n_atoms, frames, activation="tanh", latent_dim=3, seed=0, dtype="float64"):
    torch.manual_seed(seed)
    ae = lb.FeatureAutoencoder(feat.n_features, latent_dim, hidden=(16, 12), activation=activation, decoder=False)
    ae.standardizer.fit(lb.features.featurize(feat, frames))
    with torch.no_grad():  # spread pre-activations over the non-linear range of every activation
        for layer in ae.encoder:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.mul_(2.0)
                layer.bias.uniform_(-1.0, 1.0)
    model = lb.LatentModel(feat, ae, n_atoms).double()
    lb.save_model(model, path, dtype=dtype, overwrite=True)
    return path


def wrapped(xyz):
    """Positions shifted towards a corner and wrapped atom by atom into BOX (the molecule is split)."""
    x = xyz + np.array([2.0, 1.9, 1.8])
    frac = x @ np.linalg.inv(BOX)
    return (frac - np.floor(frac)) @ BOX


def restrained_system(data: bytes, n_atoms: int, path: str, periodic: bool, z_ref):
    system = bare_system(n_atoms)
    system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in BOX])
    force = native.load().LatentBiasForce.fromModelData(data)
    force.setUsesPeriodicBoundaryConditions(periodic)
    force.setEvaluationPath(path)
    for c in range(len(z_ref)):  # off-centre restraints: dV/dz != 0 on every component
        force.addRestraint(c, "", float(z_ref[c]) + 0.3 * (c + 1), "", 40.0 + 10.0 * c)
    system.addForce(force)
    return system, force


def evaluate_both(model_path, n_atoms, positions, periodic, platform):
    data = model_path.read_bytes()
    z_ref = lb.load_model(model_path).encode(positions, BOX if periodic else None)
    out = {}
    for path in ("native", "torch"):
        system, force = restrained_system(data, n_atoms, path, periodic, z_ref)
        ctx, _ = make_context(system, positions, platform)
        e, f = energy_and_forces(ctx)
        assert force.getEvaluationPathInContext(ctx) == path
        out[path] = (np.array(force.getLastLatentValues(ctx)), e, f)
    return out


def assert_paths_agree(out):
    (zn, en, fn), (zt, et, ft) = out["native"], out["torch"]
    assert np.all(np.isfinite(fn)) and np.abs(ft).max() > 1.0  # a real, non-trivial force
    np.testing.assert_allclose(zn, zt, rtol=0, atol=RTOL * np.abs(zt).max())
    assert abs(en - et) <= RTOL * abs(et)
    np.testing.assert_allclose(fn, ft, rtol=0, atol=RTOL * np.abs(ft).max())


@pytest.fixture(scope="module")
def frames(ala2):
    return perturbed_frames(ala2[2], 40, scale=0.03)


# ------------------------------------------------------------------------------------------- native == torch


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("periodic", [False, True], ids=["vacuum", "box-split"])
@pytest.mark.parametrize("kind", ["distances", "contacts", "dihedrals", "aligned", "concatenate"])
def test_native_equals_torchscript_per_featurizer(tmp_path, ala2, frames, kind, periodic, platform):
    _, top, xyz = ala2
    path = export(tmp_path / f"{kind}.pt", featurizer(kind, top, xyz), top.n_atoms, frames)
    positions = wrapped(xyz) if periodic else xyz + 0.01 * np.random.default_rng(1).standard_normal(xyz.shape)
    if periodic:  # the wrapped molecule really is split: some bonded heavy atoms are more than half a box apart
        assert np.abs(positions[1:] - positions[:-1]).max() > 1.0
    assert_paths_agree(evaluate_both(path, top.n_atoms, positions, periodic, platform))


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_native_equals_torchscript_per_activation(tmp_path, ala2, frames, activation):
    _, top, xyz = ala2
    path = export(tmp_path / f"{activation}.pt", featurizer("concatenate", top, xyz), top.n_atoms, frames,
                  activation=activation, seed=3)
    for platform in PLATFORMS:
        assert_paths_agree(evaluate_both(path, top.n_atoms, wrapped(xyz), True, platform))


def test_native_equals_torchscript_with_folded_alignment(tmp_path, ala2, frames):
    """A campaign's latent alignment is folded into the last layer: the description carries it."""
    _, top, xyz = ala2
    feat = featurizer("distances", top, xyz)
    torch.manual_seed(0)
    ae = lb.FeatureAutoencoder(feat.n_features, 2, hidden=(8,), decoder=True)
    ae.standardizer.fit(lb.features.featurize(feat, frames))
    c, s = np.cos(0.7), np.sin(0.7)
    apply_alignment(ae, LatentAlignment(np.array([[c, -s], [s, c]]), 1.7, np.array([0.3, -2.0]), 1.0, 0.0))
    path = tmp_path / "aligned.pt"
    lb.save_model(lb.LatentModel(feat, ae, top.n_atoms).double(), path, dtype="float64")
    assert_paths_agree(evaluate_both(path, top.n_atoms, xyz, False, "Reference"))


@pytest.mark.parametrize("platform", PLATFORMS)
def test_native_finite_differences_across_the_boundary(tmp_path, ala2, frames, platform):
    """Directional central differences of the energy vs -F.d (h = 1e-5 nm, tolerance 1e-4 max(1, |F|)) for a
    grid bias + walls on the native path, molecule split by the box."""
    _, top, xyz = ala2
    path = export(tmp_path / "cat.pt", featurizer("concatenate", top, xyz), top.n_atoms, frames, activation="silu")
    model = lb.load_model(path)
    positions = wrapped(xyz)
    z = model.encode(positions, BOX)
    system = bare_system(top.n_atoms)
    system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in BOX])
    system.addForce(openmm.CustomExternalForce("0"))  # keeps the System periodic-free except for our force
    grid = BiasGrid([LatentVariable(i, z[i] - 1.0, z[i] + 0.6, 0.2, gridWidth=30) for i in range(2)])
    backend = FusedBackend(model, system, grid, 500.0, forceGroup=2, evaluationPath="native")
    backend.force.setUsesPeriodicBoundaryConditions(True)
    values = 5.0 * grid.gaussian(z[:2] + 0.2) + 3.0 * grid.gaussian(z[:2] - 0.3)
    backend.set_grid(values, None)
    ctx, _ = make_context(system, positions, platform)
    assert backend.force.getEvaluationPathInContext(ctx) == "native"
    check_finite_differences(ctx, positions, 1 << 2)


def test_float32_export_native_agrees_to_float32_rounding(tmp_path, ala2, frames):
    """The native path computes in float64 whatever the export dtype: vs a float32 TorchScript, z agree to ~1e-6."""
    _, top, xyz = ala2
    path = export(tmp_path / "f32.pt", featurizer("concatenate", top, xyz), top.n_atoms, frames, dtype="float32")
    out = evaluate_both(path, top.n_atoms, xyz, False, "Reference")
    (zn, _, fn), (zt, _, ft) = out["native"], out["torch"]
    np.testing.assert_allclose(zn, zt, rtol=0, atol=1e-5 * np.abs(zt).max())
    np.testing.assert_allclose(fn, ft, rtol=0, atol=1e-4 * np.abs(ft).max())


# ---------------------------------------------------------------------------------------- path selection


def test_path_selection_and_log_line(tmp_path, ala2, frames, caplog, monkeypatch):
    system0, top, xyz = ala2
    ours = export(tmp_path / "ours.pt", featurizer("distances", top, xyz), top.n_atoms, frames)
    mf = lb.load_model(ours)
    assert mf.has_native_description and mf.metadata["native_description"] == NATIVE_NAME

    class Phi(torch.nn.Module):
        def forward(self, positions: torch.Tensor, box: torch.Tensor | None = None) -> torch.Tensor:
            return positions[4:5, 0] * positions[6:7, 1]

    other = save_cv_module(Phi(), tmp_path / "other.pt", n_atoms=top.n_atoms, latent_dim=1)
    assert not lb.load_model(other).has_native_description
    grid = BiasGrid([LatentVariable(0, -3.0, 3.0, 0.2, gridWidth=20)])
    cases = [(ours, None, "native"), (ours, "torch", "torch"), (other, None, "torch"), (other, "auto", "torch")]
    for model, requested, expected in cases:
        system = bare_system(top.n_atoms)
        with caplog.at_level(logging.INFO, logger="latentbias.bias.fused"):
            caplog.clear()
            backend = FusedBackend(lb.load_model(model), system, grid, evaluationPath=requested)
        assert backend.force.getResolvedEvaluationPath() == expected
        lines = [r.getMessage() for r in caplog.records if "evaluation path" in r.getMessage()]
        assert len(lines) == 1 and f"{expected} evaluation path" in lines[0]
        ctx, _ = make_context(system, xyz, "CPU")
        energy_and_forces(ctx)
        assert backend.force.getEvaluationPathInContext(ctx) == expected
    with pytest.raises(ValueError, match="has no native description"):
        FusedBackend(lb.load_model(other), bare_system(top.n_atoms), grid, evaluationPath="native")
    with pytest.raises(openmm.OpenMMException, match="no native description"):
        native.load().LatentBiasForce.fromModelData(other.read_bytes()).setEvaluationPath("native")
    with pytest.raises(ValueError, match="evaluationPath must be one of"):
        FusedBackend(mf, bare_system(top.n_atoms), grid, evaluationPath="gpu")
    monkeypatch.setenv("LATENTBIAS_EVALUATION_PATH", "torch")
    force = fused_restraint_force(mf, bare_system(top.n_atoms), centers=[0.0, 0.0, 0.0], forceConstants=1.0,
                                  addToSystem=False)
    assert force.getEvaluationPath() == "torch"


def test_cpu_torch_path_leaves_torch_threads_as_they_were(tmp_path, ala2, frames):
    """The libtorch path runs single-threaded on the CPU platform and restores the caller's setting."""
    _, top, xyz = ala2
    path = export(tmp_path / "m.pt", featurizer("distances", top, xyz), top.n_atoms, frames)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        system, force = restrained_system(path.read_bytes(), top.n_atoms, "torch", False, [0.0, 0.0, 0.0])
        ctx, _ = make_context(system, xyz, "CPU")
        energy_and_forces(ctx)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------- serialization


def test_description_survives_xml_serialization(tmp_path, ala2, frames):
    _, top, xyz = ala2
    path = export(tmp_path / "cat.pt", featurizer("concatenate", top, xyz), top.n_atoms, frames)
    positions = wrapped(xyz)
    for requested in ("auto", "torch"):
        system, force = restrained_system(path.read_bytes(), top.n_atoms, requested, True, [0.1, 0.2, 0.3])
        copy = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
        restored = native.as_latent_bias_force(copy.getForce(0))
        assert restored.hasNativeDescription() and restored.getEvaluationPath() == requested
        e0, f0 = energy_and_forces(make_context(system, positions, "Reference")[0])
        e1, f1 = energy_and_forces(make_context(copy, positions, "Reference")[0])
        assert e0 == e1 and np.array_equal(f0, f1)


# ------------------------------------------------------------------------------------- refused descriptions


def _native_files(path):
    with zipfile.ZipFile(path) as zf:
        return {n.split("/extra/", 1)[1]: zf.read(n) for n in zf.namelist()
                if "/extra/latentbias_native" in n}


def _rebuilt(tmp_path, path, files, name):
    """The same model with a changed description and fresh, valid checksums (what a buggy writer would produce)."""
    mf = lb.load_model(path)
    data = _archive_with_checksums(mf.module, mf.metadata, files)
    out = tmp_path / name
    out.write_bytes(data)
    return out


def _bad_descriptions(files):
    doc = json.loads(files[NATIVE_NAME])
    w0 = doc["layers"][0]["weight"]["file"]
    bad = {}
    nan = bytearray(files[w0])
    nan[8:16] = np.array([np.nan]).tobytes()
    bad["NaN weight"] = ({**files, w0: bytes(nan)}, "non-finite")
    bad["truncated array"] = ({**files, w0: files[w0][:-8]}, "bytes but shape")
    shaped = json.loads(files[NATIVE_NAME])
    shaped["layers"][1]["weight"] = shaped["layers"][0]["weight"]  # (16, n_features): consistent bytes, wrong chain
    bad["layer sizes do not chain"] = ({**files, NATIVE_NAME: json.dumps(shaped).encode()},
                                       r"weight must (have shape|be) \(n_out, 16\)")
    newer = dict(doc, version=99)
    bad["newer version"] = ({**files, NATIVE_NAME: json.dumps(newer).encode()}, "version 99")
    atoms = json.loads(files[NATIVE_NAME])
    pairs = atoms["features"][0]["pairs"]["file"]
    big = np.frombuffer(files[pairs], dtype="<i8").copy()
    big[0] = 10_000
    bad["atom out of range"] = ({**files, pairs: big.tobytes()}, "out of range")
    act = json.loads(files[NATIVE_NAME])
    act["layers"][0]["activation"] = "swish"
    bad["unknown activation"] = ({**files, NATIVE_NAME: json.dumps(act).encode()}, "unknown activation")
    return bad


def test_bad_descriptions_are_refused_with_clear_errors(tmp_path, ala2, frames):
    _, top, xyz = ala2
    path = export(tmp_path / "d.pt", featurizer("distances", top, xyz), top.n_atoms, frames)
    files = _native_files(path)
    validate_description(files)
    for k, (label, (bad, match)) in enumerate(_bad_descriptions(files).items()):
        with pytest.raises(ValueError, match=match):
            validate_description(bad)
        target = _rebuilt(tmp_path, path, bad, f"bad{k}.pt")
        with pytest.raises(ValueError, match=str(target)):
            lb.load_model(target)
        with pytest.raises(openmm.OpenMMException, match=f"native description.*{match}"):
            native.load().LatentBiasForce.fromModelData(target.read_bytes())


def test_checksums_cover_the_description(tmp_path, ala2, frames):
    """Flipping bytes inside a native array entry (checksums not renewed) is caught when loading."""
    _, top, xyz = ala2
    path = export(tmp_path / "d.pt", featurizer("distances", top, xyz), top.n_atoms, frames)
    data = path.read_bytes()
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith("latentbias_native.1.bin"))
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 16
    bad = bytearray(data)
    bad[start:start + 8] = bytes(b ^ 0x10 for b in bad[start:start + 8])
    target = tmp_path / "flipped.pt"
    target.write_bytes(bytes(bad))
    with pytest.raises(ValueError, match=str(target)):
        lb.load_model(target)


def test_models_outside_the_family_have_no_description(ala2):
    _, top, xyz = ala2

    class MyDistances(lb.Distances):  # a subclass may change forward(): never described
        pass

    feat = MyDistances([[0, 4], [4, 8]])
    ae = lb.FeatureAutoencoder(2, 1, hidden=(4,), decoder=False)
    model = lb.LatentModel(feat, ae, top.n_atoms)
    assert describe_model(model.encoder_module(), top.n_atoms, 1) is None
    ae.encoder[1] = torch.nn.Softplus(beta=2.0)  # non-default activation parameters: not described either
    model = lb.LatentModel(lb.Distances([[0, 4], [4, 8]]), ae, top.n_atoms)
    assert describe_model(model.encoder_module(), top.n_atoms, 1) is None


@pytest.mark.parametrize("platform", PLATFORMS)
def test_native_non_finite_forces_name_the_atoms(tmp_path, ala2, frames, platform):
    """Two coincident atoms of a distance pair: d|r|/dr is 0/0; the native path raises naming them."""
    _, top, xyz = ala2
    path = export(tmp_path / "d.pt", lb.Distances([[0, 4], [4, 8], [8, 14]]), top.n_atoms, frames)
    system, _ = restrained_system(path.read_bytes(), top.n_atoms, "native", False, [0.0, 0.0, 0.0])
    pos = xyz.copy()
    pos[8] = pos[4]
    ctx, _ = make_context(system, pos, platform)
    with pytest.raises(openmm.OpenMMException, match=r"not finite on .*atom\(s\) \(indices 4, 8"):
        ctx.getState(getForces=True)


# ------------------------------------------------------------------------------------------ check_platform


class FakePlatform:
    """Stands in for a platform this machine may not have (OpenCL, CUDA)."""

    def __init__(self, name, kernels=True):
        self.name, self.kernels = name, kernels

    def getName(self):
        return self.name

    def supportsKernels(self, names):
        return self.kernels


def test_check_platform_refuses_routes_that_cannot_run(tmp_path, ala2, frames, caplog):
    openmmtorch = pytest.importorskip("openmmtorch")
    _, top, xyz = ala2
    path = export(tmp_path / "d.pt", featurizer("distances", top, xyz), top.n_atoms, frames)
    torch_system = bare_system(top.n_atoms)
    torch_system.addForce(lb.latent_component_force(path, torch_system, 0))
    cv_system = bare_system(top.n_atoms)
    cv = openmm.CustomCVForce("2*z")
    cv.addCollectiveVariable("z", openmmtorch.TorchForce(str(path)))
    cv_system.addForce(cv)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with caplog.at_level(logging.WARNING, logger="latentbias.platforms"):
            check_platform(torch_system, "CPU")
        assert "torch.set_num_threads(1)" in caplog.text
        torch.set_num_threads(1)
        caplog.clear()
        check_platform(torch_system, "CPU")
        assert "set_num_threads" not in caplog.text
    finally:
        torch.set_num_threads(threads)
    for system in (torch_system, cv_system):
        check_platform(system, "Reference")
        check_platform(system, openmm.Platform.getPlatformByName("CPU"))
        with pytest.raises(ValueError, match="TorchForce.*kills the process on the OpenCL platform.*CPU or Reference"):
            check_platform(system, FakePlatform("OpenCL"))
    with pytest.raises(ValueError, match="collective variable 'z'"):
        check_platform(cv_system, FakePlatform("OpenCL"))
    lbf_system, force = restrained_system(path.read_bytes(), top.n_atoms, "auto", False, [0.0, 0.0, 0.0])
    check_platform(lbf_system, "Reference")
    with pytest.raises(ValueError, match="LatentBiasForce but the OpenCL platform has no LatentBiasForce kernel"):
        check_platform(lbf_system, FakePlatform("OpenCL", kernels=False))
    force.setEvaluationPath("native")
    with pytest.raises(ValueError, match="native evaluation path, which the HIP platform does not have"):
        check_platform(lbf_system, FakePlatform("HIP"))
    with pytest.raises(ValueError, match="unknown OpenMM platform 'Vulkan'"):
        check_platform(lbf_system, "Vulkan")


@pytest.mark.parametrize("platform", PLATFORMS)
def test_native_equals_torchscript_protein_in_water_across_the_boundary(tmp_path, platform):
    """Villin HP35 in its water box (openmm's test.pdb, 8867 atoms): a model on CA distances, backbone dihedrals and
    aligned CA coordinates, with the protein translated so that it straddles a face of the box and every atom
    wrapped back into the box (the protein is split). Native and TorchScript z/E/F agree to 1e-9."""
    import os

    import mdtraj as md
    from openmm import app

    pdb = app.PDBFile(os.path.join(os.path.dirname(app.__file__), "data", "test.pdb"))
    top = md.Topology.from_openmm(pdb.topology)
    xyz = np.asarray(pdb.getPositions(asNumpy=True)._value)
    box = np.array([list(v._value if hasattr(v, "_value") else v) for v in pdb.topology.getPeriodicBoxVectors()])
    ca = top.select("name CA")
    protein = top.select("protein")
    # make the protein whole, centred on the box's upper x face
    feat = lb.Concatenate([lb.Distances.from_selection(top, ca[::3]), lb.Dihedrals.backbone(top),
                           lb.AlignedCoordinates.from_selection(top, ca, xyz)])
    rng = np.random.default_rng(4)
    frames = xyz[None] + 0.02 * rng.standard_normal((12,) + xyz.shape)
    path = export(tmp_path / "villin.pt", feat, top.n_atoms, frames, activation="gelu")
    shifted = xyz + (np.array([box[0, 0], 0.5 * box[1, 1], 0.5 * box[2, 2]]) - xyz[protein].mean(0))
    wrapped_all = shifted - np.floor(shifted / np.diag(box)) * np.diag(box)
    assert np.ptp(wrapped_all[ca, 0]) > 0.5 * box[0, 0]  # the protein is split across the x face
    data = path.read_bytes()
    z_ref = lb.load_model(path).encode(xyz, box)
    out = {}
    for evaluation in ("native", "torch"):
        system = bare_system(top.n_atoms)
        system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box])
        force = native.load().LatentBiasForce.fromModelData(data)
        force.setUsesPeriodicBoundaryConditions(True)
        force.setEvaluationPath(evaluation)
        for c in range(3):
            force.addRestraint(c, "", float(z_ref[c]) + 0.4, "", 60.0)
        system.addForce(force)
        ctx, _ = make_context(system, wrapped_all, platform)
        e, f = energy_and_forces(ctx)
        out[evaluation] = (np.array(force.getLastLatentValues(ctx)), e, f)
    np.testing.assert_allclose(out["native"][0], z_ref, rtol=0, atol=1e-9 * np.abs(z_ref).max())  # whole == split
    assert_paths_agree(out)
