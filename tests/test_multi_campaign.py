"""Multi-system campaigns (wild type + mutants, one shared encoder) and their comparison.

Fast: config validation, balanced weights, shared features (same meaning in every system), latent basins, and a
tiny Ace-Ala-Nme / Ace-Gly-Nme campaign end to end through ``latentbias compare`` (checked against a direct
recomputation of ΔG from weights.csv and mdtraj φ). Slow: ΔΔF(Gly − Ala) of the example config against the
metadynamics references, and a villin HP35 point mutant in implicit solvent end to end.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import mdtraj as md
import numpy as np
import pytest
import torch

from latentbias.analysis.constants import kt_kjmol
from latentbias.campaign import ConfigError
from latentbias.campaign.compare import compare, latent_basins, parse_state_spec
from latentbias.campaign.multiconfig import member_seed, multi_from_dict
from latentbias.campaign.shared import SharedAtoms, balanced_weights
from latentbias.features import featurize

ROOT = Path(__file__).resolve().parents[1]
ALA = ROOT / "examples" / "reference" / "inputs" / "ace_ala_nme.pdb"
GLY = ROOT / "examples" / "reference" / "inputs" / "ace_gly_nme.pdb"
C7EQ = ROOT / "examples" / "ala2_c7eq.pdb"
PHI = [4, 6, 8, 14]

SHARED_SECTIONS = """
[md]
platform = "Reference"
seed = 11

[features]
kind = ["aligned"]
selection = "element != H"

[model]
latent_dim = 2
hidden = [8, 8]
epochs = 15
patience = 5

[campaign]
rounds = 2
round0_steps = 1000
steps_per_round = 1500
save_interval = 50
checkpoint_interval = 500
strategy = ["metadynamics"]

[metadynamics]
bias_factor = 10.0
height = 3.0
frequency = 50

[ood]
min_frames = 10

[converge]
enabled = true
max_steps = 1500
min_steps = 1000
"""


def tiny_toml(tmp_path: Path) -> Path:
    text = textwrap.dedent(f"""
        [systems.ala]
        pdb = "{ALA}"
        forcefield = ["amber14-all.xml"]
        start = "{C7EQ}"

        [systems.gly]
        mutations = ["A2G"]

        [compare]
        cvs = ["phi:dihedral:4,6,8,14", "psi:dihedral:6,8,14,16"]
        states = {{ C7ax = {{ phi = [0.0, 120.0] }}, beta = {{ phi = [-180.0, -100.0] }} }}
        basins = 2
        bins = 20
    """) + SHARED_SECTIONS
    path = tmp_path / "tiny.toml"
    path.write_text(text)
    return path


def _raw(**systems):
    import tomllib

    raw = tomllib.loads(SHARED_SECTIONS)
    raw["systems"] = systems
    return raw


# ------------------------------------------------------------------------------------------------ configuration

def test_config_refuses_bad_multi_system_tables(tmp_path):
    ala = {"pdb": str(ALA), "forcefield": ["amber14-all.xml"]}
    with pytest.raises(ConfigError, match="at least two"):
        multi_from_dict(_raw(ala=ala))
    with pytest.raises(ConfigError, match="not both"):
        multi_from_dict({**_raw(ala=ala, gly={"mutations": ["A2G"]}), "system": ala})
    with pytest.raises(ConfigError, match="must name a system given by a spec"):
        multi_from_dict(_raw(ala=ala, g1={"mutations": ["A2G"]}, g2={"mutations": ["A2V"], "of": "g1"}))
    with pytest.raises(ConfigError, match="pdb \\+ forcefield"):
        multi_from_dict(_raw(wt={"testsystem": "alanine-dipeptide-vacuum"}, gly={"mutations": ["A2G"]}))
    with pytest.raises(ConfigError, match="mutation 'Q2'"):
        multi_from_dict(_raw(ala=ala, gly={"mutations": ["Q2"]}))
    with pytest.raises(ConfigError, match="takes only"):
        multi_from_dict(_raw(ala=ala, gly={"mutations": ["A2G"], "forcefield": ["x.xml"]}))
    with pytest.raises(ConfigError, match="systems.bad.*file not found"):
        multi_from_dict(_raw(ala=ala, bad={"pdb": "missing.pdb", "forcefield": ["amber14-all.xml"]}))
    raw = _raw(ala=ala, gly={"mutations": ["A2G"]})
    raw["compare"] = {"colour": 1}
    with pytest.raises(ConfigError, match="unknown key"):
        multi_from_dict(raw)
    cfg = multi_from_dict(_raw(ala=ala, gly={"mutations": ["ALA-2-GLY"]}))
    assert cfg.names == ["ala", "gly"] and cfg.reference == "ala" and cfg.systems["gly"].of == "ala"


def test_member_seeds_differ_and_stay_in_range():
    seeds = [member_seed(s, i) for s in (1, 2024, 2**31 - 1) for i in range(4)]
    assert all(1 <= s <= 2**31 - 1 for s in seeds)
    assert len({member_seed(2024, i) for i in range(4)}) == 4


def test_parse_state_spec():
    assert parse_state_spec("C7ax:phi=0,120") == ("C7ax", {"phi": [0.0, 120.0]})
    assert parse_state_spec("A:z0=-1,0:z1=0,2") == ("A", {"z0": [-1.0, 0.0], "z1": [0.0, 2.0]})
    with pytest.raises(ValueError, match="NAME:VAR"):
        parse_state_spec("C7ax")


# ------------------------------------------------------------------------------------------------ shared encoder

def test_balanced_weights_give_every_system_equal_total_weight():
    labels = np.array([0] * 30 + [1] * 10 + [2] * 60)
    w = balanced_weights(labels)
    totals = [w[labels == s].sum() for s in range(3)]
    np.testing.assert_allclose(totals, [100 / 3] * 3)
    assert w.mean() == pytest.approx(1.0)


def test_shared_features_mean_the_same_atoms_in_every_system():
    """A glycine frame whose shared atoms sit where the alanine frame's do has identical shared features."""
    ta, tg = md.load(str(ALA)), md.load(str(GLY))
    shared = SharedAtoms([ta.topology, tg.topology], ta.xyz[0])
    m = shared.maps[1]
    rng = np.random.default_rng(0)
    xa = ta.xyz[0] + 0.03 * rng.standard_normal(ta.xyz[0].shape)
    xg = tg.xyz[0].astype(float)
    xg[m[m >= 0]] = xa[np.flatnonzero(m >= 0)]
    for kinds in (["aligned"], ["distances"], ["phipsi"], ["aligned", "phipsi"]):
        fa = featurize(shared.featurizer(0, kinds, "element != H"), xa[None])
        fg = featurize(shared.featurizer(1, kinds, "element != H"), xg[None])
        assert fa.shape == fg.shape
        np.testing.assert_allclose(fa, fg, atol=1e-9)
    # the alanine CB is left out of the heavy-atom selection; the glycine's HA2/HA3 never enter
    names = {ta.topology.atom(int(i)).name for i in shared.reference_selection("element != H")}
    assert "CB" not in names and {"N", "CA", "C", "O"} <= names
    assert shared.featurizer(0, ["aligned"], "element != H").n_features == 3 * 9
    # moving a non-shared atom (the alanine CB) changes no shared feature
    xb = xa.copy()
    xb[[a.index for a in ta.topology.atoms if a.name == "CB"]] += 0.2
    np.testing.assert_allclose(featurize(shared.featurizer(0, ["aligned"], "element != H"), xb[None]),
                               featurize(shared.featurizer(0, ["aligned"], "element != H"), xa[None]), atol=1e-12)


def test_reference_cv_atoms_are_the_mutants_own_atoms_by_name():
    """``[compare] cvs`` are written in the wild type's atom indices; in the pdbfixer mutant the same atoms have
    other indices (Ace-Gly-Nme: CA's neighbours are HA2/HA3, the residue's C is atom 11, not 14). The comparison
    must evaluate φ/ψ on the mutant's own N, CA, C (matched by residue and atom name), i.e. agree with mdtraj's
    own φ/ψ of the mutant, and give a glycine conformation and its mirror image opposite φ, ψ."""
    from latentbias.campaign.report import parse_cv_spec

    ta, tg = md.load(str(ALA)), md.load(str(GLY))
    shared = SharedAtoms([ta.topology, tg.topology], ta.xyz[0])
    phi_ref = parse_cv_spec("phi:dihedral:4,6,8,14")
    psi_ref = parse_cv_spec("psi:dihedral:6,8,14,16")
    phi_g = shared.maps[1][list(phi_ref.atoms)]
    psi_g = shared.maps[1][list(psi_ref.atoms)]
    assert [str(tg.topology.atom(int(i))) for i in phi_g] == ["ACE1-C", "GLY2-N", "GLY2-CA", "GLY2-C"]
    assert [str(tg.topology.atom(int(i))) for i in psi_g] == ["GLY2-N", "GLY2-CA", "GLY2-C", "NME3-N"]
    assert list(phi_g) != list(phi_ref.atoms)  # the indices differ: mapping by index would be wrong
    rng = np.random.default_rng(3)
    xyz = tg.xyz[0] + 0.05 * rng.standard_normal((20, *tg.xyz[0].shape))
    traj = md.Trajectory(np.concatenate([xyz, xyz * np.array([1.0, 1.0, -1.0])]).astype(np.float32), tg.topology)
    from latentbias.campaign.report import CVSpec

    phi = CVSpec("phi", "dihedral", tuple(int(a) for a in phi_g)).evaluate(traj)
    psi = CVSpec("psi", "dihedral", tuple(int(a) for a in psi_g)).evaluate(traj)
    np.testing.assert_allclose(phi, np.degrees(md.compute_phi(traj)[1][:, 0]), atol=1e-4)
    np.testing.assert_allclose(psi, np.degrees(md.compute_psi(traj)[1][:, 0]), atol=1e-4)
    np.testing.assert_allclose(phi[20:], -phi[:20], atol=1e-3)  # mirror image: (phi, psi) -> (-phi, -psi)
    np.testing.assert_allclose(psi[20:], -psi[:20], atol=1e-3)


def test_latent_basins_split_two_wells():
    rng = np.random.default_rng(1)
    z = np.concatenate([rng.normal([-2, 0], 0.3, (4000, 2)), rng.normal([2, 0], 0.3, (1000, 2))])
    labels, _ = latent_basins(z, np.zeros(len(z)), 2, bins=20)
    assert np.mean(labels[:4000] == 0) > 0.98 and np.mean(labels[4000:] == 1) > 0.98


# ------------------------------------------------------------------------------------- end to end (tiny budget)

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from latentbias.cli import main

    tmp = tmp_path_factory.mktemp("multi")
    config = tiny_toml(tmp)
    rundir = tmp / "run"
    assert main(["run", str(config), "--rundir", str(rundir), "--quiet"]) == 0
    return config, rundir


def test_tiny_campaign_runs_every_system_with_one_encoder(tiny_run):
    from latentbias.campaign.shared import load_shared_autoencoder
    from latentbias.export import load_model

    _, rundir = tiny_run
    for name in ("ala", "gly"):
        progress = json.loads((rundir / "systems" / name / "progress.json").read_text())
        assert progress["finished"]
    mutant = md.load(str(rundir / "inputs" / "gly.pdb")).topology
    assert [r.name for r in mutant.residues] == ["ACE", "GLY", "NME"]
    # pooled weights keep a system column with every frame of both systems
    text = (rundir / "weights.csv").read_text().splitlines()
    assert text[1].startswith("system,round,")
    systems = [row.split(",")[0] for row in text[2:]]
    assert set(systems) == {"ala", "gly"}
    # one encoder: the members' model files hold the same autoencoder, and the same shared-atom coordinates
    # give the same z in both systems
    for r in (0, 1):
        ae, info = load_shared_autoencoder(rundir, r)
        assert set(info["frames_per_system"]) == {"ala", "gly"}
    ta = md.load(str(rundir / "systems" / "ala" / "round_001" / "topology.pdb"))
    tg = md.load(str(rundir / "systems" / "gly" / "round_001" / "topology.pdb"))
    shared = SharedAtoms([ta.topology, tg.topology], ta.xyz[0])
    m = shared.maps[1]
    xg = tg.xyz[0].astype(float)
    xg[m[m >= 0]] = ta.xyz[0][np.flatnonzero(m >= 0)]
    za = load_model(rundir / "systems" / "ala" / "round_001" / "model.pt").encode(ta.xyz[:1].astype(float))
    zg = load_model(rundir / "systems" / "gly" / "round_001" / "model.pt").encode(xg[None].astype(float))
    np.testing.assert_allclose(za, zg, atol=1e-5)
    # a second run of the finished campaign changes nothing
    from latentbias.campaign.multi import MultiCampaign
    from latentbias.campaign.multiconfig import load_multi_config

    before = (rundir / "weights.csv").read_bytes()
    out = MultiCampaign(load_multi_config(tiny_run[0]), rundir, progress=False).run()
    assert all(p["finished"] for p in out.values()) and (rundir / "weights.csv").read_bytes() == before


def test_tiny_campaign_compare_matches_a_direct_recomputation(tiny_run):
    from latentbias.cli import main

    _, rundir = tiny_run
    assert main(["compare", str(rundir)]) == 0
    out = rundir / "compare"
    for f in ("compare.md", "ddg.csv", "ddg.json", "fes_latent.png", "fes_phi_psi.png", "fes_phi_psi_gly.csv"):
        assert (out / f).is_file(), f
    result = json.loads((out / "ddg.json").read_text())
    kt = kt_kjmol(300.0)
    direct = {}
    for name in ("ala", "gly"):
        member = rundir / "systems" / name
        text = (member / "weights.csv").read_text().splitlines()
        header = text[1].split(",")
        table = np.loadtxt(text[2:], delimiter=",", ndmin=2)
        logw = table[:, header.index("logweight")]
        rounds = table[:, header.index("round")].astype(int)
        xyz = np.concatenate([md.load(str(member / f"round_{q:03d}" / "frames.dcd"),
                                      top=str(member / f"round_{q:03d}" / "topology.pdb")).xyz
                              for q in sorted(set(rounds))])
        top = md.load_topology(str(member / "round_000" / "topology.pdb"))
        quad = [[next(a.index for a in top.atoms if a.residue.index == top.atom(i).residue.index
                      and a.name == top.atom(i).name) for i in PHI]] if name == "ala" else None
        if name == "gly":  # the same atoms by residue and name in the mutant
            ref = md.load_topology(str(ALA))
            quad = [[next(a.index for a in top.atoms if a.residue.resSeq == ref.atom(i).residue.resSeq
                          and a.name == ref.atom(i).name) for i in PHI]]
        phi = np.degrees(md.compute_dihedrals(md.Trajectory(xyz, top), np.array(quad))[:, 0])
        used = np.isfinite(logw)
        w = np.exp(logw[used] - logw[used].max())
        for state, mask in (("C7ax", (phi >= 0) & (phi < 120)), ("beta", (phi >= -180) & (phi < -100))):
            p = w[mask[used]].sum() / w.sum()
            direct[(state, name)] = -kt * np.log(p / (1 - p)) if 0 < p < 1 else None
    for (state, name), value in direct.items():
        got = result["dG"].get(state, {}).get(name)
        if value is None:
            assert got is None
        else:
            assert got["value"] == pytest.approx(value, abs=1e-6)
            assert got["error"] >= 0 or np.isnan(got["error"])
    for state in result["ddG"]:
        if "gly" in result["ddG"][state]:
            d = result["ddG"][state]["gly"]
            a, g = result["dG"][state]["ala"], result["dG"][state]["gly"]
            assert d["value"] == pytest.approx(g["value"] - a["value"])
            assert d["error"] == pytest.approx(np.hypot(a["error"], g["error"]), nan_ok=True)
    md_text = (out / "compare.md").read_text()
    assert "ΔΔG gly − ala" in md_text and "fes_phi_psi.png" in md_text


def test_compare_refuses_a_single_system_rundir(tmp_path):
    with pytest.raises(ValueError, match="not a multi-system run directory"):
        compare([tmp_path])


# ------------------------------------------------------------------------------------------------------- slow

REF = ROOT / "examples" / "reference"


@pytest.fixture(scope="module")
def dipeptide_seed1(tmp_path_factory):
    """examples/ala_gly_compare.toml run once with seed 1 (~5 min on one idle core) and compared."""
    import tomllib

    from latentbias.campaign.multi import MultiCampaign

    raw = tomllib.loads((ROOT / "examples" / "ala_gly_compare.toml").read_text())
    raw["md"]["seed"] = 1
    cfg = multi_from_dict(raw, base_dir=ROOT / "examples")
    rundir = tmp_path_factory.mktemp("ala_gly") / "run"
    MultiCampaign(cfg, rundir, progress=False).run()
    return rundir, compare([rundir], plots=False)


def _dipeptide_refs() -> tuple[float, float]:
    key = "dF_c7ax_minus_rest_fes_mean_kjmol"
    return (json.loads((REF / "ala_amber14_phipsi_dF.json").read_text())[key],
            json.loads((REF / "gly_amber14_phipsi_dF.json").read_text())[key])


@pytest.mark.slow
def test_dipeptide_mutation_effect_is_resolved(dipeptide_seed1):
    """What one seed of the example supports (benchmarks/RESULTS.md, 2026-11-30, helper mutant12c): over 12 seeds in
    two sessions ΔΔF ranged −5.6 … −10.5 kJ/mol (reference −7.43; sd of the last six 1.5), so one seed is asserted
    only to resolve the mutation's effect: both systems cross between C7ax and the rest many times (≥ 13 committed φ
    round trips each among the estimate frames; seed 1: 33 Ala, 91 Gly — seed 6 had only 5 for Ala, which this test
    would catch), glycine's C7ax is more stable than alanine's (ΔΔF < 0 by more than 3σ of its own error), and ΔΔF
    lies within 4 kJ/mol of the reference (the largest deviation of the 12 seeds was 3.1)."""
    from latentbias.analysis.uncertainty import transition_count
    from latentbias.campaign.compare import load_system_frames
    from latentbias.campaign.report import parse_cv_spec

    rundir, c = dipeptide_seed1
    assert {"ala", "gly"} <= set(c.dg["C7ax"]), f"a system never sampled C7ax: {sorted(c.dg['C7ax'])}"
    for s in load_system_frames(rundir, [parse_cv_spec("phi:dihedral:4,6,8,14")]):
        phi = s.cvs["phi"]
        trips = transition_count((phi >= 30) & (phi < 90), (phi < -30) | (phi >= 150)) // 2
        assert trips >= 13, f"{s.name}: {trips} C7ax round trips"
    ref_a, ref_g = _dipeptide_refs()
    d = c.ddg["C7ax"]["gly"]
    assert d.value + 3 * d.error < 0, f"ddF {d.value:.2f} +- {d.error:.2f}"
    assert abs(d.value - (ref_g - ref_a)) < 4.0


@pytest.mark.slow
def test_dipeptide_ddf_matches_the_metadynamics_references(dipeptide_seed1):
    """ΔF(C7ax − rest) of Ala and Gly and ΔΔF within 1 kJ/mol of the references (openmm.app.Metadynamics on φ/ψ,
    4 × 20 ns each: 8.36, 0.93, −7.43 kJ/mol). With the example's 10 ns converge phase 7 of 8 seeds meet all three
    (seed 1, used here: 8.84, 1.16, −7.68; seed 3's glycine missed by 1.26; benchmarks/RESULTS.md, eighth
    session), so this can fail on another platform or build for a seed that behaves like seed 3."""
    _, c = dipeptide_seed1
    ref_a, ref_g = _dipeptide_refs()
    assert abs(c.dg["C7ax"]["gly"].value - ref_g) < 1.0
    assert abs(c.dg["C7ax"]["ala"].value - ref_a) < 1.0
    assert abs(c.ddg["C7ax"]["gly"].value - (ref_g - ref_a)) < 1.0
    g, m = c.dg["C7ax"]["gly"], c.dg["C7ax_mirror"]["gly"]
    assert abs(g.value - m.value) < 2 * np.hypot(g.error, m.error)


@pytest.mark.slow
def test_villin_point_mutant_end_to_end(tmp_path):
    """Villin HP35 (openmm's test.pdb, water stripped) and its F10L mutant in OBC2 implicit solvent: a tiny
    multi-system campaign and its comparison (latent FES, one latent state, basins)."""
    from openmm import app

    from latentbias.campaign.multi import MultiCampaign
    from latentbias.testsystems import villin_water_pdb

    pdb = app.PDBFile(str(villin_water_pdb()))
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.deleteWater()
    modeller.delete([r for r in modeller.topology.residues() if len(list(r.atoms())) == 1])  # the ions
    wt = tmp_path / "villin.pdb"
    with open(wt, "w") as fh:
        app.PDBFile.writeFile(modeller.topology, modeller.positions, fh, keepIds=True)
    text = textwrap.dedent(f"""
        [systems.wt]
        pdb = "{wt}"
        forcefield = ["amber99sbildn.xml"]
        implicit_solvent = "amber99_obc.xml"

        [systems.F10L]
        mutations = ["F10L"]

        [compare]
        states = {{ low_z0 = {{ z0 = [-100.0, 0.0] }} }}
        basins = 2
        bins = 15
    """) + SHARED_SECTIONS.replace('selection = "element != H"', 'selection = "name CA"').replace(
        "round0_steps = 1000", "round0_steps = 500").replace("steps_per_round = 1500", "steps_per_round = 500") \
        .replace("max_steps = 1500", "max_steps = 500").replace("min_steps = 1000", "min_steps = 500") \
        .replace('platform = "Reference"', 'platform = "CPU"\nplatform_properties = { Threads = "1" }')
    config = tmp_path / "villin.toml"
    config.write_text(text)
    from latentbias.campaign.multiconfig import load_multi_config

    MultiCampaign(load_multi_config(config), tmp_path / "run", progress=False).run()
    mutant = md.load_topology(str(tmp_path / "run" / "inputs" / "F10L.pdb"))
    assert [r.name for r in mutant.residues if r.resSeq == 10] == ["LEU"]
    c = compare([tmp_path / "run"], n_bootstrap=50)
    assert (tmp_path / "run" / "compare" / "fes_latent.png").is_file()
    assert set(c.systems) == {"wt", "F10L"}
    assert torch.isfinite(torch.as_tensor([e.value for d in c.dg.values() for e in d.values()])).all()


def test_interrupted_shared_train_phase_resumes(tmp_path, monkeypatch):
    """Killed after the shared encoder was written but before every system took it: the run resumes in step."""
    from latentbias.campaign.multi import MemberCampaign, MultiCampaign
    from latentbias.campaign.multiconfig import load_multi_config

    config = tiny_toml(tmp_path)
    config.write_text(config.read_text().replace("enabled = true", "enabled = false"))
    calls = {"n": 0}
    original = MemberCampaign.train_shared

    def flaky(self):
        calls["n"] += 1
        if calls["n"] == 2:  # the second system of round 0
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(MemberCampaign, "train_shared", flaky)
    with pytest.raises(KeyboardInterrupt):
        MultiCampaign(load_multi_config(config), tmp_path / "run", progress=False).run()
    monkeypatch.setattr(MemberCampaign, "train_shared", original)
    out = MultiCampaign(load_multi_config(config), tmp_path / "run", progress=False).run()
    assert all(p["finished"] for p in out.values())
    for name in ("ala", "gly"):
        info = json.loads((tmp_path / "run" / "systems" / name / "round_001" / "model.json").read_text())
        assert info["shared"] and info["round"] == 1
