"""The converge phase as umbrella sampling along a minimum free-energy path in the frozen encoder's latent space.

``[converge] method = "umbrella"``: with the last encoder frozen,

1. **path** (:func:`umbrella_path`): the latent FES of all frames so far, reweighted with the log-weights written
   after the last exploration round (``weights.csv``: z under that encoder), its basins
   (:func:`latentbias.analysis.paths.find_basins`: steepest descent on the smoothed FES, minima shallower than
   2 kJ/mol merged; basins above ``fes_cutoff`` dropped) and, between consecutive basins of a chain that starts in
   the lowest basin and always goes on to the nearest basin not yet visited (at most ``umbrella_basins``, lowest
   first), the zero-temperature string (:func:`latentbias.analysis.paths.minimum_free_energy_path`, ends fixed at
   the minima). With one basin only the path is the weighted sample's principal axis between its 2nd and 98th
   percentiles; a 1-D latent space is restrained along z0 between the weighted 0.5 and 99.5 % quantiles. With
   three latent dimensions the path lies in (z0, z1) and z2 is free;
2. **windows**: ``umbrella_windows`` restraint centres at equal arc length along the path, one
   :class:`~latentbias.bias.restraint.LatentRestraint` V = ½ Σ_i k_i (z_i − c_i)² whose centre moves from window
   to window (a Context parameter). ``umbrella_force_constant`` is k in kJ/mol per (latent range)², i.e.
   k_i = value / (z_max,i − z_min,i)² over the encoder's training range; 0 (default) sizes it from the window
   spacing Δ so that the windows' thermal width sqrt(kT/k) is Δ/2 (neighbouring windows overlap,
   :func:`latentbias.pathway.relax.default_force_constant`). A window on a barrier top samples the top only
   when F + V is convex there, k > −F''(s); when the largest negative curvature of the smoothed latent FES along
   the path exceeds k, a warning asks for more windows (a stiffer restraint at the same spacing was tried on the
   toy: windows Δ/3 wide overlapped so little that MBAR's window free energies were 2–3× less certain);
3. **runs** (:class:`UmbrellaBias`): every window runs ``umbrella_replicas`` R independent trajectories
   (*slots* q = replica · N + window); the converge round's checkpoint segments are dealt to the slots in turn
   (segment k runs slot k mod N·R: replica 0 of every window, then replica 1, ... — one *sweep* is N·R
   segments). Every trajectory continues its own: its first segment starts from the earlier frame nearest the
   window's centre with velocities of its own (drawn from the segment's seed, so the replicas part within
   picoseconds), later ones from the positions and velocities it ended its previous segment with (kept in the bias
   state, so a resumed run continues each trajectory exactly). With ``[execution] walkers`` W > 1 the slots are
   dealt to the walkers (walker w runs slots w, w + W, ... in turn: ``walker_schedules``,
   ``walker_replica_schedules``). With ``[converge] umbrella_exchange`` (one walker) neighbouring windows of each
   replica ladder attempt to swap their configurations (positions and velocities) before every sweep after the
   first, by the Metropolis rule on the two restraint energies (:func:`neighbour_exchange`, even pairs before
   even sweeps, odd before odd): replica-exchange umbrella sampling, serial in one Context, one exchange round
   per sweep; ``weights.json`` ``umbrella.exchange`` reports attempts and acceptance per pair;
4. **estimate**: MBAR over the windows (:func:`latentbias.campaign.weights.cross_round_logweights`, each window a
   restraint state in the frozen encoder's latent space; a window's replicas are samples of the same state) gives
   every window frame its log-weight in the unbiased ensemble (``frames.csv`` ``logweight``); the first
   ``burn_in`` of the converge run (by simulated time, i.e. the start of every trajectory, sweeps being
   interleaved) is kept out with the code ``burn-in``. Its error (:mod:`latentbias.campaign.estimate`) is the
   stratified block bootstrap with MBAR re-solved per resample, blocks cut per trajectory and drawn across a
   window's replicas (:func:`umbrella_replicas_of_frames`). Why replicas: a latent window can hold two states
   that the restraint does not separate (a barrier orthogonal to the path); one trajectory then stays on one
   side for the whole run, its blocks all agree, and the bootstrap states an error several times too small.
   Measured on the three-well toy (``tests/test_campaign_umbrella.py``, 12 windows, 80 ps per window): with one
   trajectory per window two realisations of the same windows differed by up to 4 kJ/mol against stated errors
   of ~1 (RMS z 1.9 over eight pairs; a window's trajectory spent 160 of 160 frames in well C in one realisation
   and 148 in well B in the other); two replicas per window bring the pairs to RMS z 1.06 in 11 of 12, but at the
   same budget they do not improve the coverage of the exact ΔF across 32 seeds (``benchmarks/RESULTS.md``),
   so the default is one;
5. **stopping rule**: the drift of the latent FES (:func:`latentbias.campaign.converge.fes_drift`) between the
   MBAR estimate from all frames after the burn-in and the one without the last ``window`` fraction *of each
   window's* frames, evaluated after complete sweeps once ``min_steps`` have run; budget ``max_steps``. Steps
   count all windows together (per window: the budget / N).

What it is good at and what not: umbrella windows sample a tube around the path; the estimate of anything off
the path (a basin the chain does not reach, the far side of a broad basin) rests on the few frames that leak out
of the windows and is poorly covered. Basins of the estimate must lie on the path.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..analysis.constants import kt_kjmol
from .records import KIND_RESTRAINT
from .roundbias import RoundBias, RoundSetup

if TYPE_CHECKING:
    from .config import CampaignConfig
    from .loop import Campaign
    from .rundir import RunDir

logger = logging.getLogger(__name__)

__all__ = ["umbrella_path", "window_centers", "path_curvature", "umbrella_force_constants", "umbrella_schedules",
           "umbrella_plan", "UmbrellaBias", "umbrella_states", "umbrella_logweights",
           "umbrella_used_frames", "umbrella_replicas_of_frames", "umbrella_exchange_summary",
           "neighbour_exchange"]

#: ``format`` of the JSON record beside an umbrella bias state's npz (:meth:`UmbrellaBias.save`)
_STATE_FORMAT = "latentbias-umbrella-state-1"
#: grid of the latent FES the path is found on (bins per dimension) and its smoothing (grid spacings)
_BINS, _SMOOTH = 40, 1.0
#: string nodes per basin-to-basin leg before the windows are placed
_LEG_NODES = 40


def _resample(nodes: np.ndarray, n: int) -> np.ndarray:
    """``n`` points at equal arc length along the polyline ``nodes`` (shape=(m, d))."""
    seg = np.linalg.norm(np.diff(nodes, axis=0), axis=1)
    s = np.r_[0.0, np.cumsum(seg)]
    t = np.linspace(0.0, s[-1], n)
    return np.column_stack([np.interp(t, s, nodes[:, k]) for k in range(nodes.shape[1])])


def _weighted_quantile(x: np.ndarray, w: np.ndarray, q: float) -> float:
    order = np.argsort(x)
    c = np.cumsum(w[order])
    return float(np.interp(q * c[-1], c, x[order]))


def umbrella_path(z: np.ndarray, logw: np.ndarray, temperature: float, fes_cutoff: float = 25.0,
                  max_basins: int = 8) -> dict[str, Any]:
    """The path the windows are placed on (module docstring, step 1).

    Parameters
    ----------
    z : numpy.ndarray, shape=(n, d)
        Latent coordinates of the frames (d = 1, 2 or 3).
    logw : numpy.ndarray, shape=(n,)
        Their log-weights in the unbiased ensemble (−inf: not in the estimate). With fewer than 10 finite ones all
        frames count equally.
    temperature : float
        K.
    fes_cutoff : float
        kJ/mol: basins above it are not visited.
    max_basins : int
        At most this many basins (lowest first), >= 2.

    Returns
    -------
    dict
        ``dims`` (restrained latent dimensions), ``nodes`` (polyline, shape=(m, len(dims))), ``basins`` (minima
        on the chain, in path order), ``how`` (a sentence) and, for a string through basins, ``free_energy``
        (smoothed latent FES at the nodes, kJ/mol).
    """
    from ..analysis.fes import free_energy_surface
    from ..analysis.paths import find_basins, minimum_free_energy_path

    z = np.asarray(z, dtype=float).reshape(len(logw), -1)
    logw = np.asarray(logw, dtype=float)
    if np.isfinite(logw).sum() < 10:
        logw = np.zeros(len(z))
    ok = np.isfinite(logw)
    w = np.exp(logw[ok] - logw[ok].max())
    if z.shape[1] == 1:
        x = z[ok, 0]
        lo, hi = _weighted_quantile(x, w, 0.005), _weighted_quantile(x, w, 0.995)
        return {"dims": [0], "nodes": [[lo], [hi]], "basins": [],
                "how": "1-D latent space: z0 between the weighted 0.5 and 99.5 % quantiles"}
    z2 = z[:, :2]
    lo, hi = z2.min(0), z2.max(0)
    pad = 0.02 * (hi - lo)
    rng = [(float(lo[i] - pad[i]), float(hi[i] + pad[i])) for i in range(2)]
    fes = free_energy_surface(z2[ok], logw[ok], bins=_BINS, range=rng, temperature=temperature,
                              error_method="blocks")
    basins = find_basins(fes.free_energy, fes.centers, smooth=_SMOOTH)
    keep = [k for k in range(len(basins.minima)) if basins.free_energies[k] <= fes_cutoff][:max(2, max_basins)]
    minima = basins.minima[keep]
    if len(minima) < 2:
        m = (w[:, None] * z2[ok]).sum(0) / w.sum()
        cov = np.cov((z2[ok] - m).T, aweights=w)
        axis = np.linalg.eigh(cov)[1][:, -1]
        proj = (z2[ok] - m) @ axis
        a, b = _weighted_quantile(proj, w, 0.02), _weighted_quantile(proj, w, 0.98)
        return {"dims": [0, 1], "nodes": [(m + a * axis).tolist(), (m + b * axis).tolist()],
                "basins": minima.tolist(),
                "how": "one basin on the latent FES: the weighted principal axis between its 2 and 98 % quantiles"}
    order, left = [0], list(range(1, len(minima)))
    while left:  # chain: from the lowest basin always on to the nearest one not yet visited
        last = minima[order[-1]]
        nxt = min(left, key=lambda k: float(np.linalg.norm(minima[k] - last)))
        order.append(nxt)
        left.remove(nxt)
    legs: list[np.ndarray] = []
    profile = np.zeros(0)
    for a, b in zip(order[:-1], order[1:]):
        leg = minimum_free_energy_path(fes.free_energy, fes.centers, minima[a], minima[b], n_nodes=_LEG_NODES,
                                       smooth=_SMOOTH, fixed_ends=True)
        if not leg.converged:
            logger.warning("umbrella path: the string between basins %d and %d did not converge in %d iterations",
                           a, b, leg.iterations)
        f = leg.free_energy + (profile[-1] if len(profile) else 0.0)  # each leg's profile starts at 0
        first = 1 if legs else 0  # a leg's first node is the previous leg's last
        legs.append(leg.nodes[first:])
        profile = np.r_[profile, f[first:]]
    nodes = np.concatenate(legs)
    return {"dims": [0, 1], "nodes": nodes.tolist(), "basins": minima[order].tolist(),
            "free_energy": profile.tolist(),
            "how": f"minimum free-energy path (zero-temperature string) through {len(order)} basins of the "
                   f"reweighted latent FES, lowest first, then always the nearest one"}


def window_centers(nodes: Any, n_windows: int) -> np.ndarray:
    """``n_windows`` centres at equal arc length along the path (shape=(n_windows, d))."""
    p = np.asarray(nodes, dtype=float)
    if len(p) < 2 or not np.linalg.norm(np.diff(p, axis=0), axis=1).sum() > 0:
        raise ValueError("the umbrella path has no length: the frames of the campaign span no latent range")
    return _resample(p, int(n_windows))


def path_curvature(nodes: Any, free_energy: Any) -> float:
    """Largest negative curvature −d²F/ds² (kJ/mol per z²) of a free-energy profile along a polyline (0 when F is
    convex everywhere); s the arc length."""
    p = np.asarray(nodes, dtype=float)
    f = np.asarray(free_energy, dtype=float)
    s = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(p, axis=0), axis=1))]
    keep = np.r_[True, np.diff(s) > 1e-12 * max(s[-1], 1e-300)]
    s, f = s[keep], f[keep]
    if len(s) < 3:
        return 0.0
    d2 = np.gradient(np.gradient(f, s), s)
    return float(max(0.0, -d2.min()))


def umbrella_force_constants(centers: np.ndarray, span: np.ndarray, temperature: float,
                             force_constant: float) -> np.ndarray:
    """k_i (kJ/mol per z_i²) of the restrained dimensions: ``force_constant`` / span_i² when it is > 0, else from
    the window spacing (thermal width = spacing / 2)."""
    from ..pathway.relax import default_force_constant

    if force_constant > 0:
        return force_constant / np.maximum(np.asarray(span, dtype=float), 1e-12) ** 2
    return np.full(centers.shape[1], default_force_constant(centers, temperature, overlap=2.0))


def umbrella_schedules(n_segments: int, n_windows: int, n_walkers: int = 1,
                       n_replicas: int = 1) -> tuple[list[list[int]], list[list[int]]]:
    """Per walker, the window and the replica trajectory of every segment.

    The N × R trajectories (slot q = replica · N + window: replica 0 of every window first) are dealt to the
    walkers: walker w cycles through slots w, w + W, ... (a walker left without a slot when W exceeds N × R repeats
    slot w mod N × R).

    Returns
    -------
    windows, replicas : list of list of int
        ``windows[w][k]`` and ``replicas[w][k]``: window and replica that walker w runs in its segment k.
    """
    n_slots = n_windows * n_replicas
    windows, replicas = [], []
    for w in range(n_walkers):
        mine = list(range(w, n_slots, n_walkers)) or [w % n_slots]
        slots = [mine[k % len(mine)] for k in range(n_segments)]
        windows.append([q % n_windows for q in slots])
        replicas.append([q // n_windows for q in slots])
    return windows, replicas


def umbrella_plan(campaign: Campaign, r: int, segments: int) -> dict[str, Any]:
    """The umbrella keys of the converge round r's plan: ``dims``, ``path``, ``basins``, ``path_how``,
    ``centers``, ``force_constants`` (kJ/mol per z²), ``start_frames`` (index among all frames of rounds
    0..r-1 of the frame nearest each centre), ``schedule`` (window per segment), ``sweep_segments`` and, with
    parallel walkers, ``walker_schedules``."""
    from ..pathway.rebuild import nearest_frames
    from .estimate import final_weights

    cfg = campaign.cfg
    c = cfg.converge
    table = final_weights(campaign.run_dir.path)  # written after round r - 1: z under its (the frozen) encoder
    d = campaign.model(r - 1).file.latent_dim
    z = np.column_stack([table[f"z{i}"] for i in range(d)])
    path = umbrella_path(z, table["logweight"], cfg.md.temperature, c.fes_cutoff, c.umbrella_basins)
    dims = path["dims"]
    centers = window_centers(path["nodes"], c.umbrella_windows)
    info = campaign.model(r - 1).info
    span = (np.asarray(info["z_max"], dtype=float) - np.asarray(info["z_min"], dtype=float))[dims]
    curvature = path_curvature(path["nodes"], path["free_energy"]) if "free_energy" in path else 0.0
    k = umbrella_force_constants(centers, span, cfg.md.temperature, c.umbrella_force_constant)
    spacing = float(np.mean(np.linalg.norm(np.diff(centers, axis=0), axis=1)))
    width = np.sqrt(kt_kjmol(cfg.md.temperature) / k)
    if curvature > k.min():
        logger.warning("umbrella converge phase: the path's largest barrier curvature (%.3g kJ/mol per z^2) exceeds "
                       "the restraint k = %.3g: windows on the barrier may fall to its sides and sample its top "
                       "little; more windows ([converge] umbrella_windows; k follows the spacing) fix it",
                       curvature, float(k.min()))
    if np.any(width < spacing / 3.0 * (1 - 1e-9)):
        logger.warning("umbrella converge phase: the windows' thermal width %s is below a third of their spacing "
                       "%.3g: neighbouring windows overlap little; lower [converge] umbrella_force_constant or "
                       "raise umbrella_windows", np.round(width, 4).tolist(), spacing)
    walkers, replicas = cfg.execution.walkers, c.umbrella_replicas
    schedules, replica_schedules = umbrella_schedules(segments, len(centers), walkers, replicas)
    out: dict[str, Any] = {
        "dims": dims, "path": path["nodes"], "basins": path["basins"], "path_how": path["how"],
        "path_free_energy": path.get("free_energy"), "path_curvature": curvature,
        "centers": centers.tolist(), "force_constants": k.tolist(),
        "start_frames": nearest_frames(z[:, dims], centers).tolist(), "replicas": replicas,
        "exchange": bool(c.umbrella_exchange),
        "schedule": schedules[0], "replica_schedule": replica_schedules[0],
        "sweep_segments": int(np.ceil(len(centers) * replicas / walkers))}
    if walkers > 1:
        out["walker_schedules"] = schedules
        out["walker_replica_schedules"] = replica_schedules
    logger.info("umbrella converge phase: %d windows along the latent path (%s) × %d independent trajectories, "
                "k = %s kJ/mol per z^2, thermal width %s%s", len(centers), path["how"], replicas,
                np.round(k, 2).tolist(), np.round(np.sqrt(kt_kjmol(cfg.md.temperature) / k), 4).tolist(),
                ", neighbouring windows exchange configurations before every sweep" if c.umbrella_exchange else "")
    return out


def neighbour_exchange(reduced: np.ndarray, parity: int,
                       rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One round of Metropolis swaps between neighbouring windows of a ladder (replica-exchange umbrella sampling).

    The pairs (i, i + 1) with i ≡ ``parity`` (mod 2) are attempted, each independently (they share no window):
    accepted with probability min(1, exp(−Δ)), Δ = u_i(x_{i+1}) + u_{i+1}(x_i) − u_i(x_i) − u_{i+1}(x_{i+1}),
    where x_j is the configuration window j holds. Alternating the parity from round to round lets a
    configuration travel the whole ladder; each round satisfies detailed balance in the joint distribution
    ∏_i exp(−u_i(x_i)) over which window holds which configuration.

    Parameters
    ----------
    reduced : numpy.ndarray, shape=(n_windows, n_windows)
        ``reduced[i, j]`` = β U_i of the configuration window j holds now (dimensionless reduced energy).
    parity : int
        0: pairs (0, 1), (2, 3), ...; 1: pairs (1, 2), (3, 4), ...
    rng : numpy.random.Generator
        One uniform draw per attempted pair, in pair order.

    Returns
    -------
    perm : numpy.ndarray of int, shape=(n_windows,)
        Window i holds, after the round, the configuration window ``perm[i]`` held before it.
    attempted, accepted : numpy.ndarray of int, shape=(n_windows − 1,)
        1 for the pairs attempted / swapped in this round.
    """
    u = np.asarray(reduced, dtype=np.float64)
    n = u.shape[0]
    if u.shape != (n, n):
        raise ValueError(f"reduced must be a square (n_windows, n_windows) matrix, got shape {u.shape}")
    perm = np.arange(n)
    attempted = np.zeros(max(n - 1, 0), dtype=np.int64)
    accepted = np.zeros_like(attempted)
    for i in range(int(parity) % 2, n - 1, 2):
        delta = u[i, i + 1] + u[i + 1, i] - u[i, i] - u[i + 1, i + 1]
        draw = rng.random()
        attempted[i] = 1
        if delta <= 0.0 or draw < np.exp(-delta):
            perm[i], perm[i + 1] = i + 1, i
            accepted[i] = 1
    return perm, attempted, accepted


class UmbrellaBias(RoundBias):
    """One restraint whose centre moves from window to window; each (window, replica) trajectory continues its own.

    The bias state (:meth:`save`) holds the positions and velocities every trajectory ended its last segment with
    (except the one that ran last: its state is the round's checkpoint) and which ran last. A trajectory is a
    *slot* q = replica · N + window.

    With the plan's ``exchange`` (``[converge] umbrella_exchange``) the windows of each replica ladder attempt to
    swap configurations before every sweep after the first (:meth:`exchange_sweep`), and the state also holds the
    attempts and acceptances per neighbouring pair.
    """

    def __init__(self, setup: RoundSetup):
        from ..bias.restraint import LatentRestraint

        super().__init__(setup)
        self.seeds = setup.seeds
        self._earlier_positions = setup.earlier_positions
        self.centers = np.asarray(self.plan["centers"], dtype=float)
        self.restraint = LatentRestraint(self.model.file, setup.system, centers=self.centers[0],
                                         forceConstants=self.plan["force_constants"], dims=self.plan["dims"],
                                         prefix="umbrella_")
        self._states: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._current = -1
        self.exchange = bool(self.plan.get("exchange", False))
        n_pairs = max(len(self.centers) - 1, 0)
        n_replicas = int(self.plan.get("replicas", 1))
        self.exchange_attempts = np.zeros((n_replicas, n_pairs), dtype=np.int64)
        self.exchange_accepted = np.zeros((n_replicas, n_pairs), dtype=np.int64)

    def kind_of_segment(self, k: int) -> int:
        return KIND_RESTRAINT

    def slot_of_segment(self, k: int) -> tuple[int, int, int]:
        """(slot, window, replica) that segment k runs (plans without replicas: replica 0)."""
        window = int(self.plan["schedule"][k])
        replica = int(self.plan["replica_schedule"][k]) if "replica_schedule" in self.plan else 0
        return replica * len(self.centers) + window, window, replica

    def begin_segment(self, k: int, sim: Any) -> None:
        from openmm import unit

        super().begin_segment(k, sim)
        slot, window, _ = self.slot_of_segment(k)
        if slot != self._current:
            if self._current >= 0:  # keep where the trajectory that ran last stopped
                state = sim.context.getState(getPositions=True, getVelocities=True)
                self._states[self._current] = (
                    state.getPositions(asNumpy=True).value_in_unit(unit.nanometer),
                    state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond))
            n_slots = len(self.centers) * int(self.plan.get("replicas", 1))
            if self.exchange and k > 0 and k % n_slots == 0 and len(self._states) == n_slots:
                box = (sim.context.getState().getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
                       if sim.system.usesPeriodicBoundaryConditions() else None)
                self.exchange_sweep(k // n_slots, box)
            if slot in self._states:
                xyz, vel = self._states.pop(slot)
                sim.context.setPositions(xyz * unit.nanometer)
                sim.context.setVelocities(vel * unit.nanometer / unit.picosecond)
            else:  # the trajectory's first segment: from the earlier frame nearest the centre, its own velocities
                xyz = self._earlier_positions()[self.plan["start_frames"][window]].astype(float)
                sim.context.setPositions(xyz * unit.nanometer)
                sim.context.setVelocitiesToTemperature(self.cfg.md.temperature * unit.kelvin,
                                                       self.seeds.restart_velocities(k))
            self.restraint.setCenters(sim.context, self.centers[window])
            self._current = slot
        self.target = window

    def exchange_sweep(self, sweep: int, box: np.ndarray | None = None) -> int:
        """Metropolis swaps of configurations between neighbouring windows before ``sweep`` (every slot stored).

        Within each replica ladder, the pairs (i, i + 1) with i of the sweep's parity (even pairs on even sweeps,
        odd on odd: a configuration can travel the whole ladder) swap their positions and velocities with
        probability min(1, exp(−Δ)), Δ = β[U_i(z_b) + U_{i+1}(z_a) − U_i(z_a) − U_{i+1}(z_b)] (a in window i, b
        in window i + 1, U the window restraints, z under the frozen encoder). All windows share one Hamiltonian
        but the restraint, so this keeps every window's restrained Boltzmann distribution and the frames of each
        window stay samples of its own state for MBAR; what it adds is that a configuration trapped on one side of
        a barrier the restraint does not resolve can move to a window where it belongs (replica-exchange umbrella
        sampling, serial in one Context: one exchange round per sweep). The draws come from the round's
        ``exchange(sweep)`` seed, so a resumed or retried segment swaps exactly as before.

        Parameters
        ----------
        sweep : int
            Index of the sweep about to start (≥ 1).
        box : numpy.ndarray, shape=(3, 3), optional
            Periodic box (nm) for the encoder (None without periodic boundary conditions; NVT: one box).

        Returns
        -------
        int
            Swaps accepted.
        """
        n_windows = len(self.centers)
        slots = sorted(self._states)
        xyz = np.stack([self._states[q][0] for q in slots]).astype(float)
        boxes = None if box is None else np.broadcast_to(np.asarray(box, float), (len(slots), 3, 3))
        z_of = dict(zip(slots, self.model.file.encode(xyz, boxes)))
        windows = umbrella_states(self.plan)  # the restraints MBAR weighs the frames with
        beta = 1.0 / kt_kjmol(self.cfg.md.temperature)
        rng = np.random.default_rng(self.seeds.exchange(sweep))
        accepted = 0
        for rep in range(self.exchange_attempts.shape[0]):
            ladder = [rep * n_windows + i for i in range(n_windows)]
            zl = np.stack([z_of[q] for q in ladder])
            reduced = np.stack([beta * w.energy(zl) for w in windows])
            perm, tried, took = neighbour_exchange(reduced, sweep % 2, rng)
            old = [self._states[q] for q in ladder]
            for i, q in enumerate(ladder):
                self._states[q] = old[perm[i]]
            self.exchange_attempts[rep] += tried
            self.exchange_accepted[rep] += took
            accepted += int(took.sum())
        logger.debug("umbrella exchange before sweep %d: %d swaps accepted", sweep, accepted)
        return accepted

    def acting(self, sim: Any) -> tuple[float, float]:
        from openmm import unit

        state = sim.context.getState(getEnergy=True, groups={self.restraint.force.getForceGroup()})
        return state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole), 1.0

    def save(self, prefix: Path) -> None:
        """``<prefix>.npz`` (checksummed arrays) and, last, ``<prefix>.json`` (its SHA-256, itself checksummed): the
        pair every campaign bias state is, which the parallel-walker driver verifies before any walker runs."""
        import hashlib

        from ..io import save_npz, write_json

        windows = np.array(sorted(self._states), dtype=np.int64)  # slots (= windows without replicas)
        empty = np.zeros((0, 0, 3))
        npz = Path(str(prefix) + ".npz")
        save_npz(npz, checksum=True, current=np.array(self._current), windows=windows,
                 positions=np.array([self._states[w][0] for w in windows]) if len(windows) else empty,
                 velocities=np.array([self._states[w][1] for w in windows]) if len(windows) else empty,
                 exchange_attempts=self.exchange_attempts, exchange_accepted=self.exchange_accepted)
        write_json(Path(str(prefix) + ".json"), {"format": _STATE_FORMAT, "slots": windows.tolist(),
                                                 "npz_sha256": hashlib.sha256(npz.read_bytes()).hexdigest()},
                   checksum=True)

    def load(self, prefix: Path) -> None:
        import hashlib

        from ..io import load_json, load_npz

        npz, meta = Path(str(prefix) + ".npz"), Path(str(prefix) + ".json")
        if meta.is_file():  # states written before the record existed are the npz alone (its own checksum)
            info = load_json(meta)
            if info.get("format") != _STATE_FORMAT or hashlib.sha256(npz.read_bytes()).hexdigest() != info.get(
                    "npz_sha256"):
                raise ValueError(f"{npz} does not match its record {meta} (another bias's state, or a torn copy); "
                                 "restore both from one run, or rerun the round in a new --rundir")
        data = load_npz(npz)
        self._current = int(data["current"])
        self._states = {int(w): (data["positions"][i], data["velocities"][i]) for i, w in enumerate(data["windows"])}
        if "exchange_attempts" in data:  # states written before exchanges existed have none
            self.exchange_attempts = np.asarray(data["exchange_attempts"], dtype=np.int64)
            self.exchange_accepted = np.asarray(data["exchange_accepted"], dtype=np.int64)


def umbrella_states(plan: dict[str, Any]) -> list[Any]:
    """One restraint :class:`~latentbias.campaign.weights.BiasState` per window of an umbrella converge plan."""
    from .weights import BiasState

    k = np.asarray(plan["force_constants"], dtype=float)
    return [BiasState("restraint", int(plan["model_round"]), center=np.asarray(c, dtype=float), k=k,
                      dims=list(plan["dims"])) for c in plan["centers"]]


def umbrella_logweights(z: np.ndarray, window: np.ndarray, use: np.ndarray, plan: dict[str, Any],
                        temperature: float) -> np.ndarray:
    """MBAR log-weights (unbiased ensemble, normalised over ``use``; −inf elsewhere) of umbrella window frames.

    Parameters
    ----------
    z : numpy.ndarray, shape=(n, d)
        Latent coordinates under the frozen encoder.
    window : numpy.ndarray of int, shape=(n,)
        Window of each frame (the ``target`` column).
    use : numpy.ndarray of bool, shape=(n,)
    plan : dict
        The umbrella converge plan.
    temperature : float
        K.
    """
    from .weights import cross_round_logweights

    state_of = np.where(use, np.asarray(window, dtype=int), -1)
    logw, _ = cross_round_logweights(umbrella_states(plan), state_of, lambda q: z, temperature)
    return logw


def umbrella_used_frames(time_ps: np.ndarray, window: np.ndarray, keep: np.ndarray, drop_last: float) -> np.ndarray:
    """``keep`` less the last ``drop_last`` fraction (by time) of each window's kept frames (the drift's older
    estimate)."""
    out = np.asarray(keep, dtype=bool).copy()
    for w in np.unique(window[out]):
        idx = np.flatnonzero(out & (window == w))
        idx = idx[np.argsort(time_ps[idx], kind="stable")]
        n_old = int(round((1.0 - drop_last) * len(idx)))
        out[idx[n_old:]] = False
    return out


def umbrella_exchange_summary(run_dir: RunDir, r: int) -> dict[str, Any] | None:
    """Exchange attempts and acceptance per neighbouring window pair of umbrella converge round r (summed over
    the replica ladders), from its last bias state; None when the round did not exchange."""
    from ..io import load_npz

    plan = run_dir.read_plan(r)
    n = run_dir.round_segments(r)
    npz = Path(str(run_dir.bias_prefix(r, n - 1)) + ".npz")
    if not plan.get("exchange", False) or n < 1 or not npz.is_file():
        return None
    data = load_npz(npz)
    if "exchange_attempts" not in data:
        return None
    attempts = np.asarray(data["exchange_attempts"]).sum(0)
    accepted = np.asarray(data["exchange_accepted"]).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(attempts > 0, accepted / np.maximum(attempts, 1), np.nan)
    return {"attempts": attempts.tolist(), "accepted": accepted.tolist(),
            "acceptance": [None if not np.isfinite(v) else round(float(v), 4) for v in rate]}


def umbrella_replicas_of_frames(campaign: Campaign, frames: dict[str, np.ndarray]) -> np.ndarray | None:
    """Replica trajectory (within its window) of every frame of an umbrella converge round, 0 for the other frames;
    None when no round of ``frames`` is an umbrella converge round with more than one replica.

    Parameters
    ----------
    campaign : Campaign
    frames : dict
        ``Campaign.all_frames`` (``round``, ``segment`` and ``walker`` of every frame).

    Returns
    -------
    numpy.ndarray of int, shape=(n_frames,), or None
    """
    out = np.zeros(len(frames["round"]), dtype=np.int64)
    found = False
    for r in np.unique(frames["round"]).astype(int):
        plan = campaign.run_dir.read_plan(int(r))
        if plan.get("strategy") != "umbrella" or int(plan.get("replicas", 1)) < 2:
            continue
        sel = frames["round"] == r
        seg = frames["segment"][sel].astype(np.int64)
        if "walker_replica_schedules" in plan:
            table = np.asarray(plan["walker_replica_schedules"], dtype=np.int64)
            out[sel] = table[frames["walker"][sel].astype(np.int64), seg]
        else:
            out[sel] = np.asarray(plan["replica_schedule"], dtype=np.int64)[seg]
        found = True
    return out if found else None
