"""Featurizers against exact closed forms on small hand-built structures (fast: no TorchScript, no MD system).

Distances and contact switching values at known separations (with and without periodic images), dihedral angles
of a constructed quadruplet for every quadrant, aligned coordinates of an exact rigid motion, molecules made whole
across the boundary, the standardizer against numpy's (weighted) moments, batched featurisation, and the input
contracts of the featurizer constructors. These run first in the mutation session of ``features.py``
(TESTING.md, "Mutation testing"); every tolerance is float64 round-off unless stated.
"""

from __future__ import annotations

import itertools

import mdtraj as md
import numpy as np
import pytest
import torch

import latentbias as lb
from latentbias.features import build_featurizer, featurize


def chain_topology(n_atoms: int, residue: str = "UNK") -> md.Topology:
    """mdtraj topology of n carbon atoms in one residue (for the selection-based constructors)."""
    top = md.Topology()
    res = top.add_residue(residue, top.add_chain())
    for i in range(n_atoms):
        top.add_atom(f"C{i}", md.element.carbon, res)
    return top


def rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def t64(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


# ----------------------------------------------------------------------------------------------- distances


def test_distances_are_euclidean_norms_and_minimum_images():
    x = np.array([[0.1, 0.2, 0.3], [1.3, -0.4, 0.7], [0.1, 2.2, 0.3], [-0.5, 0.0, 0.1]])
    pairs = [[0, 1], [2, 0], [3, 1]]
    d = lb.Distances(pairs)
    exact = [np.linalg.norm(x[b] - x[a]) for a, b in pairs]
    np.testing.assert_allclose(d(t64(x)).numpy(), exact, rtol=1e-14)
    # in a 2.5 nm cubic box the 0-2 separation of 2.0 nm is 0.5 nm through the boundary
    box = t64(2.5 * np.eye(3))
    d02 = lb.Distances([[0, 2]])
    assert float(d02(t64(x), box)) == pytest.approx(0.5, rel=1e-14)
    assert float(d02(t64(x))) == pytest.approx(2.0, rel=1e-14)
    # batched frames
    frames = np.stack([x, x @ rotation(1).T + 3.0])
    np.testing.assert_allclose(d(t64(frames)).numpy(), [exact, exact], rtol=1e-12)
    assert d.n_features == 3
    assert d.feature_names() == ["d(0,1)", "d(2,0)", "d(3,1)"]
    np.testing.assert_array_equal(d.atom_indices(), [0, 1, 2, 3])
    assert d.min_atoms() == 4
    with pytest.raises(ValueError, match="two different atoms"):
        lb.Distances([[0, 1], [2, 2]])


def test_distances_from_selection_keeps_pairs_by_separation_in_selection_order():
    top = chain_topology(6)
    sel = [5, 1, 3, 4]
    assert lb.Distances.from_selection(top, sel).pairs().tolist() == [list(p) for p in itertools.combinations(sel, 2)]
    assert lb.Distances.from_selection(top, sel, min_separation=2).pairs().tolist() == [[5, 3], [5, 4], [1, 4]]
    assert lb.Distances.from_selection(top, sel, min_separation=3).pairs().tolist() == [[5, 4]]
    assert lb.Distances.from_selection(top, "name C0 or name C1").pairs().tolist() == [[0, 1]]
    with pytest.raises(ValueError, match="at least 2"):
        lb.Distances.from_selection(top, [3])
    with pytest.raises(ValueError, match="at least 2"):
        lb.Contacts.from_selection(top, "name C2")


# ------------------------------------------------------------------------------------------------ contacts


@pytest.mark.parametrize("n", [6, 3, 1])
def test_contacts_are_the_rational_switching_function_and_its_derivative(n):
    r0 = 0.45
    rs = np.array([0.1, 0.45, 0.6, 1.3])
    x = np.zeros((len(rs) + 1, 3))
    x[1:, 0] = rs
    c = lb.Contacts([[0, k] for k in range(1, len(rs) + 1)], r0=r0, n=n)
    pos = t64(x).requires_grad_(True)
    s = c(pos)
    np.testing.assert_allclose(s.detach().numpy(), 1.0 / (1.0 + (rs / r0) ** n), rtol=1e-14)
    assert float(s[1].detach()) == pytest.approx(0.5, rel=1e-15)  # s(r0) = 1/2
    # ds/dr = -(n / r0) (r / r0)^(n - 1) / (1 + (r / r0)^n)^2 on the moving atom, along x
    (grad,) = torch.autograd.grad(s.sum(), pos)
    dsdr = -(n / r0) * (rs / r0) ** (n - 1) / (1.0 + (rs / r0) ** n) ** 2
    np.testing.assert_allclose(grad[1:, 0].numpy(), dsdr, rtol=1e-12)
    # through the boundary of a 2 nm box, 1.7 nm apart is 0.3 nm
    y = np.array([[0.0, 0.0, 0.0], [1.7, 0.0, 0.0]])
    one = lb.Contacts([[0, 1]], r0=r0, n=n)
    assert float(one(t64(y), t64(2.0 * np.eye(3)))) == pytest.approx(1.0 / (1.0 + (0.3 / r0) ** n), rel=1e-13)


def test_contacts_defaults_and_input_contract():
    c = lb.Contacts([[0, 1]])
    assert (c.r0, c.exponent) == (0.8, 6)
    assert c.spec() == {"type": "contacts", "r0_nm": 0.8, "n": 6, "pairs": [[0, 1]]}
    top = chain_topology(4)
    cs = lb.Contacts.from_selection(top, [0, 2, 3])
    assert cs.pairs().tolist() == [[0, 2], [0, 3], [2, 3]] and (cs.r0, cs.exponent) == (0.8, 6)
    assert cs.n_features == 3 and cs.min_atoms() == 4
    assert lb.Contacts.from_selection(top, [3, 1]).pairs().tolist() == [[3, 1]]
    np.testing.assert_array_equal(cs.atom_indices(), [0, 2, 3])
    for bad_r0 in (0.0, -0.3, np.inf, np.nan):
        with pytest.raises(ValueError, match="r0"):
            lb.Contacts([[0, 1]], r0=bad_r0)
    for bad_n in (0, -2, 2.5):
        with pytest.raises(ValueError, match="n must"):
            lb.Contacts([[0, 1]], n=bad_n)
    assert lb.Contacts([[0, 1]], r0=1e-3, n=1).exponent == 1


# ----------------------------------------------------------------------------------------------- dihedrals


def quadruplet_with_dihedral(phi: float, bonds=(0.15, 0.16, 0.14)) -> np.ndarray:
    """Four atoms whose dihedral p0-p1-p2-p3 is phi (IUPAC sign), bond angles 110 degrees."""
    theta = np.radians(110.0)
    p1 = np.zeros(3)
    p2 = np.array([bonds[1], 0.0, 0.0])
    p0 = p1 + bonds[0] * np.array([-np.cos(theta), np.sin(theta), 0.0])
    p3 = p2 + bonds[2] * np.array([-np.cos(np.pi - theta), np.sin(np.pi - theta) * np.cos(phi),
                                   np.sin(np.pi - theta) * np.sin(phi)])
    return np.stack([p0, p1, p2, p3])


def test_dihedrals_give_sin_and_cos_of_constructed_angles_as_mdtraj():
    phis = np.radians([-170.0, -100.0, -30.0, 0.0, 45.0, 120.0, 179.0])
    x = np.concatenate([quadruplet_with_dihedral(p) + [0.0, 0.0, 0.5 * k] for k, p in enumerate(phis)])
    quads = np.arange(len(x)).reshape(-1, 4)
    feat = lb.Dihedrals(quads, names=[f"phi{k}" for k in range(len(phis))])
    out = feat(t64(x)).numpy()
    np.testing.assert_allclose(out, np.r_[np.sin(phis), np.cos(phis)], atol=1e-13)
    top = chain_topology(len(x))
    np.testing.assert_allclose(md.compute_dihedrals(md.Trajectory(x[None], top), quads)[0], phis, atol=1e-5)
    assert feat.n_features == 2 * len(phis)
    assert feat.feature_names()[:2] == ["sin(phi0)", "sin(phi1)"] and feat.feature_names()[len(phis)] == "cos(phi0)"
    assert lb.Dihedrals(quads[:2]).feature_names() == ["sin(dih0)", "sin(dih1)", "cos(dih0)", "cos(dih1)"]
    np.testing.assert_array_equal(feat.quadruplets(), quads)
    with pytest.raises(ValueError, match="names"):
        lb.Dihedrals(quads, names=["a"])
    # a quadruplet split by the boundary of a 1 nm box gives the same angle with the box
    shifted = quadruplet_with_dihedral(phis[4]) + [0.95, 0.4, 0.4]
    wrapped = shifted - np.floor(shifted)
    one = lb.Dihedrals([[0, 1, 2, 3]])
    np.testing.assert_allclose(one(t64(wrapped), t64(np.eye(3))).numpy(), [np.sin(phis[4]), np.cos(phis[4])],
                               atol=1e-13)


# -------------------------------------------------------------------------------------- aligned coordinates


def zigzag(n: int, bond: float = 0.3) -> np.ndarray:
    """A planar zigzag chain of n atoms, bond length ``bond`` nm, 120 degree angles."""
    x = np.zeros((n, 3))
    for k in range(1, n):
        ang = np.radians(30.0 if k % 2 else -30.0)
        x[k] = x[k - 1] + bond * np.array([np.cos(ang), np.sin(ang), 0.0])
    return x


def test_aligned_coordinates_of_a_rigid_motion_are_the_centred_reference():
    ref = zigzag(5) + np.array([0.0, 0.0, 0.1]) * np.arange(5)[:, None] ** 2  # not planar
    feat = lb.AlignedCoordinates(np.arange(5), ref)
    centred = ref - ref.mean(axis=0)
    np.testing.assert_allclose(feat.reference.numpy(), centred, atol=1e-15)
    for seed in range(3):
        moved = ref @ rotation(seed).T + np.array([1.0, -2.0, 0.5]) * seed
        np.testing.assert_allclose(feat(t64(moved)).numpy(), centred.ravel(), atol=1e-12)
    assert feat.n_features == 15
    assert feat.feature_names()[:4] == ["x(0)", "y(0)", "z(0)", "x(1)"]


def test_aligned_coordinates_take_the_reference_from_the_full_system_or_the_selection():
    full = zigzag(7) + 0.05 * np.random.default_rng(0).standard_normal((7, 3))
    atoms = [1, 4, 6]
    a = lb.AlignedCoordinates(atoms, full)  # full-system reference, 7 atoms
    b = lb.AlignedCoordinates(atoms, full[atoms])  # the selected atoms' reference
    np.testing.assert_allclose(a.reference.numpy(), b.reference.numpy(), atol=1e-15)
    c = lb.AlignedCoordinates.from_selection(chain_topology(7), atoms, full)
    np.testing.assert_allclose(c.reference.numpy(), b.reference.numpy(), atol=1e-15)
    # from a trajectory the first frame is the reference
    traj = md.Trajectory(np.stack([full, full[::-1]]), chain_topology(7))
    t = lb.AlignedCoordinates.from_selection(traj.topology, atoms, traj)
    np.testing.assert_allclose(t.reference.numpy(), b.reference.numpy(), atol=1e-6)  # mdtraj stores float32
    assert a.min_atoms() == 7 and a.spec()["atoms"] == atoms
    # a reference that is neither: 6 atoms cannot hold atom index 6
    with pytest.raises(ValueError, match="reference has 6 atoms"):
        lb.AlignedCoordinates(atoms, full[:6])
    with pytest.raises(ValueError, match="at least 3"):
        lb.AlignedCoordinates([0, 1], full)
    with pytest.raises(ValueError, match="duplicates"):
        lb.AlignedCoordinates([0, 1, 1], full)
    # several frames are not a reference structure
    with pytest.raises(ValueError, match=r"must have shape \(n_atoms, 3\)"):
        lb.AlignedCoordinates.from_selection(chain_topology(7), atoms, np.stack([full, full]))
    with pytest.raises(ValueError, match=r"must have shape \(n_atoms, 3\)"):
        lb.AlignedCoordinates(atoms, np.stack([full, full]))


@pytest.mark.parametrize("n", [3, 4, 8])
def test_a_molecule_split_by_the_boundary_is_made_whole(n):
    """A chain longer than half the box, wrapped atom by atom, is rebuilt as one image of the whole chain."""
    box = 1.0 * np.eye(3)
    whole = zigzag(n, bond=0.28) + np.array([0.05, 0.3, 0.5])
    assert n < 4 or np.ptp(whole[:, 0]) > 0.5  # the long chains span more than half the box
    rng = np.random.default_rng(n)
    middle_out = np.argsort(np.abs(np.arange(n) - (n - 1) / 2), kind="stable")
    for order in (np.arange(n), np.arange(n)[::-1], middle_out):  # each atom has an earlier bonded neighbour
        shifted = whole[order] + rng.uniform(0, 1, 3)
        wrapped = shifted - np.floor(shifted)
        feat = lb.AlignedCoordinates(np.arange(n), whole[order])
        rebuilt = feat.make_whole(t64(wrapped), t64(box)).numpy()
        lattice = rebuilt - shifted
        np.testing.assert_allclose(lattice, np.broadcast_to(lattice[0], lattice.shape), atol=1e-12)
        np.testing.assert_allclose(lattice[0], np.round(lattice[0]), atol=1e-12)
        np.testing.assert_allclose(feat(t64(wrapped), t64(box)).numpy(), feat(t64(shifted)).numpy(), atol=1e-12)
        assert feat.make_whole(t64(wrapped), None) is not None
        np.testing.assert_array_equal(feat.make_whole(t64(wrapped), None).numpy(), wrapped)


def test_the_unwrapping_tree_hangs_each_atom_from_its_nearest_earlier_atom():
    """Paths in the tree are exact: summing the tree's bond vectors from atom 0 rebuilds every atom."""
    from latentbias.features import _unwrap_tree

    ref = np.array([[0.0, 0, 0], [1.0, 0, 0], [0.1, 0.2, 0], [1.1, 0.1, 0], [0.2, 0.5, 0.1]])
    child, parent, paths = _unwrap_tree(ref)
    assert child.tolist() == [1, 2, 3, 4]
    assert parent.tolist() == [0, 0, 1, 2]
    bonds = ref[child] - ref[parent]
    np.testing.assert_allclose(ref[0] + paths @ bonds, ref, atol=1e-15)
    assert paths.shape == (5, 4) and set(np.unique(paths)) <= {0.0, 1.0}


# ------------------------------------------------------------------------------------------- concatenation


def test_concatenate_stacks_parts_in_order():
    x = zigzag(5) + 0.1 * np.random.default_rng(1).standard_normal((5, 3))
    parts = [lb.Distances([[0, 3], [1, 4]]), lb.Dihedrals([[0, 1, 2, 3]]), lb.Contacts([[2, 4]], r0=0.5)]
    cat = lb.Concatenate(parts)
    expected = np.concatenate([p(t64(x)).numpy() for p in parts])
    np.testing.assert_allclose(cat(t64(x)).numpy(), expected, rtol=1e-15)
    assert cat.n_features == 2 + 2 + 1
    assert cat.feature_names() == ["d(0,3)", "d(1,4)", "sin(dih0)", "cos(dih0)", "contacts_0"]
    np.testing.assert_array_equal(cat.atom_indices(), [0, 1, 2, 3, 4])
    assert cat.spec()["parts"][1]["type"] == "dihedrals"
    with pytest.raises(ValueError, match="at least one"):
        lb.Concatenate([])
    with pytest.raises(TypeError, match="Featurizer"):
        lb.Concatenate([parts[0], torch.nn.Identity()])


# -------------------------------------------------------------------------------------------- standardizer


def test_standardizer_moments_equal_numpy_and_integer_weights_equal_repeated_frames():
    rng = np.random.default_rng(2)
    x = rng.normal([1.0, -3.0, 0.5], [2.0, 0.1, 5.0], size=(40, 3))
    s = lb.Standardizer(3).fit(x)
    np.testing.assert_allclose(s.mean.numpy(), x.mean(0), rtol=1e-13)
    np.testing.assert_allclose(s.scale.numpy(), x.std(0), rtol=1e-12)  # population std (ddof 0)
    counts = rng.integers(0, 4, size=40)
    sw = lb.Standardizer(3).fit(x, weights=counts)
    sr = lb.Standardizer(3).fit(np.repeat(x, counts, axis=0))
    np.testing.assert_allclose(sw.mean.numpy(), sr.mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(sw.scale.numpy(), sr.scale.numpy(), rtol=1e-12)
    np.testing.assert_allclose(sw.mean.numpy(), np.average(x, axis=0, weights=counts), rtol=1e-12)
    y = s(t64(x)).numpy()
    np.testing.assert_allclose(y.mean(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(y.std(0), 1.0, rtol=1e-12)
    np.testing.assert_allclose(s.inverse(t64(y)).numpy(), x, rtol=1e-13, atol=1e-13)
    z = t64(rng.standard_normal((5, 3)))
    np.testing.assert_allclose(s(s.inverse(z)).numpy(), z.numpy(), atol=1e-13)
    with pytest.raises(ValueError, match="shape"):
        lb.Standardizer(3).fit(x[:, :2])
    with pytest.raises(ValueError, match="shape"):
        lb.Standardizer(3).fit(x[0])


def test_standardizer_leaves_constant_features_unscaled():
    x = np.column_stack([np.full(10, 4.2), np.arange(10.0), np.r_[np.zeros(5), np.ones(5)]])
    s = lb.Standardizer(3).fit(x)
    np.testing.assert_allclose(s.scale.numpy(), [1.0, np.std(np.arange(10.0)), 0.5], rtol=1e-14)
    assert float(s.mean[0]) == pytest.approx(4.2, rel=1e-15)
    tiny = np.column_stack([1e-7 * np.arange(10.0)])
    assert float(lb.Standardizer(1).fit(tiny).scale[0]) == 1.0  # std 2.9e-7 < default min_scale 1e-6
    # min_scale is a strict bound: a std equal to it is kept
    assert float(lb.Standardizer(3).fit(x, min_scale=0.5).scale[2]) == 0.5
    assert float(lb.Standardizer(3).fit(x, min_scale=0.6).scale[2]) == 1.0


def test_dihedral_atom_helpers_need_at_least_one_kind(ala2):
    _, top, _ = ala2
    np.testing.assert_array_equal(lb.backbone_dihedral_atoms(top, ("psi", "phi")),
                                  np.r_[lb.backbone_dihedral_atoms(top, ("psi",)),
                                        lb.backbone_dihedral_atoms(top, ("phi",))])
    assert lb.backbone_dihedral_atoms(top).shape == (2, 4) and lb.backbone_dihedral_atoms(top).dtype == np.int64
    with pytest.raises(ValueError, match="has no  dihedrals"):
        lb.backbone_dihedral_atoms(top, ())
    with pytest.raises(ValueError, match=r"has no chi\[\] dihedrals"):
        lb.chi_dihedral_atoms(top, ())
    with pytest.raises(ValueError, match="chi order must be 1, 2, 3 or 4"):
        lb.chi_dihedral_atoms(top, (5,))
    for order in (1, 2, 3, 4):  # valid orders that alanine lacks
        with pytest.raises(ValueError, match=rf"has no chi\[{order}\] dihedrals"):
            lb.chi_dihedral_atoms(top, (order,))


def test_chi1_of_a_valine_side_chain_is_its_constructed_dihedral():
    top = md.Topology()
    res = top.add_residue("VAL", top.add_chain())
    for name, element in (("N", "N"), ("CA", "C"), ("CB", "C"), ("CG1", "C"), ("CG2", "C")):
        top.add_atom(name, md.element.get_by_symbol(element), res)
    np.testing.assert_array_equal(lb.chi_dihedral_atoms(top), [[0, 1, 2, 3]])
    built = build_featurizer(["chi1"], top, "all", None)  # valine has chi1 only
    np.testing.assert_array_equal(built.quadruplets(), [[0, 1, 2, 3]])
    feat = lb.Dihedrals.chi(top)
    x = np.vstack([quadruplet_with_dihedral(np.radians(-65.0)), [[0.3, 0.3, 0.3]]])
    np.testing.assert_allclose(feat(t64(x)).numpy(), [np.sin(np.radians(-65.0)), np.cos(np.radians(-65.0))],
                               atol=1e-13)


def test_topologies_from_mdtraj_and_openmm_select_the_same_atoms(ala2):
    _, top, xyz = ala2
    heavy = lb.select_atoms(top, "element != H")
    np.testing.assert_array_equal(lb.select_atoms(top.to_openmm(), "element != H"), heavy)
    np.testing.assert_array_equal(lb.select_atoms(md.Trajectory(xyz[None], top), "element != H"), heavy)
    assert lb.select_atoms(top, "element != H").dtype == np.int64
    for not_a_topology in ("ala2.pdb", xyz):
        with pytest.raises(TypeError, match="expected an mdtraj.Topology"):
            lb.select_atoms(not_a_topology, [0, 1])


# --------------------------------------------------------------------------------------------- featurize


def test_featurize_in_batches_with_per_frame_boxes_equals_frame_by_frame():
    rng = np.random.default_rng(3)
    frames = rng.uniform(0, 2.0, size=(7, 4, 3))
    boxes = np.stack([np.diag(rng.uniform(1.5, 2.5, 3)) for _ in range(7)])
    feat = lb.Distances([[0, 1], [2, 3], [0, 3]])
    one_by_one = np.stack([feat(t64(f), t64(b)).numpy() for f, b in zip(frames, boxes)])
    for batch in (1, 3, 7, 100):
        np.testing.assert_allclose(featurize(feat, frames, boxes, batch_size=batch), one_by_one, rtol=1e-14)
    one_box = np.stack([feat(t64(f), t64(boxes[2])).numpy() for f in frames])
    for batch in (2, 3, 1024):  # one box for every frame, whatever the batches
        np.testing.assert_allclose(featurize(feat, frames, boxes[2], batch_size=batch), one_box, rtol=1e-14)
    np.testing.assert_allclose(featurize(feat, frames[0]), feat(t64(frames[0])).numpy()[None], rtol=1e-14)
    f32 = featurize(lb.Distances([[0, 1]]), frames, dtype=torch.float32)
    assert f32.dtype == np.float32
    np.testing.assert_allclose(f32[:, 0], np.linalg.norm(frames[:, 1] - frames[:, 0], axis=1), rtol=1e-6)
    # the featurizer reads atom 3: four atoms are enough, two are not
    with pytest.raises(ValueError, match="positions have 2 atoms but the featurizer reads atom index 3"):
        featurize(feat, frames[:, :2])


# ---------------------------------------------------------------------------------------- build_featurizer


def test_build_featurizer_concatenates_the_named_kinds_in_order(ala2):
    _, top, xyz = ala2
    single = build_featurizer(["distances"], top, "name CA or name C", xyz)
    assert isinstance(single, lb.Distances) and single.n_features == 6
    feat = build_featurizer(["phipsi", "contacts", "aligned", "chi1"][:3], top, "element C", xyz, contact_r0=0.37)
    assert isinstance(feat, lb.Concatenate)
    assert [p.spec()["type"] for p in feat.parts] == ["dihedrals", "contacts", "aligned_coordinates"]
    assert feat.parts[1].r0 == 0.37
    np.testing.assert_array_equal(feat.parts[0].quadruplets(), lb.backbone_dihedral_atoms(top, ("phi", "psi")))
    assert build_featurizer(["contacts"], top, "element C", xyz).r0 == 0.8
    with pytest.raises(ValueError, match="no chi"):
        build_featurizer(["chi1"], top, "element C", xyz)  # alanine has no chi1
    with pytest.raises(ValueError, match="unknown feature kind 'rmsd'"):
        build_featurizer(["distances", "rmsd"], top, "element C", xyz)
    with pytest.raises(ValueError, match="at least one"):
        build_featurizer([], top, "element C", xyz)
