"""Issue 9 item 4: a config that passes validation but cannot work is refused before round 0 by the dry build; this
file reaches the dry build's **model** stage and the **bias** stage of OPES, frontier and converge-method rounds (the
featurizer and metadynamics grid stages are in tests/test_campaign_extend.py)."""

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


# ------------------------------------------------------------------------ the bias stage: OPES and frontier rounds

_OPES = "\n[opes]\nbarrier = 15.0\npace = 100\nsigma = {sigma}\ngrid_points = {points}\n"


@pytest.mark.parametrize("strategy, extra, edit, match", [
    # an OPES grid of 2 points passes validation (a positive integer) but LatentVariable needs 4
    ("opes", _OPES.format(sigma=0.05, points=2), None,
     r"^\[opes\] \(with \[md\] platform = 'Reference' and \[model\]\): .*an opes round cannot be built or run.*"
     r"nothing was run.*Cause: ValueError: LatentVariable 0: gridWidth must be at least 4, got 2"),
    # a kernel width of 1e-300 (positive, finite) makes the OPES grid non-finite at its first deposit
    ("opes", _OPES.format(sigma=1e-300, points=50), None,
     r"^\[opes\] .*an opes round cannot be built or run.*nothing was run.*Cause: ValueError: grid values must be "
     r"finite"),
    # the converge phase's method is dry-built too: a metadynamics campaign converging with that OPES grid
    ("metadynamics", "\n[converge]\nenabled = true\nmethod = \"opes\"\nmax_steps = 4000\nmin_steps = 2000\n"
     + _OPES.format(sigma=0.05, points=2), None,
     r"^\[opes\] .*an opes round cannot be built or run.*nothing was run.*gridWidth must be at least 4"),
    # a restraint of 1e300 kJ/mol/z^2 (positive, finite) throws the particle out of the model's domain in one step
    ("frontier", "", ("restraint_k = 300.0", "restraint_k = 1e300"),
     r"^\[frontier\] \(with \[md\] platform = 'Reference' and \[model\]\): .*a frontier round cannot be built or "
     r"run.*nothing was run.*Cause: .*non-finite"),
], ids=["opes-grid_points", "opes-sigma", "converge-opes", "frontier-restraint_k"])
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's own warnings while the sigma = 1e-300 grid fails
def test_a_round_bias_that_cannot_run_is_refused_before_round_0_naming_its_section(tmp_path, strategy, extra, edit,
                                                                                 match):
    """The dry build's bias stage (preflight._dry_round) for OPES and frontier rounds, and for a converge method:
    values that pass config validation but fail once the round's bias is built and run for one deposition
    interval are refused before round 0, naming the section, with nothing written to the run directory."""
    text = small(strategy=strategy, extra=extra)
    if edit is not None:
        assert edit[0] in text
        text = text.replace(*edit)
    config = write_config(tmp_path, text)
    load_config(config)  # passes validation
    with pytest.raises(ConfigError, match=match) as err:
        run(config, tmp_path / "run")
    assert "the model cannot" not in str(err.value) and "the featurizer" not in str(err.value)
    assert not (tmp_path / "run" / "config.json").exists() and not list((tmp_path / "run").glob("round_*"))
