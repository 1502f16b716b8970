"""One source of model defaults (issue 9 item 6): a campaign's [model] and [features] defaults are those of
LatentModelEstimator and of `latentbias train`."""

from __future__ import annotations

import inspect

import latentbias as lb
from latentbias.campaign.config import FeatureConfig, ModelConfig
from latentbias.cli import build_parser


def test_campaign_train_cli_and_estimator_share_model_defaults():
    sig = inspect.signature(lb.LatentModelEstimator.__init__).parameters
    model = ModelConfig()
    args = build_parser().parse_args(["train", "-t", "x.pdb", "--traj", "x.dcd", "-o", "x.pt"])
    pairs = {"latent_dim": "latent_dim", "hidden": "hidden", "activation": "activation", "objective": "objective",
             "lag": "lag", "epochs": "epochs", "learning_rate": "lr", "batch_size": "batch_size",
             "patience": "patience", "jacobian_penalty": "jacobian_penalty"}
    for key, option in pairs.items():
        library = sig[key].default
        library = list(library) if isinstance(library, tuple) else library
        assert getattr(model, key) == library == getattr(args, option), key
    features = FeatureConfig()
    assert (features.kind, features.selection, features.contact_r0) == (args.features, args.selection,
                                                                        args.contact_r0)


def test_every_train_option_has_help_text():
    parser = build_parser()
    train = next(a for a in parser._subparsers._group_actions[0].choices.values() if a.prog.endswith("train"))
    for action in train._actions:
        if action.dest != "help":
            assert action.help, action.option_strings
