"""The converge phase's stopping rule: the drift of the latent free-energy estimate over the last part of the run.

After the exploration rounds the last encoder is frozen and a production run (``[converge] method``: OPES by
default, well-tempered metadynamics, or umbrella windows along a latent path —
:mod:`latentbias.campaign.umbrellaconv`, whose estimate is MBAR over the windows and whose drift drops the last
``window`` fraction of each window's frames, judged after complete sweeps) continues in checkpoint segments.
After each committed segment, once ``min_steps`` have run, :func:`convergence_check` computes the estimate the run would give now — the latent FES
from the frames after the burn-in, each reweighted with the bias that generated it, ``β (V_t + W − c(t))``
(:func:`latentbias.campaign.weights.converge_logweights`) — and the same estimate without the last ``window``
fraction of those frames in simulated time (with parallel walkers, all walkers' frames ordered by MD step, so
the window holds every walker's latest frames). The *drift* is the root-mean-square difference of the two
surfaces over the bins below ``fes_cutoff`` in both, weighted by the bins' probability and after removing the
weighted mean difference (a free energy is defined up to a constant; unweighted, the histogram noise of rarely
visited bins would dominate).
Below ``tolerance`` (kJ/mol) the run stops (``end.json`` reason ``converged``); otherwise it runs until the budget
``max_steps`` is spent. The history of the criterion is written to ``round_RRR/convergence.csv`` by
:func:`convergence_history` (the report plots it).

The criterion measures stability, not correctness: a barrier never crossed in the converge run gives no drift.
So the OPES and metadynamics converge phases also count visits: with ``min_round_trips`` > 0 the run stops only
once its frames after the burn-in hold at least that many round trips across the slowest split of the frozen
encoder's latent basins — the minimum cut of their transition graph, so that every latent basin carrying weight,
and every group of them, has been entered and left that often (cores fixed when the phase is planned;
:mod:`latentbias.campaign.roundtrips`), drift
and round trips both checked after every committed segment. A run whose budget ends first says so
(:func:`round_trip_summary`: ``weights.json`` ``latent_round_trips`` and a ``warning``).

Going back to exploration. The frozen encoder is only trustworthy where it was trained. When a committed segment
of the converge run has more than ``[ood] retrain_fraction`` of its frames flagged out of distribution by the OOD
guard (reconstruction error above ``[ood] threshold`` × its training 99th percentile — what a basin the encoder
never saw looks like, e.g. C7ax of alanine dipeptide reached for the first time in the converge run), the attempt
ends (``end.json`` reason :data:`RESTART_REASON`), the encoder retrains on all frames so far, including the
attempt's, and a new converge attempt starts in the next round with that encoder (:func:`converge_end_check`). The
final estimate uses the last attempt's frames only; earlier attempts' frames are kept out (``excluded`` code
``converge-restarted``) and listed in ``weights.json`` with the reason. ``[converge] restarts`` bounds the number of
restarts and all attempts share the ``max_steps`` budget: an attempt may end for retraining only while the budget
left after it still covers ``min_steps`` (:func:`latentbias.campaign.plan.converge_attempt_budget`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from ..analysis.constants import kt_kjmol
from .config import CampaignConfig
from .records import frame_column
from .weights import converge_logweights

if TYPE_CHECKING:
    from .rundir import RunDir

logger = logging.getLogger(__name__)

__all__ = ["RESTART_REASON", "latent_fes_drift", "fes_drift", "convergence_check", "converge_end_check", "restarted",
           "convergence_history", "round_trip_summary", "structural_summary"]

#: ``end.json`` reason of a converge attempt that went back to retraining (the exploration rounds' OOD reason)
RESTART_REASON = "ood"


def _fes(z: np.ndarray, logw: np.ndarray, edges: list[np.ndarray], kt: float) -> tuple[np.ndarray, np.ndarray]:
    w = np.exp(logw - logw.max())
    h, _ = np.histogramdd(z, bins=edges, weights=w)
    p = h / h.sum()
    with np.errstate(divide="ignore"):
        f = -kt * np.log(p)
    return f - f[np.isfinite(f)].min(), p


def latent_fes_drift(z: np.ndarray, logw: np.ndarray, window: float, bins: int, cutoff: float,
                     ranges: list[tuple[float, float]], temperature: float) -> float:
    """Offset-free, probability-weighted RMS difference (kJ/mol) between the FES from all given frames and from
    all but the last ``window`` fraction of them (bins weighted by their mean probability in the two estimates,
    so that the noise of rarely visited bins does not dominate; the offset is the weighted mean difference).

    Parameters
    ----------
    z : numpy.ndarray, shape=(n, d)
        Latent coordinates of the frames in the estimate, in time order.
    logw : numpy.ndarray, shape=(n,)
        Their log-weights.
    window : float
        Fraction in (0, 1).
    bins : int
        Bins per latent dimension over ``ranges``.
    cutoff : float
        kJ/mol; bins above it in either surface are ignored.
    ranges : list of (min, max)
        Histogram range per dimension.
    temperature : float
        K.

    Returns
    -------
    float
        NaN when fewer than 2 bins are comparable.
    """
    z = np.asarray(z, dtype=float).reshape(len(logw), -1)
    n_old = int(round((1.0 - window) * len(z)))
    if n_old < 2:
        return float("nan")
    return fes_drift(z, logw, z[:n_old], logw[:n_old], bins, cutoff, ranges, temperature)


def fes_drift(z_new: np.ndarray, logw_new: np.ndarray, z_old: np.ndarray, logw_old: np.ndarray, bins: int,
              cutoff: float, ranges: list[tuple[float, float]], temperature: float) -> float:
    """Offset-free, probability-weighted RMS difference (kJ/mol) between the latent FES of two weighted samples
    (the estimate now and an older one; :func:`latent_fes_drift`). z: shape=(n, d); NaN when fewer than 2 bins
    are comparable."""
    if not (np.isfinite(logw_new).any() and np.isfinite(logw_old).any()):
        return float("nan")
    kt = kt_kjmol(temperature)
    edges = [np.linspace(lo, hi, bins + 1) for lo, hi in ranges]
    (new, p_new), (old, p_old) = _fes(z_new, logw_new, edges, kt), _fes(z_old, logw_old, edges, kt)
    ok = np.isfinite(new) & np.isfinite(old) & (new < cutoff) & (old < cutoff)
    if ok.sum() < 2:
        return float("nan")
    diff = new[ok] - old[ok]
    w = 0.5 * (p_new[ok] + p_old[ok])
    shift = np.sum(w * diff) / np.sum(w)
    return float(np.sqrt(np.sum(w * (diff - shift) ** 2) / np.sum(w)))


def _converge_frames(run_dir: RunDir, r: int, n_segments: int) -> dict[str, np.ndarray]:
    """The first ``n_segments`` segments' frames of the converge round r in simulated-time order: by MD step, the
    parallel walkers' frames of one step next to each other (walker 0 first). A segment file holds walker 0's
    frames, then walker 1's...; in file order "the last ``window`` of the run" would be the last walkers' share
    of the last segment, not the last part in time."""
    keys = ("z", "bias_kjmol", "ct_kjmol", "time_ps", "scale", "target", "step")
    parts = [run_dir.read_segment(r, k) for k in range(n_segments)]
    out = {key: np.concatenate([p[key] for p in parts]) for key in keys}
    for key in ("positions", "box"):  # the structural count featurizes them (latentbias.campaign.structuralstates)
        if parts and all(key in p for p in parts):
            out[key] = np.concatenate([p[key] for p in parts])
    out["walker"] = walker = np.concatenate([frame_column(p, "walker") for p in parts])
    out["ood"] = np.concatenate([frame_column(p, "ood") for p in parts])
    order = np.lexsort((walker, out["step"]))  # stable: one walker's frames keep their file (= time) order
    return {key: v[order] for key, v in out.items()}


def _evaluate(config: CampaignConfig, plan: dict[str, Any], frames: dict[str, np.ndarray]) -> tuple[float, int]:
    c = config.converge
    t = frames["time_ps"]
    use = _used(config, frames)
    ranges = [(v["minValue"], v["maxValue"]) for v in plan["variables"]]
    dims = [v["index"] for v in plan["variables"]]
    if plan["strategy"] == "umbrella":  # MBAR over the windows, each window's last `window` fraction dropped
        from .umbrellaconv import umbrella_logweights, umbrella_used_frames

        T, zf, win = config.md.temperature, frames["z"], frames["target"]
        old = umbrella_used_frames(t, win, use, c.window)
        if old.sum() < 2 or not np.any(use & ~old):
            return float("nan"), int(use.sum())
        new_w, old_w = umbrella_logweights(zf, win, use, plan, T), umbrella_logweights(zf, win, old, plan, T)
        return fes_drift(zf[use][:, dims], new_w[use], zf[old][:, dims], old_w[old], c.fes_bins, c.fes_cutoff,
                         ranges, T), int(use.sum())
    logw = converge_logweights(frames, config.md.temperature, use)[use]
    z = frames["z"][use][:, dims]
    return latent_fes_drift(z, logw, c.window, c.fes_bins, c.fes_cutoff, ranges, config.md.temperature), int(use.sum())


def _used(config: CampaignConfig, frames: dict[str, np.ndarray]) -> np.ndarray:
    t = frames["time_ps"]
    return (t >= t.min() + config.converge.burn_in * (t.max() - t.min())) & (frames["scale"] > 0)


def _round_trips(config: CampaignConfig, plan: dict[str, Any], frames: dict[str, np.ndarray]) -> dict[str, Any] | None:
    """Round trips between the latent basins' cores in the frames after the burn-in (None when the plan has no
    cores: umbrella, ``min_round_trips = 0`` or a run planned before the rule existed)."""
    if "round_trip_cores" not in plan or not len(frames["time_ps"]):
        return None
    from .roundtrips import LatentCores, latent_round_trips

    use = _used(config, frames)
    cores, c = LatentCores.from_dict(plan["round_trip_cores"]), config.converge
    part = cores.taking_part(config.md.temperature, c.fes_cutoff, c.basin_min_frames, c.round_trip_basins)
    return latent_round_trips(cores, frames["z"][use], frames["walker"][use], part)


def _structural(run_dir: RunDir, config: CampaignConfig, r: int, plan: dict[str, Any], frames: dict[str, np.ndarray],
                featurizer: Any | None = None) -> dict[str, Any] | None:
    """Round trips across the slowest split of the structural microstates in the frames after the burn-in (None
    when the plan has no ``structural_states``: umbrella, ``structural_states = 0`` or ``min_round_trips = 0``;
    :mod:`latentbias.campaign.structuralstates`)."""
    if "structural_states" not in plan or not len(frames["time_ps"]):
        return None
    from .structuralstates import structural_count

    use = _used(config, frames)
    return structural_count(run_dir, config, r, frames, use,
                            lambda: converge_logweights(frames, config.md.temperature, use), featurizer)


def convergence_check(run_dir: RunDir, config: CampaignConfig, r: int, n_committed: int,
                      featurizer: Any | None = None) -> str | None:
    """``"converged"`` when the converge run (round r, ``n_committed`` segments) has run at least ``min_steps``,
    its drift is below ``tolerance`` and (OPES/metadynamics, ``min_round_trips`` > 0) its frames after the burn-in
    hold at least ``min_round_trips`` round trips between the latent basins' cores and (``structural_states`` > 0)
    across the slowest split of the structural microstates; else None. Deterministic in the committed segments
    (safe to re-run on resume). ``featurizer``: the campaign's (default: built from ``config``)."""
    c = config.converge
    steps = n_committed * config.campaign.checkpoint_interval
    if steps < c.min_steps:
        return None
    plan = run_dir.read_plan(r)
    if n_committed % int(plan.get("sweep_segments", 1)):  # umbrella windows: judged after complete sweeps only
        return None
    frames = _converge_frames(run_dir, r, n_committed)
    drift, n_used = _evaluate(config, plan, frames)
    trips = _round_trips(config, plan, frames)
    struct = _structural(run_dir, config, r, plan, frames, featurizer)
    logger.info("converge phase: %d steps, %d frames in the estimate, latent FES drift %.3g kJ/mol (tolerance %g)%s%s",
                steps, n_used, drift, c.tolerance,
                "" if trips is None else f", {trips['round_trips']} latent round trips (need {c.min_round_trips}; "
                                         f"transitions {trips['transitions']})",
                "" if struct is None else f", {struct['round_trips']} structural round trips (transitions "
                                          f"{struct['transitions']}, bottleneck microstates {struct['bottleneck']} of "
                                          f"{struct['counted']})")
    enough = all(t is None or t["round_trips"] >= c.min_round_trips for t in (trips, struct))
    return "converged" if np.isfinite(drift) and drift < c.tolerance and enough else None


def restarted(run_dir: RunDir, r: int) -> bool:
    """Whether round r is a converge attempt that ended to retrain (:data:`RESTART_REASON`)."""
    if not run_dir.plan_file(r).is_file() or not run_dir.read_plan(r).get("converge", False):
        return False
    end = run_dir.round_end(r)
    return end is not None and end["reason"] == RESTART_REASON


def converge_end_check(run_dir: RunDir, config: CampaignConfig, r: int, n_committed: int,
                       featurizer: Any | None = None) -> str | None:
    """Why the converge attempt in round r ends after ``n_committed`` segments, or None to go on:
    :data:`RESTART_REASON` when the last segment's fraction of out-of-distribution frames exceeds ``[ood]
    retrain_fraction`` and the plan still allows a restart (``restart_segments``), else
    :func:`convergence_check`. Deterministic in the committed segments (safe to re-run on resume)."""
    plan = run_dir.read_plan(r)
    if 0 < n_committed <= int(plan.get("restart_segments", 0)):
        ood = np.asarray(run_dir.read_segment(r, n_committed - 1)["ood"], dtype=bool)
        frac = float(ood.mean()) if len(ood) else 0.0
        if frac > config.ood.retrain_fraction:
            logger.warning("converge attempt %d (round %d): %.0f %% of segment %d's frames are out of the frozen "
                           "encoder's training distribution (> %.0f %%): back to retraining, then a new converge "
                           "attempt; this attempt's frames are kept out of the final estimate",
                           int(plan.get("attempt", 0)), r, 100 * frac, n_committed - 1,
                           100 * config.ood.retrain_fraction)
            return RESTART_REASON
    return convergence_check(run_dir, config, r, n_committed, featurizer)


#: most rows of ``convergence.csv``: each row re-clusters the structural microstates (a k-means over all frames so
#: far), so a 158-segment converge run evaluated after every segment cost ~1.5 min of the ala2 demo's wall time
HISTORY_ROWS = 40


def convergence_history(run_dir: RunDir, config: CampaignConfig, r: int,
                        featurizer: Any | None = None, max_rows: int = HISTORY_ROWS) -> dict[str, np.ndarray]:
    """The criterion after committed segments of the converge round r — every segment, or ``max_rows`` of them
    evenly spaced (the last always) when the run has more: ``time_ps`` (simulated time of the converge run),
    ``frames_used``, ``drift_kjmol`` (NaN before two segments), ``round_trips`` (latent round trips in the frames
    after the burn-in; NaN when not counted) and ``structural_round_trips`` (across the structural microstates;
    NaN when not counted); written to ``round_RRR/convergence.csv``."""
    from ..io import write_csv

    plan = run_dir.read_plan(r)
    n_seg = run_dir.round_segments(r)
    frames = _converge_frames(run_dir, r, n_seg)
    per_seg = len(frames["time_ps"]) // max(n_seg, 1)
    rows = []
    for k in np.unique(np.round(np.linspace(1, n_seg, min(n_seg, max(int(max_rows), 2)))).astype(int)):
        sub = {key: v[: k * per_seg] for key, v in frames.items()}
        drift, n_used = _evaluate(config, plan, sub) if k >= 2 else (float("nan"), 0)
        trips = _round_trips(config, plan, sub)
        struct = _structural(run_dir, config, r, plan, sub, featurizer)
        rows.append((float(sub["time_ps"][-1] - frames["time_ps"][0]), n_used, drift,
                     float("nan") if trips is None else trips["round_trips"],
                     float("nan") if struct is None else struct["round_trips"]))
    arr = np.array(rows, dtype=float).reshape(-1, 5)
    write_csv(run_dir.round_dir(r) / "convergence.csv",
              ["time_ps", "frames_used", "drift_kjmol", "round_trips", "structural_round_trips"], arr,
              overwrite=True, comment=f"converge phase: after each segment (at most {max_rows} evenly spaced), the frames after the burn-in "
                                      f"({config.converge.burn_in:g} of the run) and the offset-free RMS drift "
                                      f"(kJ/mol) of the latent FES over the last {config.converge.window:g} of them; "
                                      f"round trips between the latent basins' cores and across the structural "
                                      f"microstates in those frames")
    return {"time_ps": arr[:, 0], "frames_used": arr[:, 1], "drift_kjmol": arr[:, 2], "round_trips": arr[:, 3],
            "structural_round_trips": arr[:, 4]}


def round_trip_summary(run_dir: RunDir, config: CampaignConfig, r: int, ended: str) -> dict[str, Any] | None:
    """The ``latent_round_trips`` entry of ``weights.json`` for the converge round r, which ended for the reason
    ``ended`` (``converged`` or ``budget``): ``round_trips`` (in the frames of the estimate), ``required``
    (``min_round_trips``), ``transitions`` (per basin pair), ``basins``, ``minima`` and ``free_energies`` of the
    latent basins, ``enough`` and, when the run ended without enough round trips, ``warning`` (a sentence). None
    when the round-trip condition was not used (umbrella, ``min_round_trips = 0``, or a plan without cores)."""
    plan = run_dir.read_plan(r)
    n_seg = run_dir.round_segments(r)
    trips = _round_trips(config, plan, _converge_frames(run_dir, r, n_seg)) if n_seg else None
    if trips is None:
        return None
    cores = plan["round_trip_cores"]
    need = config.converge.min_round_trips
    out = {**trips, "required": need, "enough": trips["round_trips"] >= need, "minima": cores["minima"],
           "free_energies": cores["free_energies"]}
    if not out["enough"]:
        from ..analysis.uncertainty import two_state_error

        k = trips["transitions"]
        bound = two_state_error(k, config.md.temperature)
        if len(trips["counted"]) >= 2:
            out["warning"] = (
                f"the converge phase ended ({ended}) after {trips['round_trips']} round trip(s) into and out of latent "
                f"basin(s) {trips['bottleneck']} (of {trips['counted']} taking part; {trips['basins']} found), fewer "
                f"than [converge] min_round_trips = {need}: a free-energy difference between these basins and the "
                f"rest rests on {k} transition(s) (two-state error 2kT/sqrt(K) >= {bound:.2g} kJ/mol); raise "
                f"[converge] max_steps")
        else:
            out["warning"] = (
                f"the converge phase ended ({ended}) without a latent round trip to count: {len(trips['counted'])} "
                f"of the {trips['basins']} latent basin(s) found take part (population >= exp(-fes_cutoff/kT), >= "
                f"[converge] basin_min_frames core frames), so the run could not show in latent space that it "
                f"sampled the states of the estimate more than a few times ([converge] min_round_trips = {need}); a "
                f"longer budget does not change that: check the estimate's own transitions")
    return out


def structural_summary(run_dir: RunDir, config: CampaignConfig, r: int, ended: str,
                       featurizer: Any | None = None) -> dict[str, Any] | None:
    """The ``structural_round_trips`` entry of ``weights.json`` for the converge round r, which ended for the
    reason ``ended``: the structural count in the frames of the estimate (:mod:`latentbias.campaign.structuralstates`:
    ``round_trips``, ``transitions``, ``bottleneck``, ``counted``, ``states``, ``populations``), ``required``,
    ``enough`` and, when the run ended without enough, ``warning``. None when the count was not used."""
    plan = run_dir.read_plan(r)
    n_seg = run_dir.round_segments(r)
    trips = _structural(run_dir, config, r, plan, _converge_frames(run_dir, r, n_seg), featurizer) if n_seg else None
    if trips is None:
        return None
    need = config.converge.min_round_trips
    out = {**trips, "required": need, "enough": trips["round_trips"] >= need}
    if not out["enough"]:
        from ..analysis.uncertainty import two_state_error

        k = trips["transitions"]
        out["warning"] = (
            f"the converge phase ended ({ended}) after {trips['round_trips']} round trip(s) across the slowest split "
            f"of the {len(trips['counted'])} structural microstates taking part (input-feature clusters; "
            f"bottleneck {trips['bottleneck']}), fewer than [converge] min_round_trips = {need}: a state the latent "
            f"space may not resolve rests on {k} transition(s) (two-state error 2kT/sqrt(K) >= "
            f"{two_state_error(k, config.md.temperature):.2g} kJ/mol); raise [converge] max_steps")
    return out
