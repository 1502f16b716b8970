"""``latentbias report RUNDIR``: report.md + PNGs summarising a campaign.

Contents: a per-round table (strategy, frames, simulated time, validation loss, latent alignment R², OOD
events, effective sample size), the latent FES after each round (MBAR over all frames so far, in the latest
aligned latent space), latent-space coverage per round, training losses, OOD events, and reweighted FES of extra
CVs the user names (e.g. φ/ψ), computed from the frames of all rounds with the cross-round MBAR weights, and — for a
campaign with a ``[pocket]`` — the pocket section (:mod:`latentbias.campaign.pocketreport`).

Error bars (the ``error_kjmol`` column of ``cv_fes_*.csv`` and the bands in the 1-D plots) come from the
stratified block bootstrap of :mod:`latentbias.analysis.uncertainty`: frames are grouped by the bias state they
were sampled in (:mod:`latentbias.campaign.weights`), each state's frames are resampled in contiguous blocks of
≈ 3 statistical inefficiencies (of the plotted CV and the latent coordinates), and the cross-round MBAR is
re-solved on every resample, so the error includes the uncertainty of the weights. A campaign has one trajectory
per round, so there are no independent replicas to compare; states the run visited only briefly make the error
bar optimistic (a barrier never crossed is invisible to any error bar).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..analysis.fes import free_energy_surface
from ..analysis.plots import plot_fes
from .config import from_dict
from .loop import Campaign
from .pocket import pocket_enabled
from .rundir import RunDir

logger = logging.getLogger(__name__)

__all__ = ["CVSpec", "parse_cv_spec", "compute_cvs", "free_energy_difference", "write_report"]

_KINDS = ("dihedral", "distance", "angle")
#: bootstrap resamples for the report's error bars (each re-solves the cross-round MBAR)
N_BOOTSTRAP = 100


@dataclass
class CVSpec:
    """An extra collective variable for the report.

    Either ``kind`` in {"dihedral" (degrees), "distance" (nm), "angle" (degrees)} with 0-based ``atoms``, or
    ``function(traj) -> (n_frames,)`` taking an mdtraj.Trajectory.
    """

    name: str
    kind: str = "function"
    atoms: tuple[int, ...] = ()
    function: Callable[[Any], np.ndarray] | None = None

    @property
    def unit(self) -> str:
        return {"dihedral": "deg", "angle": "deg", "distance": "nm"}.get(self.kind, "")

    def evaluate(self, traj: Any) -> np.ndarray:
        import mdtraj as md

        if self.function is not None:
            return np.asarray(self.function(traj), dtype=float).reshape(-1)
        idx = np.array([self.atoms])
        if self.kind == "dihedral":
            return np.degrees(md.compute_dihedrals(traj, idx)[:, 0])
        if self.kind == "angle":
            return np.degrees(md.compute_angles(traj, idx)[:, 0])
        return md.compute_distances(traj, idx)[:, 0]


#: a per-round estimate resting on fewer effective samples than this is flagged as sparse in the report
SPARSE_ESS = 50


def _colour_top(fes: Any) -> float | None:
    """Top of a FES plot's colour (or y) scale from the data: the largest finite free energy (kJ/mol), so a surface
    spanning 0-8 kJ/mol is not drawn on a fixed 0-30 scale; None when nothing is finite."""
    free = np.asarray(fes.free_energy, dtype=float)
    finite = free[np.isfinite(free)]
    return float(max(finite.max(), 1e-3)) if finite.size else None


def parse_cv_spec(spec: str) -> CVSpec:
    """``NAME:KIND:i,j[,k[,l]]`` (0-based atom indices), e.g. ``phi:dihedral:4,6,8,14``."""
    parts = spec.split(":")
    if len(parts) != 3:
        raise ValueError(f"CV spec {spec!r} must look like NAME:KIND:ATOMS, e.g. phi:dihedral:4,6,8,14")
    name, kind, atoms = parts
    if kind not in _KINDS:
        raise ValueError(f"CV kind {kind!r} in {spec!r} is not one of {', '.join(_KINDS)}")
    try:
        idx = tuple(int(a) for a in atoms.split(","))
    except ValueError:
        raise ValueError(f"CV atoms in {spec!r} must be comma-separated integers") from None
    need = {"dihedral": 4, "angle": 3, "distance": 2}[kind]
    if len(idx) != need:
        raise ValueError(f"a {kind} needs {need} atom indices, {spec!r} has {len(idx)}")
    return CVSpec(name, kind, idx)


def compute_cvs(campaign: Campaign, upto: int, cvs: list[CVSpec]) -> dict[str, np.ndarray]:
    """Values of the extra CVs for all frames of rounds 0..upto (in the order of ``Campaign.all_frames``)."""
    import mdtraj as md

    _, topology, _ = campaign.system()
    top = md.Topology.from_openmm(topology)
    for cv in cvs:
        bad = [i for i in cv.atoms if not 0 <= i < top.n_atoms]
        if bad:
            raise ValueError(f"--cv {cv.name}:{cv.kind}:{','.join(map(str, cv.atoms))}: atom index {bad[0]} is out "
                             f"of range: the system has {top.n_atoms} atoms, so indices run from 0 to "
                             f"{top.n_atoms - 1} (0-based; a PDB serial number is the index + 1)")
    xyz = campaign.all_frames(upto)["positions"]
    traj = md.Trajectory(xyz, top)
    return {cv.name: cv.evaluate(traj) for cv in cvs}


def load_campaign(rundir: Path) -> tuple[Campaign, int]:
    """The campaign stored in ``rundir`` (built from its config.json) and the last round whose weights phase is
    done; ValueError when no round has finished yet."""
    config = RunDir(rundir).read_config()
    base_dir = config.pop("base_dir", ".")
    cfg = from_dict(config, base_dir=base_dir)
    campaign = Campaign(cfg, rundir, progress=False)
    progress = campaign.run_dir.read_progress()
    last = progress["round"] if progress.get("finished") else progress["round"] - 1
    model_round = min(last, cfg.campaign.rounds - 1)
    if last < 0 or not (campaign.run_dir.round_dir(model_round) / "model.json").is_file():
        raise ValueError(f"{rundir} has no completed round yet; run the campaign first")
    return campaign, last


_load_campaign = load_campaign  # the private name of earlier sessions (scripts on other branches may still use it)


def _line_plot(path: Path, series: dict[str, tuple[np.ndarray, np.ndarray]], xlabel: str, ylabel: str,
               title: str, logy: bool = False, integer_x: bool = False) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for label, (x, y) in series.items():
        ax.plot(x, y, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if logy:
        ax.set_yscale("log")
    if integer_x:  # rounds, epochs: no fractional ticks
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(series) > 1:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _scatter(path: Path, z: np.ndarray, rounds: np.ndarray, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    y = z[:, 1] if z.shape[1] > 1 else np.zeros(len(z))
    from matplotlib.ticker import MaxNLocator

    sc = ax.scatter(z[:, 0], y, c=rounds, s=6, cmap="viridis")
    bar = fig.colorbar(sc, ax=ax, label="round")
    bar.locator = MaxNLocator(integer=True)  # rounds are integers: no fractional ticks
    bar.update_ticks()
    ax.set_xlabel("z0")
    ax.set_ylabel("z1" if z.shape[1] > 1 else "")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


@dataclass
class _Reweighting:
    """Cross-round MBAR log-weights of a set of frames, with what the bootstrap needs to re-solve them."""

    logw: np.ndarray
    states: np.ndarray  # bias-state row of every frame
    reweight: Callable[[np.ndarray], np.ndarray]
    info: dict[str, Any]
    trajectories: np.ndarray | None = None  # independent trajectory within its state (umbrella replicas), or None


def cross_round_reweighting(campaign: Campaign, frames: dict[str, np.ndarray], temperature: float) -> _Reweighting:
    """Cross-round MBAR weights of the frames in the equilibrium estimate (bias state >= 0; the others get -inf
    and stay out of every bootstrap resample), z evaluated with each frame's box."""
    from ..analysis.reweight import effective_sample_size, mbar_logweights
    from ..analysis.uncertainty import mbar_reweighter
    from .weights import reduced_potential_matrix

    states, state_of = campaign.bias_states(frames)
    n = len(state_of)
    kept = np.flatnonzero(state_of >= 0)
    rows = np.full(n, -1, dtype=np.int64)
    logw = np.full(n, -np.inf)
    if kept.size == 0:
        return _Reweighting(logw, rows + 1, lambda idx: np.full(len(idx), -np.inf), {"ess": 0.0, "n_states": 0})
    from .umbrellaconv import umbrella_replicas_of_frames
    sub = {k: v[kept] for k, v in frames.items()}
    u, rows_k = reduced_potential_matrix(states, state_of[kept], lambda q: campaign.encode(q, sub), temperature)
    n_k = np.bincount(rows_k, minlength=u.shape[0])
    order = np.argsort(rows_k, kind="stable")
    if u.shape[0] == 1:  # one state: w ∝ exp(+βV)
        f_k = np.zeros(1)
        logw_k = u[0] - np.logaddexp.reduce(u[0])
    else:
        logw_sorted, f_k, _ = mbar_logweights(u[:, order], n_k, uncertainty="none", quiet=True)
        logw_k = np.empty_like(logw_sorted)
        logw_k[order] = logw_sorted
    logw[kept] = logw_k
    rows[kept] = rows_k
    rows[rows < 0] = u.shape[0]  # excluded frames form their own stratum (weight -inf in every resample)
    inner = mbar_reweighter(u, rows_k, initial_f_k=f_k)
    position = np.full(n, -1, dtype=np.int64)
    position[kept] = np.arange(kept.size)

    def reweight(idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        out = np.full(len(idx), -np.inf)
        inside = position[idx] >= 0
        if inside.any():
            out[inside] = inner(position[idx][inside])
        return out

    return _Reweighting(logw, rows, reweight, {"ess": effective_sample_size(logw_k), "n_states": int(u.shape[0])},
                        umbrella_replicas_of_frames(campaign, frames))


def _weights_csv_column(rundir: Path, name: str) -> np.ndarray:
    """One column of the campaign's ``weights.csv``."""
    table = np.loadtxt(rundir / "weights.csv", delimiter=",", skiprows=2, ndmin=2)
    header = (rundir / "weights.csv").read_text().splitlines()[1].split(",")
    return table[:, header.index(name)]


def weights_csv_logweights(rundir: Path, rw: _Reweighting) -> np.ndarray:
    """The campaign's final log-weights (``weights.csv``); frames it keeps out (−inf) stay out of every resample."""
    logw = _weights_csv_column(rundir, "logweight")
    if logw.shape != rw.logw.shape:
        raise ValueError(f"{rundir / 'weights.csv'} has {len(logw)} frames but the run directory has "
                         f"{len(rw.logw)}; rerun the campaign's last round to refresh it")
    kept = np.isfinite(logw)
    if np.all(kept) and np.max(np.abs(np.exp(logw) - np.exp(rw.logw))) > 1e-6:
        logger.warning("weights.csv differs from the cross-round MBAR weights recomputed for the error bars")
    if not np.all(kept):
        inner = rw.reweight

        def reweight(idx: np.ndarray) -> np.ndarray:
            out = inner(idx)
            return np.where(kept[idx], out, -np.inf)

        rw.reweight = reweight
    return logw


def _slow_observable(values: np.ndarray, periodic_degrees: bool, z: np.ndarray) -> np.ndarray:
    """The CV (as cos/sin when it is an angle in degrees) and the latent coordinates, for the block length."""
    v = np.asarray(values, dtype=float)
    v = v[:, None] if v.ndim == 1 else v
    cols = [np.cos(np.radians(v)), np.sin(np.radians(v))] if periodic_degrees else [v]
    return np.column_stack(cols + [z])


def free_energy_difference(rundir: str | Path, in_a: np.ndarray, in_b: np.ndarray, observable: Any | None = None,
                           n_bootstrap: int = 200, seed: int | None = 0):
    """ΔF = F_B − F_A (kJ/mol) over all frames of a campaign, with a 1σ error that means something.

    Parameters
    ----------
    rundir : str or path-like
        Campaign run directory (``weights.csv`` must be current).
    in_a, in_b : array_like of bool, shape=(n_frames,)
        Basin membership of every frame, in the order of ``Campaign.all_frames`` / ``weights.csv``.
    observable : array_like, shape=(n_frames,) or (n_frames, k), optional
        Slow observables for the block length besides the basin indicator and the final latent coordinates
        (e.g. the CV defining the basins, as cos/sin for angles).
    n_bootstrap, seed
        Bootstrap settings.

    Returns
    -------
    latentbias.analysis.Estimate
        Value from ``weights.csv``'s log-weights; error from the stratified block bootstrap over bias states
        with the cross-round MBAR re-solved per resample (module docstring); ``n_independent`` = number of blocks.
    """
    from ..analysis.fes import basin_free_energy_estimate

    rundir = Path(rundir)
    campaign, last = load_campaign(rundir)
    frames = campaign.all_frames(last)
    z = campaign.encode(last, frames)
    rw = cross_round_reweighting(campaign, frames, campaign.cfg.md.temperature)
    logw = weights_csv_logweights(rundir, rw)
    obs = z if observable is None else np.column_stack([np.asarray(observable, dtype=float).reshape(len(z), -1), z])
    return basin_free_energy_estimate(z, logw, np.asarray(in_a, dtype=bool), np.asarray(in_b, dtype=bool),
                                      campaign.cfg.md.temperature, states=rw.states, reweight=rw.reweight,
                                      n_bootstrap=n_bootstrap, seed=seed, observable=obs,
                                      trajectories=rw.trajectories)


def _convergence_history(campaign: Campaign, r: int) -> dict[str, np.ndarray]:
    """``round_RRR/convergence.csv`` as the campaign wrote it when its converge round r ended (computed anew only
    when the file is missing: each row re-clusters the structural microstates)."""
    from .converge import convergence_history

    path = campaign.run_dir.round_dir(r) / "convergence.csv"
    if not path.is_file():
        return convergence_history(campaign.run_dir, campaign.cfg, r, campaign.featurizer())
    header = path.read_text().splitlines()[1].split(",")
    data = np.loadtxt(path, delimiter=",", skiprows=2, ndmin=2)
    return {h: data[:, i] for i, h in enumerate(header)}


def write_report(rundir: str | Path, cvs: list[CVSpec] | None = None, overwrite: bool = True) -> Path:
    """Write ``RUNDIR/report/report.md`` and its PNGs; returns the report path.

    FES errors are 1σ from the stratified block bootstrap with the cross-round MBAR re-solved per resample (see
    the module docstring).
    """
    rundir = Path(rundir)
    campaign, last = load_campaign(rundir)
    out = rundir / "report"
    out.mkdir(exist_ok=True)
    cfg = campaign.cfg
    temperature = cfg.md.temperature
    frames = campaign.all_frames(last)
    converged = last == campaign.converge_round
    last_model = campaign.encoder_round(last)
    z = campaign.encode(last_model, frames)
    rounds = frames["round"]
    lines = [f"# latentbias campaign report: `{rundir}`", ""]
    lines += [f"Rounds completed: {last + 1} of {cfg.campaign.rounds}; {len(z)} frames; temperature {temperature} K; "
              f"latent dimension {z.shape[1]}. Latent coordinates are those of the final (round {last}) model; "
              "consecutive rounds' spaces are aligned by a similarity Procrustes fit.", ""]

    # per-round table and per-round latent FES (MBAR over rounds <= r)
    lines += ["| round | strategy | frames | simulated ps | val loss | align R² | OOD frames | ESS (rounds ≤ r) |",
              "|---:|---|---:|---:|---:|---:|---:|---:|"]
    grid_range = [[float(z[:, i].min()), float(z[:, i].max())] for i in range(min(2, z.shape[1]))]
    coverage_x, coverage_y = [], []
    cells = np.zeros((20,) * min(2, z.shape[1]), dtype=bool)
    sparse: list[int] = []  # rounds whose estimate rests on few effective samples
    for r in range(last_model + 1):
        plan = campaign.run_dir.read_plan(r)
        info = campaign.model(r).info
        sel = rounds <= r
        sub = {k: v[sel] for k, v in frames.items()}
        rw = cross_round_reweighting(campaign, sub, temperature)
        winfo = rw.info
        if not np.isfinite(rw.logw).any():  # no equilibrium frame yet (e.g. frontier rounds only): show the samples
            rw.logw = np.zeros(len(rw.logw))
        h = info["history"]
        val = (h["val_loss"] or h["train_loss"])[info["best_epoch"]]
        n_r = int(np.count_nonzero(rounds == r))
        from .simulate import frame_interval

        sim_ps = n_r * frame_interval(cfg, plan) * cfg.md.timestep / 1000.0
        align = info.get("alignment", {}).get("r2")
        lines.append(f"| {r} | {plan['strategy']} | {n_r} | {sim_ps:.1f} | {val:.4g} | "
                     f"{'—' if align is None else f'{align:.3f}'} | {int(frames['ood'][rounds == r].sum())} | "
                     f"{winfo['ess']:.0f} |")
        zs = z[sel, : min(2, z.shape[1])]
        fes = free_energy_surface(zs, rw.logw, bins=30, range=grid_range, temperature=temperature,
                                  states=rw.states, reweight=rw.reweight, n_bootstrap=N_BOOTSTRAP)
        plot_fes(fes, out / f"latent_fes_round_{r:03d}.png", labels=["z0", "z1"],
                 title=f"latent FES after round {r} (kJ/mol)", overwrite=overwrite, vmax=_colour_top(fes))
        if winfo["ess"] < SPARSE_ESS:
            sparse.append(r)
        zz = z[rounds == r, : cells.ndim]
        idx = np.clip(((zz - np.array(grid_range)[:, 0]) / (np.ptp(np.array(grid_range), axis=1) / 20 + 1e-12))
                      .astype(int), 0, 19)
        cells[tuple(idx.T)] = True
        coverage_x.append(r)
        coverage_y.append(cells.mean())
    if sparse:
        note = (f"**Sparse data**: the estimates after round(s) {', '.join(map(str, sparse))} rest on an effective "
                f"sample size below {SPARSE_ESS} frames; their surfaces are noisy and their colour scales are set by "
                "few frames. Run longer rounds or more rounds before reading free energies from them.")
        logger.warning("report: %s", note.replace("**", ""))
        lines += ["", note]
    lines += ["", "![coverage](coverage.png) ![coverage by round](coverage_by_round.png)", ""]
    _scatter(out / "coverage.png", z, rounds, "frames in the final latent space")
    _line_plot(out / "coverage_by_round.png", {"cumulative": (np.array(coverage_x), np.array(coverage_y))},
               "round", "fraction of latent cells visited", "latent-space coverage (20 bins per dimension)",
               integer_x=True)
    lines += ["Latent FES after each round (MBAR over the equilibrium frames so far; unweighted histogram when "
              "there are none yet):", ""]
    lines += [f"![round {r}](latent_fes_round_{r:03d}.png)" for r in range(last_model + 1)] + [""]
    if converged:
        hist = _convergence_history(campaign, last)
        winfo = campaign.run_dir.read_json(rundir / "weights.json")
        _line_plot(out / "convergence.png", {"drift": (hist["time_ps"], hist["drift_kjmol"])},
                   "converge-phase time (ps)", "latent FES drift (kJ/mol)", "converge phase: drift of the estimate")
        lines += ["## Converge phase", "", f"Encoder of round {last_model} frozen; {winfo['estimator']}. Ended: "
                  f"{winfo['converge_end']} after {winfo['converge_ps']:.0f} ps; burn-in {winfo['burn_in_ps']:.0f} ps; "
                  f"{winfo['frames_used']} frames in the final estimate; kept out: {winfo['frames_excluded']}.", "",
                  "![convergence](convergence.png)", ""]
        trips = winfo.get("latent_round_trips")  # latentbias.campaign.roundtrips
        if trips is not None:
            lines += [f"Round trips across the slowest split of the frozen encoder's latent basins (minimum cut of "
                      f"their transition graph) in the frames of the estimate: {trips['round_trips']} (needed: "
                      f"{trips['required']}; {trips['transitions']} transitions into and out of basin(s) "
                      f"{trips.get('bottleneck', '?')}; {trips['basins']} latent basins, "
                      f"{trips.get('counted', '?')} taking part)."
                      + (f" **Warning**: {trips['warning']}." if "warning" in trips else ""), ""]

    # training losses
    series = {}
    for r in range(last_model + 1):
        h = campaign.model(r).info["history"]
        series[f"round {r} train"] = (np.arange(len(h["train_loss"])), np.array(h["train_loss"]))
        if h["val_loss"]:
            series[f"round {r} val"] = (np.arange(len(h["val_loss"])), np.array(h["val_loss"]))
    _line_plot(out / "training_losses.png", series, "epoch", "loss", "training losses", logy=True)
    lines += ["## Training", "", "![losses](training_losses.png)", ""]

    # OOD events
    ood = np.flatnonzero(frames["ood"])
    lines += ["## Out-of-distribution guard", ""]
    if len(ood) == 0:
        lines += ["No frame exceeded the reconstruction-error threshold.", ""]
    else:
        lines += [f"{len(ood)} frame(s) exceeded the cut-off, {cfg.ood.threshold} × the 99th percentile of the "
                  "reconstruction error on the training frames of the model that biased them (round r − 1 for "
                  f"frames of round r; action: {cfg.ood.action}):", "",
                  "| round | step | error | cut-off | error / cut-off |", "|---:|---:|---:|---:|---:|"]
        for i in ood[:50]:
            cut = cfg.ood.threshold * campaign.model(int(rounds[i]) - 1).info["recon_error_q99"]
            err = float(frames["recon_error"][i])
            lines.append(f"| {rounds[i]} | {frames['step'][i]} | {err:.3g} | {cut:.3g} | {err / cut:.2f} |")
        if len(ood) > 50:
            lines.append(f"({len(ood) - 50} more not listed)")
        lines.append("")

    # extra CVs: weights of all rounds (as in weights.csv); for the errors, MBAR re-solved per bootstrap resample
    # when the estimate is one (exploration rounds, umbrella windows), else (an OPES / metadynamics converge phase,
    # whose per-frame weights are fixed) the same weights resampled in blocks
    if cvs:
        umbrella = converged and campaign.run_dir.read_plan(last)["strategy"] == "umbrella"
        if converged and not umbrella:
            rw = None
            logw = _weights_csv_column(rundir, "logweight")
            if len(logw) != len(frames["step"]):
                raise ValueError(f"{rundir / 'weights.csv'} has {len(logw)} frames but the run directory has "
                                 f"{len(frames['step'])}; rerun the campaign's last round to refresh it")
            states, reweight, trajectories = None, None, None
        else:
            rw = cross_round_reweighting(campaign, frames, temperature)
            logw = weights_csv_logweights(rundir, rw)
            states, reweight, trajectories = rw.states, rw.reweight, rw.trajectories
        values = compute_cvs(campaign, last, cvs)
        if converged:  # the estimate against simulated time: FES of each CV from the converge frames up to t
            conv = np.flatnonzero((rounds == last) & np.isfinite(logw))
            # umbrella windows: MBAR re-solved on the frames up to t (fixed final weights would not be the
            # estimate at t); OPES / metadynamics: the per-frame weights are the estimate's at any t
            for cv in cvs:
                rng = (-180.0, 180.0) if cv.kind == "dihedral" else None
                series = {}
                for frac in (0.25, 0.5, 0.75, 1.0):
                    sel = conv[: max(2, int(frac * len(conv)))]
                    f = free_energy_surface(values[cv.name][sel], reweight(sel) if umbrella else logw[sel],
                                            bins=36, range=rng,
                                            temperature=temperature, n_blocks=4)
                    t_ps = float(frames["time_ps"][sel[-1]])
                    series[f"t = {t_ps:.0f} ps"] = (f.centers[0], f.free_energy)
                _line_plot(out / f"converge_{cv.name}.png", series, f"{cv.name} ({cv.unit})", "F (kJ/mol)",
                           f"{cv.name}: converge-phase estimate against simulated time")
                lines += [f"![{cv.name} vs time](converge_{cv.name}.png)", ""]
        lines += ["## Extra collective variables (reweighted over all rounds)", ""]
        for cv in cvs:
            v = values[cv.name]
            rng = (-180.0, 180.0) if cv.kind == "dihedral" else None
            fes = free_energy_surface(v, logw, bins=36, range=rng, temperature=temperature, states=states,
                                      reweight=reweight, n_bootstrap=N_BOOTSTRAP, trajectories=trajectories,
                                      observable=_slow_observable(v, cv.kind != "distance", z))
            plot_fes(fes, out / f"cv_fes_{cv.name}.png", labels=[f"{cv.name} ({cv.unit})"],
                     title=f"{cv.name}: reweighted FES (kJ/mol)", overwrite=overwrite)
            fes.to_csv(out / f"cv_fes_{cv.name}.csv", overwrite=overwrite)
            per_round = ", ".join(f"r{r}: [{v[rounds == r].min():.1f}, {v[rounds == r].max():.1f}]"
                                  for r in range(last + 1))
            lines += [f"### {cv.name} ({cv.kind} {cv.atoms}, {cv.unit})", "", f"Range per round: {per_round}", "",
                      f"![{cv.name}](cv_fes_{cv.name}.png)", ""]
        if len(cvs) >= 2:
            a, b = cvs[0], cvs[1]
            rng2 = [(-180.0, 180.0) if c.kind == "dihedral" else (float(values[c.name].min()),
                                                                  float(values[c.name].max())) for c in (a, b)]
            fes2 = free_energy_surface(np.column_stack([values[a.name], values[b.name]]), logw, bins=36, range=rng2,
                                       temperature=temperature, states=states, reweight=reweight,
                                       n_bootstrap=N_BOOTSTRAP, trajectories=trajectories)
            name = f"cv_fes_{a.name}_{b.name}"
            plot_fes(fes2, out / f"{name}.png", labels=[f"{a.name} ({a.unit})", f"{b.name} ({b.unit})"],
                     title=f"{a.name}/{b.name}: reweighted FES (kJ/mol)", overwrite=overwrite,
                     vmax=_colour_top(fes2))
            lines += [f"![{a.name}/{b.name}]({name}.png)", ""]
    if pocket_enabled(cfg):  # openness per round, F(openness), most open structures (campaign.pocketreport)
        from .pocketreport import pocket_section

        rw = cross_round_reweighting(campaign, frames, temperature)
        lines += pocket_section(campaign, frames, z, last, out, weights_csv_logweights(rundir, rw), rw,
                                N_BOOTSTRAP, overwrite)
    lines += ["## Files", "", "`weights.csv`: every frame with its round, step, z (final latent space), acting bias "
              "(kJ/mol), final log-weight (-inf: kept out of the estimate) and the reason code `excluded`; "
              "`report/cv_fes_*.csv`: reweighted FES with 1σ errors (stratified block bootstrap over bias states, "
              "MBAR re-solved per resample; for an OPES or metadynamics converge phase, its fixed per-frame weights "
              "in a block bootstrap in time order); "
              "`round_XXX/frames.dcd` + `topology.pdb`: the frames; "
              "`round_XXX/model.pt`: the model trained after that round.", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
