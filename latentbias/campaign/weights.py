"""Log-weights of every frame of a campaign, for equilibrium averages; which frames enter the estimate, and why.

Which frames are equilibrium samples
------------------------------------
A reweighting estimator (MBAR, c(t) reweighting) assumes that the frames of each state are samples of that
state's *global* equilibrium distribution. Several kinds of campaign frames are not, and are kept out of the
estimate (``logweight = −inf``) with the reason recorded per frame (the ``excluded`` column of ``frames.csv`` and
``weights.csv``, codes in :data:`EXCLUSIONS`):

* ``frontier-pull`` — a restrained run started from a chosen frame and dragged toward a frontier target: the
  restraint's centre is where nothing has been sampled, and the frames relax toward it, i.e. they are a transient,
  not samples of the restrained state;
* ``frontier-release`` — the unbiased run after a pull starts from the pulled configuration; until it decorrelates
  it remembers that start, and after that it samples only the basin it fell into: its basin populations are those
  of its starting point, not Boltzmann's (the issue's experiment: ΔF 7.6 → 1.75 kJ/mol as releases grow from 100 to
  1000 frames, truth 7.86);
* ``round0-unbiased`` — round 0 (or given trajectories): a short unbiased run confined to the start basin, the same
  defect as a release; it trains the first encoder and nothing else;
* ``bias-off`` — frames sampled while the OOD guard had switched the bias off (``[ood] action = "off"``): unbiased
  and confined like a release;
* ``exploration`` — once a converge phase has run, the exploration rounds (each with its own encoder and a bias
  still growing fast) are left out: the final estimate comes from the converge phase alone;
* ``burn-in`` — the first ``[converge] burn_in`` fraction of the converge phase, while its bias is still far from
  quasi-static;
* ``converge-restarted`` — a converge attempt whose frozen encoder met out-of-distribution frames (a new basin) and
  that went back to retraining (:mod:`latentbias.campaign.converge`): its bias acted in an encoder that did not
  describe the region reached, so only the last attempt, in the retrained encoder, enters the final estimate.
  Until then (the weights written after such an attempt) its frames are treated like an exploration round's.
* ``pocket-restart`` — the first ``[pocket] restart_segments`` checkpoint segments of a pocket round that started
  from a chosen (most open) earlier frame: like a release, a transient that remembers its start
  (:mod:`latentbias.campaign.pocket`).

Why not TRAM: TRAM (deeptime) could use releases and round 0 through their transition counts between latent
microstates, but its answer depends on a latent discretisation and on local equilibrium within each microstate,
which the pulled frames violate as well; excluding costs only exploration frames, which the converge phase
replaces by design. The exclusion makes the estimate independent of how long releases run (tested on a 30 kJ/mol
double well, tests/test_campaign_weights.py).

Estimators
----------
*Exploration rounds* (the estimate written after each round): every metadynamics or OPES checkpoint segment is its
own bias state, the average of its start and end grids (with parallel walkers, one state per walker and segment:
walker w ran under the shared bias at the segment's start plus its own deposits, stored per walker as
``walker_grid_start`` / ``walker_grid_end``; a piecewise-static approximation whose error shrinks with
the checkpoint interval and as the bias converges; OPES rounds are treated exactly like metadynamics rounds
because their bias is also a grid in the encoder of the previous round, and states of different encoders can only
be combined by MBAR). Edge walls and the OOD guard's bias scale are part of the state. MBAR (pymbar) treats all
states together, every frame evaluated under every state's bias through that state's own encoder
(``u_kn = β V_k(z_k(x_n))``): ``log w_n = −log Σ_k N_k exp(f_k − u_kn)``.

*Converge phase* (the final estimate, :func:`converge_logweights`): one encoder, one continuous run; every frame
gets the reweighting of the bias that generated it, ``log w_n = β (V_t(z_n) + W(z_n) − c(t))`` with c(t) of that
bias (OPES: JPCL 2020/JCTC 2022; metadynamics: Tiwary & Parrinello 2015), stored per frame (``bias_kjmol``,
``ct_kjmol``). It needs no piecewise-static approximation and no re-solve when frames are resampled, so the
error bar can be a block bootstrap over the whole time series (:func:`latentbias.analysis.uncertainty`).
An *umbrella* converge phase (:mod:`latentbias.campaign.umbrellaconv`) is the exception: its frames come from
restraint windows, one static state each (``BiasState("restraint", dims=...)`` from the plan), and MBAR over the
windows gives their weights (:func:`cross_round_logweights`).

This module holds the states (:class:`BiasState`), the exclusion rules (:func:`frame_exclusions`), their
construction from a campaign's frames and plans (:func:`bias_states`), the estimators
(:func:`cross_round_logweights`, :func:`converge_logweights`) and the campaign's ``weights`` phase
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
from ..io import write_csv
from .config import CampaignConfig
from .records import KIND_OPES, KIND_RESTRAINT, KIND_UNBIASED, frame_column
from .rundir import RunDir

logger = logging.getLogger(__name__)

__all__ = ["BiasState", "EXCLUSIONS", "frame_exclusions", "read_plans", "bias_states", "cross_round_logweights",
           "converge_logweights", "reduced_potential_matrix", "write_weights"]

#: ``excluded`` column codes: 0 = in the estimate, else the reason the frame is kept out (module docstring)
EXCLUSIONS = {0: "used", 1: "round0-unbiased", 2: "frontier-pull", 3: "frontier-release", 4: "bias-off",
              5: "exploration", 6: "burn-in", 7: "converge-restarted", 8: "pocket-restart"}
_CODE = {v: k for k, v in EXCLUSIONS.items()}


def frame_exclusions(frames: dict[str, np.ndarray], plans: dict[int, dict[str, Any]],
                     burn_in: float = 0.0) -> np.ndarray:
    """Why each frame is kept out of the equilibrium estimate (:data:`EXCLUSIONS` codes; 0 = used).

    Parameters
    ----------
    frames : dict
        Frame table (:func:`latentbias.campaign.records.load_frames`).
    plans : dict
        Plan of every round in ``frames`` (round -> plan.json content).
    burn_in : float, default 0.0
        Fraction of the converge phase's frames (by simulated time from its start) left out as burn-in.

    Returns
    -------
    numpy.ndarray of int, shape=(n,)
    """
    rounds = np.asarray(frames["round"], dtype=int)
    kind = np.asarray(frames["kind"], dtype=int)
    scale = np.asarray(frames["scale"], dtype=float)
    out = np.zeros(len(rounds), dtype=int)
    converge = [r for r in np.unique(rounds) if plans[int(r)].get("converge", False)]
    for r in np.unique(rounds):
        sel = rounds == r
        strategy = plans[int(r)]["strategy"]
        if strategy in ("unbiased", "given"):
            out[sel] = _CODE["round0-unbiased"]
        elif strategy == "frontier":
            out[sel & (kind == KIND_RESTRAINT)] = _CODE["frontier-pull"]
            out[sel & (kind != KIND_RESTRAINT)] = _CODE["frontier-release"]
        elif converge and plans[int(r)].get("converge_restarted", False):
            out[sel] = _CODE["converge-restarted"]
        elif converge and r not in converge:
            out[sel] = _CODE["exploration"]
        else:
            out[sel & (scale == 0.0)] = _CODE["bias-off"]
            if strategy == "pocket":  # the transient after a restart from a chosen frame (campaign.pocket)
                from .pocket import restart_exclusion

                out[sel & restart_exclusion(plans[int(r)], frames["segment"])] = _CODE["pocket-restart"]
            if r in converge and burn_in > 0:
                t = np.asarray(frames["time_ps"], dtype=float)[sel]
                cut = t.min() + burn_in * (t.max() - t.min())
                idx = np.flatnonzero(sel)
                out[idx[(t < cut) & (out[idx] == 0)]] = _CODE["burn-in"]
    return out


def converge_logweights(frames: dict[str, np.ndarray], temperature: float,
                        use: np.ndarray | None = None) -> np.ndarray:
    """Log-weights ``β (bias − c(t))`` of converge-phase frames (normalised over ``use``; −inf elsewhere).

    Parameters
    ----------
    frames : dict
        Frame table; ``bias_kjmol`` (the acting bias incl. walls, kJ/mol) and ``ct_kjmol`` (its c(t), kJ/mol).
    temperature : float
        K.
    use : numpy.ndarray of bool, shape=(n,), optional
        Frames in the estimate (default all).

    Returns
    -------
    numpy.ndarray, shape=(n,)
    """
    beta = 1.0 / kt_kjmol(temperature)
    logw = beta * (np.asarray(frames["bias_kjmol"], dtype=float) - np.asarray(frames["ct_kjmol"], dtype=float))
    if use is not None:
        logw = np.where(use, logw, -np.inf)
    if np.isfinite(logw).any():
        logw = logw - np.logaddexp.reduce(logw[np.isfinite(logw)])
    return logw


@dataclass
class BiasState:
    """One thermodynamic state of the campaign: a bias V(z) in the latent space of ``model_round``'s model.

    kind: "unbiased" | "restraint" (center, k: a float or one per restrained dimension, dims: the restrained
    latent dimensions, None = all) | "metad" (a grid bias — metadynamics or OPES: variables, grid, wall_k, scale).
    """

    kind: str
    model_round: int = -1
    center: np.ndarray | None = None
    k: float = 0.0
    variables: list[dict] | None = None
    grid: np.ndarray | None = None
    wall_k: float = 0.0
    scale: float = 1.0
    dims: list[int] | None = None

    def energy(self, z: np.ndarray) -> np.ndarray:
        """Bias (kJ/mol) of frames with latent coordinates z (shape=(n, d)) in this state's latent space."""
        if self.kind == "unbiased":
            return np.zeros(len(z))
        if self.kind == "restraint":
            zz = z if self.dims is None else z[:, self.dims]
            return 0.5 * (np.asarray(self.k) * (zz - self.center) ** 2).sum(1)
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
        Index into ``states`` of the state each frame was sampled in; −1 for frames kept out of the estimate
        (their log-weight is −inf).
    encode : callable
        ``encode(r)`` -> latent coordinates of all N frames under round r's model, shape=(N, d).
    temperature : float
        K.

    Returns
    -------
    logweights : numpy.ndarray, shape=(N,)
        −inf for excluded frames (all of them when no frame is in the estimate).
    info : dict
        ``f_k`` and ``df_k`` (dimensionless), number of samples per state, effective sample size.
    """
    state_of_frame = np.asarray(state_of_frame, dtype=int)
    keep = state_of_frame >= 0
    out = np.full(len(state_of_frame), -np.inf)
    if not keep.any():
        return out, {"f_k": [], "df_k": [], "n_k": [], "ess": 0.0}
    idx = np.flatnonzero(keep)
    cache: dict[int, np.ndarray] = {}

    def encode_kept(q: int) -> np.ndarray:
        if q not in cache:
            cache[q] = np.asarray(encode(q))[idx]
        return cache[q]

    logw, info = _mbar_all(states, state_of_frame[idx], encode_kept, temperature)
    out[idx] = logw
    return out, info


def _mbar_all(states: list[BiasState], state_of_frame: np.ndarray, encode: Callable[[int], np.ndarray],
              temperature: float) -> tuple[np.ndarray, dict[str, Any]]:
    from ..analysis.reweight import effective_sample_size

    u, rows = reduced_potential_matrix(states, state_of_frame, encode, temperature)
    used = np.arange(u.shape[0])
    order = np.argsort(rows, kind="stable")
    n_k = np.bincount(rows, minlength=len(used))
    if len(used) == 1:  # one state: w ∝ exp(+βV)
        logw = u[0] - np.log(len(u[0]))
        logw -= np.logaddexp.reduce(logw)
        return logw, {"f_k": [0.0], "df_k": [0.0], "n_k": n_k.tolist(), "ess": effective_sample_size(logw)}
    logw_sorted, f_k, df_k = mbar_logweights(u[:, order], n_k)
    logw = np.empty_like(logw_sorted)
    logw[order] = logw_sorted
    return logw, {"f_k": np.asarray(f_k).tolist(), "df_k": np.asarray(df_k).tolist(), "n_k": n_k.tolist(),
                  "ess": effective_sample_size(logw)}


def read_plans(run_dir: RunDir, rounds: Any) -> dict[int, dict[str, Any]]:
    """Plans of ``rounds``; a converge attempt that went back to retraining (:func:`~latentbias.campaign.converge.
    restarted`) is marked ``converge_restarted`` and no longer ``converge``: from then on it counts as an
    exploration round whose frames are kept out of the final estimate."""
    from .converge import restarted

    plans = {int(q): run_dir.read_plan(int(q)) for q in rounds}
    for q, plan in plans.items():
        if plan.get("converge", False) and restarted(run_dir, q):
            plans[q] = {**plan, "converge": False, "converge_restarted": True}
    return plans


def _attempts(run_dir: RunDir, plans: dict[int, dict[str, Any]], frames: dict[str, np.ndarray],
              final: int) -> list[dict[str, Any]]:
    """One record per converge attempt up to round ``final``: round, encoder round, simulated ps, how it ended and
    its largest per-segment OOD fraction."""
    out = []
    for q, plan in sorted(plans.items()):
        if not (plan.get("converge", False) or plan.get("converge_restarted", False)):
            continue
        sel = frames["round"] == q
        seg, ood = frames["segment"][sel], np.asarray(frames["ood"][sel], dtype=float)
        worst = max((float(ood[seg == k].mean()) for k in np.unique(seg)), default=0.0)
        end = run_dir.round_end(q)
        t = frames["time_ps"][sel]
        out.append({"round": q, "attempt": int(plan.get("attempt", 0)), "model_round": int(plan["model_round"]),
                    "ps": float(t.max() - t.min()) if len(t) else 0.0,
                    "ended": ("retrain (out-of-distribution frames)" if plan.get("converge_restarted", False)
                              else (end["reason"] if end is not None else "budget")),
                    "max_segment_ood_fraction": worst, "in_estimate": q == final})
    return out


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
        −1 for frames kept out of the estimate (:func:`frame_exclusions`).
    """
    states: list[BiasState] = [BiasState("unbiased")]
    index: dict[tuple, int] = {("unbiased",): 0}
    state_of = np.zeros(len(frames["step"]), dtype=int)
    plans = read_plans(run_dir, np.unique(frames["round"]))
    excluded = frame_exclusions(frames, plans, burn_in=config.converge.burn_in)
    for n in range(len(state_of)):
        kind, r, k = int(frames["kind"][n]), int(frames["round"][n]), int(frames["segment"][n])
        scale = float(frames["scale"][n])
        if excluded[n]:
            state_of[n] = -1
            continue
        if kind == KIND_UNBIASED or (kind == KIND_RESTRAINT and scale == 0.0):
            continue
        plan = plans[r]
        if kind == KIND_RESTRAINT and plan["strategy"] == "umbrella":  # converge-phase windows (umbrellaconv)
            key = ("umbrella", r, int(frames["target"][n]))
            if key not in index:
                from .umbrellaconv import umbrella_states

                index[key] = len(states)
                states.append(umbrella_states(plan)[key[2]])
        elif kind == KIND_RESTRAINT:
            key = ("restraint", r, int(frames["target"][n]), scale)
            if key not in index:
                index[key] = len(states)
                states.append(BiasState("restraint", r - 1, np.array(plan["targets"][key[2]]),
                                        config.frontier.restraint_k * scale))
        else:
            walker = int(frames["walker"][n]) if "walker" in frames else 0
            key = ("metad", r, k, walker, scale)
            if key not in index:
                seg = run_dir.read_segment(r, k)
                if "walker_grid_end" in seg:  # parallel walkers: the walker's own bias at segment start and end
                    start, end = seg["walker_grid_start"][walker], seg["walker_grid_end"][walker]
                else:
                    end = seg["grid_end"]
                    if k > 0:
                        start = run_dir.read_segment(r, k - 1)["grid_end"]
                    else:
                        initial = run_dir.read_initial_bias(r, plan)
                        start = np.zeros_like(end) if initial is None else initial
                wall_k = (config.opes.wall_force_constant if kind == KIND_OPES
                          else config.metadynamics.wall_force_constant)
                index[key] = len(states)
                states.append(BiasState("metad", r - 1, variables=plan["variables"], grid=0.5 * (start + end),
                                        wall_k=wall_k, scale=scale))
        state_of[n] = index[key]
    return states, state_of


def _ood_weight(logw: np.ndarray, ood: np.ndarray, used: np.ndarray, struct: dict[str, Any] | None
                ) -> dict[str, Any]:
    """How much of the estimate's weight sits in frames the frozen encoder never saw: ``estimate`` (share of all
    its weight), ``microstates`` (per structural microstate taking part: the share of its weight,
    :func:`latentbias.campaign.structuralstates.ood_weight_share`; empty without the structural count) and
    ``frames`` (share of the used frames, unweighted). The OPES/metadynamics converge phase spends much of its time
    in high free-energy regions the encoder never saw; their frames carry little weight, so an unweighted OOD
    fraction says little about the estimate (it exceeded 20 % in a converge segment of every demo seed, where those
    frames carried 0.01–0.7 % of the weight), whereas a state whose weight is mostly out of distribution is one the
    encoder does not describe (benchmarks/RESULTS.md: seed 2029's C7ax, 100 %)."""
    from .structuralstates import ood_weight_share

    flags = np.asarray(ood, dtype=bool)
    lw = np.where(used, logw, -np.inf)
    overall = ood_weight_share(np.zeros(len(lw), dtype=np.int64), flags, lw, 1)[0]
    shares: dict[str, float | None] = {}
    if struct is not None and "ood_weight_share" in struct:
        shares = {str(k): struct["ood_weight_share"][k] for k in struct["counted"]}  # JSON object keys
    return {"estimate": 0.0 if overall is None else overall, "microstates": shares,
            "frames": float(flags[used].mean()) if used.any() else 0.0}


def write_weights(run_dir: RunDir, config: CampaignConfig, r: int, frames: dict[str, np.ndarray],
                  encode: Callable[[int], np.ndarray],
                  extra_columns: dict[str, np.ndarray] | None = None, featurizer: Any | None = None) -> dict[str, Any]:
    """The ``weights`` phase after round r: log-weights of all frames so far, written to ``weights.json``
    (estimator, frames used and why the others are not), ``weights.csv`` (all frames) and each round's
    ``frames.csv``. After the converge phase (round r's plan says ``converge``) the weights are the converge
    estimate (:func:`converge_logweights`); otherwise the cross-round MBAR.

    Parameters
    ----------
    frames : dict
        Frame table of rounds 0..r.
    encode : callable
        ``encode(q)`` -> latent coordinates of all frames under round q's model (with the frames' boxes),
        shape=(n, d).
    extra_columns : dict of str -> numpy.ndarray, optional
        Per-frame columns (shape=(n,)) appended to ``weights.csv`` and ``frames.csv`` (e.g. ``openness_nm3``).
    featurizer : optional
        The campaign's featurizer, for the converge phase's structural count (default: built from ``config``;
        a shared-encoder member campaign must pass its shared one).

    Returns
    -------
    dict
        The content of ``weights.json``.
    """
    plans = read_plans(run_dir, range(r + 1))
    final = bool(plans[r].get("converge", False))
    temperature = config.md.temperature
    if final:
        excluded = frame_exclusions(frames, plans, burn_in=config.converge.burn_in)
        from ..analysis.reweight import effective_sample_size

        umbrella: dict[str, Any] = {}
        if plans[r]["strategy"] == "umbrella":  # MBAR over the windows (latentbias.campaign.umbrellaconv)
            states, state_of = bias_states(frames, run_dir, config)
            logw, mbar_info = cross_round_logweights(states, state_of, encode, temperature)
            p = plans[r]
            umbrella = {"umbrella": {
                "windows": len(p["centers"]), "dims": p["dims"], "centers": p["centers"],
                "force_constants_kjmol_per_z2": p["force_constants"], "path": p["path_how"], "basins": p["basins"],
                "frames_per_window": np.bincount(frames["target"][excluded == 0].astype(int),
                                                 minlength=len(p["centers"])).tolist(),
                "f_k": mbar_info["f_k"], "df_k": mbar_info["df_k"]}}
            from .umbrellaconv import umbrella_exchange_summary

            swaps = umbrella_exchange_summary(run_dir, r)
            if swaps is not None:
                umbrella["umbrella"]["exchange"] = swaps
            how = ("MBAR over the umbrella windows along the latent path (restraint energies of every frame under "
                   "every window, in the frozen encoder's latent space)")
        else:
            logw = converge_logweights(frames, temperature, excluded == 0)
            how = "log w = (bias + walls - c(t))/kT of the bias that generated each frame"
        conv = frames["round"] == r
        t = frames["time_ps"][conv]
        info: dict[str, Any] = {
            "estimator": f"converge phase ({plans[r]['strategy']}): {how}",
            "converge_round": r, "model_round": int(plans[r]["model_round"]),
            "converge_ps": float(t.max() - t.min()) if len(t) else 0.0,
            "burn_in_ps": float(config.converge.burn_in * (t.max() - t.min())) if len(t) else 0.0,
            "ess": effective_sample_size(logw[np.isfinite(logw)]) if np.isfinite(logw).any() else 0.0}
        end = run_dir.round_end(r)
        info["converge_end"] = end["reason"] if end is not None else "budget"
        info["converge_attempts"] = _attempts(run_dir, plans, frames, r)
        from .converge import round_trip_summary  # visits between latent basins (latentbias.campaign.roundtrips)

        trips = round_trip_summary(run_dir, config, r, info["converge_end"])
        if trips is not None:
            info["latent_round_trips"] = trips
        from .converge import structural_summary  # visits between input-feature microstates (structuralstates.py)

        struct = structural_summary(run_dir, config, r, info["converge_end"], featurizer)
        if struct is not None:
            info["structural_round_trips"] = struct
        worst = info["converge_attempts"][-1]["max_segment_ood_fraction"]
        info["ood_weight"] = _ood_weight(logw, frames["ood"], excluded == 0, struct)
        if worst > config.ood.retrain_fraction:
            info["warning"] = (
                f"the frozen encoder of the estimate (round {plans[r]['model_round']}) met out-of-distribution "
                f"frames: up to {100 * worst:.0f} % of a converge segment (> [ood] retrain_fraction = "
                f"{100 * config.ood.retrain_fraction:.0f} %) and no restart was left ([converge] restarts = "
                f"{config.converge.restarts}, or the budget left was below min_steps); the estimate may be biased "
                f"(those frames carry {100 * info['ood_weight']['estimate']:.2g} % of its weight: ood_weight)")
            logger.warning("final estimate: %s", info["warning"])
        for counted in (trips, struct):
            if counted is not None and "warning" in counted:
                info["warning"] = "; ".join(filter(None, [info.get("warning"), counted["warning"]]))
                logger.warning("final estimate: %s", counted["warning"])
        info["frames_used_why"] = (
            f"frames of the converge attempt in round {r} (encoder of round {plans[r]['model_round']}, frozen) "
            f"after its burn-in; exploration rounds, round 0 and earlier converge attempts that went back to "
            f"retraining are kept out (see frames_excluded and converge_attempts)")
        info.update(umbrella)
        z_latest = encode(int(plans[r]["model_round"]))
    else:
        states, state_of = bias_states(frames, run_dir, config)
        excluded = frame_exclusions(frames, plans)
        logw, info = cross_round_logweights(states, state_of, encode, temperature)
        info = {"estimator": "cross-round MBAR over piecewise-static bias states", **info,
                "n_states": len(set(state_of[state_of >= 0].tolist()))}
        z_latest = encode(r)
    info["frames_used"] = int(np.count_nonzero(excluded == 0))
    info["frames_excluded"] = {EXCLUSIONS[c]: int(np.count_nonzero(excluded == c)) for c in EXCLUSIONS
                               if c and np.any(excluded == c)}
    if info["frames_used"] == 0:
        logger.warning("after round %d no frame is an equilibrium sample (%s): no estimate yet (all log-weights "
                       "-inf)", r, info["frames_excluded"])
    run_dir.write_json(run_dir.path / "weights.json", {"after_round": r, **info})
    d = z_latest.shape[1]
    legend = "; ".join(f"{c} = {name}" for c, name in EXCLUSIONS.items())
    header = (["round", "step", "time_ps"] + [f"z{i}" for i in range(d)]
              + ["bias_kjmol", "logweight", "ood", "excluded"])
    extra = dict(extra_columns or {})
    extra_names = list(extra)
    extra_values = np.column_stack([np.asarray(v, dtype=float) for v in extra.values()]) if extra else \
        np.zeros((len(logw), 0))
    header += extra_names
    rows = np.column_stack([frames["round"], frames["step"], frames["time_ps"], z_latest, frames["bias_kjmol"],
                            logw, frames["ood"], excluded, extra_values])
    write_csv(run_dir.path / "weights.csv", header, rows, overwrite=True,
              comment=f"all frames after round {r}; z in the latest (aligned) latent space; bias in kJ/mol; "
                      f"logweight = log-weight in the unbiased ensemble (normalised, -inf = not in the estimate); "
                      f"excluded: {legend}")
    walker = frame_column(frames, "walker")  # last column: readers by name or by the earlier positions unchanged
    for q in range(r + 1):
        sel = frames["round"] == q
        write_csv(run_dir.round_dir(q) / "frames.csv", ["step", "time_ps"] + [f"z{i}" for i in range(d)]
                  + ["bias_kjmol", "logweight", "round", "ood", "excluded"] + extra_names + ["walker"],
                  np.column_stack([frames["step"][sel], frames["time_ps"][sel], z_latest[sel],
                                   frames["bias_kjmol"][sel], logw[sel], frames["round"][sel], frames["ood"][sel],
                                   excluded[sel], extra_values[sel], walker[sel]]),
                  overwrite=True,
                  comment=f"round {q}; time in ps; z in the latest (round {r}) aligned latent space; bias acting "
                          f"on the frame in kJ/mol; logweight = final log-weight (-inf = kept out of the "
                          f"estimate); excluded: {legend}; walker = parallel walker that sampled the frame "
                          f"(0 with one walker)")
    logger.info("weights after round %d: %s; %d of %d frames used (excluded: %s), effective sample size %.0f", r,
                info["estimator"], info["frames_used"], len(logw), info["frames_excluded"], info["ess"])
    return info
