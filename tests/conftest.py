"""Shared fixtures: alanine dipeptide in vacuum and small latent models with random weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import latentbias as lb
from latentbias.testsystems import alanine_dipeptide_vacuum


@pytest.fixture(scope="session")
def ala2():
    """(system, mdtraj topology, positions ndarray (22, 3) nm) for alanine dipeptide in vacuum."""
    import mdtraj as md
    from openmm import unit

    system, topology, positions = alanine_dipeptide_vacuum()
    xyz = np.asarray(positions.value_in_unit(unit.nanometer))
    return system, md.Topology.from_openmm(topology), xyz


def perturbed_frames(xyz: np.ndarray, n: int, scale: float = 0.02, seed: int = 0) -> np.ndarray:
    """n frames of Gaussian-perturbed copies of xyz (nm)."""
    rng = np.random.default_rng(seed)
    return xyz[None] + scale * rng.standard_normal((n,) + xyz.shape)


def random_latent_model(featurizer, n_atoms: int, frames: np.ndarray, latent_dim: int = 2, seed: int = 0):
    """LatentModel with random (untrained) weights and a standardizer fitted on frames."""
    torch.manual_seed(seed)
    ae = lb.FeatureAutoencoder(featurizer.n_features, latent_dim, hidden=(16, 16), activation="tanh")
    ae.standardizer.fit(lb.features.featurize(featurizer, frames))
    return lb.LatentModel(featurizer, ae, n_atoms).double()


@pytest.fixture(scope="session")
def ala2_model(ala2, tmp_path_factory):
    """Path of an exported float64 model on ala2 heavy-atom distances (random weights, d = 2)."""
    system, top, xyz = ala2
    feat = lb.Distances.from_selection(top, "element != H")
    model = random_latent_model(feat, top.n_atoms, perturbed_frames(xyz, 50))
    path = tmp_path_factory.mktemp("models") / "ala2_d2.pt"
    lb.save_model(model, path, dtype="float64")
    return path
