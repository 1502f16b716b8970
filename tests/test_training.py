"""Training: manifold recovery, CV anchoring, time-lagged pairs, FAPE, determinism, bad settings."""

from __future__ import annotations

import mdtraj as md
import numpy as np
import pytest
import torch

import latentbias as lb
from latentbias.losses import fape_loss
from latentbias.training import _lagged_pairs

from conftest import perturbed_frames
from test_features import random_rotation


def synthetic_manifold(n: int, n_features: int = 30, noise: float = 0.01, seed: int = 0):
    """Frames on a known 2-D manifold (u, v) smoothly embedded in n_features dimensions."""
    rng = np.random.default_rng(seed)
    u = rng.uniform(-1, 1, n)
    v = rng.uniform(-1, 1, n)
    basis = np.stack([u, v, u * v, np.sin(2 * u), np.cos(2 * v), u**2 - v], axis=1)
    mix = rng.standard_normal((basis.shape[1], n_features))
    feats = basis @ mix + noise * rng.standard_normal((n, n_features))
    return feats, np.stack([u, v], axis=1)


def multiple_correlation(z: np.ndarray, target: np.ndarray) -> float:
    """|correlation| between target and its best linear prediction from z (invariant to rotation/sign of z)."""
    a = np.column_stack([z, np.ones(len(z))])
    coef, *_ = np.linalg.lstsq(a, target, rcond=None)
    return abs(np.corrcoef(a @ coef, target)[0, 1])


def test_autoencoder_recovers_2d_manifold():
    feats, truth = synthetic_manifold(3000)
    est = lb.LatentModelEstimator(latent_dim=2, hidden=(32, 32), epochs=150, batch_size=128, learning_rate=3e-3,
                                  patience=30, seed=1, progress=False)
    result = est.fit(feats[:2400])
    assert result.history["val_loss"][result.best_epoch] < 0.05
    with torch.no_grad():
        z = result.model.encode(torch.as_tensor(feats[2400:], dtype=torch.float32)).numpy()
    for k in range(2):  # held-out frames, each true coordinate
        assert multiple_correlation(z, truth[2400:, k]) > 0.9


def test_cv_aligned_dimension_tracks_given_cv():
    feats, truth = synthetic_manifold(2000, seed=2)
    cv = 0.5 + 0.3 * truth[:, 0] + 0.1 * truth[:, 0] ** 3  # e.g. a pocket distance in nm
    est = lb.LatentModelEstimator(latent_dim=2, hidden=(32, 32), cv_dims=[1], cv_weight=1.0, epochs=80,
                                  learning_rate=3e-3, seed=0, progress=False)
    result = est.fit(feats[:1500], cvs=cv[:1500])
    with torch.no_grad():
        z = result.model.encode(torch.as_tensor(feats[1500:], dtype=torch.float32)).numpy()
    assert np.corrcoef(z[:, 1], cv[1500:])[0, 1] > 0.95
    # anchored in the CV's own units, not just correlated
    assert np.sqrt(np.mean((z[:, 1] - cv[1500:]) ** 2)) < 0.2 * cv.std()
    assert result.history["val_cv_correlation"][result.best_epoch] > 0.95


def test_same_seed_same_model_and_early_stopping():
    feats, _ = synthetic_manifold(400, seed=3)
    kw = dict(latent_dim=2, hidden=(8,), epochs=300, patience=3, learning_rate=1e-2, seed=5, progress=False)
    r1 = lb.LatentModelEstimator(**kw).fit(feats)
    r2 = lb.LatentModelEstimator(**kw).fit(feats)
    assert r1.history == r2.history
    for a, b in zip(r1.model.state_dict().values(), r2.model.state_dict().values()):
        assert torch.equal(a, b)
    assert r1.stopped_early and len(r1.history["train_loss"]) < 300
    assert r1.history["val_loss"][r1.best_epoch] == min(r1.history["val_loss"])


def test_weights_change_the_fit():
    feats, _ = synthetic_manifold(300, seed=4)
    kw = dict(latent_dim=1, hidden=(8,), epochs=5, seed=0, progress=False)
    w = np.ones(300)
    w[:150] = 0.0
    r1 = lb.LatentModelEstimator(**kw).fit(feats)
    r2 = lb.LatentModelEstimator(**kw).fit(feats, weights=w)
    assert r1.history["train_loss"] != r2.history["train_loss"]
    assert r1.data_hash != r2.data_hash


def test_time_lagged_pairs_stay_inside_trajectories():
    src, dst = _lagged_pairs([5, 3, 1], lag=2)
    assert list(zip(src, dst)) == [(0, 2), (1, 3), (2, 4), (5, 7)]
    feats, _ = synthetic_manifold(200, seed=5)
    est = lb.LatentModelEstimator(latent_dim=1, objective="time-lagged", lag=3, epochs=3, progress=False)
    data = est.prepare(feats, lengths=[100, 100])
    assert len(data.inputs) == 194
    np.testing.assert_array_equal(data.targets[0], feats[3])
    est.fit(feats, lengths=[100, 100])
    with pytest.raises(ValueError, match="longer than the lag"):
        lb.LatentModelEstimator(objective="time-lagged", lag=50, progress=False).prepare(feats, lengths=[40] * 5)


def helix_like(n_res: int = 6, seed: int = 0) -> np.ndarray:
    """Backbone-like coordinates (n_res*3, 3) nm: N, CA, C per residue on a noisy helix."""
    rng = np.random.default_rng(seed)
    t = np.arange(3 * n_res) * 1.7
    xyz = np.stack([0.23 * np.cos(t), 0.23 * np.sin(t), 0.05 * t], axis=1)
    return xyz + 0.01 * rng.standard_normal(xyz.shape)


def test_fape_loss_properties():
    x = torch.as_tensor(helix_like(), dtype=torch.float64)[None]
    frames = torch.arange(18).reshape(6, 3)
    assert float(fape_loss(x, x, frames)) < 1e-3
    moved = x @ torch.as_tensor(random_rotation(1).T) + torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)
    assert float(fape_loss(moved, x, frames)) < 1e-3  # invariant to rigid motion of the prediction
    mirror = x * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)
    assert float(fape_loss(mirror, x, frames)) > 0.5  # chirality matters (Å units)
    far = x + 10.0 * torch.randn_like(x)
    assert float(fape_loss(far, x, frames, clamp=1.0)) <= 1.0 / 0.1 + 1e-9  # clamp at 1 nm = 10 Å


def test_fape_training_on_aligned_coordinates_reports_rmsd():
    rng = np.random.default_rng(0)
    base = helix_like()
    frames = base[None] + 0.02 * rng.standard_normal((300,) + base.shape)
    feat = lb.AlignedCoordinates(np.arange(18), base)
    feats = lb.features.featurize(feat, frames)
    est = lb.LatentModelEstimator(latent_dim=2, hidden=(16,), reconstruction="fape",
                                  fape_frames=np.arange(18).reshape(6, 3), epochs=5, progress=False)
    result = est.fit(feats, coordinates=True)
    assert len(result.history["val_rmsd_angstrom"]) == len(result.history["val_loss"])
    assert 0 < result.history["val_rmsd_angstrom"][-1] < 5.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(activation="sigmoidal"), "unknown activation"),
        (dict(objective="vae"), "unknown objective"),
        (dict(latent_dim=0), "latent_dim"),
        (dict(cv_dims=[3], latent_dim=2), "out of range"),
        (dict(reconstruction="fape"), "fape_frames"),
        (dict(validation_fraction=1.0), "validation_fraction"),
        (dict(hidden=[16, -1]), "hidden"),
    ],
)
def test_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        lb.LatentModelEstimator(**kwargs)


def test_bad_training_data():
    est = lb.LatentModelEstimator(progress=False)
    with pytest.raises(ValueError, match="NaN"):
        est.fit(np.full((10, 3), np.nan))
    with pytest.raises(ValueError, match="weights"):
        est.fit(np.ones((10, 3)), weights=-np.ones(10))
    with pytest.raises(ValueError, match="cv_dims is None"):
        est.fit(np.ones((10, 3)), cvs=np.ones(10))


def test_fit_trajectories_gives_exportable_model(ala2, tmp_path):
    import mdtraj as md

    from conftest import perturbed_frames

    _, top, xyz = ala2
    trajs = [md.Trajectory(perturbed_frames(xyz, 40, seed=s).astype(np.float32), top) for s in (1, 2)]
    feat = lb.Distances.from_selection(top, "element != H")
    model, result = lb.LatentModelEstimator(latent_dim=2, epochs=3, progress=False).fit_trajectories(feat, trajs)
    path = lb.save_model(model, tmp_path / "m.pt", training=result)
    mf = lb.load_model(path)
    assert mf.metadata["training_data_hash"] == result.data_hash
    assert mf.metadata["training"]["settings"]["epochs"] == 3
    np.testing.assert_allclose(mf.encode(trajs[0].xyz[:5]), model.transform(trajs[0].xyz[:5]), atol=1e-5)


def test_exported_model_stores_the_training_range_of_z(ala2, tmp_path):
    """z_range in the metadata is the range of the exported model's z over the training frames, and
    LatentVariable.fromModel builds the grid from it (margin 30 %, sigma 5 % of the range)."""
    from latentbias.bias import LatentVariable

    _, top, xyz = ala2
    frames = perturbed_frames(xyz, 60, scale=0.03)
    feat = lb.Distances.from_selection(top, "element != H")
    est = lb.LatentModelEstimator(latent_dim=2, hidden=(16,), epochs=3, seed=1, progress=False)
    model, result = est.fit_trajectories(feat, md.Trajectory(frames, top))
    path = lb.save_model(model, tmp_path / "m.pt", training=result, dtype="float64")
    mf = lb.load_model(path)
    z = mf.encode(frames)
    zr = mf.metadata["z_range"]
    np.testing.assert_allclose(zr["min"], z.min(0), atol=1e-5)
    np.testing.assert_allclose(zr["max"], z.max(0), atol=1e-5)
    var = LatentVariable.fromModel(1, path)
    span = zr["max"][1] - zr["min"][1]
    assert var.minValue == pytest.approx(zr["min"][1] - 0.3 * span)
    assert var.maxValue == pytest.approx(zr["max"][1] + 0.3 * span)
    assert var.biasWidth == pytest.approx(0.05 * span)


def test_coordinate_decoder_is_exported_and_reconstructs_held_out_frames(ala2, tmp_path):
    """Aligned-coordinate features + autoencoder: the model file's decode(z) returns the aligned heavy atoms
    (nm), its reconstruction RMSD on held-out frames is stored, and it matches what decode gives on them."""
    from latentbias.features import featurize

    _, top, xyz = ala2
    rng = np.random.default_rng(3)
    modes = rng.normal(0.0, 0.05, (2,) + xyz.shape)  # two collective displacement modes (nm) + small noise
    t = rng.uniform(-1.0, 1.0, (160, 2))
    frames = xyz + np.einsum("nk,kaj->naj", t, modes) + rng.normal(0.0, 0.003, (160,) + xyz.shape)
    feat = lb.AlignedCoordinates.from_selection(top, "element != H", xyz)
    est = lb.LatentModelEstimator(latent_dim=2, hidden=(32,), epochs=60, seed=2, progress=False,
                                  validation_fraction=0.25)
    model, result = est.fit_trajectories(feat, md.Trajectory(frames[:120], top))
    path = lb.save_model(model, tmp_path / "dec.pt", training=result, dtype="float64")
    mf = lb.load_model(path)
    assert mf.has_decoder
    meta = mf.metadata["decoder"]
    assert meta["atom_indices"] == [int(i) for i in top.select("element != H")]
    assert 0 < meta["validation_rmsd_angstrom"] < 2.0
    held_out = frames[120:]
    z = mf.encode(held_out)
    decoded = mf.decode(z)
    assert decoded.shape == (40, len(meta["atom_indices"]), 3)
    aligned = featurize(feat, held_out).reshape(40, -1, 3)
    rmsd_a = 10 * np.sqrt(((decoded - aligned) ** 2).sum(-1).mean(-1))
    assert rmsd_a.mean() < 2.0 * meta["validation_rmsd_angstrom"] + 0.1
    # the frames vary along two modes: the decoder recovers them from z, far better than the mean structure
    baseline = 10 * np.sqrt(((aligned.mean(0) - aligned) ** 2).sum(-1).mean(-1))
    assert rmsd_a.mean() < 0.6 * baseline.mean()  # measured 0.25 vs 0.55 Å
    assert mf.decode(z[0]).shape == (len(meta["atom_indices"]), 3)


def test_distance_models_have_no_decoder(ala2_model):
    mf = lb.load_model(ala2_model)
    assert not mf.has_decoder
    with pytest.raises(ValueError, match="no coordinate decoder"):
        mf.decode([0.0, 0.0])
