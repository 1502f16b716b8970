"""Tests that kill mutants of ``latentbias/bias/fused.py`` and ``bias/metadynamics.py`` which survived their
mutation sessions (issue 15, helper mut15c, 2026-11-30). TESTING.md lists the mutants each test kills.
"""

from __future__ import annotations

import re

import pytest

from latentbias import native
from latentbias.bias import BiasGrid, LatentMetadynamics, LatentVariable
from latentbias.bias.fused import FusedBackend
from latentbias.export import load_model

from toy import DOUBLE_WELL_1D, identity_model, particle_system

needs_plugin = pytest.mark.skipif(not native.is_available(), reason="native LatentBiasForce plugin not built")


@needs_plugin
def test_native_path_refused_for_a_model_without_description_names_the_file(tmp_path):
    """Bad input names the file: ``evaluationPath="native"`` on a TorchScript model without a native description
    (any model not built from latentbias featurizers + MLP) raises a ValueError whose message gives the model's
    path and the fix."""
    path = tmp_path / "plain_model.pt"
    identity_model(path, 1, 1)
    mf = load_model(path)
    assert not mf.has_native_description
    grid = BiasGrid([LatentVariable(0, -1.0, 1.0, 0.1, gridWidth=21)])
    with pytest.raises(ValueError, match=re.escape(str(path)) + r" has no native description.*'auto' or 'torch'"):
        FusedBackend(mf, particle_system(DOUBLE_WELL_1D), grid, evaluationPath="native")
    backend = FusedBackend(mf, particle_system(DOUBLE_WELL_1D), grid, evaluationPath="auto")
    assert backend.force.getResolvedEvaluationPath() == "torch"


def test_default_walker_ids_are_twelve_random_hex_digits(tmp_path):
    """The documented default ``walkerId``: 12 random hexadecimal digits (48 bits, so walkers started without an
    id do not overwrite each other's ``bias_<walkerId>.npz``); the docstring states the length."""
    model = tmp_path / "x.pt"
    identity_model(model, 1, 1)
    ids = []
    for _ in range(3):
        meta = LatentMetadynamics(particle_system(DOUBLE_WELL_1D), model,
                                  [LatentVariable(0, -1.0, 1.0, 0.05, gridWidth=41)], 300.0, biasFactor=6.0,
                                  height=0.5, frequency=10)
        ids.append(meta.walkerId)
    assert all(re.fullmatch(r"[0-9a-f]{12}", w) for w in ids), ids
    assert len(set(ids)) == 3
    doc = " ".join(LatentMetadynamics.__doc__.split())
    assert "walkerId : str, optional Name of this walker's file in ``biasDir`` (default: 12 random hexadecimal " \
           "digits" in doc
