"""One contract for every featurizer and CV module (as cvpack tests all its CVs alike), issue 15 item 4.

Each case maps full-system positions (n_atoms, 3) nm [+ box (3, 3) nm] to a vector. Every case must:

* survive a TorchScript round trip (script, save, load) with identical outputs, single and batched frames;
* be invariant to rigid motions (proper rotation + translation) of the input — all cases here are;
* agree between float32 and float64 (atol 2e-5 in feature units);
* give the same values for a molecule split across a triclinic periodic boundary (atoms wrapped one by one) as
  for the whole molecule, when the box is passed;
* have gradients equal to central finite differences (float64, h = 1e-6 nm, directional, rel 1e-6);
* round-trip its description through ``save_model``/``load_model`` (the stored ``feature_spec`` rebuilds a
  featurizer with identical outputs; a CV module keeps its metadata and outputs).

A new featurizer or CV module is added to ``CASES`` and gets all of the above.
"""

from __future__ import annotations

import io
import math
from typing import Callable, Optional

import numpy as np
import pytest
import torch
from torch import Tensor

import latentbias as lb
from latentbias.cvs import DihedralAngles, save_dihedral_cv
from latentbias.features import Featurizer, Standardizer, featurize

from conftest import perturbed_frames

BOX = np.array([[2.6, 0.0, 0.0], [0.7, 2.5, 0.0], [-0.6, 0.5, 2.4]])  # triclinic, OpenMM reduced form, nm


class Standardised(torch.nn.Module):
    """A featurizer followed by its fitted standardisation (what the encoder sees)."""

    def __init__(self, featurizer: Featurizer, standardizer: Standardizer):
        super().__init__()
        self.featurizer = featurizer
        self.standardizer = standardizer

    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tensor:
        return self.standardizer(self.featurizer(positions, box))


def _standardised(top, xyz):
    feat = lb.Concatenate([lb.Distances.from_selection(top, "element != H"), lb.Dihedrals.backbone(top)])
    std = Standardizer(feat.n_features).fit(featurize(feat, perturbed_frames(xyz, 40, seed=3)))
    return Standardised(feat, std)


CASES: dict[str, Callable] = {
    "distances": lambda top, xyz: lb.Distances.from_selection(top, "element != H"),
    "dihedrals": lambda top, xyz: lb.Dihedrals(np.vstack([lb.backbone_dihedral_atoms(top), [[4, 6, 8, 14]]])),
    "aligned": lambda top, xyz: lb.AlignedCoordinates.from_selection(top, "element != H", xyz),
    "contacts": lambda top, xyz: lb.Contacts.from_selection(top, "element != H", r0=0.35, n=6),
    "concatenate": lambda top, xyz: lb.Concatenate(
        [lb.AlignedCoordinates.from_selection(top, "name CA or name C or name N", xyz), lb.Dihedrals.backbone(top),
         lb.Contacts([[1, 14], [4, 18]], r0=0.5, n=4)]),
    "standardised": _standardised,
    "cv_dihedral_angles": lambda top, xyz: DihedralAngles(lb.backbone_dihedral_atoms(top)),
}
NAMES = list(CASES)


def _rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _wrap(xyz: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Every atom into the primary triclinic cell on its own (molecules are split at the faces)."""
    frac = np.linalg.solve(box.T, xyz.T).T
    return (frac - np.floor(frac)) @ box


@pytest.fixture(scope="module")
def frames(ala2):
    """Four perturbed ala2 frames (nm, float64)."""
    return perturbed_frames(ala2[2], 4, scale=0.01, seed=11)


def _make(name, ala2, dtype=torch.float64):
    _, top, xyz = ala2
    return CASES[name](top, xyz).to(dtype).eval()


def _eval(module, xyz, box=None, dtype=torch.float64) -> np.ndarray:
    b = None if box is None else torch.as_tensor(box, dtype=dtype)
    with torch.no_grad():
        return module(torch.as_tensor(xyz, dtype=dtype), b).double().numpy()


@pytest.mark.parametrize("name", NAMES)
def test_torchscript_round_trip(name, ala2, frames):
    module = _make(name, ala2)
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    for x, box in ((frames[0], None), (frames, None), (frames[1], BOX)):
        np.testing.assert_array_equal(_eval(loaded, x, box), _eval(module, x, box))
    batched = _eval(module, frames)
    assert batched.shape[0] == len(frames)
    np.testing.assert_allclose(batched[2], _eval(module, frames[2]), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_rigid_motion_invariance(name, ala2, frames):
    module = _make(name, ala2)
    ref = _eval(module, frames)
    for seed in range(3):
        moved = frames @ _rotation(seed).T + np.array([0.7, -1.3, 2.1]) * (seed + 1)
        np.testing.assert_allclose(_eval(module, moved), ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", NAMES)
def test_float32_and_float64_agree(name, ala2, frames):
    f64 = _make(name, ala2, torch.float64)
    f32 = _make(name, ala2, torch.float32)
    out32 = _eval(f32, frames, dtype=torch.float32)
    out64 = _eval(f64, frames)
    np.testing.assert_allclose(out32, out64, rtol=0, atol=2e-5)
    # float32 positions into a float64 module (OpenMM's CPU/Reference hand float64 to float32 models, and back)
    np.testing.assert_allclose(_eval(f64, frames.astype(np.float32), dtype=torch.float32), out64, rtol=0, atol=2e-5)


@pytest.mark.parametrize("name", NAMES)
def test_molecule_across_the_periodic_boundary(name, ala2, frames):
    module = _make(name, ala2)
    whole = frames[0] - frames[0].mean(0) + np.array([0.05, 0.02, 0.03])  # centred near a corner of the cell
    wrapped = _wrap(whole, BOX)
    assert np.abs(wrapped - whole).max() > 1.0  # really split: some atoms moved by a box vector
    expected = _eval(module, whole)
    np.testing.assert_allclose(_eval(module, whole, BOX), expected, rtol=0, atol=1e-10)
    np.testing.assert_allclose(_eval(module, wrapped, BOX), expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("with_box", [False, True], ids=["nobox", "box"])
def test_gradient_matches_central_differences(name, with_box, ala2, frames):
    """d(w . f)/dx from autograd against (f(x + h d) - f(x - h d)) / 2h along random unit directions d; float64,
    h = 1e-6 nm; the truncation error O(h^2 f''') is ~1e-10 here, rounding ~1e-10 / h: rel 1e-6 is strict."""
    module = _make(name, ala2)
    x0 = _wrap(frames[1], BOX) if with_box else frames[1]
    box = torch.as_tensor(BOX) if with_box else None
    rng = np.random.default_rng(5)
    n_out = _eval(module, x0).shape[-1]
    w = torch.as_tensor(rng.standard_normal(n_out))

    def scalar(x: np.ndarray) -> float:
        with torch.no_grad():
            return float(module(torch.as_tensor(x), box) @ w)

    x = torch.as_tensor(x0).requires_grad_(True)
    (module(x, box) @ w).backward()
    grad = x.grad.numpy()
    h = 1e-6
    for _ in range(4):
        d = rng.standard_normal(x0.shape)
        d /= np.linalg.norm(d)
        fd = (scalar(x0 + h * d) - scalar(x0 - h * d)) / (2 * h)
        assert fd == pytest.approx(float((grad * d).sum()), rel=1e-6, abs=1e-6 * np.abs(grad).max())


def _from_spec(spec: dict) -> Featurizer:
    """Rebuild a featurizer from the ``feature_spec`` stored in a model file (independent of the original)."""
    kind = spec["type"]
    if kind == "distances":
        return lb.Distances(spec["pairs"])
    if kind == "contacts":
        return lb.Contacts(spec["pairs"], r0=spec["r0_nm"], n=spec["n"])
    if kind == "dihedrals":
        assert spec["encoding"] == "sin,cos"
        return lb.Dihedrals(spec["quadruplets"])
    if kind == "aligned_coordinates":
        return lb.AlignedCoordinates(spec["atoms"], np.asarray(spec["reference_nm"]))
    if kind == "concatenate":
        return lb.Concatenate([_from_spec(p) for p in spec["parts"]])
    raise AssertionError(f"featurizer type {kind!r} has no rebuild rule in this contract; add one")


def _assert_same_spec(a, b, where="spec"):
    """Equal structure and values; floats to 1e-14 nm (a rebuilt reference is re-centred, which rounds)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            _assert_same_spec(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list) and a and isinstance(np.asarray(a).flat[0], (float, np.floating)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-14, err_msg=where)
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_spec(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.parametrize("name", NAMES)
def test_spec_and_metadata_round_trip_through_a_model_file(name, ala2, frames, tmp_path):
    system, top, xyz = ala2
    module = _make(name, ala2)
    path = tmp_path / f"{name}.pt"
    if isinstance(module, DihedralAngles):
        quads = module.quads.numpy()
        save_dihedral_cv(quads, top.n_atoms, path)
        mf = lb.load_model(path)
        assert mf.periodic == [[-math.pi, math.pi]] * len(quads)
        np.testing.assert_array_equal(mf.atom_indices, np.unique(quads))
        np.testing.assert_allclose(mf.encode(frames), _eval(module, frames), rtol=0, atol=1e-12)
        return
    if isinstance(module, Standardised):
        featurizer, standardizer = module.featurizer, module.standardizer
    else:
        featurizer, standardizer = module, None
    torch.manual_seed(0)
    ae = lb.FeatureAutoencoder(featurizer.n_features, 2, hidden=(8,), decoder=False).double()
    if standardizer is not None:
        ae.standardizer.load_state_dict(standardizer.state_dict())
    else:
        ae.standardizer.fit(featurize(featurizer, frames))
    model = lb.LatentModel(featurizer, ae, top.n_atoms)
    lb.save_model(model, path, dtype="float64")
    mf = lb.load_model(path)
    meta = mf.metadata
    assert meta["feature_spec"] == featurizer.spec()
    assert meta["feature_names"] == featurizer.feature_names()
    assert meta["n_features"] == featurizer.n_features
    np.testing.assert_array_equal(mf.atom_indices, featurizer.atom_indices())
    rebuilt = _from_spec(meta["feature_spec"]).double()
    _assert_same_spec(rebuilt.spec(), featurizer.spec())
    np.testing.assert_allclose(_eval(rebuilt, frames, BOX), _eval(featurizer, frames, BOX), rtol=0, atol=1e-12)
    np.testing.assert_allclose(mf.encode(frames, BOX), model.transform(frames, BOX), rtol=0, atol=1e-10)
    if standardizer is not None:
        np.testing.assert_allclose(_eval(module, frames), _eval(Standardised(rebuilt, standardizer), frames),
                                   rtol=0, atol=1e-12)
