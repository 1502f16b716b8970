"""Compare the systems of multi-system campaigns: per-system FES in the shared latent space and on user CVs, ΔG of
states per system and ΔΔG(mutant − reference) with error bars; ``latentbias compare RUNDIR [RUNDIR ...]``.

Quantities
----------
* **Weights**: each system's final log-weights (its own ``weights.csv``: the converge-phase estimate, or the
  cross-round MBAR without one; :mod:`latentbias.campaign.weights`), frames kept out of the estimate excluded.
* **States** are frame masks, in three forms: latent regions (``z0 = [lo, hi]``), CV ranges (``phi = [0, 120]``, CVs
  given as ``NAME:KIND:ATOMS`` with atom indices of the reference system, mapped onto each system through the
  shared atoms; a dihedral range with lo > hi wraps through ±180°), and basins of the *pooled* latent FES
  (every system's normalised weights averaged, so each system counts equally; bins assigned to a basin by
  steepest descent on the smoothed histogram, the ``n`` most populated basins kept). Latent coordinates come
  from each run's own encoder: latent regions and basins are defined per run (with several runs, ``z0 = [lo, hi]``
  means a different region in each, so prefer CV states or basins there), and the latent figure shows the first
  run; CV figures pool all runs.
* **ΔG(state) = F(state) − F(rest)** = −kT ln[p/(1 − p)] in each system (kJ/mol), with p the reweighted
  population of the state. **ΔΔG = ΔG(system) − ΔG(reference)**.
* **Errors** (1σ, :mod:`latentbias.analysis.uncertainty`): one run directory: the block bootstrap of each
  system's ΔG over its frames in time order (fixed weights; exact for a converge phase, whose weights need no
  re-solve; without one it ignores the MBAR re-solve), ΔΔG errors added in quadrature (the systems' trajectories
  are independent; the encoder is shared but fixed). Several run directories (independent campaigns, e.g.
  seeds): ΔG and ΔΔG are computed per run and the estimate is the mean with the Student-t spread of the runs
  (:func:`~latentbias.analysis.uncertainty.replica_estimate`), which also sees what the bootstrap cannot (a
  different encoder, a basin missed in one run).
* **Difference map**: F_s(bin) − F_ref(bin) with F = −kT ln p(bin) of each system's normalised weights (no
  per-system shift: a difference of 0 means equal population).

Outputs (``RUNDIR/compare/`` of the first run directory, or ``out``): ``compare.md``, ``ddg.csv``, ``ddg.json``,
``fes_latent.png`` and ``fes_<cv>.png`` (side-by-side FES, difference maps), ``fes_*.csv`` per system.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..analysis.constants import kt_kjmol
from ..analysis.fes import basin_free_energy_estimate, free_energy_surface
from ..analysis.uncertainty import Estimate, replica_estimate
from ..io import atomic_write_bytes, write_json
from .estimate import final_weights
from .report import CVSpec, parse_cv_spec

logger = logging.getLogger(__name__)

__all__ = ["SystemFrames", "load_system_frames", "state_masks", "latent_basins", "Comparison", "compare",
           "parse_state_spec"]


@dataclass
class SystemFrames:
    """The frames of one system of one run that are in its estimate: latent coordinates, CVs, log-weights."""

    name: str
    z: np.ndarray
    logw: np.ndarray
    cvs: dict[str, np.ndarray]
    temperature: float
    rundir: Path


def _multi_doc(rundir: Path) -> dict[str, Any]:
    path = Path(rundir) / "multi.json"
    if not path.is_file():
        raise ValueError(f"{rundir} is not a multi-system run directory ({path} not found); run a config with a "
                         "[systems] table first")
    return json.loads(path.read_text())


def load_system_frames(rundir: str | Path, cvs: Sequence[CVSpec] = ()) -> list[SystemFrames]:
    """Every system's estimate frames (reference first) of a finished multi-system run directory.

    CV atom indices are those of the reference system and are mapped onto each system through the atoms all
    systems share; a CV on an atom not shared (a mutated side chain) raises ValueError.
    """
    import mdtraj as md

    from .report import load_campaign
    from .shared import SharedAtoms

    rundir = Path(rundir)
    doc = _multi_doc(rundir)
    names = list(doc["config"]["systems"])
    campaigns = []
    for name in names:
        member = rundir / "systems" / name
        campaign, last = load_campaign(member)
        if not (member / "weights.csv").is_file() or not campaign.run_dir.read_progress().get("finished"):
            raise ValueError(f"{member}: the campaign of system {name!r} has not finished; run it to the end first")
        campaigns.append((campaign, last))
    shared = SharedAtoms([c.system()[1] for c, _ in campaigns], campaigns[0][0].system()[2]) if cvs else None
    out = []
    for s, (name, (campaign, last)) in enumerate(zip(names, campaigns)):
        table = final_weights(rundir / "systems" / name)
        used = np.isfinite(table["logweight"])
        z = np.column_stack([table[k] for k in table if k.startswith("z")])
        values: dict[str, np.ndarray] = {}
        if cvs:
            top = md.Topology.from_openmm(campaign.system()[1])
            xyz = campaign.all_frames(last)["positions"]
            if len(xyz) != len(used):
                raise ValueError(f"{rundir / 'systems' / name}: weights.csv has {len(used)} frames, the run "
                                 f"directory {len(xyz)}; rerun its last round")
            traj = md.Trajectory(xyz[used], top)
            for cv in cvs:
                atoms = shared.maps[s][np.asarray(cv.atoms, dtype=np.int64)]
                if np.any(atoms < 0):
                    raise ValueError(f"CV {cv.name!r}: atoms {list(cv.atoms)} of the reference system are not all "
                                     f"in system {name!r} (a mutated side chain?); use shared atoms")
                values[cv.name] = CVSpec(cv.name, cv.kind, tuple(int(a) for a in atoms)).evaluate(traj)
        out.append(SystemFrames(name, z[used], table["logweight"][used], values, campaign.cfg.md.temperature,
                                rundir / "systems" / name))
    return out


def parse_state_spec(text: str) -> tuple[str, dict[str, list[float]]]:
    """``NAME:VAR=lo,hi[:VAR=lo,hi]`` (e.g. ``C7ax:phi=0,120`` or ``A:z0=-1,0:z1=0,2``) -> (name, ranges)."""
    parts = text.split(":")
    if len(parts) < 2 or not parts[0]:
        raise ValueError(f"state {text!r} must look like NAME:VAR=lo,hi (e.g. C7ax:phi=0,120)")
    ranges = {}
    for p in parts[1:]:
        try:
            var, rng = p.split("=")
            lo, hi = (float(v) for v in rng.split(","))
        except ValueError:
            raise ValueError(f"state {text!r}: {p!r} must look like VAR=lo,hi") from None
        ranges[var] = [lo, hi]
    return parts[0], ranges


def _in_range(values: np.ndarray, lo: float, hi: float, periodic: bool) -> np.ndarray:
    if periodic and lo > hi:  # wraps through +-180 degrees
        return (values >= lo) | (values < hi)
    return (values >= lo) & (values < hi)


def state_masks(frames: SystemFrames, states: dict[str, dict[str, list[float]]],
                periodic: dict[str, bool]) -> dict[str, np.ndarray]:
    """Membership of every frame in every state (all of a state's ranges must hold)."""
    out = {}
    for name, ranges in states.items():
        mask = np.ones(len(frames.logw), dtype=bool)
        for var, (lo, hi) in ranges.items():
            if var in frames.cvs:
                v = frames.cvs[var]
            elif var.startswith("z") and var[1:].isdigit() and int(var[1:]) < frames.z.shape[1]:
                v = frames.z[:, int(var[1:])]
            else:
                raise ValueError(f"state {name!r}: {var!r} is neither a CV ({sorted(frames.cvs)}) nor a latent "
                                 f"coordinate z0..z{frames.z.shape[1] - 1}")
            mask &= _in_range(v, float(lo), float(hi), periodic.get(var, False))
        out[name] = mask
    return out


def _pooled_logweights(systems: Sequence[SystemFrames]) -> np.ndarray:
    """Each system's log-weights normalised to total 1/S (every system counts equally)."""
    parts = []
    for s in systems:
        lw = s.logw - np.logaddexp.reduce(s.logw)
        parts.append(lw - np.log(len(systems)))
    return np.concatenate(parts)


def latent_basins(z: np.ndarray, logw: np.ndarray, n_basins: int, bins: int = 30,
                  range_: Sequence[Sequence[float]] | None = None,
                  smooth: float = 1.0) -> tuple[np.ndarray, list[np.ndarray]]:
    """Basins of a (pooled) latent FES: each populated bin descends to its lowest neighbour until a local minimum.

    Parameters
    ----------
    z : numpy.ndarray, shape=(n, d)
        Latent coordinates (the first two are used).
    logw : numpy.ndarray, shape=(n,)
    n_basins : int
        Basins kept (the most populated); frames of other basins get label -1.
    bins : int
        Histogram bins per dimension.
    range_ : sequence of (lo, hi), optional
        Histogram range per dimension (default: the data's).
    smooth : float
        Gaussian smoothing of the weighted histogram before the descent, in bins (0: none).

    Returns
    -------
    (labels, edges)
        ``labels`` shape=(n,): basin index of every frame (0 = most populated) or -1; histogram ``edges``.
    """
    zz = np.asarray(z, dtype=float)[:, :2]
    d = zz.shape[1]
    rng = range_ if range_ is not None else [(float(zz[:, i].min()), float(zz[:, i].max()) + 1e-9) for i in range(d)]
    w = np.exp(logw - np.max(logw))
    hist, edges = np.histogramdd(zz, bins=[bins] * d, range=rng, weights=w)
    if smooth > 0:  # sampling noise makes spurious local minima; descend on a smoothed density (populated bins)
        from scipy.ndimage import gaussian_filter

        hist = np.where(hist > 0, gaussian_filter(hist, smooth, mode="constant"), 0.0)
    idx = tuple(np.clip(np.searchsorted(edges[i], zz[:, i], side="right") - 1, 0, bins - 1) for i in range(d))
    with np.errstate(divide="ignore"):
        f = np.where(hist > 0, -np.log(hist), np.inf)
    shape = hist.shape
    target = {}
    offsets = [np.array(o) - 1 for o in np.ndindex(*([3] * d)) if any(v != 1 for v in o)]
    for cell in zip(*np.nonzero(np.isfinite(f))):
        best, fbest = cell, f[cell]
        for o in offsets:
            nb = tuple(np.array(cell) + o)
            if all(0 <= nb[i] < shape[i] for i in range(d)) and f[nb] < fbest:
                best, fbest = nb, f[nb]
        target[cell] = best
    root = {}
    for cell in target:
        c = cell
        while target[c] != c:
            c = target[c]
        root[cell] = c
    minima = sorted(set(root.values()), key=lambda m: -sum(hist[c] for c in root if root[c] == m))
    rank = {m: k for k, m in enumerate(minima[:n_basins])}
    cell_of = list(zip(*idx))
    labels = np.array([rank.get(root.get(c, None), -1) for c in cell_of], dtype=np.int64)
    return labels, list(edges)


@dataclass
class Comparison:
    """Result of :func:`compare`: per state, ΔG per system and ΔΔG per non-reference system (Estimates)."""

    systems: list[str]
    reference: str
    dg: dict[str, dict[str, Estimate]] = field(default_factory=dict)
    ddg: dict[str, dict[str, Estimate]] = field(default_factory=dict)
    per_run: list[dict[str, Any]] = field(default_factory=list)
    out: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        def e(x: Estimate) -> dict[str, Any]:
            return {"value": float(x.value), "error": float(x.error), "method": x.method,
                    "n_independent": int(x.n_independent)}

        return {"systems": self.systems, "reference": self.reference,
                "dG": {st: {s: e(v) for s, v in d.items()} for st, d in self.dg.items()},
                "ddG": {st: {s: e(v) for s, v in d.items()} for st, d in self.ddg.items()},
                "per_run": self.per_run,
                "definition": "dG(state) = F(state) - F(rest) in each system; ddG = dG(system) - dG(reference); "
                              "kJ/mol; errors 1 sigma"}


def _dg(frames: SystemFrames, mask: np.ndarray, n_bootstrap: int, seed: int) -> Estimate:
    return basin_free_energy_estimate(frames.z, frames.logw, ~mask, mask, frames.temperature,
                                      error_method="bootstrap", n_bootstrap=n_bootstrap, seed=seed,
                                      observable=frames.z)


def _quadrature(a: Estimate, b: Estimate) -> Estimate:
    return Estimate(value=float(a.value - b.value), error=float(np.hypot(a.error, b.error)),
                    method=f"{a.method} (errors in quadrature)", n_independent=min(a.n_independent, b.n_independent))


def compare(rundirs: Sequence[str | Path], cvs: Sequence[CVSpec | str] | None = None,
            states: dict[str, dict[str, list[float]]] | None = None, basins: int | None = None,
            bins: int | None = None, out: str | Path | None = None, n_bootstrap: int = 200,
            plots: bool = True) -> Comparison:
    """Compare the systems of one or more finished multi-system run directories (module docstring).

    Parameters
    ----------
    rundirs : sequence of path
        Run directories of the same multi-system config (several: independent campaigns, e.g. seeds).
    cvs : sequence of CVSpec or "NAME:KIND:ATOMS", optional
        User CVs (reference-system atom indices); default: ``[compare] cvs`` of the config.
    states : dict, optional
        ``name -> {var: [lo, hi]}``; default: ``[compare] states``.
    basins : int, optional
        Add the n most populated basins of the pooled latent FES as states ``basin0..`` (found in each run's own
        latent space; across runs basin k is the k-th most populated, which need not be the same region).
    bins : int, optional
        FES bins per dimension (default ``[compare] bins`` or 40).
    out : path, optional
        Output folder (default ``RUNDIR/compare`` of the first run directory).

    Returns
    -------
    Comparison
    """
    rundirs = [Path(r) for r in rundirs]
    if not rundirs:
        raise ValueError("give at least one run directory")
    doc = _multi_doc(rundirs[0])
    cmp_cfg = doc["config"].get("compare", {})
    names = list(doc["config"]["systems"])
    for r in rundirs[1:]:
        other = _multi_doc(r)
        if list(other["config"]["systems"]) != names:
            raise ValueError(f"{r} compares systems {list(other['config']['systems'])}, {rundirs[0]} {names}")
    reference = cmp_cfg.get("reference", names[0])
    cv_specs = [parse_cv_spec(c) if isinstance(c, str) else c for c in (cvs if cvs is not None
                                                                        else cmp_cfg.get("cvs", []))]
    states = dict(states if states is not None else cmp_cfg.get("states", {}))
    n_basins = int(basins if basins is not None else cmp_cfg.get("basins", 0))
    bins = int(bins if bins is not None else cmp_cfg.get("bins", 40))
    periodic = {c.name: c.kind in ("dihedral",) for c in cv_specs}
    runs = [load_system_frames(r, cv_specs) for r in rundirs]
    first = runs[0]
    zrange = [(min(float(s.z[:, i].min()) for s in first), max(float(s.z[:, i].max()) for s in first) + 1e-9)
              for i in range(min(2, first[0].z.shape[1]))]

    def masks_for(run: list[SystemFrames]) -> list[dict[str, np.ndarray]]:
        out_masks = [state_masks(s, states, periodic) for s in run]
        if n_basins:  # basins of this run's own latent space (each run has its own encoder)
            zz = np.concatenate([s.z for s in run])
            rng_run = [(float(zz[:, i].min()), float(zz[:, i].max()) + 1e-9) for i in range(min(2, zz.shape[1]))]
            lab, _ = latent_basins(zz, _pooled_logweights(run), n_basins, bins=min(bins, 30), range_=rng_run)
            if len(set(lab.tolist()) - {-1}) < n_basins:
                logger.warning("%s: the pooled latent FES has fewer than %d basins", run[0].rundir.parent.parent,
                               n_basins)
            start = 0
            for s, m in zip(run, out_masks):
                for k in range(n_basins):
                    m[f"basin{k}"] = lab[start:start + len(s.logw)] == k
                start += len(s.logw)
        return out_masks

    per_run: list[dict[str, Any]] = []
    per_run_dg: list[dict[str, dict[str, Estimate]]] = []
    for r, run in zip(rundirs, runs):
        masks = masks_for(run)
        dg: dict[str, dict[str, Estimate]] = {}
        for st in masks[0]:
            dg[st] = {}
            for s, m in zip(run, masks):
                if m[st].all() or not m[st].any():
                    logger.warning("%s: state %s is %s in system %s: no ΔG", r, st,
                                   "everything" if m[st].all() else "empty", s.name)
                    continue
                dg[st][s.name] = _dg(s, m[st], n_bootstrap, seed=0)
        per_run_dg.append(dg)
        per_run.append({"rundir": str(r), "dG": {st: {s: [float(e.value), float(e.error)] for s, e in d.items()}
                                                 for st, d in dg.items()}})
    result = Comparison(names, reference)
    for st in per_run_dg[0]:
        result.dg[st], result.ddg[st] = {}, {}
        for name in names:
            vals = [d[st].get(name) for d in per_run_dg]
            if any(v is None for v in vals):
                continue
            result.dg[st][name] = vals[0] if len(vals) == 1 else replica_estimate([v.value for v in vals])
            if name == reference or reference not in result.dg[st]:
                continue
            if len(vals) == 1:
                result.ddg[st][name] = _quadrature(vals[0], per_run_dg[0][st][reference])
            else:
                result.ddg[st][name] = replica_estimate([d[st][name].value - d[st][reference].value
                                                         for d in per_run_dg])
    result.per_run = per_run
    out = Path(out) if out is not None else rundirs[0] / "compare"
    out.mkdir(parents=True, exist_ok=True)
    result.out = out
    write_json(out / "ddg.json", result.to_dict())
    _write_table(out / "ddg.csv", result)
    figures = []
    if plots:
        kt = kt_kjmol(first[0].temperature)
        # latent coordinates of different runs come from different encoders: the latent figure shows the first run
        figures.append(_fes_figure(out, "latent", [[s.z[:, :2] for s in first]],
                                   [[s.logw for s in first]], names, reference, bins, zrange,
                                   ["z0", "z1"][: len(zrange)], kt, first[0].temperature))
        if cv_specs:
            chosen = cv_specs[:2]
            label = "_".join(c.name for c in chosen)
            vals = [[np.column_stack([s.cvs[c.name] for c in chosen]) for s in run] for run in runs]
            rng = [(-180.0, 180.0) if periodic[c.name] else
                   (min(float(v[:, i].min()) for run in vals for v in run),
                    max(float(v[:, i].max()) for run in vals for v in run) + 1e-9) for i, c in enumerate(chosen)]
            figures.append(_fes_figure(out, label, vals, [[s.logw for s in run] for run in runs], names, reference,
                                       bins, rng, [f"{c.name} ({c.unit})" if c.unit else c.name for c in chosen], kt,
                                       first[0].temperature))
    _write_markdown(out / "compare.md", result, rundirs, states, n_basins, cv_specs, figures)
    logger.info("wrote the comparison of %s to %s", ", ".join(names), out)
    return result


def _write_table(path: Path, result: Comparison) -> None:
    rows = ["state,system,dG_kjmol,dG_error_kjmol,ddG_kjmol,ddG_error_kjmol,error_method"]
    for st, d in result.dg.items():
        for name, e in d.items():
            dd = result.ddg.get(st, {}).get(name)
            rows.append(f"{st},{name},{e.value:.4f},{e.error:.4f},"
                        f"{'' if dd is None else f'{dd.value:.4f}'},{'' if dd is None else f'{dd.error:.4f}'},"
                        f"{e.method}")
    atomic_write_bytes(path, ("\n".join(rows) + "\n").encode())


def _histogram_f(x: np.ndarray, logw: np.ndarray, bins: int, rng: list, kt: float) -> tuple[np.ndarray, list]:
    """F = −kT ln p(bin) with p from normalised weights (NaN in empty bins), kJ/mol, no shift."""
    w = np.exp(logw - np.logaddexp.reduce(logw))
    hist, edges = np.histogramdd(x, bins=[bins] * x.shape[1], range=rng, weights=w)
    with np.errstate(divide="ignore"):
        f = np.where(hist > 0, -kt * np.log(hist), np.nan)
    return f, edges


def _fes_figure(out: Path, label: str, xs: list[list[np.ndarray]], logws: list[list[np.ndarray]],
                names: list[str], reference: str, bins: int, rng: list, axis_labels: list[str], kt: float,
                temperature: float) -> str:
    """Side-by-side FES of every system (runs pooled, each run's weights normalised) and F_s − F_ref maps."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n_runs = len(xs)
    surfaces = []
    for s in range(len(names)):
        x = np.concatenate([xs[k][s] for k in range(n_runs)])
        lw = np.concatenate([logws[k][s] - np.logaddexp.reduce(logws[k][s]) for k in range(n_runs)])
        f, edges = _histogram_f(x, lw, bins, rng, kt)
        surfaces.append(f)
        # the per-system FES with bootstrap errors, as CSV (shifted to min 0)
        fes = free_energy_surface(x, lw, bins=bins, range=rng, temperature=temperature, error_method="bootstrap",
                                  n_bootstrap=50)
        fes.to_csv(out / f"fes_{label}_{names[s]}.csv", overwrite=True)
    iref = names.index(reference)
    fmin = np.nanmin(surfaces[iref])
    others = [s for s in range(len(names)) if s != iref]
    ncol = len(names) + len(others)
    fig = Figure(figsize=(3.6 * ncol, 3.2))
    FigureCanvasAgg(fig)
    top = 30.0
    oned = surfaces[0].ndim == 1
    for k, s in enumerate(range(len(names))):
        ax = fig.add_subplot(1, ncol, k + 1)
        f = surfaces[s] - np.nanmin(surfaces[s])
        if oned:
            centers = 0.5 * (edges[0][1:] + edges[0][:-1])
            ax.plot(centers, f)
            ax.set_ylabel("F (kJ/mol)")
        else:
            mesh = ax.pcolormesh(edges[0], edges[1], np.ma.masked_invalid(f).T, cmap="viridis", vmin=0, vmax=top)
            fig.colorbar(mesh, ax=ax, label="F (kJ/mol)")
            ax.set_ylabel(axis_labels[1])
        ax.set_xlabel(axis_labels[0])
        ax.set_title(names[s])
    for k, s in enumerate(others):
        ax = fig.add_subplot(1, ncol, len(names) + k + 1)
        diff = surfaces[s] - surfaces[iref]
        if oned:
            centers = 0.5 * (edges[0][1:] + edges[0][:-1])
            ax.plot(centers, diff)
            ax.axhline(0, color="k", lw=0.5)
            ax.set_ylabel("ΔF (kJ/mol)")
        else:
            lim = 10.0
            mesh = ax.pcolormesh(edges[0], edges[1], np.ma.masked_invalid(diff).T, cmap="RdBu_r", vmin=-lim,
                                 vmax=lim)
            fig.colorbar(mesh, ax=ax, label="ΔF (kJ/mol)")
        ax.set_xlabel(axis_labels[0])
        ax.set_title(f"{names[s]} − {reference}")
    del fmin
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    name = f"fes_{label}.png"
    atomic_write_bytes(out / name, buf.getvalue())
    return name


def _fmt(e: Estimate | None) -> str:
    return "—" if e is None else f"{e.value:.2f} ± {e.error:.2f}"


def _write_markdown(path: Path, result: Comparison, rundirs: list[Path], states: dict, n_basins: int,
                    cvs: Sequence[CVSpec], figures: list[str]) -> None:
    others = [s for s in result.systems if s != result.reference]
    method = ("block bootstrap per system, ΔΔG errors in quadrature" if len(rundirs) == 1 else
              f"Student-t spread of {len(rundirs)} independent run directories")
    lines = [f"# Comparison: {', '.join(result.systems)} (reference {result.reference})", "",
             f"Run directories: {', '.join(f'`{r}`' for r in rundirs)}. ΔG(state) = F(state) − F(rest) in each "
             "system; ΔΔG = ΔG(system) − ΔG(reference); kJ/mol; 1σ errors: " + method + ".", ""]
    if states:
        lines += ["States: " + "; ".join(f"**{k}**: " + ", ".join(f"{v} ∈ [{a:g}, {b:g})" for v, (a, b) in r.items())
                                         for k, r in states.items()), ""]
    if n_basins:
        lines += [f"Basins basin0..basin{n_basins - 1}: the most populated basins of the pooled latent FES "
                  "(each system weighted equally), steepest descent on the histogram.", ""]
    if cvs:
        lines += ["CVs: " + ", ".join(f"{c.name} ({c.kind} of reference atoms {list(c.atoms)})" for c in cvs), ""]
    head = "| state | " + " | ".join(f"ΔG {s}" for s in result.systems) + " | " + " | ".join(
        f"ΔΔG {s} − {result.reference}" for s in others) + " |"
    lines += [head, "|---" * (1 + len(result.systems) + len(others)) + "|"]
    for st in result.dg:
        lines.append(f"| {st} | " + " | ".join(_fmt(result.dg[st].get(s)) for s in result.systems) + " | "
                     + " | ".join(_fmt(result.ddg[st].get(s)) for s in others) + " |")
    if len(rundirs) > 1:
        lines += ["", "Per run (ΔG ± bootstrap error):", ""]
        for run in result.per_run:
            lines.append(f"- `{run['rundir']}`: " + "; ".join(
                f"{st}: " + ", ".join(f"{s} {v[0]:.2f} ± {v[1]:.2f}" for s, v in d.items())
                for st, d in run["dG"].items()))
    lines += [""]
    for fig in figures:
        lines += [f"![{fig}]({fig})", ""]
    lines += ["Left: each system's reweighted FES (runs pooled, min 0); right: F(system) − F(reference) per bin with "
              "F = −kT ln p (no per-system shift; blue: more populated than in the reference).", ""]
    atomic_write_bytes(path, "\n".join(lines).encode())
