"""Saved bias states, the running c(t) and the deposit trajectory (issue 15, mutation testing, helper mut15e).

* ``bias/statefile.py``: a ``saveState`` pair (checksummed JSON record + npz) round-trips; either file missing, a
  record that is not JSON, lacks a key, was edited, is another kind of state, or whose npz changed is refused, each
  message naming the file and giving the fix exactly once.
* ``bias/ctcache.py``: :class:`RunningCt` equals ``well_tempered_ct`` (the full log-sum-exp) when the acting scale
  changes between deposits, for deposits of zero or vanishing height, and on periodic axes not starting at 0;
  :func:`gaussian_window` is a superset of the Gaussian's reach with at most two nodes of margin per side.
* ``bias/trajectory.py``: the DCD of deposit frames holds the positions and boxes written, its header the first step
  and the interval, an existing file is continued (never overwritten) and refused without ``append``.
"""

from __future__ import annotations

import hashlib
import math
import struct

import numpy as np
import pytest

from latentbias.analysis.reweight import well_tempered_ct
from latentbias.bias.ctcache import RunningCt, WINDOW_ERROR, gaussian_window
from latentbias.bias.grid import BiasGrid, LatentVariable
from latentbias.bias.statefile import STATE_KEYS, read_state_record, state_fix
from latentbias.io import ChecksumError, save_npz, write_json

FMT = "latentbias-test-state"


def _save(prefix, **changes):
    """A state pair as saveState writes it: the npz, then the JSON record with the npz's SHA-256 and its own
    checksum."""
    npz = prefix.with_name(prefix.name + ".npz")
    save_npz(npz, selfBias=np.arange(6.0).reshape(2, 3))
    record = {"format": FMT, "version": 1, "walkerId": "abc", "otherWalkers": [], "numDeposits": 4,
              "settings": {"height": 1.0}, "npz_sha256": hashlib.sha256(npz.read_bytes()).hexdigest()}
    record.update(changes)
    write_json(prefix.with_name(prefix.name + ".json"), record, checksum=True)
    return npz, prefix.with_name(prefix.name + ".json")


# ------------------------------------------------------------------------------------ statefile

def test_a_saved_state_round_trips_with_a_dotted_prefix(tmp_path):
    prefix = tmp_path / "walker.v2"  # the files are walker.v2.npz / .json, not walker.npz
    npz, meta = _save(prefix)
    info, got_npz, fix = read_state_record(prefix, "OPES", FMT)
    assert got_npz == npz and npz.name == "walker.v2.npz" and meta.name == "walker.v2.json"
    assert set(STATE_KEYS) <= set(info) and info["numDeposits"] == 4 and info["walkerId"] == "abc"
    assert fix == state_fix(prefix) and str(prefix) in fix and "loadState" in fix
    assert read_state_record(str(prefix), "OPES", FMT)[1] == npz  # a str prefix too


@pytest.mark.parametrize("missing", ["npz", "json"])
def test_either_file_missing_is_refused(tmp_path, missing):
    prefix = tmp_path / "s"
    npz, meta = _save(prefix)
    (npz if missing == "npz" else meta).unlink()
    with pytest.raises(FileNotFoundError, match="no metadynamics state at .*s"):
        read_state_record(prefix, "metadynamics", FMT)


def test_a_record_that_is_not_json_or_lacks_a_key_names_the_file_and_the_fix_once(tmp_path):
    prefix = tmp_path / "s"
    npz, meta = _save(prefix)
    fix = state_fix(prefix)
    meta.write_text("{not json")
    with pytest.raises(ValueError) as err:
        read_state_record(prefix, "OPES", FMT)
    assert str(meta) in str(err.value) and str(err.value).count(fix) == 1
    write_json(meta, {k: 1 for k in STATE_KEYS if k != "numDeposits"}, checksum=True)
    with pytest.raises(ValueError) as err:
        read_state_record(prefix, "OPES", FMT)
    assert "numDeposits" in str(err.value) and str(err.value).count(fix) == 1


def test_an_edited_record_another_kind_and_a_changed_npz_are_refused(tmp_path):
    prefix = tmp_path / "s"
    npz, meta = _save(prefix)
    meta.write_text(meta.read_text().replace('"numDeposits": 4', '"numDeposits": 5'))
    with pytest.raises(ChecksumError) as err:
        read_state_record(prefix, "OPES", FMT)
    assert str(meta) in str(err.value) and str(err.value).count(state_fix(prefix)) == 1
    _save(prefix, format="latentbias-other-state")
    with pytest.raises(ValueError, match="is not a latentbias OPES state"):
        read_state_record(prefix, "OPES", FMT)
    _save(prefix)
    save_npz(npz, selfBias=np.arange(6.0).reshape(2, 3) + 1.0)  # a later save of the arrays only
    with pytest.raises(ValueError, match="does not match the checksum"):
        read_state_record(prefix, "OPES", FMT)


# ------------------------------------------------------------------------------------ ctcache

def _grid(periodic=False, lo=-1.0, hi=2.0, n=61, width=0.1):
    return BiasGrid([LatentVariable(0, lo, hi, width, periodic=periodic, gridWidth=n)])


def test_running_ct_follows_a_scale_changed_between_deposits():
    """c_s(t) for s = 1, 0.3, 1, 0 (the acting scale of a scaled or switched-off bias) == well_tempered_ct."""
    grid = _grid()
    bias = np.zeros(grid.shape)
    running = RunningCt(300.0, 6.0)
    rng = np.random.default_rng(0)
    for k, scale in enumerate([1.0, 0.3, 1.0, 0.0, 0.3, 0.3, 2.0] * 3):
        assert running.value(bias, scale) == pytest.approx(well_tempered_ct(bias, 300.0, 6.0, scale=scale),
                                                           rel=1e-13, abs=1e-12), k
        centre, height = rng.uniform(-1.0, 2.0, size=1), rng.uniform(0.5, 3.0)
        grid.add_gaussian(bias, centre, height, np.empty(grid.shape))
        running.update(bias, running.window(grid, centre, height), height)


def test_running_ct_with_zero_and_vanishing_heights():
    """A zero-height deposit (a well-tempered height that underflowed) or a tiny one: the window is that of the cut
    0.5 (no division by zero, no cut ≥ 1), and c(t) stays the full log-sum-exp."""
    grid = _grid()
    running = RunningCt(300.0, 10.0)
    for height in (0.0, 1e-30, -0.0):
        assert running.window(grid, [0.5], height) == gaussian_window(grid, [0.5], 0.5)
    bias = np.zeros(grid.shape)
    grid.add_gaussian(bias, [0.2], 2.0, np.empty(grid.shape))
    assert running.value(bias) == pytest.approx(well_tempered_ct(bias, 300.0, 10.0), rel=1e-13)
    for height in (1e-30, 0.0):
        grid.add_gaussian(bias, [0.9], height, np.empty(grid.shape))
        running.update(bias, running.window(grid, [0.9], height), height)
        assert running.value(bias) == pytest.approx(well_tempered_ct(bias, 300.0, 10.0), rel=1e-13)
    # the cut of a normal deposit is WINDOW_ERROR / (a β h): its window reaches sqrt(2 ln(1/cut)) widths (a fine
    # grid, 1e-3 spacing, so that a cut off by a factor kT² would move the window's ends by ~20 nodes)
    fine = _grid(n=3001)
    a, kt = 10.0 / 9.0, 300.0 * 0.0083144626181532
    cut = WINDOW_ERROR / (a * 2.0 / kt)
    assert running.window(fine, [0.5], 2.0) == gaussian_window(fine, [0.5], cut)
    assert running.window(fine, [0.5], 2.0) != gaussian_window(fine, [0.5], cut / kt**2)


def test_running_ct_is_evaluated_afresh_every_full_interval_deposits():
    """Every FULL_INTERVAL deposits the sums are re-evaluated over the whole grid (bounding the drift of the window
    updates): the value right after the FULL_INTERVAL-th update is, bit for bit, that of a fresh evaluation."""
    from latentbias.bias.ctcache import FULL_INTERVAL

    grid = _grid(n=400, width=0.02)
    bias = np.zeros(grid.shape)
    running = RunningCt(300.0, 6.0)
    rng = np.random.default_rng(9)
    running.value(bias)
    for k in range(1, 2 * FULL_INTERVAL + 1):
        centre, height = rng.uniform(-1.0, 2.0, size=1), rng.uniform(0.2, 1.0)
        grid.add_gaussian(bias, centre, height, np.empty(grid.shape))
        running.update(bias, running.window(grid, centre, height), height)
        if k % FULL_INTERVAL == 0:
            assert running.value(bias) == RunningCt(300.0, 6.0).value(bias), k
        else:
            running.value(bias)


def test_running_ct_on_a_periodic_axis_not_starting_at_zero():
    grid = _grid(periodic=True, lo=-1.0, hi=2.0, n=60, width=0.08)
    bias = np.zeros(grid.shape)
    running = RunningCt(300.0, 8.0)
    rng = np.random.default_rng(4)
    for k in range(40):
        assert running.value(bias) == pytest.approx(well_tempered_ct(bias, 300.0, 8.0), rel=1e-13, abs=1e-12), k
        centre, height = rng.uniform(-5.0, 6.0, size=1), rng.uniform(0.5, 3.0)  # centres several periods away
        grid.add_gaussian(bias, centre, height, np.empty(grid.shape))
        running.update(bias, running.window(grid, centre, height), height)


@pytest.mark.parametrize("periodic", [False, True])
def test_gaussian_window_is_the_reach_plus_at_most_two_nodes_per_side(periodic):
    """Every node outside the window has its axis factor below ``cut``; inside, at most two nodes on each side are
    below it (the margin), unless the window is clipped by an edge or is the whole periodic axis."""
    lo, hi, n = -1.0, 2.0, 121
    grid = _grid(periodic=periodic, lo=lo, hi=hi, n=n, width=0.05)
    for centre in (0.31, -0.77, 1.5, 0.5 + 3.0 * 7, -1.0 + 0.0249 * 3):
        for cut in (1e-14, 1e-6, 0.3):
            factor = grid.gaussian_factors([centre])[0]
            (window,) = gaussian_window(grid, [centre], cut)
            inside = np.zeros(n, bool)
            inside[window] = True
            assert np.all(factor[~inside] < cut), (centre, cut)
            idx = np.flatnonzero(inside)
            above = np.flatnonzero(factor >= cut)
            if above.size == 0:  # a centre far beyond an edge: nothing to update
                assert idx.size == 0 and not periodic
                continue
            if window == slice(0, n):  # the reach wraps the periodic axis
                assert periodic
                continue
            low_margin, high_margin = above.min() - idx.min(), idx.max() - above.max()
            assert 0 <= low_margin <= 2 and 0 <= high_margin <= 2, (centre, cut, window, above)


def test_gaussian_window_has_one_slice_per_axis_after_a_wrapping_periodic_axis():
    """A periodic first axis whose reach wraps gets the whole axis; the non-periodic axis after it still gets its own
    narrow slice (one slice per axis, as documented)."""
    grid = BiasGrid([LatentVariable(0, -1.0, 1.0, 0.3, periodic=True, gridWidth=21),
                     LatentVariable(1, 0.0, 10.0, 0.1, gridWidth=201)])
    window = gaussian_window(grid, [0.95, 5.0], 1e-6)
    assert len(window) == 2 and window[0] == slice(0, 21)
    assert 0 < window[1].stop - window[1].start < 30
    factor = grid.gaussian_factors([0.95, 5.0])[1]
    outside = np.ones(201, bool)
    outside[window[1]] = False
    assert np.all(factor[outside] < 1e-6)


def test_gaussian_window_of_a_periodic_image_is_the_same_and_bad_cuts_are_refused():
    """On a periodic axis [-1, 2) (period 3, not starting at 0) a centre and its images k·3 away give one window,
    a narrow one (the reach does not wrap); a cut outside (0, 1) is refused by name."""
    grid = _grid(periodic=True, lo=-1.0, hi=2.0, n=121, width=0.05)
    for base in (0.31, -0.62, 1.4):
        (ref,) = gaussian_window(grid, [base], 1e-6)
        assert 0 < ref.stop - ref.start < 30, ref
        for k in (-2, -1, 1, 3):
            assert gaussian_window(grid, [base + 3.0 * k], 1e-6) == (ref,), (base, k)
    for bad in (0.0, -0.5, 1.0, 1.5):
        with pytest.raises(ValueError, match="cut must lie in"):
            gaussian_window(grid, [0.3], bad)


# ------------------------------------------------------------------------------------ deposit trajectory

def _simulation(current_step=0):
    import openmm
    from openmm import app, unit

    top = app.Topology()
    chain = top.addChain()
    for name in ("A", "B"):
        top.addAtom(name, app.Element.getBySymbol("Ar"), top.addResidue(name, chain))
    system = openmm.System()
    for _ in range(2):
        system.addParticle(39.9)
    box = (openmm.Vec3(2, 0, 0), openmm.Vec3(0, 2.5, 0), openmm.Vec3(0, 0, 3))
    system.setDefaultPeriodicBoxVectors(*box)
    top.setPeriodicBoxVectors(box)
    integ = openmm.VerletIntegrator(0.002 * unit.picoseconds)
    sim = app.Simulation(top, system, integ, openmm.Platform.getPlatformByName("Reference"))
    sim.context.setPositions([openmm.Vec3(0.1, 0.2, 0.3), openmm.Vec3(0.5, 0.6, 0.7)] * unit.nanometer)
    sim.currentStep = current_step
    return sim


def _header(path):
    """(frames, first step, interval) of a DCD header."""
    return struct.unpack("<3i", path.read_bytes()[8:20])


def test_deposit_trajectory_writes_positions_boxes_and_header(tmp_path):
    import mdtraj as md
    import openmm
    from openmm import unit

    from latentbias.bias.trajectory import DepositTrajectory

    path = tmp_path / "dep.dcd"
    sim = _simulation(current_step=40)
    traj = DepositTrajectory(path, append=False)
    assert not path.exists()  # opened lazily at the first deposit
    expected = []
    for k in range(3):
        pos = [openmm.Vec3(0.1 * k, 0.2, 0.3), openmm.Vec3(0.5, 0.6 + 0.1 * k, 0.7)] * unit.nanometer
        sim.context.setPositions(pos)
        traj.write(sim, sim.context.getState(getPositions=True), 20)
        expected.append([[0.1 * k, 0.2, 0.3], [0.5, 0.6 + 0.1 * k, 0.7]])
    assert _header(path) == (3, 40, 20)
    top = md.Topology.from_openmm(sim.topology)
    t = md.load(str(path), top=top)
    np.testing.assert_allclose(t.xyz, expected, atol=1e-5)
    np.testing.assert_allclose(t.unitcell_lengths, [[2.0, 2.5, 3.0]] * 3, atol=1e-5)
    with pytest.raises(FileExistsError, match="appendRecord=True"):
        DepositTrajectory(path, append=False)
    # continuing: the file is appended to, never overwritten
    more = DepositTrajectory(path, append=True)
    more.write(sim, sim.context.getState(getPositions=True), 20)
    assert md.load(str(path), top=top).n_frames == 4 and _header(path)[0] == 4
    # an empty file left by a run that never deposited is started afresh
    empty = tmp_path / "empty.dcd"
    empty.write_bytes(b"")
    DepositTrajectory(empty, append=True).write(sim, sim.context.getState(getPositions=True), 5)
    assert md.load(str(empty), top=top).n_frames == 1 and _header(empty) == (1, 40, 5)
    # a damaged file (one byte: no DCD header) is never overwritten: continuing it fails and leaves it as it was
    damaged = tmp_path / "damaged.dcd"
    damaged.write_bytes(b"x")
    with pytest.raises(ValueError, match="invalid DCD header"):  # OpenMM's DCDFile refuses to append
        DepositTrajectory(damaged, append=True).write(sim, sim.context.getState(getPositions=True), 5)
    assert damaged.read_bytes() == b"x"
    # a new file with append=True is simply created
    fresh = tmp_path / "fresh.dcd"
    DepositTrajectory(fresh, append=True).write(sim, sim.context.getState(getPositions=True), 7)
    assert _header(fresh) == (1, 40, 7)
