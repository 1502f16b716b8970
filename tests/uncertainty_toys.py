"""Correlated samples with a known ΔF for error-bar coverage tests: overdamped Langevin (Brownian) dynamics of a
tilted 1-D double well, vectorised over independent replicas, sampled by umbrella windows or by well-tempered
metadynamics. Units: nm, kJ/mol, K. The dynamics are plain numpy; the estimators under test are the package's.

Steps are Metropolis-adjusted (MALA): the stationary distribution is exactly Boltzmann (no time-step bias in the
"known" ΔF), while consecutive samples stay correlated like an MD trajectory's."""

from __future__ import annotations

import numpy as np

from latentbias.analysis import kt_kjmol, metad_ct_logweights, well_tempered_ct
from latentbias.bias.grid import BiasGrid, LatentVariable

TEMPERATURE = 300.0
KT = kt_kjmol(TEMPERATURE)
TILT = 4.0  # kJ/mol per nm: basin B (x > 0) is higher


def potential(x: np.ndarray) -> np.ndarray:
    """Tilted double well: barrier ≈ 10 kJ/mol at x ≈ 0, minima near ±0.5 nm (kJ/mol)."""
    return 10.0 * (4.0 * x**2 - 1.0) ** 2 + TILT * x


def gradient(x: np.ndarray) -> np.ndarray:
    return 160.0 * x * (4.0 * x**2 - 1.0) + TILT


def exact_delta_f() -> float:
    """F_B − F_A = −kT ln(P(x > 0) / P(x < 0)) by quadrature (kJ/mol)."""
    x = np.linspace(-1.5, 1.5, 300_001)
    p = np.exp(-(potential(x) - potential(x).min()) / KT)
    return float(-KT * np.log(p[x > 0].sum() / p[x < 0].sum()))


def _mala_step(x, energy, grad, rng, d_dt):
    """One Metropolis-adjusted Langevin step for every element of x; energy/grad in kJ/mol (per nm)."""
    drift = lambda y: y - d_dt / KT * grad(y)  # noqa: E731
    prop = drift(x) + np.sqrt(2.0 * d_dt) * rng.standard_normal(x.shape)
    log_q_fwd = -((prop - drift(x)) ** 2) / (4.0 * d_dt)
    log_q_back = -((x - drift(prop)) ** 2) / (4.0 * d_dt)
    log_acc = -(energy(prop) - energy(x)) / KT + log_q_back - log_q_fwd
    accept = np.log(rng.random(x.shape)) < log_acc
    return np.where(accept, prop, x)


def umbrella_replicas(n_replicas: int, seed: int = 0, n_windows: int = 17, k: float = 500.0, n_samples: int = 300,
                      stride: int = 5, equilibration: int = 200, d_dt: float = 2e-4):
    """Umbrella windows on [-0.8, 0.8]; samples every ``stride`` steps (statistical inefficiency g ≈ 5-10).

    Returns
    -------
    centers : (n_windows,) ; z : (n_replicas, n_windows, n_samples) positions (nm)
    """
    rng = np.random.default_rng(seed)
    centers = np.linspace(-0.8, 0.8, n_windows)
    x = np.broadcast_to(centers, (n_replicas, n_windows)).copy()
    energy = lambda y: potential(y) + 0.5 * k * (y - centers) ** 2  # noqa: E731
    grad = lambda y: gradient(y) + k * (y - centers)  # noqa: E731
    for _ in range(equilibration):
        x = _mala_step(x, energy, grad, rng, d_dt)
    out = np.empty((n_replicas, n_windows, n_samples))
    for n in range(n_samples):
        for _ in range(stride):
            x = _mala_step(x, energy, grad, rng, d_dt)
        out[:, :, n] = x
    return centers, out


def umbrella_result(centers, z_windows, k: float = 500.0):
    """An UmbrellaResult (latent = x) from one replica's samples, shape (n_windows, n_samples)."""
    from latentbias.bias.umbrella import UmbrellaResult

    restraint = {"dims": [0], "centers": [0.0], "force_constants": [0.0], "lower_walls": [-np.inf],
                 "upper_walls": [np.inf], "wall_force_constant": [0.0], "period": [0.0]}
    return UmbrellaResult(centers[:, None], np.full((len(centers), 1), k), [zk[:, None] for zk in z_windows],
                          TEMPERATURE, restraint)


def metad_replicas(n_replicas: int, n_steps: int, seed: int = 0, frequency: int = 100, height: float = 1.0,
                   sigma: float = 0.05, bias_factor: float = 6.0, d_dt: float = 2e-4):
    """Well-tempered metadynamics of the tilted double well, one frame per deposition (as LatentMetadynamics).

    The bias lives on a :class:`BiasGrid` over [-1.2, 1.2] (linear interpolation; its derivative is the force),
    heights h·exp(−V/kΔT), and every frame gets the c(t) log-weight β(V(x, t) − c(t)) of the bias acting when it
    was sampled, from the package's ``well_tempered_ct`` / ``metad_ct_logweights``.

    Returns
    -------
    x : (n_replicas, n_frames) positions at the depositions; logw : same shape, c(t) log-weights
    """
    rng = np.random.default_rng(seed)
    grid = BiasGrid([LatentVariable(0, -1.2, 1.2, sigma, gridWidth=241)])
    axis = grid.axes[0]
    h_axis = axis[1] - axis[0]
    bias = np.zeros((n_replicas, axis.size))
    x = np.full(n_replicas, -0.5)
    rows = np.arange(n_replicas)
    delta_t = TEMPERATURE * (bias_factor - 1.0)
    n_frames = n_steps // frequency
    xs, lws = np.empty((n_replicas, n_frames)), np.empty((n_replicas, n_frames))
    def bias_at(y):
        i = np.clip(((y - axis[0]) / h_axis).astype(int), 0, axis.size - 2)
        t = np.clip((y - axis[i]) / h_axis, 0.0, 1.0)
        return (1 - t) * bias[rows, i] + t * bias[rows, i + 1]

    def bias_slope(y):
        i = np.clip(((y - axis[0]) / h_axis).astype(int), 0, axis.size - 2)
        inside = (y > axis[0]) & (y < axis[-1])
        return np.where(inside, (bias[rows, i + 1] - bias[rows, i]) / h_axis, 0.0)

    energy = lambda y: potential(y) + bias_at(y)  # noqa: E731
    grad = lambda y: gradient(y) + bias_slope(y)  # noqa: E731
    for f in range(n_frames):
        for _ in range(frequency):
            x = _mala_step(x, energy, grad, rng, d_dt)
        v = bias_at(x)
        ct = np.array([well_tempered_ct(b, TEMPERATURE, bias_factor) for b in bias])
        xs[:, f] = x
        lws[:, f] = metad_ct_logweights(v, ct, TEMPERATURE)
        heights = height * np.exp(-v / kt_kjmol(delta_t))
        bias += heights[:, None] * np.exp(-0.5 * ((axis[None] - x[:, None]) / sigma) ** 2)
    return xs, lws
