"""A segment that blows up is run again from its last committed state with a shorter time step
(latentbias.campaign.instability).

Toy: the 2-D three-well toy of tests/campaign_toy.py with a stiff harmonic confinement of the mobile particle in z,
k_z = 4.9e6 kJ/mol/nm² on mass 10 (ω = 700 /ps): at the configured 4 fs, ω·dt = 2.8 > 2 and the Langevin-middle
integrator is unstable in z (it explodes within a few hundred steps, every segment); at 2 fs, ω·dt = 1.4 and it is
stable. So every segment of the campaign must be retried once, at 2 fs, and nothing else may change.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import openmm
import pytest

from latentbias.campaign import Campaign, load_config
from latentbias.campaign.config import ConfigError
from latentbias.campaign.instability import (RETRY_TIMESTEP_FACTORS, SimulationBlowUpError,
                                             check_kinetic_temperature, kinetic_temperature_limit, run_with_retries)
from latentbias.campaign.rundir import RunDir
from latentbias.nonfinite import NonFiniteBiasError

from campaign_toy import toy_config_text, write_toy_system

BOLTZ = 0.00831446261815324


def _stiff_toy(folder: Path, omega: float) -> Path:
    """The campaign toy with a harmonic z-confinement of frequency ``omega`` (1/ps) on particle 0 (mass 10)."""
    write_toy_system(folder)
    system = openmm.XmlSerializer.deserialize((folder / "system.xml").read_text())
    spring = openmm.CustomExternalForce("0.5*kz*z^2")
    spring.addGlobalParameter("kz", 10.0 * omega ** 2)
    spring.addParticle(0, [])
    system.addForce(spring)
    (folder / "system.xml").write_text(openmm.XmlSerializer.serialize(system))
    text = toy_config_text(rounds=2, steps=6000, round0=4000, checkpoint=2000)
    (folder / "toy.toml").write_text(text)
    return folder / "toy.toml"


def _frames(rundir: Path) -> dict[str, np.ndarray]:
    run_dir = RunDir(rundir)
    out: dict[str, list[np.ndarray]] = {"positions": [], "time_ps": [], "step": [], "round": []}
    for r in (0, 1):
        for k in range(run_dir.round_segments(r)):
            seg = run_dir.read_segment(r, k)
            seg = dict(seg, round=np.full(len(seg["step"]), r))
            for key in out:
                out[key].append(np.asarray(seg[key]))
    return {key: np.concatenate(v) for key, v in out.items()}


# ------------------------------------------------------------------------------------------------ unit level

def test_limit_is_a_chi_square_tail_and_at_least_five_times_the_thermostat():
    assert kinetic_temperature_limit(300.0, 54) == pytest.approx(1500.0)  # ala2 with HBonds: the 5x floor
    from scipy.stats import chi2

    assert kinetic_temperature_limit(300.0, 3) == pytest.approx(300.0 * chi2.isf(1e-12, 3) / 3)
    assert kinetic_temperature_limit(300.0, 3) > 19 * 300.0  # small systems fluctuate more: a higher limit


def test_check_passes_maxwell_boltzmann_frames_and_flags_a_hot_one():
    system = openmm.System()
    for _ in range(30):
        system.addParticle(12.0)
    check = check_kinetic_temperature(system, 300.0)
    assert check.dof == 90
    rng = np.random.default_rng(3)
    v = rng.normal(scale=np.sqrt(BOLTZ * 300.0 / 12.0), size=(2000, 30, 3))  # nm/ps
    temps = np.array([check.kinetic_temperature(x) for x in v])
    assert abs(temps.mean() - 300.0) < 5.0
    for x in v:
        check(x, 10)  # no false alarm in 2000 equilibrium frames
    with pytest.raises(SimulationBlowUpError, match=r"step 77: kinetic temperature .* thermostat 300 K"):
        check(v[0] * np.sqrt(6.0), 77)  # 6x the kinetic energy: 1800 K > 1500 K
    with pytest.raises(SimulationBlowUpError):
        check(np.full((30, 3), np.nan), 78)


def test_massless_particles_and_constraints_are_not_degrees_of_freedom():
    system = openmm.System()
    for m in (12.0, 1.0, 0.0):
        system.addParticle(m)
    system.addConstraint(0, 1, 0.1)
    assert check_kinetic_temperature(system, 300.0).dof == 3 * 2 - 1


def test_retries_shorten_the_step_and_stop_at_the_first_success(caplog):
    calls = []

    def attempt(factor: float) -> str:
        calls.append(factor)
        if factor > 0.3:
            raise SimulationBlowUpError("the simulation blew up by step 9. details")
        return f"ok at {factor}"

    with caplog.at_level(logging.WARNING, logger="latentbias.campaign.instability"):
        assert run_with_retries(attempt, "round 2 segment 7") == "ok at 0.25"
    assert calls == [1.0, *RETRY_TIMESTEP_FACTORS] == [1.0, 0.5, 0.25]
    text = caplog.text
    assert "round 2 segment 7 became unstable" in text and "passed with the time step x 0.25" in text


def test_when_every_retry_fails_the_first_error_is_raised_naming_the_retries():
    def attempt(factor: float) -> None:
        raise NonFiniteBiasError(f"positions are NaN at factor {factor}. Fix the model")

    with pytest.raises(NonFiniteBiasError, match=r"factor 1\.0.*round 1 segment 0 was run again .* x 0\.5: "
                                                 r"positions are NaN at factor 0\.5; x 0\.25: .*unstable every time"):
        run_with_retries(attempt, "round 1 segment 0")


def test_other_errors_are_not_retried():
    calls = []

    def attempt(factor: float) -> None:
        calls.append(factor)
        raise ValueError("a bug, not an instability")

    with pytest.raises(ValueError, match="a bug"):
        run_with_retries(attempt, "round 1 segment 0")
    assert calls == [1.0]


# ------------------------------------------------------------------------------------------------ campaign level

@pytest.fixture(scope="module")
def retried_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stiff")
    config = _stiff_toy(folder, omega=700.0)
    campaign = Campaign(load_config(config), folder / "run", progress=False)
    campaign.run()
    return campaign, folder


def test_an_unstable_step_is_retried_at_half_the_step_in_every_segment(retried_run):
    campaign, folder = retried_run
    progress = json.loads((folder / "run" / "progress.json").read_text())
    assert progress["finished"]
    frames = _frames(folder / "run")
    assert np.all(np.isfinite(frames["positions"]))
    # frames every 100 steps; every segment ran at 2 fs (the configured 4 fs blew up), so 0.2 ps apart
    for r in (0, 1):
        mine = frames["round"] == r
        assert set(np.diff(frames["step"][mine]).tolist()) == {100}
        np.testing.assert_allclose(np.diff(frames["time_ps"][mine]), 100 * 0.002, rtol=1e-9)
    # the mobile particle stayed confined in z (kT/k_z: sd 7e-4 nm) and sampled the wells in x, y
    z = frames["positions"][:, 0, 2].astype(float)
    assert np.abs(z).max() < 0.01
    assert np.ptp(frames["positions"][:, 0, 0]) > 0.1
    log = (folder / "run" / "campaign.log").read_text()
    assert log.count("became unstable") == log.count("passed with the time step x 0.5") >= 5


def test_a_resumed_run_repeats_the_retries_and_gives_identical_frames(retried_run, tmp_path, monkeypatch):
    campaign, folder = retried_run
    config = _stiff_toy(tmp_path, omega=700.0)

    class Killed(BaseException):
        pass

    original = RunDir.commit_segment
    state = {"n": 0}

    def commit_then_die(self, r, k, *args, **kwargs):
        original(self, r, k, *args, **kwargs)
        if r == 1 and k == 1 and state["n"] == 0:
            state["n"] += 1
            raise Killed

    monkeypatch.setattr(RunDir, "commit_segment", commit_then_die)
    with pytest.raises(Killed):
        Campaign(load_config(config), tmp_path / "run", progress=False).run()
    Campaign(load_config(config), tmp_path / "run", progress=False).run()
    a, b = _frames(folder / "run"), _frames(tmp_path / "run")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_a_system_unstable_at_every_step_tried_fails_with_a_clear_error(tmp_path, monkeypatch):
    config = _stiff_toy(tmp_path, omega=3000.0)  # omega*dt = 12, 6, 3 at 4, 2, 1 fs: unstable at every factor
    # the dry build before any round already refuses a system this unstable (it runs a few steps of each round)
    with pytest.raises(ConfigError, match="non-finite latent value"):
        Campaign(load_config(config), tmp_path / "run", progress=False).run()
    # past it (here: skipped), the segment's retries fail one after the other and the error says what was tried
    monkeypatch.setattr("latentbias.campaign.preflight.dry_build", lambda campaign: None)
    with pytest.raises((NonFiniteBiasError, SimulationBlowUpError),
                       match=r"round 0 segment 0 was run again .* x 0\.5: .* x 0\.25: .*unstable every time.*"
                             r"Shorten \[md\] timestep"):
        Campaign(load_config(config), tmp_path / "run2", progress=False).run()


def test_parallel_walkers_retry_their_own_segments(tmp_path):
    config = _stiff_toy(tmp_path, omega=700.0)
    config.write_text(config.read_text() + "\n[execution]\nwalkers = 2\n")
    Campaign(load_config(config), tmp_path / "run", progress=False).run()
    run_dir = RunDir(tmp_path / "run")
    seg = [run_dir.read_segment(1, k) for k in range(run_dir.round_segments(1))]
    walkers = np.concatenate([s["walker"] for s in seg])
    times = np.concatenate([s["time_ps"] for s in seg])
    positions = np.concatenate([s["positions"] for s in seg])
    assert set(walkers.tolist()) == {0, 1} and np.all(np.isfinite(positions))
    for w in (0, 1):
        np.testing.assert_allclose(np.diff(times[walkers == w]), 100 * 0.002, rtol=1e-9)  # every segment at 2 fs
    log = (tmp_path / "run" / "campaign.log").read_text()
    for w in (0, 1):
        assert f"round 1 segment 0 walker {w} passed with the time step x 0.5" in log
