"""Every campaign bias state reproduces, on its own frames, the bias that acted on them when they were sampled.

This is what makes the cross-round MBAR weights right: ``u_kn`` is built from ``BiasState.energy`` evaluated
through the state's own encoder, so for the frames sampled in state k it must equal the bias recorded by the
running simulation (``bias_kjmol``, read from the OpenMM Context at sampling time). Checked for restraint states
(frontier pulls), metadynamics segments, scaled states (OOD guard action "off": table scale 0) and capped states
(action "cap": no new Gaussians, restraints off). Only the public ``Campaign`` API is used (``all_frames``,
``bias_states``, ``model``) plus the per-segment bias grids through ``_segment_grids`` below.

Kept in its own file (issue 15) so that imports can follow when ``campaign/loop.py`` is split into modules.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from latentbias.campaign import Campaign, load_config

from campaign_toy import toy_config_text, write_toy_system

ROUNDS = 3


def _config_text(action: str) -> str:
    text = toy_config_text(rounds=ROUNDS, steps=4000, round0=4000, checkpoint=1000)
    text = text.replace('strategy = "metadynamics"', 'strategy = ["frontier", "metadynamics"]')
    # a low threshold so that the guard fires in some segments (mid-segment) and not in others; the toy trains on
    # ~100 frames, so the guard must be allowed to judge from fewer than the default 200
    return text + f'\n[ood]\nthreshold = 2.0\naction = "{action}"\nmin_frames = 20\n'


@pytest.fixture(scope="module", params=["off", "cap"])
def run(request, tmp_path_factory) -> tuple[Campaign, str]:
    """A finished 3-round campaign (unbiased, frontier, metadynamics) and its OOD action."""
    folder = tmp_path_factory.mktemp(f"states_{request.param}")
    write_toy_system(folder)
    (folder / "toy.toml").write_text(_config_text(request.param))
    c = Campaign(load_config(folder / "toy.toml"), folder / "run", progress=False)
    c.run()
    return c, request.param


def _segment_grids(c: Campaign, r: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Metadynamics bias grid at the start and at the end of segment k of round r (kJ/mol)."""
    from latentbias.io import load_npz

    end = load_npz(c.run_dir.segment_file(r, k))["grid_end"]
    if k > 0:
        return load_npz(c.run_dir.segment_file(r, k - 1))["grid_end"], end
    initial = c.initial_bias(r)
    return (np.zeros_like(end) if initial is None else initial), end


# Tolerances (kJ/mol). Restraint: the stored positions are float32 (the simulation used float64): 1e-3.
# Metadynamics: the Context interpolates the table with cubic splines, BiasState multilinearly; on this grid
# (2.4 points per Gaussian width) the two differed by up to 0.06 kJ/mol in these runs: tolerance 0.2.
RESTRAINT_TOL = 1e-3
SPLINE_TOL = 0.2


def _check_unbiased(c, state, frames, sel, z):
    np.testing.assert_array_equal(frames["bias_kjmol"][sel], 0.0)
    np.testing.assert_array_equal(state.energy(np.zeros((int(sel.sum()), 0))), 0.0)


def _check_restraint(c, state, frames, sel, z):
    np.testing.assert_allclose(state.energy(z[sel]), frames["bias_kjmol"][sel], rtol=1e-4, atol=RESTRAINT_TOL)


def _check_metad(c, state, frames, sel, z):
    """The state's grid is the average of the grids at the segment's start and end; the bias that acted on a
    frame lies between the biases of those two grids (Gaussians only add). So the recorded bias must lie in
    [V_start(z), V_end(z)] and differ from the state's energy by at most V_end(z) - V_start(z)."""
    rounds, segs = np.unique(frames["round"][sel]), np.unique(frames["segment"][sel])
    assert len(rounds) == 1 and len(segs) == 1, "a metadynamics state covers exactly one segment"
    start, end = _segment_grids(c, int(rounds[0]), int(segs[0]))
    v_start = dataclasses.replace(state, grid=start).energy(z[sel])
    v_end = dataclasses.replace(state, grid=end).energy(z[sel])
    recorded = frames["bias_kjmol"][sel]
    assert np.all(recorded >= v_start - SPLINE_TOL) and np.all(recorded <= v_end + SPLINE_TOL)
    assert np.all(np.abs(state.energy(z[sel]) - recorded) <= (v_end - v_start) + SPLINE_TOL)


CHECKS = {
    "unbiased": _check_unbiased,
    "restraint": _check_restraint,
    "metad": _check_metad,
    # "opes": OPES states do not exist yet. When they do, add a check here: the state's energy through its own
    # encoder must equal the OPES bias recorded on its frames (V(s, t) from the kernels at sampling time, or
    # bracketed by the kernel sets at the segment's start and end, as for "metad").
}


def test_every_state_reproduces_the_recorded_bias_on_its_frames(run):
    """Frames in the equilibrium estimate (state >= 0): their state's energy reproduces the recorded bias.
    Frames kept out of it (state -1: round 0, frontier pulls and releases, bias switched off) are checked too:
    a pull frame's restraint, rebuilt as the BiasState of its target in the latent space of the round's model,
    equals the bias recorded while it was sampled (the wrong round's encoder is off by up to 110 kJ/mol)."""
    from latentbias.campaign.weights import BiasState

    campaign, action = run
    frames = campaign.all_frames(ROUNDS - 1)
    states, state_of = campaign.bias_states(frames)
    positions = frames["positions"].astype(float)
    z_cache: dict[int, np.ndarray] = {}

    def z_of(q):
        if q not in z_cache:
            z_cache[q] = campaign.model(q).file.encode(positions)
        return z_cache[q]

    seen = set()
    for s in np.unique(state_of[state_of >= 0]):
        state = states[s]
        assert state.kind in CHECKS, f"no check for bias-state kind {state.kind!r}: add one to CHECKS"
        sel = state_of == s
        CHECKS[state.kind](campaign, state, frames, sel, None if state.kind == "unbiased" else z_of(state.model_round))
        seen.add((state.kind, float(state.scale) if state.kind == "metad" else None))
    assert ("metad", 1.0) in seen
    # kept out of the estimate: round 0, frontier rounds, and frames whose bias the guard switched off
    rounds = frames["round"]
    assert np.all(state_of[rounds == 0] == -1)
    assert np.all(state_of[(frames["kind"] == 1)] == -1)
    assert np.all(state_of[frames["scale"] == 0.0] == -1)
    # pull frames: the restraint that acted, through the encoder of the round before
    pulled = np.flatnonzero((frames["kind"] == 1) & (frames["scale"] > 0))
    assert pulled.size > 0
    for r in np.unique(rounds[pulled]):
        plan = campaign.run_dir.read_plan(int(r))
        for t in np.unique(frames["target"][pulled][rounds[pulled] == r]):
            sel = np.zeros(len(rounds), bool)
            sel[pulled] = True
            sel &= (rounds == r) & (frames["target"] == t)
            state = BiasState("restraint", int(r) - 1, np.array(plan["targets"][int(t)]),
                              campaign.cfg.frontier.restraint_k)
            _check_restraint(campaign, state, frames, sel, z_of(int(r) - 1))
    if action == "off":
        assert np.any((frames["kind"] == 2) & (frames["scale"] == 0.0)), "the guard never switched a bias off"
    if action == "cap":  # capped metadynamics: the guard fired, deposition stopped, the bias still acts
        capped = (frames["kind"] == 2) & frames["ood"].astype(bool) & (frames["bias_kjmol"] > 0.5)
        assert np.any(capped), "no capped metadynamics frame with a bias acting in this run"


def test_biased_frames_are_not_all_trivially_zero(run):
    """Guard against a vacuous pass: restraint frames with a substantial bias (> 1 kJ/mol) and metadynamics frames
    with a bias from earlier Gaussians (> 0.1 kJ/mol; each frame carries the bias from before its own step's
    deposit, and with action "off" the guard switches the bias off after ~14 of the round's 40 frames, below
    1.1 kJ/mol) exist in every run."""
    frames = run[0].all_frames(ROUNDS - 1)
    for kind, above, count in ((1, 1.0, 3), (2, 0.1, 2)):
        sel = frames["kind"] == kind
        assert np.count_nonzero(frames["bias_kjmol"][sel] > above) >= count, kind


def test_metadynamics_frames_carry_the_bias_from_before_the_deposit_at_their_step(run):
    """A frame saved at a deposit step (here every frame: save_interval = frequency) was sampled under the bias
    *before* that step's Gaussian, which is centred on the frame's own z and would add its whole height to the
    frame's bias. So ``bias_kjmol`` and ``ct_kjmol`` of every metadynamics frame equal the values the walker's
    deposit record holds for that step (read from the Context before the deposit; tests/
    test_mutation_survivors_metadynamics.py checks that record against the grid before the deposit), and the bias
    after the deposit is higher by the deposited height (> 0) wherever deposition was on."""
    from latentbias.io import load_npz

    campaign, action = run
    frames = campaign.all_frames(ROUNDS - 1)
    r = ROUNDS - 1
    sel = np.flatnonzero((frames["round"] == r) & (frames["kind"] == 2))
    assert sel.size > 10
    last = int(frames["segment"][sel].max())
    data = load_npz(str(campaign.run_dir.bias_prefix(r, last)) + ".npz")
    steps = np.asarray(data["record_step"], dtype=np.int64)
    where = {int(s): i for i, s in enumerate(steps)}
    idx = np.array([where[int(s)] for s in frames["step"][sel]])  # every frame sits on a recorded deposit step
    scale = frames["scale"][sel]
    before = scale * data["record_bias_kjmol"][idx] + data["record_wall_kjmol"][idx]
    np.testing.assert_allclose(frames["bias_kjmol"][sel], before, rtol=0, atol=1e-6)
    np.testing.assert_allclose(frames["ct_kjmol"][sel], data["record_ct_kjmol"][idx], rtol=0, atol=1e-6)
    # not vacuous: the next record at the same z would be higher by the deposit; at least the biased frames of
    # an uncapped segment see it (the Gaussian's height at its own centre, h e^{-V/kT(γ-1)} > 0)
    m = campaign.cfg.metadynamics
    kt = 8.314462618e-3 * campaign.cfg.md.temperature
    height = m.height * np.exp(-data["record_bias_kjmol"][idx] / (kt * (m.bias_factor - 1.0)))
    assert np.all(height > 0.05)
