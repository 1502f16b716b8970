"""``[opes] max_temperature``: an OPES multithermal bias on the potential energy beside the latent OPES of a
campaign's OPES rounds (latentbias.bias.multithermal). Every frame's ``bias_kjmol`` holds both biases as they
acted on it, the state (ΔF_i estimates) is saved with the latent bias's and a resumed campaign continues it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from latentbias.campaign import Campaign, load_config

from campaign_toy import toy_config_text, write_toy_system


def test_the_converge_phase_carries_a_multithermal_bias(tmp_path):
    write_toy_system(tmp_path)
    text = toy_config_text(rounds=1, steps=4000, round0=4000, converge_steps=4000)
    (tmp_path / "toy.toml").write_text(text.replace("[opes]\n", "[opes]\nmax_temperature = 600.0\n"))
    campaign = Campaign(load_config(tmp_path / "toy.toml"), tmp_path / "run", progress=False)
    campaign.run()
    r = campaign.converge_round
    rdir = tmp_path / "run" / f"round_{r:03d}"
    states = sorted(rdir.glob("bias_*.json"))
    settings = json.loads(states[-1].read_text())["settings"]["coupledBias"]
    assert settings["maxTemperature"] == 600.0 and settings["temperature"] == 300.0
    assert settings["numTemperatures"] >= 2
    state = np.load(states[-1].with_suffix(".npz"))
    thermal = state["coupled_record_bias_kjmol"]
    latent = state["record_bias_kjmol"] + state["record_wall_kjmol"]
    assert len(thermal) == len(latent) > 0 and np.ptp(thermal) > 0  # the multithermal bias acted and changed
    # every frame saved at a deposition step carries the sum of both biases as they acted on it
    seg = np.load(sorted(rdir.glob("seg_*.npz"))[-1])
    steps = list(state["record_step"])
    rows = [steps.index(s) for s in seg["step"]]
    np.testing.assert_allclose(seg["bias_kjmol"], latent[rows] + thermal[rows], rtol=0, atol=1e-9)
    weights = json.loads((tmp_path / "run" / "weights.json").read_text())
    assert weights["frames_used"] > 0


def test_a_multithermal_state_does_not_restore_into_a_run_without_it(tmp_path):
    """Changing ``[opes] max_temperature`` under a converge phase that has started: the saved state names the
    setting that differs (``coupledBias``) instead of continuing with another ensemble."""
    write_toy_system(tmp_path)
    text = toy_config_text(rounds=1, steps=4000, round0=4000, converge_steps=4000)
    (tmp_path / "toy.toml").write_text(text.replace("[opes]\n", "[opes]\nmax_temperature = 600.0\n"))
    campaign = Campaign(load_config(tmp_path / "toy.toml"), tmp_path / "run", progress=False)
    campaign.run()
    from latentbias.bias.grid import LatentVariable
    from latentbias.bias.opes import LatentOPES
    rdir = tmp_path / "run" / f"round_{campaign.converge_round:03d}"
    plan = json.loads((rdir / "plan.json").read_text())
    system, _, _ = campaign.system()
    opes = LatentOPES(system, campaign.model(plan["model_round"]).file,
                      [LatentVariable(**v) for v in plan["variables"]], 300.0, 15.0, 100)
    with pytest.raises(ValueError, match="coupledBias"):
        opes.loadState(sorted(rdir.glob("bias_*.json"))[-1].with_suffix(""))
