"""Issue 9 item 5: "grids default to the model's stored training range of z" (latent z has no physical scale; the
README's ±3 grid did not transfer to a model whose z spanned ±6). A latent index given alone, or ``variables=None``,
takes :meth:`LatentVariable.fromModel`'s grid (logged); an explicit grid keeps working and warns when it misses the
training range."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from openmm import XmlSerializer

import latentbias as lb
from latentbias.bias import LatentMetadynamics, LatentOPES, LatentVariable
from latentbias.bias.grid import check_variables
from latentbias.training import latent_range

from conftest import perturbed_frames, random_latent_model

#: the training range stored in the model (deliberately wider than ±3, like the villin model of the Why)
Z_RANGE = {"min": [-6.2, -1.5], "max": [5.8, 0.5]}


@pytest.fixture(scope="module")
def ranged(ala2, tmp_path_factory):
    """(model path with Z_RANGE stored, model path without a training range)."""
    _, top, xyz = ala2
    model = random_latent_model(lb.Distances.from_selection(top, "element != H"), 22, perturbed_frames(xyz, 10))
    folder = tmp_path_factory.mktemp("grid")
    lb.save_model(model, folder / "bare.pt", dtype="float64")
    zr = latent_range(lb.load_model(folder / "bare.pt").encode(perturbed_frames(xyz, 10)))
    zr.update(Z_RANGE)
    lb.save_model(model, folder / "ranged.pt", dtype="float64", z_range=zr)
    return folder / "ranged.pt", folder / "bare.pt"


def _build(cls, system, model, variables):
    if cls is LatentMetadynamics:
        return cls(system, model, variables, 300.0, biasFactor=6.0, height=1.0, frequency=100)
    return cls(system, model, variables, 300.0, barrier=20.0, pace=100)


@pytest.mark.parametrize("cls", [LatentMetadynamics, LatentOPES])
@pytest.mark.parametrize("variables", [[0, 1], None], ids=["indices", "None"])
def test_an_index_alone_takes_the_training_range_of_z(ala2, ranged, cls, variables, caplog):
    path, _ = ranged
    with caplog.at_level(logging.INFO, logger="latentbias.bias.grid"):
        bias = _build(cls, XmlSerializer.deserialize(XmlSerializer.serialize(ala2[0])), path, variables)
    want = [LatentVariable.fromModel(i, path) for i in (0, 1)]
    assert bias.variables == want
    # fromModel: the stored range plus 30 % of it on each side, σ = 5 % of it
    assert want[0].minValue == pytest.approx(-6.2 - 0.3 * 12.0) and want[0].maxValue == pytest.approx(5.8 + 3.6)
    assert want[0].biasWidth == pytest.approx(0.05 * 12.0)
    lines = [r.getMessage() for r in caplog.records if r.name == "latentbias.bias.grid"]
    assert len(lines) == 2 and "LatentVariable 0: grid [-9.8, 9.4]" in lines[0] and "z0 [-6.2, 5.8]" in lines[0]


def test_explicit_grids_keep_working_and_warn_when_they_miss_the_training_range(ranged, caplog):
    path, _ = ranged
    model = lb.load_model(path)
    with caplog.at_level(logging.WARNING, logger="latentbias.bias.grid"):
        narrow = check_variables(model, [LatentVariable(0, -3.0, 3.0, 0.1), LatentVariable(1, -2.0, 1.0, 0.1)])
    assert [(v.minValue, v.maxValue) for v in narrow] == [(-3.0, 3.0), (-2.0, 1.0)]  # kept as given
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # only z0 misses its range
    assert "LatentVariable 0 spans [-3, 3] but the model saw z0 in [-6.2, 5.8]" in warnings[0]
    assert "index alone" in warnings[0]
    caplog.clear()
    mixed = check_variables(model, [LatentVariable(0, -7.0, 7.0, 0.1), 1])  # an explicit grid beside an index
    assert mixed[1] == LatentVariable.fromModel(1, model)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_an_index_alone_needs_a_stored_training_range(ranged):
    _, bare = ranged
    with pytest.raises(ValueError, match=r"bare\.pt stores no training range of z \(z_range\); give minValue"):
        check_variables(lb.load_model(bare), [0])
    with pytest.raises(ValueError, match=r"latent index 2 but the model has latent_dim=2"):
        check_variables(lb.load_model(bare), [2])
    with pytest.raises(TypeError, match="LatentVariable objects or latent indices"):
        check_variables(lb.load_model(bare), [0.5])


def test_a_periodic_component_given_by_index_takes_its_period(tmp_path):
    import math

    from toy import ParticleCoordinates

    from latentbias.export import save_cv_module

    path = save_cv_module(ParticleCoordinates(2), tmp_path / "p.pt", n_atoms=1, latent_dim=2, atom_indices=[0],
                          periodic=[None, [-math.pi, math.pi]])
    (v,) = check_variables(lb.load_model(path), [1])
    assert v.periodic and (v.minValue, v.maxValue) == (-math.pi, math.pi)
    assert v.biasWidth == pytest.approx(0.1 * math.pi)
    assert np.isclose(v.axis[-1], math.pi)
