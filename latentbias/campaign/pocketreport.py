"""The pocket section of a campaign report: openness per round, reweighted F(openness), the most open structures.

Written by :func:`latentbias.campaign.report.write_report` when the campaign has a ``[pocket]`` region
(:mod:`latentbias.campaign.pocket`). Files under ``RUNDIR/report/``:

* ``pocket_openness.png`` — openness of every frame against its index, one colour per round (the target as a line);
* ``pocket_fes.png`` / ``pocket_fes.csv`` — F(openness) reweighted with the campaign's final log-weights
  (``weights.csv``: cross-round MBAR, or the converge phase's c(t) reweighting), with 1σ errors from the
  stratified block bootstrap of :mod:`latentbias.analysis.uncertainty` (MBAR re-solved per resample);
* ``pocket_open_NN.pdb`` — the ``[pocket] n_structures`` most open frames (distinct rounds/steps, largest openness
  first) with the cavity's grid points as pseudo-atoms (residue ``CAV``, chain ``Z``;
  :func:`latentbias.analysis.pockets.write_pocket_pdb`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..analysis.fes import free_energy_surface
from ..analysis.plots import plot_fes
from .pocket import frames_openness, pocket_measure

if TYPE_CHECKING:
    from .loop import Campaign

logger = logging.getLogger(__name__)

__all__ = ["pocket_section", "most_open_frames"]


def most_open_frames(openness: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n frames with the largest openness, largest first (ties: earlier frame first)."""
    v = np.asarray(openness, dtype=float)
    order = np.lexsort((np.arange(len(v)), -v))
    return order[: max(0, min(int(n), len(v)))]


def _openness_plot(path: Path, openness: np.ndarray, rounds: np.ndarray, target: float, unit: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x = np.arange(len(openness))
    for r in np.unique(rounds):
        sel = rounds == r
        ax.plot(x[sel], openness[sel], lw=0.8, label=f"round {r}")
    if target > 0:
        ax.axhline(target, color="k", ls="--", lw=0.8, label="target")
    ax.set_xlabel("frame (all rounds, in order)")
    ax.set_ylabel(f"pocket openness ({unit})")
    ax.set_title("pocket openness per frame")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def pocket_section(campaign: Campaign, frames: dict[str, np.ndarray], z: np.ndarray, last: int, out: Path,
                   logw: np.ndarray, reweighting: Any, n_bootstrap: int, overwrite: bool = True) -> list[str]:
    """Write the pocket files into ``out`` and return the report's markdown lines.

    Parameters
    ----------
    campaign : Campaign
    frames : dict
        Frame table of rounds 0..last.
    z : numpy.ndarray, shape=(n, d)
        Latent coordinates of the frames (final model), for the bootstrap's block length.
    last : int
        Last completed round.
    out : pathlib.Path
        The report folder.
    logw : numpy.ndarray, shape=(n,)
        Final log-weights (``weights.csv``; −inf = kept out of the estimate).
    reweighting : object
        The report's cross-round reweighting (``states``, ``reweight``) for the bootstrap.
    n_bootstrap : int
    """
    from ..analysis.constants import kt_kjmol
    from ..analysis.pockets import write_pocket_pdb

    cfg = campaign.cfg
    p = cfg.pocket
    unit = p.unit
    openness = frames_openness(campaign, frames)
    rounds = np.asarray(frames["round"])
    lines = ["## Pocket openness", "",
             f"Measure: {'cavity volume (KVFinder-style probe-in/probe-out grid)' if p.measure == 'volume' else 'group distance'} "
             f"in {unit}; region: {_region_text(p)}; latent dimension z{p.anchor_dim} anchored to it (bias: {p.bias})"
             + (f"; target {p.target:g} {unit}" if p.target > 0 else "") + ".", "",
             f"| round | strategy | frames | min | mean | max ({unit}) | frames ≥ target | z{p.anchor_dim} vs openness "
             "(Pearson, all frames / held out) |", "|---:|---|---:|---:|---:|---:|---:|---|"]
    for r in range(last + 1):
        sel = rounds == r
        if not sel.any():
            continue
        v = openness[sel]
        info = campaign.model(campaign.encoder_round(r)).info if r <= campaign.encoder_round(last) else {}
        anchor = info.get("pocket_anchor") if r < cfg.campaign.rounds else None
        agree = "—" if not anchor else (f"{anchor['pearson']:.3f} / "
                                        + ("—" if anchor.get("val_pearson") is None else f"{anchor['val_pearson']:.3f}"))
        above = "—" if p.target <= 0 else str(int(np.count_nonzero(v >= p.target)))
        lines.append(f"| {r} | {campaign.run_dir.read_plan(r)['strategy']} | {int(sel.sum())} | {v.min():.4g} | "
                     f"{v.mean():.4g} | {v.max():.4g} | {above} | {agree} |")
    _openness_plot(out / "pocket_openness.png", openness, rounds, p.target, unit)
    lines += ["", "![openness per frame](pocket_openness.png)", ""]

    used = np.isfinite(logw)
    if used.sum() >= 2 and np.ptp(openness[used]) > 0:
        rng = (float(openness[used].min()), float(openness[used].max()))
        fes = free_energy_surface(openness, logw, bins=25, range=rng, temperature=cfg.md.temperature,
                                  states=reweighting.states, reweight=reweighting.reweight, n_bootstrap=n_bootstrap,
                                  observable=np.column_stack([openness, z]))
        plot_fes(fes, out / "pocket_fes.png", labels=[f"openness ({unit})"],
                 title="reweighted F(openness) (kJ/mol, 1σ band)", overwrite=overwrite)
        fes.to_csv(out / "pocket_fes.csv", overwrite=overwrite)
        w = np.exp(logw[used] - np.logaddexp.reduce(logw[used]))
        mean = float(np.sum(w * openness[used]))
        lines += [f"Reweighted over {int(used.sum())} frames in the estimate (the others are kept out: see "
                  f"`weights.csv`, column `excluded`): mean openness {mean:.4g} {unit}"
                  + (f"; probability of openness ≥ target {float(np.sum(w[openness[used] >= p.target])):.3g}"
                     if p.target > 0 else "")
                  + f". F in kJ/mol at {cfg.md.temperature:g} K (kT = {kt_kjmol(cfg.md.temperature):.3f}); band: 1σ "
                  "stratified block bootstrap with MBAR re-solved per resample.", "",
                  "![F(openness)](pocket_fes.png)", ""]
    else:
        lines += ["No frame is in the equilibrium estimate yet (or the openness does not vary): no F(openness).", ""]

    n = p.n_structures
    if n > 0:
        measure = pocket_measure(campaign)
        top = most_open_frames(openness, n)
        lines += [f"Most open frames (PDB with the cavity grid points as pseudo-atoms, residue CAV chain Z; VMD/PyMOL: "
                  "`resname CAV`):", "", f"| file | round | step | openness ({unit}) | cavity points |",
                  "|---|---:|---:|---:|---:|"]
        for j, i in enumerate(top):
            xyz = measure.superpose(frames["positions"][i].astype(float))[0]  # the orientation the cavity is measured in
            points = measure.cavity_points(xyz)
            name = f"pocket_open_{j:02d}.pdb"
            write_pocket_pdb(out / name, measure.topology, xyz, points, overwrite=overwrite)
            lines.append(f"| `{name}` | {rounds[i]} | {frames['step'][i]} | {openness[i]:.4g} | {len(points)} |")
        lines.append("")
    return lines


def _region_text(p: Any) -> str:
    if p.measure == "distance":
        return f"residues {p.group_a} vs {p.group_b}"
    if p.residues:
        return f"box around residues {p.residues} (+{p.padding:g} nm)"
    where = f"centre {p.center} nm" if p.center else f"centroid of residues {p.center_residues}"
    return f"sphere of {p.radius:g} nm around the {where}"
