"""The load-time gradient check probes physical configurations first (issue 9 item 1; false positive found on
issue 11's villin setting): a healthy tanh model of villin's aligned backbone saturates at random configurations
(gradient exactly 0 in float32) and was refused by ``load_model``; detached or constant models are still refused
(``tests/test_force_safety.py``) and also when physical probes are given.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import pytest
import torch
from torch import Tensor

import latentbias as lb
from latentbias import testsystems
from latentbias.export import check_model_output, save_cv_module, save_model
from latentbias.features import AlignedCoordinates, Distances, featurize
from latentbias.model_probes import probe_configurations, random_configuration
from latentbias.models import FeatureAutoencoder, LatentModel

NOISE_NM = 0.002  # narrow spread of the training coordinates the standardizer is fitted on
#: first-layer weights grown as training grows them (a trained model of this setting saturated the same way)
WEIGHT_GAIN = 6.0


@pytest.fixture(scope="module")
def villin(tmp_path_factory):
    from openmm import app, unit

    pdb = app.PDBFile(str(testsystems.villin_implicit_pdb(tmp_path_factory.mktemp("villin") / "villin.pdb")))
    xyz = np.asarray(pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    backbone = [a.index for a in pdb.topology.atoms() if a.name in ("N", "CA", "C", "O")]
    frames = xyz[None] + np.random.default_rng(0).normal(scale=NOISE_NM, size=(64,) + xyz.shape)
    return xyz, backbone, frames


def _tanh_model(featurizer, frames, n_atoms):
    torch.manual_seed(0)
    ae = FeatureAutoencoder(featurizer.n_features, 2, hidden=[16, 16], activation="tanh", decoder=False)
    ae.standardizer.fit(featurize(featurizer, frames, None))
    with torch.no_grad():
        ae.encoder[0].weight.mul_(WEIGHT_GAIN)
    return LatentModel(featurizer, ae.eval(), n_atoms)


def _zero_gradient_at_random_configurations(module, n_atoms) -> bool:
    for k in range(3):
        x = random_configuration(n_atoms, seed=20261129 + k).requires_grad_(True)
        z = module(x, None)
        if any(bool(torch.any(torch.autograd.grad(z[i], x, retain_graph=True)[0] != 0)) for i in range(len(z))):
            return False
    return True


def test_tanh_villin_aligned_backbone_model_saturated_at_random_probes_loads(villin, tmp_path):
    """The reproducer: 140 aligned backbone atoms of villin (582 atoms), tanh [16, 16], float32 export."""
    xyz, backbone, frames = villin
    model = _tanh_model(AlignedCoordinates(backbone, xyz), frames, len(xyz))
    path = save_model(model, tmp_path / "villin_tanh.pt")  # no stored frames: the aligned reference is the probe
    mf = torch.jit.load(str(path))
    assert _zero_gradient_at_random_configurations(mf, len(xyz))  # what the old check saw: refused
    loaded = lb.load_model(path)
    labels = [label for label, _ in probe_configurations(loaded.n_atoms, loaded.metadata)]
    assert labels[0] == "the aligned features' reference structure"
    # the physics the check vouches for: at the reference, dz/dx is non-zero and matches finite differences
    x0 = next(iter(probe_configurations(loaded.n_atoms, loaded.metadata)))[1]
    x = x0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loaded.module(x, None)[0], x)
    i = int(torch.argmax(g.abs().sum(1)))
    h = 1e-3  # nm; float32 model: central differences to ~1e-3 relative
    for k in range(3):
        dx = np.zeros_like(xyz)
        dx[i, k] = h
        fd = (loaded.encode(x0.numpy() + dx)[0] - loaded.encode(x0.numpy() - dx)[0]) / (2 * h)
        assert fd == pytest.approx(float(g[i, k]), rel=2e-2, abs=1e-3 * float(g.abs().max()))


class _DistanceTanh(torch.nn.Module):
    """A saturating hand-written CV: tanh of a linear combination of C-alpha distances standardized on a narrow
    training spread (float32, like exported models: exactly flat beyond |x| ~ 9)."""

    def __init__(self, pairs, mean, scale):
        super().__init__()
        self.distances = Distances(pairs)
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))
        torch.manual_seed(1)
        self.layer = torch.nn.Linear(len(pairs), 1)

    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tensor:
        f = (self.distances(positions.to(torch.float32), box) - self.mean) / self.scale
        return torch.tanh(self.layer(f))


def test_stored_training_frames_and_given_positions_are_probed_first(villin, tmp_path):
    """A distance model has no reference structure: training frames stored by save_model (LatentModel) or
    positions given to load_model (hand-written module) are the physical probes."""
    xyz, backbone, frames = villin
    ca = backbone[1::4]
    pairs = [(a, b) for k, a in enumerate(ca) for b in ca[k + 10:]]  # 325 pairs, 10 or more residues apart
    feat = Distances(pairs)
    f = featurize(feat, frames, None)
    module = _DistanceTanh(pairs, f.mean(0), f.std(0))
    path = save_cv_module(module, tmp_path / "cv.pt", n_atoms=len(xyz), latent_dim=1)
    assert _zero_gradient_at_random_configurations(torch.jit.load(str(path)), len(xyz))
    with pytest.raises(ValueError, match=r"exactly zero at 3 probe configurations: random configuration 0") as info:
        lb.load_model(path)
    assert "probe_positions" in str(info.value)  # the message says how to give a physical probe
    assert lb.load_model(path, probe_positions=frames[0]).latent_dim == 1

    model = _tanh_model(feat, frames, len(xyz))
    assert _zero_gradient_at_random_configurations(torch.jit.script(model.encoder_module()), len(xyz))
    stored = save_model(model, tmp_path / "dist.pt", probe_positions=frames)
    loaded = lb.load_model(stored)
    meta = loaded.metadata["probe_positions"]
    assert meta["atoms"] == sorted(set(np.ravel(pairs).tolist())) and len(meta["frames_nm"]) == 3
    np.testing.assert_allclose(meta["frames_nm"][0], frames[0][meta["atoms"]], atol=1e-6)
    assert next(iter(probe_configurations(loaded.n_atoms, loaded.metadata)))[0] == "stored training frame 0"


class _Detached(torch.nn.Module):
    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tensor:
        p = positions.detach().to(torch.float64)
        return torch.linalg.norm(p[0] - p[1]).reshape(1)


class _Rounded(torch.nn.Module):
    """Attached to the graph but piecewise constant (zero gradient almost everywhere)."""

    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tensor:
        return torch.round(torch.linalg.norm(positions[0] - positions[1]).to(torch.float64) * 1e-3).reshape(1)


@pytest.mark.parametrize("module", [_Detached(), _Rounded()], ids=["detached", "rounded"])
def test_physical_probes_still_refuse_models_without_gradient(villin, tmp_path, module):
    xyz, _, frames = villin
    path = save_cv_module(module, tmp_path / "bad.pt", n_atoms=len(xyz), latent_dim=1)
    with pytest.raises(ValueError, match="does not depend differentiably") as info:
        lb.load_model(path, probe_positions=frames[:2])
    assert str(path) in str(info.value)


def test_probe_positions_are_validated(tmp_path):
    path = save_cv_module(_Detached(), tmp_path / "m.pt", n_atoms=4, latent_dim=1)
    model = lb.export.LatentModelFile(torch.jit.load(str(path)), {"n_atoms": 4, "latent_dim": 1}, path)
    with pytest.raises(ValueError, match=r"probe_positions must be finite with shape \(4, 3\)"):
        check_model_output(model, np.zeros((5, 3)))
    with pytest.raises(ValueError, match="probe_positions must be finite"):
        check_model_output(model, np.full((4, 3), np.nan))
