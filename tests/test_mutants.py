"""Wild type and mutants: mutation parsing, mutant building with PDBFixer, the atoms all systems share."""

from __future__ import annotations

from pathlib import Path

import mdtraj as md
import numpy as np
import pytest

from latentbias.mutants import common_atoms, mutate, parse_mutation

ALA2 = Path(__file__).resolve().parents[1] / "examples" / "ala2_c7eq.pdb"


@pytest.mark.parametrize("text,expected", [("L99A", ("LEU", 99, "ALA")), ("ala-2-gly", ("ALA", 2, "GLY")),
                                           ("g5w", ("GLY", 5, "TRP"))])
def test_parse_mutation(text, expected):
    assert parse_mutation(text) == expected


@pytest.mark.parametrize("bad", ["L99", "X99A", "LEU99ALA", "ALA-2-XYZ", ""])
def test_parse_mutation_refuses(bad):
    with pytest.raises(ValueError, match="mutation"):
        parse_mutation(bad)


@pytest.fixture(scope="module")
def gly(tmp_path_factory):
    out = tmp_path_factory.mktemp("mut") / "gly.pdb"
    top, xyz = mutate(ALA2, ["A2G"], out=out)
    return out, top, xyz


def test_mutate_builds_the_glycine(gly):
    out, top, xyz = gly
    t = md.load(str(out)).topology
    res = [r for r in t.residues if r.resSeq == 2][0]
    assert res.name == "GLY"
    assert sorted(a.name for a in res.atoms) == ["C", "CA", "H", "HA2", "HA3", "N", "O"]
    assert np.all(np.isfinite(xyz)) and len(xyz) == t.n_atoms


def test_mutate_is_reproducible(gly):
    """The same inputs give the same mutant, bit for bit (PDBFixer places rebuilt atoms with a randomly seeded
    integrator unless it is given a seed: two runs of one multi-system campaign built different glycines, and every
    round trained on them differed); seed 0 (OpenMM's
    "random") and non-integers are refused."""
    _, _, xyz = gly
    _, again = mutate(ALA2, ["A2G"])
    assert again.tobytes() == xyz.tobytes()
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="seed must be an integer"):
            mutate(ALA2, ["A2G"], seed=bad)


def test_mutate_refuses_a_wrong_residue(tmp_path):
    with pytest.raises(ValueError, match="residue 2 of chain A .* is ALA, not LEU"):
        mutate(ALA2, ["L2A"])
    with pytest.raises(ValueError, match="has no residue 7"):
        mutate(ALA2, ["A7G"])


def test_common_atoms_leave_out_the_mutated_side_chain(gly):
    out, _, _ = gly
    wt, mut = md.load_topology(str(ALA2)), md.load_topology(str(out))
    idx_wt, idx_mut = common_atoms([wt, mut])
    assert len(idx_wt) == len(idx_mut) == wt.n_atoms - 5  # ALA's CB, HB1-3 and HA are not shared with GLY
    for i, j in zip(idx_wt, idx_mut):
        a, b = wt.atom(int(i)), mut.atom(int(j))
        assert (a.name, a.residue.resSeq) == (b.name, b.residue.resSeq)
    left_out = {wt.atom(i).name for i in set(range(wt.n_atoms)) - set(idx_wt.tolist())}
    assert left_out == {"CB", "HB1", "HB2", "HB3", "HA"}
    heavy_wt, heavy_mut = common_atoms([wt, mut], selection="element != H")
    assert [wt.atom(int(i)).name for i in heavy_wt] == [mut.atom(int(j)).name for j in heavy_mut]
    assert "CB" not in {wt.atom(int(i)).name for i in heavy_wt}
