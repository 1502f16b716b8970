"""``latentbias report RUNDIR``: report.md + PNGs summarising a campaign.

Contents: a per-round table (strategy, frames, simulated time, validation loss, latent alignment R², OOD
events, effective sample size), the latent FES after each round (MBAR over all frames so far, in the latest
aligned latent space), latent-space coverage per round, training losses, OOD events, and reweighted FES of extra
CVs the user names (e.g. φ/ψ), computed from the frames of all rounds with the cross-round MBAR weights.
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
from .rundir import RunDir

logger = logging.getLogger(__name__)

__all__ = ["CVSpec", "parse_cv_spec", "compute_cvs", "write_report"]

_KINDS = ("dihedral", "distance", "angle")


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
    xyz = campaign.all_frames(upto)["positions"]
    traj = md.Trajectory(xyz, top)
    return {cv.name: cv.evaluate(traj) for cv in cvs}


def _load_campaign(rundir: Path) -> tuple[Campaign, int]:
    config = RunDir(rundir).read_json(Path(rundir) / "config.json")
    base_dir = config.pop("base_dir", ".")
    cfg = from_dict(config, base_dir=base_dir)
    campaign = Campaign(cfg, rundir, progress=False)
    progress = campaign.run_dir.read_progress()
    last = progress["round"] if progress.get("finished") else progress["round"] - 1
    model_round = min(last, cfg.campaign.rounds - 1)
    if last < 0 or not (campaign.run_dir.round_dir(model_round) / "model.json").is_file():
        raise ValueError(f"{rundir} has no completed round yet; run the campaign first")
    return campaign, last


def _line_plot(path: Path, series: dict[str, tuple[np.ndarray, np.ndarray]], xlabel: str, ylabel: str,
               title: str, logy: bool = False) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

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
    sc = ax.scatter(z[:, 0], y, c=rounds, s=6, cmap="viridis")
    fig.colorbar(sc, ax=ax, label="round")
    ax.set_xlabel("z0")
    ax.set_ylabel("z1" if z.shape[1] > 1 else "")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_report(rundir: str | Path, cvs: list[CVSpec] | None = None, overwrite: bool = True) -> Path:
    """Write ``RUNDIR/report/report.md`` and its PNGs; returns the report path."""
    from .weights import cross_round_logweights

    rundir = Path(rundir)
    campaign, last = _load_campaign(rundir)
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
    for r in range(last_model + 1):
        plan = campaign.run_dir.read_plan(r)
        info = campaign.model(r).info
        sel = rounds <= r
        sub = {k: v[sel] for k, v in frames.items()}
        states, state_of = campaign.bias_states(sub)
        logw, winfo = cross_round_logweights(states, state_of, lambda q: campaign.encode(q, sub), temperature)
        if not np.isfinite(logw).any():  # no equilibrium frame yet (e.g. frontier rounds only): show the samples
            logw = np.zeros(len(logw))
        h = info["history"]
        val = (h["val_loss"] or h["train_loss"])[info["best_epoch"]]
        n_r = int(np.count_nonzero(rounds == r))
        sim_ps = n_r * cfg.campaign.save_interval * cfg.md.timestep / 1000.0
        align = info.get("alignment", {}).get("r2")
        lines.append(f"| {r} | {plan['strategy']} | {n_r} | {sim_ps:.1f} | {val:.4g} | "
                     f"{'—' if align is None else f'{align:.3f}'} | {int(frames['ood'][rounds == r].sum())} | "
                     f"{winfo['ess']:.0f} |")
        fes = free_energy_surface(z[sel, : min(2, z.shape[1])], logw, bins=30, range=grid_range,
                                  temperature=temperature, n_blocks=4)
        plot_fes(fes, out / f"latent_fes_round_{r:03d}.png", labels=["z0", "z1"],
                 title=f"latent FES after round {r} (kJ/mol)", overwrite=overwrite, vmax=30.0)
        zz = z[rounds == r, : cells.ndim]
        idx = np.clip(((zz - np.array(grid_range)[:, 0]) / (np.ptp(np.array(grid_range), axis=1) / 20 + 1e-12))
                      .astype(int), 0, 19)
        cells[tuple(idx.T)] = True
        coverage_x.append(r)
        coverage_y.append(cells.mean())
    lines += ["", "![coverage](coverage.png) ![coverage by round](coverage_by_round.png)", ""]
    _scatter(out / "coverage.png", z, rounds, "frames in the final latent space")
    _line_plot(out / "coverage_by_round.png", {"cumulative": (np.array(coverage_x), np.array(coverage_y))},
               "round", "fraction of latent cells visited", "latent-space coverage (20 bins per dimension)")
    lines += ["Latent FES after each round (MBAR over the equilibrium frames so far; unweighted histogram when "
              "there are none yet):", ""]
    lines += [f"![round {r}](latent_fes_round_{r:03d}.png)" for r in range(last_model + 1)] + [""]
    if converged:
        from .converge import convergence_history

        hist = convergence_history(campaign.run_dir, cfg, last)
        winfo = campaign.run_dir.read_json(rundir / "weights.json")
        _line_plot(out / "convergence.png", {"drift": (hist["time_ps"], hist["drift_kjmol"])},
                   "converge-phase time (ps)", "latent FES drift (kJ/mol)", "converge phase: drift of the estimate")
        lines += ["## Converge phase", "", f"Encoder of round {last_model} frozen; {winfo['estimator']}. Ended: "
                  f"{winfo['converge_end']} after {winfo['converge_ps']:.0f} ps; burn-in {winfo['burn_in_ps']:.0f} ps; "
                  f"{winfo['frames_used']} frames in the final estimate; kept out: {winfo['frames_excluded']}.", "",
                  "![convergence](convergence.png)", ""]

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
        lines += [f"{len(ood)} frame(s) exceeded {cfg.ood.threshold} × the training 99th percentile of the "
                  f"reconstruction error (action: {cfg.ood.action}):", "", "| round | step | error |", "|---:|---:|---:|"]
        lines += [f"| {rounds[i]} | {frames['step'][i]} | {frames['recon_error'][i]:.3g} |" for i in ood[:50]]
        lines.append("")

    # extra CVs
    logw_all = np.loadtxt(rundir / "weights.csv", delimiter=",", skiprows=2, ndmin=2)
    header = (rundir / "weights.csv").read_text().splitlines()[1].split(",")
    logw = logw_all[:, header.index("logweight")]
    if cvs:
        values = compute_cvs(campaign, last, cvs)
        if converged:  # the estimate against simulated time: FES of each CV from the converge frames up to t
            conv = np.flatnonzero((rounds == last) & np.isfinite(logw))
            for cv in cvs:
                rng = (-180.0, 180.0) if cv.kind == "dihedral" else None
                series = {}
                for frac in (0.25, 0.5, 0.75, 1.0):
                    sel = conv[: max(2, int(frac * len(conv)))]
                    f = free_energy_surface(values[cv.name][sel], logw[sel], bins=36, range=rng,
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
            fes = free_energy_surface(v, logw, bins=36, range=rng, temperature=temperature, n_blocks=4)
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
                                       temperature=temperature, n_blocks=4)
            name = f"cv_fes_{a.name}_{b.name}"
            plot_fes(fes2, out / f"{name}.png", labels=[f"{a.name} ({a.unit})", f"{b.name} ({b.unit})"],
                     title=f"{a.name}/{b.name}: reweighted FES (kJ/mol)", overwrite=overwrite, vmax=40.0)
            lines += [f"![{a.name}/{b.name}]({name}.png)", ""]
    lines += ["## Files", "", "`weights.csv`: every frame with its round, step, z (final latent space), acting bias "
              "(kJ/mol), final log-weight (-inf: kept out of the estimate) and the reason code `excluded`; "
              "`round_XXX/frames.dcd` + `topology.pdb`: the frames; "
              "`round_XXX/model.pt`: the model trained after that round.", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
