"""CLI (train, info) and the quickstart example, end to end on alanine dipeptide."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mdtraj as md
import numpy as np
import pytest

import latentbias as lb
from latentbias.cli import main

from conftest import perturbed_frames

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def ala2_files(ala2, tmp_path):
    _, top, xyz = ala2
    traj = md.Trajectory(perturbed_frames(xyz, 60, scale=0.01).astype(np.float32), top)
    traj[0].save_pdb(str(tmp_path / "ala2.pdb"))
    traj[:30].save_dcd(str(tmp_path / "a.dcd"))
    traj[30:].save_dcd(str(tmp_path / "b.dcd"))
    return tmp_path


def test_cli_train_and_info(ala2_files, capsys):
    d = ala2_files
    out = d / "model.pt"
    argv = ["train", "-t", str(d / "ala2.pdb"), "--traj", str(d / "a.dcd"), str(d / "b.dcd"), "-s", "element != H",
            "-f", "distances", "phipsi", "-d", "2", "--hidden", "8", "--epochs", "3", "-q", "-o", str(out)]
    assert main(argv) == 0
    mf = lb.load_model(out)
    assert mf.latent_dim == 2 and mf.metadata["feature_spec"]["type"] == "concatenate"
    assert mf.metadata["extra"]["selection"] == "element != H"
    history = json.loads((d / "model.pt.history.json").read_text())
    assert len(history["train_loss"]) == 3
    with pytest.raises(SystemExit, match="--overwrite"):
        main(argv)
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "latent_dim      2" in text and "n_atoms         22" in text
    assert main(["info", "--json", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["n_atoms"] == 22


def test_cli_errors_are_messages_not_tracebacks(ala2_files, tmp_path):
    d = ala2_files
    with pytest.raises(SystemExit, match="matched no atoms"):
        main(["train", "-t", str(d / "ala2.pdb"), "--traj", str(d / "a.dcd"), "-s", "name XX", "-q",
              "-o", str(tmp_path / "x.pt")])
    (tmp_path / "junk.pt").write_text("nope")
    with pytest.raises(SystemExit, match="not a TorchScript file"):
        main(["info", str(tmp_path / "junk.pt")])


def test_console_script_runs(ala2_files):
    proc = subprocess.run([sys.executable, "-m", "latentbias.cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "train" in proc.stdout


def test_quickstart_runs(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "ala2_quickstart.py"), "--out", str(tmp_path), "--unbiased-ps", "40"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "z range" in proc.stdout
    assert lb.load_model(tmp_path / "ala2_latent.pt").latent_dim == 2


def test_train_help_shows_the_estimators_defaults(capsys):
    """`latentbias train --help` documents every option with the library's own defaults (one source)."""
    import inspect

    from latentbias.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    sig = inspect.signature(lb.LatentModelEstimator.__init__).parameters
    for option, name in [("--epochs", "epochs"), ("--lr", "learning_rate"), ("--patience", "patience"),
                         ("--latent-dim", "latent_dim"), ("--batch-size", "batch_size")]:
        assert option in text and f"(default: {sig[name].default})" in text


def test_latent_reporter_is_exported():
    from latentbias.reporters import LatentReporter

    assert lb.LatentReporter is LatentReporter
