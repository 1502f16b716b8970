"""The encoder smoothness (Jacobian) penalty: its per-frame gradients against autograd's full Jacobian, its exact
value for a linear encoder, that it removes a fold an unpenalised encoder makes, that lambda = 0 is the old loss,
and the configuration checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import latentbias.training as training
from latentbias.campaign.config import ConfigError, from_dict
from latentbias.jacobian_penalty import FOLD_CAP, fold_measure, jacobian_penalty, latent_gradient_sq
from latentbias.training import LatentModelEstimator


def _circle(n: int, seed: int = 0) -> np.ndarray:
    """Points on a noisy unit circle: a 1-D latent coordinate of them must be cut somewhere (a fold)."""
    rng = np.random.default_rng(seed)
    th = rng.uniform(-np.pi, np.pi, n)
    return np.c_[np.cos(th), np.sin(th)] + 0.01 * rng.normal(size=(n, 2))


def test_latent_gradients_equal_the_rows_of_the_full_jacobian():
    torch.manual_seed(0)
    enc = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)).double()
    x = torch.randn(11, 5, dtype=torch.float64)
    z, g2 = latent_gradient_sq(enc, x, create_graph=False)
    for i in range(len(x)):
        jac = torch.autograd.functional.jacobian(enc, x[i])  # (3, 5)
        assert torch.allclose(g2[i], (jac**2).sum(-1), rtol=1e-12, atol=1e-14)
    assert torch.allclose(z, enc(x))
    assert not z.requires_grad and not g2.requires_grad


def test_fold_measure_of_a_linear_principal_component_is_one_over_its_eigenvalue():
    """z = v . x with v a unit eigenvector of the features' covariance C (eigenvalue c): |grad z|^2 = 1 and
    Var(z) = c at every frame, so g = 1/c exactly, and the hinge at 1 is zero for c >= 1."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4000, 3)) @ np.array([[2.0, 0.3, 0.0], [0.0, 0.7, 0.2], [0.0, 0.0, 0.4]])
    x = torch.as_tensor(x - x.mean(0))
    cov = (x.T @ x) / len(x)
    evals, evecs = torch.linalg.eigh(cov)
    enc = torch.nn.Linear(3, 2, bias=False).double()
    with torch.no_grad():
        enc.weight.copy_(evecs[:, [2, 0]].T)  # the largest and the smallest principal direction
    z, g2 = latent_gradient_sq(enc, x, create_graph=False)
    g = fold_measure(z, g2)
    expected = 1.0 / evals[[2, 0]]
    assert torch.allclose(g, expected.expand_as(g), rtol=1e-10)
    assert evals[2] > 1 > evals[0]
    excess = float(expected[1] - FOLD_CAP)
    assert float(jacobian_penalty(z, g2)) == pytest.approx(excess**2, rel=1e-10)
    # rescaling z changes nothing (the penalty cannot be met by shrinking the latent space)
    assert float(jacobian_penalty(3.7 * z, 3.7**2 * g2)) == pytest.approx(excess**2, rel=1e-10)
    # frame weights enter the variance and the mean
    w = torch.as_tensor(rng.uniform(0.1, 2.0, len(x)))
    gw = fold_measure(z, g2, w)
    var_w = (w[:, None] * (z - (w[:, None] * z).sum(0) / w.sum()) ** 2).sum(0) / w.sum()
    assert torch.allclose(gw, g2 / var_w)


def test_penalty_gradient_matches_finite_differences():
    torch.manual_seed(2)
    enc = torch.nn.Sequential(torch.nn.Linear(2, 6), torch.nn.Tanh(), torch.nn.Linear(6, 1)).double()
    with torch.no_grad():
        enc[0].weight.mul_(4.0)  # steep enough that frames sit above the cap
    x = torch.as_tensor(_circle(64))
    w = enc[0].weight

    def value() -> torch.Tensor:
        return jacobian_penalty(*latent_gradient_sq(enc, x, create_graph=True))

    assert float(value().detach()) > 0
    (grad,) = torch.autograd.grad(value(), w)
    h = 1e-6
    for idx in [(0, 0), (3, 1), (5, 0)]:
        with torch.no_grad():
            w[idx] += h
            up = float(value().detach())
            w[idx] -= 2 * h
            down = float(value().detach())
            w[idx] += h
        assert float(grad[idx]) == pytest.approx((up - down) / (2 * h), rel=1e-5, abs=1e-9)


def test_penalty_removes_the_fold_of_a_circle_encoder():
    """A 1-D latent coordinate of points on a circle must jump somewhere; unpenalised, the tanh encoder makes the
    jump within a few degrees (a fold: g >> 1 at the frames there). With the penalty the steepest frames come
    down by more than an order of magnitude; the reconstruction pays for it (the fold was doing work)."""
    x = _circle(600)
    kwargs = dict(latent_dim=1, hidden=(32, 32), epochs=150, patience=150, learning_rate=3e-3, seed=1,
                  progress=False)
    plain = LatentModelEstimator(**kwargs).fit(x)
    smooth = LatentModelEstimator(**kwargs, jacobian_penalty=1.0).fit(x)
    # measured (seed 1): max g 83 (median 0.06) unpenalised, 1.65 (median 1.0) with lambda = 1
    assert plain.fold["max"] > 30 * FOLD_CAP  # the unpenalised encoder folds
    assert smooth.fold["max"] < plain.fold["max"] / 15
    assert smooth.fold["q99"] < 2 * FOLD_CAP


def test_zero_weight_is_exactly_the_old_loss(monkeypatch):
    x = _circle(200, seed=3)
    kwargs = dict(latent_dim=1, hidden=(8,), epochs=5, seed=4, progress=False)
    reference = LatentModelEstimator(**kwargs).fit(x)

    def forbidden(*args, **kw):
        raise AssertionError("lambda = 0 must not compute the Jacobian in the loss")

    monkeypatch.setattr(training, "latent_gradient_sq", forbidden)
    monkeypatch.setattr(training, "_fold_summary", lambda *a: None)
    again = LatentModelEstimator(**kwargs, jacobian_penalty=0.0).fit(x)
    assert again.history == reference.history
    for k, v in reference.model.state_dict().items():
        assert torch.equal(v, again.model.state_dict()[k])
    assert LatentModelEstimator(**kwargs).settings()["jacobian_penalty"] == 0.0


def test_positive_weight_adds_the_penalty_to_the_reported_loss():
    """One epoch, learning rate ~0: the training loss is reconstruction + lambda * penalty of the initial model."""
    x = _circle(300, seed=5)
    kwargs = dict(latent_dim=1, hidden=(8,), epochs=1, seed=6, progress=False, learning_rate=1e-30,
                  validation_fraction=0.0, batch_size=300)
    base = LatentModelEstimator(**kwargs).fit(x)
    lam = 0.5
    pen = LatentModelEstimator(**kwargs, jacobian_penalty=lam).fit(x)
    model = pen.model
    xt = torch.as_tensor(x, dtype=torch.float32)
    z, g2 = latent_gradient_sq(model.encoder, model.standardizer(xt), create_graph=False)
    expected = base.history["train_loss"][0] + lam * float(jacobian_penalty(z, g2))
    assert pen.history["train_loss"][0] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), True, "0.1"])
def test_estimator_rejects_bad_weights(bad):
    with pytest.raises(ValueError, match="jacobian_penalty"):
        LatentModelEstimator(jacobian_penalty=bad)


def test_config_key():
    base = {"system": {"testsystem": "alanine-dipeptide-vacuum"}}
    assert from_dict(base).model.jacobian_penalty == 0.0  # off by default
    assert from_dict({**base, "model": {"jacobian_penalty": 2}}).model.jacobian_penalty == 2.0
    for bad in (-1.0, float("nan"), float("inf"), "strong", True):
        with pytest.raises(ConfigError, match=r"\[model\] jacobian_penalty"):
            from_dict({**base, "model": {"jacobian_penalty": bad}})
