"""Featurizers: invariance (float64, 1e-6), gradients (gradcheck), agreement with mdtraj, periodic images."""

from __future__ import annotations

import mdtraj as md
import numpy as np
import pytest
import torch

import latentbias as lb
from latentbias.features import featurize
from latentbias.geometry import minimum_image
from latentbias.testsystems import villin_water_pdb

from conftest import perturbed_frames


def random_rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def all_featurizers(top, xyz):
    heavy = "element != H"
    return {
        "distances": lb.Distances.from_selection(top, heavy),
        "dihedrals": lb.Dihedrals.backbone(top),
        "aligned": lb.AlignedCoordinates.from_selection(top, heavy, xyz),
        "contacts": lb.Contacts.from_selection(top, heavy, r0=0.4),
        "concat": lb.Concatenate(
            [lb.Distances.from_selection(top, "name CA or name C or name N"), lb.Dihedrals.backbone(top)]
        ),
    }


NAMES = ["distances", "dihedrals", "aligned", "contacts", "concat"]


@pytest.mark.parametrize("name", NAMES)
def test_rigid_motion_invariance(ala2, name):
    _, top, xyz = ala2
    feat = all_featurizers(top, xyz)[name].double()
    x = perturbed_frames(xyz, 1, scale=0.03, seed=1)[0]
    moved = x @ random_rotation(3).T + np.array([1.7, -0.4, 2.2])
    a = feat(torch.as_tensor(x))
    b = feat(torch.as_tensor(moved))
    assert a.shape == (feat.n_features,)
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck(ala2, name):
    _, top, xyz = ala2
    feat = all_featurizers(top, xyz)[name].double()
    x = torch.as_tensor(perturbed_frames(xyz, 1, scale=0.03, seed=2)[0], dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: feat(p), (x,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_torchscript_batched_and_float32(ala2, name):
    _, top, xyz = ala2
    feat = all_featurizers(top, xyz)[name].double()
    frames = perturbed_frames(xyz, 4, seed=3)
    scripted = torch.jit.script(feat)
    batch = scripted(torch.as_tensor(frames))
    single = torch.stack([feat(torch.as_tensor(f)) for f in frames])
    np.testing.assert_allclose(batch.numpy(), single.numpy(), atol=1e-10)
    f32 = scripted.float()(torch.as_tensor(frames, dtype=torch.float32))
    assert f32.dtype == torch.float32
    np.testing.assert_allclose(f32.numpy(), batch.numpy(), atol=2e-4)


def test_distances_and_dihedrals_match_mdtraj(ala2):
    _, top, xyz = ala2
    frames = perturbed_frames(xyz, 5, scale=0.05, seed=4)
    traj = md.Trajectory(frames, top)
    dist = lb.Distances.from_selection(top, "element != H")
    ref = md.compute_distances(traj, dist.pairs())
    np.testing.assert_allclose(featurize(dist, frames), ref, atol=1e-6)
    quads = lb.backbone_dihedral_atoms(top, ("phi", "psi"))
    angles = md.compute_dihedrals(traj, quads)
    out = featurize(lb.Dihedrals(quads), frames)
    np.testing.assert_allclose(out, np.concatenate([np.sin(angles), np.cos(angles)], axis=1), atol=1e-5)


def test_aligned_coordinates_match_superposition(ala2):
    _, top, xyz = ala2
    feat = lb.AlignedCoordinates.from_selection(top, "element != H", xyz)
    atoms = lb.select_atoms(top, "element != H")
    frame = perturbed_frames(xyz, 1, scale=0.05, seed=5)
    traj = md.Trajectory(frame, top).atom_slice(atoms)
    ref = md.Trajectory(xyz[None], top).atom_slice(atoms)
    ref.center_coordinates()
    traj.superpose(ref)
    traj.center_coordinates()
    np.testing.assert_allclose(featurize(feat, frame)[0], traj.xyz[0].ravel(), atol=1e-5)
    assert feat.n_features == 3 * len(atoms)


def test_contacts_switching_values():
    pos = torch.tensor([[0.0, 0.0, 0.0], [0.8, 0.0, 0.0], [0.0, 0.4, 0.0]], dtype=torch.float64)
    c = lb.Contacts([[0, 1], [0, 2]], r0=0.8, n=6)(pos)
    np.testing.assert_allclose(c.numpy(), [0.5, 1.0 / (1.0 + 0.5**6)], atol=1e-12)


def test_chi_helpers(ala2):
    _, top, _ = ala2
    phi = lb.backbone_dihedral_atoms(top, ("phi",))
    assert phi.shape == (1, 4)
    with pytest.raises(ValueError, match="no chi"):
        lb.chi_dihedral_atoms(top, (2,))  # alanine has no chi2
    with pytest.raises(ValueError, match="unknown backbone dihedral"):
        lb.backbone_dihedral_atoms(top, ("xi",))


def test_bad_selections(ala2):
    _, top, xyz = ala2
    with pytest.raises(ValueError, match="matched no atoms"):
        lb.Distances.from_selection(top, "name ZZZ")
    with pytest.raises(ValueError, match="invalid mdtraj selection"):
        lb.select_atoms(top, "name CA and and")
    with pytest.raises(ValueError, match="only 22 atoms"):
        lb.select_atoms(top, [0, 1, 99])
    with pytest.raises(ValueError, match="empty"):
        lb.Distances(np.zeros((0, 2), dtype=int))
    with pytest.raises(ValueError, match="collinear"):
        lb.AlignedCoordinates([0, 1, 2], np.array([[0.0, 0, 0], [1, 0, 0], [2, 0, 0]]))
    with pytest.raises(ValueError, match="non-finite"):
        featurize(lb.Distances([[0, 1]]), np.full((1, 22, 3), np.nan))


# ------------------------------------------------------------------------------------------ periodic systems


@pytest.fixture(scope="module")
def villin():
    """Villin in its water box: (topology, whole positions (n, 3) nm, box (3, 3) nm)."""
    traj = md.load(str(villin_water_pdb()))
    return traj.topology, traj.xyz[0].astype(np.float64), traj.unitcell_vectors[0].astype(np.float64)


def wrap_into_box(xyz: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Put every atom individually into the rectangular primary cell (splits molecules at the boundary)."""
    lengths = np.diag(box)
    return xyz - np.floor(xyz / lengths) * lengths


def test_minimum_image_triclinic():
    box = torch.tensor([[3.0, 0, 0], [1.0, 3.0, 0], [0.5, 0.7, 3.0]], dtype=torch.float64)
    delta = torch.tensor([[2.9, 2.8, 2.7], [-1.6, 0.2, 0.1]], dtype=torch.float64)
    reduced = minimum_image(delta, box)
    # the image must differ by a lattice vector and be the shortest among neighbouring images
    for d, r in zip(delta, reduced):
        cands = [d + i * box[0] + j * box[1] + k * box[2] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)
                 for _ in [0]]
        shortest = min(float(torch.linalg.norm(c)) for c in cands)
        assert float(torch.linalg.norm(r)) <= shortest + 1e-9


def test_protein_crossing_the_box_gives_same_features_and_z(villin):
    top, xyz, box = villin
    protein = "protein and element != H"
    feats = lb.Concatenate(
        [
            lb.AlignedCoordinates.from_selection(top, "protein and name CA", xyz),
            lb.Distances.from_selection(top, "protein and name CA"),
            lb.Dihedrals.backbone(top),
            lb.Contacts.from_selection(top, "protein and name CA", r0=1.0),
        ]
    ).double()
    assert len(lb.select_atoms(top, protein)) > 100
    # move the protein so it straddles the x, y and z faces, then wrap atom by atom
    centre = xyz[lb.select_atoms(top, "protein")].mean(axis=0)
    shifted = xyz - centre + 0.02 * np.diag(box)
    wrapped = wrap_into_box(shifted, box)
    ca = lb.select_atoms(top, "protein and name CA")
    assert np.ptp(wrapped[ca], axis=0).max() > 0.9 * np.diag(box).min()  # really split across the boundary
    b = torch.as_tensor(box)
    whole = feats(torch.as_tensor(shifted), b)
    split = feats(torch.as_tensor(wrapped), b)
    np.testing.assert_allclose(split.numpy(), whole.numpy(), atol=1e-6)
    # without the box the split molecule gives different (wrong) aligned coordinates
    assert not np.allclose(feats(torch.as_tensor(wrapped)).numpy(), whole.numpy(), atol=1e-3)
    # and a full latent model gives the same z
    from conftest import random_latent_model

    model = random_latent_model(feats, top.n_atoms, shifted[None] + 0.01 * np.random.default_rng(0).standard_normal((8,) + xyz.shape))
    z_whole = model.transform(shifted, box)
    z_split = model.transform(wrapped, box)
    np.testing.assert_allclose(z_split, z_whole, atol=1e-5)
