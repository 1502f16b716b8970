"""Issue 9 item 4: a config that passes validation but cannot work is refused before round 0 by the dry build; this
file reaches the dry build's **model** stage (the featurizer and grid stages are in tests/test_campaign_extend.py)."""

from __future__ import annotations

import pytest

from latentbias.campaign import ConfigError, load_config

from test_campaign_extend import run, small, write_config


def test_a_model_that_cannot_be_trained_is_refused_before_round_0_naming_the_model_keys(tmp_path):
    """learning_rate = 1e300 is a positive finite number (config validation accepts it), but one epoch of it
    overflows the encoder's weights: the dry build stops in its model stage, names the [model] keys including
    learning_rate, and writes nothing."""
    text = small()
    assert "learning_rate = 0.005" in text
    config = write_config(tmp_path, text.replace("learning_rate = 0.005", 'learning_rate = 1e300\nactivation = "relu"'))
    load_config(config)  # passes validation
    with pytest.raises(ConfigError, match=r"^\[model\] latent_dim / hidden / activation / objective / lag / "
                                          r"learning_rate / batch_size: .*model cannot be built or run.*nothing was "
                                          r"run.*Cause: .*overflow") as err:
        run(config, tmp_path / "run")
    assert "the featurizer" not in str(err.value)
    assert not (tmp_path / "run" / "config.json").exists() and not list((tmp_path / "run").glob("round_*"))
