"""Per-frame log-weights that undo a bias: metadynamics (c(t), final bias) and umbrella sampling (MBAR).

A log-weight ``logw[n]`` is the log of the (unnormalised) weight of frame n in the unbiased ensemble; pass it to
:func:`~latentbias.analysis.fes.free_energy_surface` or turn it into probabilities with
:func:`normalize_logweights`. Log-weights are dimensionless; energies are in **kJ/mol**, temperatures in **K**.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
from typing import Any, Sequence

import numpy as np
from scipy.special import logsumexp

from ._validation import ensure_1d_float
from .constants import kt_kjmol

logger = logging.getLogger(__name__)

__all__ = [
    "effective_sample_size",
    "mbar_logweights",
    "metad_ct_logweights",
    "metad_final_bias_logweights",
    "normalize_logweights",
    "well_tempered_ct",
]


def metad_ct_logweights(bias_kjmol: Any, ct_kjmol: Any, temperature: Any) -> np.ndarray:
    """Log-weights β(V(s_t, t) − c(t)) of metadynamics frames (Tiwary & Parrinello, JPCB 119, 736 (2015)).

    Parameters
    ----------
    bias_kjmol : array_like, shape=(n_frames,)
        Bias V(s_t, t) acting on each frame when it was sampled (the bias at time t, not the final one),
        **kJ/mol**.
    ct_kjmol : array_like, shape=(n_frames,) or float
        c(t) at the time of each frame, **kJ/mol** (see :func:`well_tempered_ct`); a scalar is broadcast.
    temperature : float or openmm.unit.Quantity
        Simulation temperature, **K**.

    Returns
    -------
    numpy.ndarray, shape=(n_frames,)
        Log-weights (dimensionless, unnormalised).
    """
    bias = ensure_1d_float(bias_kjmol, "bias_kjmol")
    ct = np.asarray(ct_kjmol, dtype=np.float64)
    if ct.ndim == 0:
        ct = np.full_like(bias, float(ct))
    ct = ensure_1d_float(ct, "ct_kjmol", bias.shape[0])
    return (bias - ct) / kt_kjmol(temperature)


def metad_final_bias_logweights(bias_final_kjmol: Any, temperature: Any) -> np.ndarray:
    """Log-weights β V_final(s_t) from the final metadynamics bias evaluated on every frame.

    Valid only for frames sampled after the bias became quasi-static (discard the filling transient first);
    otherwise use :func:`metad_ct_logweights`.

    Parameters
    ----------
    bias_final_kjmol : array_like, shape=(n_frames,)
        Final bias V_final evaluated at each frame's CV value, **kJ/mol**.
    temperature : float or openmm.unit.Quantity
        Simulation temperature, **K**.

    Returns
    -------
    numpy.ndarray, shape=(n_frames,)
    """
    return ensure_1d_float(bias_final_kjmol, "bias_final_kjmol") / kt_kjmol(temperature)


def well_tempered_ct(bias_grid_kjmol: Any, temperature: Any, bias_factor: float, scale: float = 1.0) -> float:
    """c(t) of well-tempered metadynamics from the bias on a uniform grid.

    c(t) = (1/β) ln[ Σ_s exp(γ/(γ−1) β V(s,t)) / Σ_s exp(β V(s,t)/(γ−1)) ], evaluated with ``logsumexp`` (no
    overflow for large biases). The cell volume of a uniform grid cancels. ``bias_factor=inf`` (plain
    metadynamics) gives c = (1/β) ln[ mean_s exp(β V) ].

    With ``scale`` s ≠ 1 (the acting bias is s·V while the free-energy estimate is still F = −γ/(γ−1) V):
    c_s = (1/β) ln[ Σ exp(γ/(γ−1) β V) / Σ exp(γ/(γ−1) β V − s β V) ]; s = 1 gives the formula above, s = 0 gives 0.

    Parameters
    ----------
    bias_grid_kjmol : array_like, any shape (e.g. (n_x,) or (n_x, n_y))
        Bias V(s, t) on every cell of a uniform grid covering the CV space, **kJ/mol**.
    temperature : float or openmm.unit.Quantity
        Simulation temperature T (not T + ΔT), **K**.
    bias_factor : float
        γ = (T + ΔT)/T > 1.
    scale : float, default 1.0
        Factor s ≥ 0 of the acting bias s·V.

    Returns
    -------
    float
        c(t) in **kJ/mol**. Adding a constant a to V adds a to c.
    """
    grid = np.asarray(bias_grid_kjmol, dtype=np.float64)
    if grid.size == 0:
        raise ValueError("bias_grid_kjmol is empty: pass the bias on every grid cell")
    if not np.all(np.isfinite(grid)):
        raise ValueError("bias_grid_kjmol contains non-finite values (NaN or inf); check the bias grid")
    try:
        gamma = float(bias_factor)
    except (TypeError, ValueError):
        raise ValueError(f"bias_factor must be a number > 1, got {bias_factor!r}") from None
    if math.isnan(gamma) or gamma <= 1.0:
        raise ValueError(f"bias_factor (gamma = (T + dT)/T) must be > 1, got {bias_factor!r}")
    s = float(scale)
    if not (math.isfinite(s) and s >= 0):
        raise ValueError(f"scale must be a finite number >= 0, got {scale!r}")
    bv = grid.ravel() / kt_kjmol(temperature)
    # _lse0 on a column: plain numpy (this runs at every metadynamics deposit, over the whole grid)
    if math.isinf(gamma):
        log_ratio = _lse0(bv[:, None])[0] - _lse0(((1.0 - s) * bv)[:, None])[0]
    else:
        a = gamma / (gamma - 1.0)
        log_ratio = _lse0((bv * a)[:, None])[0] - _lse0((bv * (a - s))[:, None])[0]
    return float(kt_kjmol(temperature) * log_ratio)


def normalize_logweights(logw: Any) -> np.ndarray:
    """Turn log-weights into weights that sum to 1 (stable for any offset of ``logw``).

    Parameters
    ----------
    logw : array_like, shape=(n_frames,)
        Log-weights; -inf means zero weight.

    Returns
    -------
    numpy.ndarray, shape=(n_frames,)
        Non-negative weights summing to 1.
    """
    arr = ensure_1d_float(logw, "logw", allow_neg_inf=True)
    if arr.size == 0 or not np.any(np.isfinite(arr)):
        raise ValueError("logw must contain at least one finite log-weight")
    return np.exp(arr - logsumexp(arr))


def effective_sample_size(logw: Any) -> float:
    """Kish effective sample size (Σw)² / Σw² of weighted frames.

    Parameters
    ----------
    logw : array_like, shape=(n_frames,)
        Log-weights.

    Returns
    -------
    float
        Between 1 (one frame carries all the weight) and n_frames (uniform weights).
    """
    arr = ensure_1d_float(logw, "logw", allow_neg_inf=True)
    if arr.size == 0 or not np.any(np.isfinite(arr)):
        raise ValueError("logw must contain at least one finite log-weight")
    return float(np.exp(2.0 * logsumexp(arr) - logsumexp(2.0 * arr)))


@contextlib.contextmanager
def quiet_pymbar(level: int = logging.WARNING):
    """Silence pymbar's import banner (a note about JAX) and its solver chatter ("Reached a solution ...").

    Parameters
    ----------
    level : int, default 30
        Logging level of the ``pymbar`` logger inside the block (30 = ``logging.WARNING``); restored on exit.
    """
    pymbar_logger = logging.getLogger("pymbar")
    old_level = pymbar_logger.level
    pymbar_logger.setLevel(level)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        pymbar_logger.setLevel(old_level)


_quiet_pymbar = quiet_pymbar  # the private name of earlier sessions (other branches may still import it)


def _import_mbar() -> Any:
    """Import ``pymbar.MBAR`` quietly."""
    try:
        with quiet_pymbar(logging.ERROR), contextlib.redirect_stderr(io.StringIO()):
            from pymbar import MBAR
    except ImportError as exc:
        raise ImportError(
            "mbar_logweights needs pymbar >= 4: pip install 'pymbar>=4' (or install latentbias[test])"
        ) from exc
    return MBAR


def mbar_logweights(
    reduced_potentials: Any,
    n_samples: Sequence[int] | np.ndarray,
    target_reduced_potential: Any | None = None,
    *,
    uncertainty: str = "asymptotic",
    observable: Any | None = None,
    n_bootstrap: int = 200,
    seed: int | None = 0,
    initial_f_k: Any | None = None,
    quiet: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MBAR log-weights of pooled umbrella-sampling frames in a target (by default the unbiased) state.

    Solves the MBAR equations with pymbar 4 and returns
    log w_n = −u_target(x_n) − log Σ_k N_k exp(f_k − u_kn), normalised so that logsumexp(log w) = 0.

    The uncertainty ``df_k`` is either pymbar's asymptotic estimate (``uncertainty="asymptotic"``, the default),
    which treats every frame as an independent sample and is therefore too small by about √g for correlated
    frames (g: statistical inefficiency), or a stratified block bootstrap (``uncertainty="bootstrap"``) that keeps
    the per-state counts, uses blocks of ≈ 3 g frames within each state (g of ``observable``) and re-solves MBAR on
    every resample (see :mod:`latentbias.analysis.uncertainty`).

    Parameters
    ----------
    reduced_potentials : array_like, shape=(n_states, n_frames)
        u_kn = β U_k(x_n): reduced potential of every frame n in every state k (dimensionless, kJ/mol divided by
        kT). Frames are concatenated in state order: the first ``n_samples[0]`` frames come from state 0, etc. For
        umbrella sampling it is enough (and better conditioned) to pass only the biases, β V_k(x_n): the
        unbiased potential is common to all states and cancels.
    n_samples : sequence of int, shape=(n_states,)
        N_k, the number of frames sampled in each state; must sum to n_frames.
    target_reduced_potential : array_like, shape=(n_frames,), optional
        Reduced potential u_target(x_n) of the state to reweight to, on the same footing as
        ``reduced_potentials``. The default, zeros, is the unbiased state when ``reduced_potentials`` holds only
        the biases. If ``reduced_potentials`` includes β U_0(x_n), pass β U_0(x_n) here.
    uncertainty : {"asymptotic", "bootstrap", "none"}
        How ``df_k`` is computed (see above); ``"none"`` skips it (``df_k`` NaN, fastest).
    observable : array_like, shape=(n_frames,) or (n_frames, d), optional
        Slow observable (e.g. the CV) whose statistical inefficiency within each state sets the bootstrap block
        length; without it the bootstrap treats frames as uncorrelated.
    n_bootstrap : int, default 200
        Bootstrap resamples (``uncertainty="bootstrap"`` only).
    seed : int or None, default 0
        Seed of the bootstrap.
    initial_f_k : array_like, shape=(n_states,), optional
        Starting guess for f_k (dimensionless), e.g. from an earlier solve.
    quiet : bool
        Do not log the effective sample size (used inside bootstraps).

    Returns
    -------
    logweights : numpy.ndarray, shape=(n_frames,)
        Log-weights of the frames in the target state (logsumexp = 0).
    f_k : numpy.ndarray, shape=(n_states,)
        Reduced free energies f_k − f_0 (dimensionless; multiply by kT for kJ/mol).
    df_k : numpy.ndarray, shape=(n_states,)
        Statistical uncertainty (1σ) of f_k − f_0 (dimensionless; 0 for state 0).
    """
    if uncertainty not in ("asymptotic", "bootstrap", "none"):
        raise ValueError(f"uncertainty must be 'asymptotic', 'bootstrap' or 'none', got {uncertainty!r}")
    u_kn = np.asarray(reduced_potentials, dtype=np.float64)
    if u_kn.ndim != 2:
        raise ValueError(
            f"reduced_potentials must have shape (n_states, n_frames) = beta*U_k(x_n), got shape {u_kn.shape}"
        )
    n_states, n_frames = u_kn.shape
    if not np.all(np.isfinite(u_kn)):
        raise ValueError("reduced_potentials contains non-finite values (NaN or inf); check the potentials")
    n_k = np.asarray(n_samples)
    if n_k.ndim != 1 or n_k.shape[0] != n_states:
        raise ValueError(
            f"n_samples must hold one count per state ({n_states} states = rows of reduced_potentials), "
            f"got shape {n_k.shape}"
        )
    if not np.issubdtype(n_k.dtype, np.integer):
        if np.issubdtype(n_k.dtype, np.floating) and np.all(n_k == np.round(n_k)):
            n_k = n_k.astype(np.int64)
        else:
            raise ValueError(f"n_samples must be integer frame counts, got {n_samples!r}")
    if np.any(n_k < 0):
        raise ValueError(f"n_samples must be non-negative, got {n_k.tolist()}")
    if int(n_k.sum()) != n_frames:
        raise ValueError(
            f"n_samples sums to {int(n_k.sum())} but reduced_potentials has {n_frames} frames (columns); "
            "they must match"
        )
    if target_reduced_potential is None:
        u_target = np.zeros(n_frames)
    else:
        u_target = ensure_1d_float(target_reduced_potential, "target_reduced_potential", n_frames)

    f_k, df_k = _solve_mbar(u_kn, n_k, initial_f_k, want_errors=uncertainty == "asymptotic")

    with np.errstate(divide="ignore"):
        log_n = np.log(n_k.astype(np.float64))
    log_denominator = _lse0(log_n[:, None] + f_k[:, None] - u_kn)
    logw = -u_target - log_denominator
    logw -= logsumexp(logw)
    if uncertainty == "bootstrap":
        df_k = _bootstrap_df_k(u_kn, n_k, f_k, observable, n_bootstrap, seed)
    if not quiet:
        logger.info(
            "MBAR over %d states, %d frames: effective sample size in the target state %.1f",
            n_states,
            n_frames,
            effective_sample_size(logw),
        )
    return logw, f_k, df_k


def _lse0(a: np.ndarray) -> np.ndarray:
    """log Σ_k exp(a_kn) over axis 0 (plain numpy: scipy's logsumexp costs ~5× more on (K, N) arrays)."""
    m = a.max(axis=0)
    m = np.where(np.isfinite(m), m, 0.0)
    return m + np.log(np.exp(a - m).sum(axis=0))


def _newton_mbar(u_kn: np.ndarray, n_k: np.ndarray, f_init: np.ndarray, tol: float = 1e-9,
                 max_iter: int = 100) -> np.ndarray | None:
    """Solve the MBAR equations by Newton's method on their convex objective, from a good starting point.

    Minimises L(f) = Σ_n ln Σ_k N_k e^{f_k − u_kn} − Σ_k N_k f_k over f_1..f_K−1 (f_0 = 0), with a backtracking
    line search; the fast path for bootstrap resamples warm-started from the full-data solution. Returns None when
    it does not converge (the caller then uses pymbar). States with N_k = 0 must not be passed.
    """
    if len(n_k) == 1:
        return np.zeros(1)
    log_n = np.log(n_k.astype(np.float64))
    n_tot = float(n_k.sum())

    def objective(f: np.ndarray) -> tuple[float, np.ndarray]:
        a = log_n[:, None] + f[:, None] - u_kn
        m = a.max(axis=0)
        e = np.exp(a - m)
        total = e.sum(axis=0)
        return float((m + np.log(total)).sum() - n_k @ f), e / total  # value, N_k W_nk (K, N)

    f = f_init - f_init[0]
    val, p = objective(f)
    for _ in range(max_iter):
        grad = p.sum(axis=1) - n_k
        if np.max(np.abs(grad)) / n_tot < tol:
            return f
        hess = np.diag(p.sum(axis=1)) - p @ p.T
        try:
            step = np.zeros_like(f)
            step[1:] = -np.linalg.solve(hess[1:, 1:], grad[1:])
        except np.linalg.LinAlgError:
            return None
        t = 1.0
        while t > 1e-8:
            new_val, new_p = objective(f + t * step)
            if new_val <= val + 1e-4 * t * float(grad @ step):
                break
            t *= 0.5
        else:
            return None
        f, val, p = f + t * step, new_val, new_p
    return None


def _solve_mbar(u_kn: np.ndarray, n_k: np.ndarray, initial_f_k: Any | None,
                want_errors: bool) -> tuple[np.ndarray, np.ndarray]:
    """f_k − f_0 (and pymbar's asymptotic errors, else NaN) of one MBAR solve."""
    f_init = None
    if initial_f_k is not None:
        f_init = np.asarray(initial_f_k, dtype=np.float64)
        if f_init.shape != (u_kn.shape[0],) or not np.all(np.isfinite(f_init)):
            raise ValueError(f"initial_f_k must hold {u_kn.shape[0]} finite values, got shape {f_init.shape}")
        if not want_errors and np.all(n_k > 0):
            f = _newton_mbar(u_kn, n_k, f_init)
            if f is not None:
                return f, np.full(f.shape, np.nan)
            logger.debug("Newton MBAR solve did not converge; using pymbar")
    MBAR = _import_mbar()
    with quiet_pymbar():
        mbar = MBAR(u_kn, n_k, solver_protocol="robust", initial_f_k=f_init)
        if want_errors:
            result = mbar.compute_free_energy_differences()
            return (np.asarray(result["Delta_f"], dtype=np.float64)[0].copy(),
                    np.asarray(result["dDelta_f"], dtype=np.float64)[0].copy())
    f_k = np.asarray(mbar.f_k, dtype=np.float64)
    return f_k - f_k[0], np.full(f_k.shape, np.nan)


def _bootstrap_df_k(u_kn: np.ndarray, n_k: np.ndarray, f_k: np.ndarray, observable: Any | None,
                    n_bootstrap: int, seed: int | None) -> np.ndarray:
    """Stratified block-bootstrap 1σ of f_k − f_0 (MBAR re-solved per resample); empty states are skipped."""
    from .uncertainty import estimate_uncertainty

    states = np.repeat(np.arange(len(n_k)), n_k)
    present = n_k > 0

    def estimator(idx: np.ndarray) -> np.ndarray:
        f, _ = _solve_mbar(u_kn[np.ix_(present, idx)], n_k[present], f_k[present] - f_k[present][0], False)
        return f

    est = estimate_uncertainty(estimator, u_kn.shape[1], states=states, observable=observable,
                               n_bootstrap=n_bootstrap, seed=seed)
    out = np.zeros(len(n_k))
    out[present] = est.error
    out[~present] = np.nan
    return out
