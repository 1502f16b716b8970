"""Small campaigns on a periodic triatomic that straddles the box boundary: the box reaches every encoder call
(records, training, weights = the z the bias acted on), the OPES strategy and converge phase run and resume,
the OOD guard ends a round early for retraining (and cannot judge from too few frames), and the same config and
seed reproduce identical frames and weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import openmm
import pytest
from openmm import app, unit

from latentbias.campaign.converge import HISTORY_ROWS
from latentbias.campaign import Campaign, load_config
from latentbias.campaign.records import frame_boxes
from latentbias.io import load_json

BOX = 2.0  # nm


def write_periodic_system(folder: Path) -> None:
    """Three bonded atoms (a soft triangle with two bond lengths) in a 2 nm cubic box, placed across x = 0 so
    that the stored positions are wrapped: atom 0 at x = 1.93, atoms 1-2 near x = 0.05."""
    system = openmm.System()
    system.setDefaultPeriodicBoxVectors(openmm.Vec3(BOX, 0, 0), openmm.Vec3(0, BOX, 0), openmm.Vec3(0, 0, BOX))
    for _ in range(3):
        system.addParticle(12.0)
    bonds = openmm.CustomBondForce("k*(r^2 - a^2)^2*(r^2 - b^2)^2/(b^2-a^2)^4*h; k=1; h=15; a=0.12; b=0.2")
    bonds.setUsesPeriodicBoundaryConditions(True)
    bonds.addBond(0, 1, [])
    harmonic = openmm.HarmonicBondForce()
    harmonic.setUsesPeriodicBoundaryConditions(True)
    harmonic.addBond(1, 2, 0.15, 2000.0)
    harmonic.addBond(0, 2, 0.15, 2000.0)
    system.addForce(bonds)
    system.addForce(harmonic)
    (folder / "system.xml").write_text(openmm.XmlSerializer.serialize(system))
    top = app.Topology()
    chain = top.addChain()
    for name in ("A", "B", "C"):
        top.addAtom(name, app.element.carbon, top.addResidue("TRI", chain))
    top.setPeriodicBoxVectors([openmm.Vec3(BOX, 0, 0), openmm.Vec3(0, BOX, 0), openmm.Vec3(0, 0, BOX)] * unit.nanometer)
    xyz = np.array([[BOX - 0.07, 1.0, 1.0], [0.05, 1.0, 1.0], [0.0, 1.12, 1.0]])
    with open(folder / "start.pdb", "w") as fh:
        app.PDBFile.writeFile(top, xyz * 10 * unit.angstrom, fh)


def config_text(strategy="opes", rounds=2, converge=True, ood="", method="opes", restarts=0) -> str:
    return f"""
[system]
system_xml = "system.xml"
pdb = "start.pdb"
constraints = "None"

[md]
platform = "Reference"
timestep = 2.0
seed = 17

[features]
kind = ["distances"]
selection = "all"

[model]
latent_dim = 1
hidden = [8]
epochs = 25
patience = 10
learning_rate = 0.003

[campaign]
rounds = {rounds}
round0_steps = 2000
steps_per_round = 3000
save_interval = 50
checkpoint_interval = 1000
strategy = "{strategy}"

[metadynamics]
frequency = 50

[opes]
barrier = 10.0
pace = 50
sigma = 0.1

[converge]
enabled = {str(converge).lower()}
method = "{method}"
max_steps = 3000
min_steps = 2000
restarts = {restarts}

[ood]
{ood}
"""


def make(folder: Path, **kw) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_periodic_system(folder)
    (folder / "c.toml").write_text(config_text(**kw))
    return folder / "c.toml"


@pytest.fixture(scope="module")
def periodic_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("periodic")
    campaign = Campaign(load_config(make(folder)), folder / "run", progress=False)
    campaign.run()
    return campaign, folder


def test_box_is_recorded_and_reaches_every_encoder_call(periodic_run):
    campaign, _ = periodic_run
    frames = campaign.all_frames(campaign.last_round)
    boxes = frame_boxes(frames)
    assert boxes is not None and np.allclose(boxes, np.diag([BOX] * 3))
    raw = np.linalg.norm(frames["positions"][:, 0] - frames["positions"][:, 1], axis=1)
    assert np.all(raw > BOX / 2)  # atoms 0 and 1 are bonded but stored an image apart: the molecule is wrapped
    for r in (1, 2):  # the z the bias acted on (observed with the box) is the z of the weights and the alignment
        sel = frames["round"] == r
        acted = np.concatenate([campaign.run_dir.read_segment(r, k)["z"]
                                for k in range(campaign.run_dir.round_segments(r))])
        np.testing.assert_allclose(campaign.encode(r - 1, frames)[sel], acted, atol=1e-5)
        no_box = campaign.model(r - 1).file.encode(frames["positions"][sel].astype(float))
        assert np.max(np.abs(no_box - acted)) > 0.1  # without the box the z would differ: the test can fail
    # training saw minimum-image distances (all < 0.3 nm), not the raw ones (> 1 nm), and its z range is the
    # range of the z evaluated with the box
    for r in (0, 1):
        mean = campaign.model(r).autoencoder.standardizer.mean.numpy()
        assert np.all(mean < 0.3), mean
        z = campaign.encode(r, {k: v[frames["round"] <= r] for k, v in frames.items()})
        np.testing.assert_allclose(campaign.model(r).info["z_min"], z.min(0), atol=1e-6)
    table = np.loadtxt(campaign.run_dir.path / "weights.csv", delimiter=",", skiprows=2, ndmin=2)
    used = np.isfinite(table[:, 5])
    assert used.sum() > 0 and set(table[used, 0].astype(int)) == {campaign.converge_round}
    assert np.all(table[~used, 7] > 0)
    weights = json.loads((campaign.run_dir.path / "weights.json").read_text())
    assert weights["converge_end"] in ("converged", "budget") and weights["frames_used"] == used.sum()
    conv = np.loadtxt(campaign.run_dir.round_dir(campaign.converge_round) / "convergence.csv", delimiter=",",
                      skiprows=2, ndmin=2)
    assert len(conv) == min(campaign.run_dir.round_segments(campaign.converge_round), HISTORY_ROWS)


def test_same_config_and_seed_reproduce_frames_and_weights(periodic_run, tmp_path):
    campaign, folder = periodic_run
    again = Campaign(load_config(make(tmp_path / "again")), tmp_path / "again" / "run", progress=False)
    again.run()
    a, b = campaign.all_frames(campaign.last_round), again.all_frames(again.last_round)
    for key in ("positions", "step", "bias_kjmol", "ct_kjmol", "box"):
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    wa = (campaign.run_dir.path / "weights.csv").read_text()
    wb = (again.run_dir.path / "weights.csv").read_text()
    assert wa == wb


def test_ood_guard_ends_the_round_for_retraining(tmp_path):
    # every frame is out of distribution (threshold far below the training errors): round 1 ends after its
    # first segment, the encoder retrains, round 2 runs; the shortened round is in all frames and weights; the
    # converge phase (here: metadynamics) goes back to retraining once after its first segment ([converge]
    # restarts = 1), then its second attempt (round 4) only counts the flags and runs its budget or converges
    config = make(tmp_path, strategy="metadynamics", rounds=3, converge=True, method="metadynamics", restarts=1,
                  ood="threshold = 1e-9\nmin_frames = 10\nretrain_fraction = 0.5")
    campaign = Campaign(load_config(config), tmp_path / "run", progress=False)
    campaign.run()
    end = load_json(campaign.run_dir.round_dir(1) / "end.json")  # verified; without its checksum key
    assert end == {"round": 1, "segments": 1, "reason": "ood"}
    assert campaign.converge_round == campaign.last_round == 4
    assert json.loads((campaign.run_dir.round_dir(3) / "end.json").read_text())["reason"] == "ood"
    frames = campaign.all_frames(4)
    assert np.count_nonzero(frames["round"] == 1) == 20 and np.all(frames["ood"][frames["round"] >= 1])
    table = np.loadtxt(campaign.run_dir.path / "weights.csv", delimiter=",", skiprows=2, ndmin=2)
    assert len(table) == len(frames["step"])
    assert (campaign.run_dir.round_dir(2) / "model.pt").is_file()
    assert (campaign.run_dir.round_dir(3) / "model.pt").is_file()  # the restarted attempt was trained on
    conv = frames["round"] == 4
    assert conv.sum() >= 40 and np.all(frames["ct_kjmol"][conv][10:] != 0)  # metadynamics c(t) recorded
    used = np.isfinite(table[:, 5])
    assert used.any() and set(table[used, 0].astype(int)) == {4}


def test_ood_guard_cannot_judge_from_too_few_frames(tmp_path, caplog):
    config = make(tmp_path, strategy="metadynamics", rounds=2, converge=False,
                  ood="threshold = 1e-9\nmin_frames = 1000")
    with caplog.at_level("INFO", logger="latentbias.campaign.roundbias"):
        campaign = Campaign(load_config(config), tmp_path / "run", progress=False)
        campaign.run()
    assert "cannot judge yet" in caplog.text
    frames = campaign.all_frames(1)
    assert not frames["ood"].any() and not (campaign.run_dir.round_dir(1) / "end.json").exists()
