"""``[converge] activation``: the converge phase's encoders may use another activation than the exploration rounds'
(:func:`latentbias.campaign.train.encoder_activation`; e.g. silu to explore, tanh to converge)."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest

from latentbias.campaign import Campaign, load_config
from latentbias.campaign.config import CampaignConfig, ConfigError
from latentbias.campaign.train import encoder_activation

from campaign_toy import toy_config_text, write_toy_system


def _config(converge: bool, activation: str, rounds: int = 3) -> CampaignConfig:
    cfg = CampaignConfig()
    return dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, activation="silu"),
        campaign=dataclasses.replace(cfg.campaign, rounds=rounds),
        converge=dataclasses.replace(cfg.converge, enabled=converge, activation=activation))


def test_encoder_activation_of_each_round():
    """Rounds 0 .. rounds-2 train exploration encoders; from round rounds-1 on (the converge phase's first frozen
    encoder, and the retrained ones after converge attempts that went back to retraining) the converge one."""
    cfg = _config(True, "tanh")
    assert [encoder_activation(cfg, r) for r in range(5)] == ["silu", "silu", "tanh", "tanh", "tanh"]
    assert [encoder_activation(_config(True, ""), r) for r in range(4)] == ["silu"] * 4
    assert [encoder_activation(_config(False, "tanh"), r) for r in range(4)] == ["silu"] * 4


def test_converge_activation_is_validated_and_stored_only_when_set(tmp_path):
    write_toy_system(tmp_path)
    text = toy_config_text(rounds=2, converge_steps=4000)
    with pytest.raises(ConfigError, match=r"\[converge\] activation"):
        (tmp_path / "bad.toml").write_text(text.replace("[converge]\n", '[converge]\nactivation = "relu6"\n'))
        load_config(tmp_path / "bad.toml")
    (tmp_path / "plain.toml").write_text(text)
    assert "activation" not in load_config(tmp_path / "plain.toml").to_dict()["converge"]
    (tmp_path / "set.toml").write_text(text.replace("[converge]\n", '[converge]\nactivation = "tanh"\n'))
    assert load_config(tmp_path / "set.toml").to_dict()["converge"]["activation"] == "tanh"


def test_a_campaign_converges_with_another_activation(tmp_path, caplog):
    """Exploration encoders in silu, the converge phase's in tanh: trained from scratch (not warm-started from
    silu weights), stored with its activation, and the converge phase runs on it."""
    write_toy_system(tmp_path)
    text = toy_config_text(rounds=2, steps=4000, round0=4000, converge_steps=4000)
    text = text.replace("[model]\n", '[model]\nactivation = "silu"\n')
    text = text.replace("[converge]\n", '[converge]\nactivation = "tanh"\n')
    (tmp_path / "toy.toml").write_text(text)
    caplog.set_level(logging.INFO, logger="latentbias.campaign.train")
    campaign = Campaign(load_config(tmp_path / "toy.toml"), tmp_path / "run", progress=False)
    campaign.run()
    arch = [json.loads((tmp_path / "run" / f"round_{r:03d}" / "model.json").read_text())["architecture"]["activation"]
            for r in range(2)]
    assert arch == ["silu", "tanh"]
    assert "activation changes from silu to tanh" in caplog.text
    assert campaign.converge_round == 2 and campaign.encoder_round(2) == 1
    assert json.loads((tmp_path / "run" / "weights.json").read_text())["frames_used"] > 0
