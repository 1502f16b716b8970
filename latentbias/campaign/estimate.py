"""A campaign's final estimate of a basin free-energy difference, with an error bar that says what stands behind it.

:func:`campaign_basin_estimate` reads the final log-weights of one or several finished run directories
(``weights.csv``, −inf for frames kept out of the estimate, see :mod:`latentbias.campaign.weights`) and evaluates
ΔF = F_B − F_A for basins given as masks on a user observable (e.g. φ for alanine dipeptide; the sampler never
sees it). Errors come from :mod:`latentbias.analysis.uncertainty`:

* each run alone: the block bootstrap over the frames in its estimate, in time order (one continuous converge
  run: a single state, blocks of 3× the statistical inefficiency of the basin indicator and of the latent
  coordinates), valid because the converge weights are fixed per frame (no re-solve needed), and never below a
  bootstrap over the run's round trips between the basins nor the two-state bound 2 kT/√K of K transitions (a
  basin visited a few times: the blocks are shorter than the time between visits and cannot see it); an umbrella
  converge phase (MBAR over its windows, :mod:`latentbias.campaign.umbrellaconv`) is resampled per window
  (stratified block bootstrap) with MBAR re-solved on every resample, so the error includes that of the window
  free energies;
* several runs (independent campaigns, e.g. seeds): the pooled value is the mean of the per-run values and the
  error the Student-t spread of the runs (:func:`~latentbias.analysis.uncertainty.replica_estimate`) — it
  includes what the bootstrap cannot see: a different encoder, a basin missed in one run.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..analysis.constants import kt_kjmol
from ..analysis.fes import basin_free_energy_estimate
from ..analysis.uncertainty import (Estimate, regenerative_error, replica_estimate, transition_count,
                                    two_state_error)

logger = logging.getLogger(__name__)

__all__ = ["RunEstimate", "final_weights", "campaign_basin_estimate", "sampler_transitions"]


@dataclass
class RunEstimate:
    """The estimate of one or more runs: ``estimate`` (value, 1σ error, method, n_independent) and per run
    ``(rundir, value, error, frames_used, blocks, bootstrap_error, transitions, two_state_error, round_trips,
    round_trip_error, latent_round_trips, structural_round_trips, sampler_transitions)`` (transitions …
    round_trip_error None for umbrella runs; ``error`` is the largest of the three errors; ``latent_round_trips``:
    the converge phase's own count of round trips between latent basins from ``weights.json``, with ``required``,
    ``enough`` and a ``warning`` when the budget ended the run first, or None; ``structural_round_trips`` the
    same across its structural microstates; ``sampler_transitions`` the smaller of the two counts' transitions,
    which with ``transitions`` sets ``two_state_error``)."""

    estimate: Estimate
    runs: list[dict[str, Any]] = field(default_factory=list)


def final_weights(rundir: str | Path) -> dict[str, np.ndarray]:
    """Columns of ``RUNDIR/weights.csv`` (one row per frame, in the order of ``Campaign.all_frames``)."""
    path = Path(rundir) / "weights.csv"
    if not path.is_file():
        raise ValueError(f"{path} not found: run the campaign to its end first")
    header = path.read_text().splitlines()[1].split(",")
    data = np.loadtxt(path, delimiter=",", skiprows=2, ndmin=2)
    return {h: data[:, i] for i, h in enumerate(header)}


def _umbrella_reweighting(
        rundir: str | Path) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray], np.ndarray | None] | None:
    """For a run whose final estimate is an umbrella converge phase: the bias-state stratum of every frame, the
    MBAR re-solving reweighter (the report's) and every frame's replica trajectory within its window; else None."""
    import json

    info_file = Path(rundir) / "weights.json"
    info = json.loads(info_file.read_text()) if info_file.is_file() else {}
    if not str(info.get("estimator", "")).startswith("converge phase (umbrella)"):
        return None
    from .report import load_campaign, cross_round_reweighting, weights_csv_logweights

    campaign, last = load_campaign(Path(rundir))
    frames = campaign.all_frames(last)
    rw = cross_round_reweighting(campaign, frames, campaign.cfg.md.temperature)
    weights_csv_logweights(Path(rundir), rw)  # frames kept out of weights.csv stay out of every resample
    return rw.states, rw.reweight, rw.trajectories


def _latent_round_trips(rundir: str | Path, key: str = "latent_round_trips") -> dict[str, Any] | None:
    """``weights.json`` ``latent_round_trips`` of a run (the converge phase's count of round trips between latent
    basins, :func:`latentbias.campaign.converge.round_trip_summary`; ``key = "structural_round_trips"``: across
    its structural microstates, :func:`~latentbias.campaign.converge.structural_summary`), or None."""
    import json

    info_file = Path(rundir) / "weights.json"
    return json.loads(info_file.read_text()).get(key) if info_file.is_file() else None


def sampler_transitions(rundir: str | Path) -> int | None:
    """The smaller of the converge phase's own transition counts — across the minimum cut of its latent basins and
    of its structural microstates (``weights.json``) — counting only those with at least 2 states taking part;
    None when neither was counted."""
    both = (_latent_round_trips(rundir), _latent_round_trips(rundir, "structural_round_trips"))
    counts = [t["transitions"] for t in both if t is not None and len(t.get("counted", [])) >= 2]
    return min(counts) if counts else None


def campaign_basin_estimate(
    rundirs: Sequence[str | Path],
    observable: Callable[[str | Path], np.ndarray],
    in_a: Callable[[np.ndarray], np.ndarray],
    in_b: Callable[[np.ndarray], np.ndarray],
    temperature: float,
    n_bootstrap: int = 200,
    seed: int = 0,
    core_a: Callable[[np.ndarray], np.ndarray] | None = None,
    core_b: Callable[[np.ndarray], np.ndarray] | None = None,
) -> RunEstimate:
    """ΔF = F_B − F_A (kJ/mol) from the final weights of finished campaigns.

    Parameters
    ----------
    rundirs : sequence of path
        Finished run directories of independent campaigns (one or more).
    observable : callable
        ``observable(rundir)`` -> values for every frame of that run, shape=(n_frames,) (order of weights.csv).
    in_a, in_b : callable
        Masks of the basins from observable values.
    temperature : float
        K.
    n_bootstrap, seed
        Block bootstrap of each run.
    core_a, core_b : callable, optional
        Cores of the basins (default: the basins) for counting transitions between them: a run whose estimate
        rests on reweighted frames of one continuous biased run (OPES or metadynamics converge phase) gets the
        error max(block bootstrap, round-trip bootstrap, 2 kT / √K) with K its committed transitions between the
        cores (:func:`~latentbias.analysis.uncertainty.regenerative_error`,
        :func:`~latentbias.analysis.uncertainty.two_state_error`; K is the smaller of these transitions and the
        converge phase's own counts across the minimum cut of its latent basins and of its structural microstates,
        :func:`sampler_transitions` — the basins given here may cut through states the sampler resolves and
        these may not see, so the error rests on the least-visited of both): a run that visited a basin a few
        times has a few samples of its population, and the block bootstrap's blocks, shorter than the time
        between visits, do not show it. Give cores that leave out the barrier region, so that recrossings of
        the dividing surface are not counted (e.g. φ < −40° and 20° < φ < 100° for alanine dipeptide). The
        frames of parallel walkers are counted in file order (each segment's walkers one after another), which
        can add one transition per walker boundary.

    Returns
    -------
    RunEstimate
    """
    runs = []
    for rundir in rundirs:
        table = final_weights(rundir)
        used = np.isfinite(table["logweight"])
        if not used.any():
            raise ValueError(f"{rundir}: no frame is in the estimate (weights.csv logweight all -inf)")
        x = np.asarray(observable(rundir), dtype=float)
        if x.shape != used.shape:
            raise ValueError(f"observable of {rundir} has shape {x.shape}, weights.csv has {used.shape[0]} frames")
        z = np.column_stack([table[k] for k in table if k.startswith("z")])
        resolve = _umbrella_reweighting(rundir)
        if resolve is not None:  # window strata, MBAR re-solved per resample (no transitions needed)
            states, reweight, trajectories = resolve
            est = basin_free_energy_estimate(x, table["logweight"], in_a, in_b, temperature, states=states,
                                             reweight=reweight, n_bootstrap=n_bootstrap, seed=seed, observable=z,
                                             trajectories=trajectories)
            transitions = floor = regen = cycles = None
            bootstrap = float(est.error)
        else:
            est = basin_free_energy_estimate(x[used], table["logweight"][used], in_a, in_b, temperature,
                                             error_method="bootstrap", n_bootstrap=n_bootstrap, seed=seed,
                                             observable=z[used])
            xu, lw = x[used], table["logweight"][used]
            ca, cb = np.asarray((core_a or in_a)(xu), bool), np.asarray((core_b or in_b)(xu), bool)
            transitions = transition_count(ca, cb, breaks=table["round"][used])
            sampler = sampler_transitions(rundir)  # the stopping rule's counts: the smaller K states the error
            floor = two_state_error(transitions if sampler is None else min(transitions, sampler), temperature)
            ma, mb = np.asarray(in_a(xu), bool), np.asarray(in_b(xu), bool)
            kt = kt_kjmol(temperature)

            def basin_df(sel: np.ndarray) -> float:
                w = np.exp(lw[sel] - lw[sel].max())
                pa, pb = w[ma[sel]].sum(), w[mb[sel]].sum()
                return float(-kt * np.log(pb / pa)) if pa > 0 and pb > 0 else float("nan")

            regen, cycles = regenerative_error(basin_df, ca, cb, breaks=table["round"][used],
                                               n_bootstrap=n_bootstrap, seed=seed)
            bootstrap, bound = float(est.error), max(floor, regen)
            if not bound <= est.error:
                logger.warning("%s: %d transitions (%d round-trip stretches) between the basins in the frames of the "
                               "estimate: its error is %.3g kJ/mol (round-trip bootstrap %.3g, two-state bound "
                               "2 kT/sqrt(K) %.3g), not the block bootstrap's %.3g: too few visits to know the "
                               "populations better", rundir, transitions, cycles, bound, regen, floor, est.error)
                est = dataclasses.replace(est, error=bound)
        runs.append({"rundir": str(rundir), "value": float(est.value), "error": float(est.error),
                     "frames_used": int(used.sum()), "blocks": int(est.n_independent), "bootstrap_error": bootstrap,
                     "transitions": transitions, "two_state_error": floor, "round_trips": cycles,
                     "round_trip_error": regen, "latent_round_trips": _latent_round_trips(rundir),
                     "structural_round_trips": _latent_round_trips(rundir, "structural_round_trips"),
                     "sampler_transitions": None if resolve is not None else sampler})
        logger.info("%s: dF = %.2f +- %.2f kJ/mol (%d frames, %d bootstrap blocks)", rundir, est.value, est.error,
                    used.sum(), est.n_independent)
    if len(runs) == 1:
        return RunEstimate(est, runs)
    values = np.array([r["value"] for r in runs])
    return RunEstimate(replica_estimate(values, float(values.mean())), runs)
