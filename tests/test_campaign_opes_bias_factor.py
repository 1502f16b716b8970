"""``[opes] bias_factor``: OPES's target p^(1/γ) set apart from its barrier (PLUMED's BIASFACTOR beside BARRIER);
0, the default, keeps γ = barrier/kT."""

from __future__ import annotations

import json

import pytest

from latentbias.campaign import Campaign, load_config

from campaign_toy import toy_config_text, write_toy_system

KT_300 = 0.00831446261815324 * 300.0


@pytest.mark.parametrize("given, expected", [("", 15.0 / KT_300), ("bias_factor = 4.0\n", 4.0)])
def test_the_converge_phase_runs_with_the_configured_bias_factor(tmp_path, given, expected):
    write_toy_system(tmp_path)
    text = toy_config_text(rounds=1, steps=4000, round0=4000, converge_steps=4000)
    (tmp_path / "toy.toml").write_text(text.replace("[opes]\n", "[opes]\n" + given))
    Campaign(load_config(tmp_path / "toy.toml"), tmp_path / "run", progress=False).run()
    states = sorted((tmp_path / "run").glob("round_*/bias_*.json"))
    assert states, "the converge phase saved no OPES state"
    settings = json.loads(states[-1].read_text())["settings"]
    assert settings["barrier"] == 15.0
    assert settings["biasFactor"] == pytest.approx(expected, rel=1e-12)
