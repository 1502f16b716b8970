"""Log-weights of every frame of every round, for equilibrium averages from all rounds together.

Estimator
---------
Each frame n was sampled in some *bias state* s(n): unbiased (round 0, released frontier runs), a restraint
at a frontier target in the latent space of the model that round used, or a metadynamics bias. Metadynamics
biases grow in time; we treat each checkpoint segment of a metadynamics round as its own state whose bias is the
average of the grids at the segment's start and end (a piecewise-static approximation whose error shrinks with
the checkpoint interval and as the well-tempered bias converges). Restraint walls and the bias scale used when the
out-of-distribution guard fired are part of the state.

MBAR (pymbar) then treats all states together: every frame is evaluated under every state's bias, through that
state's own encoder (``u_kn = β V_k(z_k(x_n))``), and the unbiased-state log-weights are
``log w_n = −log Σ_k N_k exp(f_k − u_kn)``. Assumptions: frames within a state are samples of that state's
biased ensemble (equilibrated within each segment), and the states overlap enough for MBAR to connect them.

This module holds the states (:class:`BiasState`), their construction from a campaign's frames and plans
(:func:`bias_states`), the estimator (:func:`cross_round_logweights`) and the campaign's ``weights`` phase
(:func:`write_weights`: ``weights.json``, ``weights.csv`` and every round's ``frames.csv``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..analysis.constants import kt_kjmol
from ..analysis.reweight import mbar_logweights
from ..bias.grid import BiasGrid, LatentVariable
from ..io import write_csv, write_json
from .config import CampaignConfig
from .records import KIND_RESTRAINT, KIND_UNBIASED
from .rundir import RunDir

logger = logging.getLogger(__name__)

__all__ = ["BiasState", "bias_states", "cross_round_logweights", "reduced_potential_matrix", "write_weights"]


@dataclass
class BiasState:
    """One thermodynamic state of the campaign: a bias V(z) in the latent space of ``model_round``'s model.

    kind: "unbiased" | "restraint" (center, k) | "metad" (variables, grid, wall_k, scale).
    """

    kind: str
    model_round: int = -1
    center: np.ndarray | None = None
    k: float = 0.0
    variables: list[dict] | None = None
    grid: np.ndarray | None = None
    wall_k: float = 0.0
    scale: float = 1.0

    def energy(self, z: np.ndarray) -> np.ndarray:
        """Bias (kJ/mol) of frames with latent coordinates z (shape=(n, d)) in this state's latent space."""
        if self.kind == "unbiased":
            return np.zeros(len(z))
        if self.kind == "restraint":
            return 0.5 * self.k * ((z - self.center) ** 2).sum(1)
        variables = [LatentVariable(**v) for v in self.variables]
        grid = BiasGrid(variables)
        zz = z[:, [v.index for v in variables]]
        e = self.scale * grid.interpolate(zz, self.grid)
        for j, v in enumerate(variables):
            if not v.periodic:
                over = np.clip(zz[:, j] - v.maxValue, 0, None) + np.clip(v.minValue - zz[:, j], 0, None)
                e += 0.5 * self.wall_k * over**2
        return e


def reduced_potential_matrix(
    states: list[BiasState],
    state_of_frame: np.ndarray,
    encode: Callable[[int], np.ndarray],
    temperature: float,
) -> tuple[np.ndarray, np.ndarray]:
    """u_kn = β V_k(z_k(x_n)) of every frame under every state that holds frames.

    Parameters
    ----------
    states, state_of_frame, encode, temperature
        As in :func:`cross_round_logweights`.

    Returns
    -------
    u : numpy.ndarray, shape=(n_used_states, N)
        Reduced bias potentials (dimensionless); row i belongs to the i-th smallest state index in use.
    row_of_frame : numpy.ndarray of int, shape=(N,)
        Row of ``u`` of the state each frame was sampled in.
    """
    state_of_frame = np.asarray(state_of_frame, dtype=int)
    used, row_of_frame = np.unique(state_of_frame, return_inverse=True)
    beta = 1.0 / kt_kjmol(temperature)
    cache: dict[int, np.ndarray] = {}
    u = np.zeros((len(used), len(state_of_frame)))
    for i, s in enumerate(used):
        st = states[s]
        if st.kind != "unbiased" and st.model_round not in cache:
            cache[st.model_round] = encode(st.model_round)
        z = cache.get(st.model_round, np.zeros((len(state_of_frame), 0)))
        u[i] = beta * st.energy(z)
    return u, row_of_frame.reshape(-1).astype(np.int64)


def cross_round_logweights(
    states: list[BiasState],
    state_of_frame: np.ndarray,
    encode: Callable[[int], np.ndarray],
    temperature: float,
) -> tuple[np.ndarray, dict[str, Any]]:
    """MBAR log-weights (normalised) of all frames in the unbiased ensemble.

    Parameters
    ----------
    states : list of BiasState
    state_of_frame : numpy.ndarray of int, shape=(N,)
        Index into ``states`` of the state each frame was sampled in.
    encode : callable
        ``encode(r)`` -> latent coordinates of all N frames under round r's model, shape=(N, d).
    temperature : float
        K.

    Returns
    -------
    logweights : numpy.ndarray, shape=(N,)
    info : dict
        ``f_k`` and ``df_k`` (dimensionless), number of samples per state, effective sample size.
    """
    from ..analysis.reweight import effective_sample_size

    u, rows = reduced_potential_matrix(states, state_of_frame, encode, temperature)
    used = np.arange(u.shape[0])
    order = np.argsort(rows, kind="stable")
    n_k = np.bincount(rows, minlength=len(used))
    if len(used) == 1:
        logw = -u[0] - np.log(len(u[0]))
        logw -= np.logaddexp.reduce(logw)
        return logw, {"f_k": [0.0], "df_k": [0.0], "n_k": n_k.tolist(), "ess": effective_sample_size(logw)}
    logw_sorted, f_k, df_k = mbar_logweights(u[:, order], n_k)
    logw = np.empty_like(logw_sorted)
    logw[order] = logw_sorted
    return logw, {"f_k": np.asarray(f_k).tolist(), "df_k": np.asarray(df_k).tolist(), "n_k": n_k.tolist(),
                  "ess": effective_sample_size(logw)}


def bias_states(frames: dict[str, np.ndarray], run_dir: RunDir,
                config: CampaignConfig) -> tuple[list[BiasState], np.ndarray]:
    """The bias state of every frame of a campaign.

    Parameters
    ----------
    frames : dict
        Frame table (:func:`latentbias.campaign.records.load_frames`; any subset of rows).
    run_dir : RunDir
        Plans, segment grids and carried biases of the frames' rounds are read from it.
    config : CampaignConfig
        Restraint force constant and metadynamics wall constant.

    Returns
    -------
    states : list of BiasState
        ``states[0]`` is the unbiased state.
    state_of_frame : numpy.ndarray of int, shape=(n,)
    """
    states: list[BiasState] = [BiasState("unbiased")]
    index: dict[tuple, int] = {("unbiased",): 0}
    state_of = np.zeros(len(frames["step"]), dtype=int)
    plans: dict[int, dict[str, Any]] = {}
    for n in range(len(state_of)):
        kind, r, k = int(frames["kind"][n]), int(frames["round"][n]), int(frames["segment"][n])
        scale = float(frames["scale"][n])
        if kind == KIND_UNBIASED or (kind == KIND_RESTRAINT and scale == 0.0):
            continue
        if r not in plans:
            plans[r] = run_dir.read_plan(r)
        plan = plans[r]
        if kind == KIND_RESTRAINT:
            key = ("restraint", r, int(frames["target"][n]), scale)
            if key not in index:
                index[key] = len(states)
                states.append(BiasState("restraint", r - 1, np.array(plan["targets"][key[2]]),
                                        config.frontier.restraint_k * scale))
        else:
            key = ("metad", r, k, scale)
            if key not in index:
                end = run_dir.read_segment(r, k)["grid_end"]
                if k > 0:
                    start = run_dir.read_segment(r, k - 1)["grid_end"]
                else:
                    initial = run_dir.read_initial_bias(r, plan)
                    start = np.zeros_like(end) if initial is None else initial
                index[key] = len(states)
                states.append(BiasState("metad", r - 1, variables=plan["variables"], grid=0.5 * (start + end),
                                        wall_k=config.metadynamics.wall_force_constant, scale=scale))
        state_of[n] = index[key]
    return states, state_of


def write_weights(run_dir: RunDir, config: CampaignConfig, r: int, frames: dict[str, np.ndarray],
                  encode: Callable[[int], np.ndarray]) -> None:
    """The ``weights`` phase after round r: MBAR log-weights of all frames so far, written to ``weights.json``
    (estimator info), ``weights.csv`` (all frames) and each round's ``frames.csv``.

    Parameters
    ----------
    frames : dict
        Frame table of rounds 0..r.
    encode : callable
        ``encode(q)`` -> latent coordinates of all frames under round q's model, shape=(n, d).
    """
    states, state_of = bias_states(frames, run_dir, config)
    logw, info = cross_round_logweights(states, state_of, encode, config.md.temperature)
    info["n_states"] = len(set(state_of.tolist()))
    write_json(run_dir.path / "weights.json", {"after_round": r, **info})
    z_latest = encode(r)
    d = z_latest.shape[1]
    header = ["round", "step", "time_ps"] + [f"z{i}" for i in range(d)] + ["bias_kjmol", "logweight", "ood"]
    rows = np.column_stack([frames["round"], frames["step"], frames["time_ps"], z_latest, frames["bias_kjmol"],
                            logw, frames["ood"]])
    write_csv(run_dir.path / "weights.csv", header, rows, overwrite=True,
              comment=f"all frames after round {r}; z in the latest (aligned) latent space; bias in kJ/mol; "
                      "logweight = MBAR log-weight in the unbiased ensemble (normalised)")
    for q in range(r + 1):
        sel = frames["round"] == q
        write_csv(run_dir.round_dir(q) / "frames.csv", ["step", "time_ps"] + [f"z{i}" for i in range(d)]
                  + ["bias_kjmol", "logweight", "round", "ood"],
                  np.column_stack([frames["step"][sel], frames["time_ps"][sel], z_latest[sel],
                                   frames["bias_kjmol"][sel], logw[sel], frames["round"][sel], frames["ood"][sel]]),
                  overwrite=True,
                  comment=f"round {q}; time in ps; z in the latest (round {r}) aligned latent space; bias acting "
                          "on the frame in kJ/mol; logweight = MBAR log-weight over all rounds so far")
    logger.info("cross-round weights: %d states, effective sample size %.0f of %d frames", info["n_states"],
                info["ess"], len(logw))
