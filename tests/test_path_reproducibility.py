"""Reproducible umbrella windows along a path (:func:`latentbias.pathway.relax.relax_path`).

The broken case this guards: the default seed 0 was handed to OpenMM's integrator, where 0 means "pick a seed at
random", so two runs of the same path (back to back in one process, as the villin API + CLI test does) gave
different windows; and one Context served all windows, so a resumed run continued another random stream than an
uninterrupted one."""

from __future__ import annotations

import numpy as np
import pytest

from latentbias.pathway import relax_path
from latentbias.pathway.relax import window_seeds

from conftest import perturbed_frames

KW = dict(equilibration_steps=10, production_steps=60, sample_interval=10, minimize_iterations=30,
          minimize_tolerance=50.0)


def _nodes(model_path, xyz):
    import latentbias as lb

    z = lb.load_model(model_path).encode(perturbed_frames(xyz, 20, scale=0.01, seed=3))
    lo, hi = z.min(0), z.max(0)
    return np.linspace(lo, hi, 3)


def _arrays(w):
    return {"structures": w.structures, "structure_z": w.structure_z, "energy": w.potential_energy,
            "z": np.concatenate(w.umbrella.z)}


def _assert_identical(a, b):
    for key, x in _arrays(a).items():
        y = _arrays(b)[key]
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), key  # bitwise, not allclose


@pytest.mark.parametrize("platform, properties", [("Reference", None), ("CPU", {"Threads": "1"})])
def test_path_windows_are_reproducible_and_resumable(ala2, ala2_model, tmp_path, platform, properties):
    """Same seed twice in one process (seed 0 too: OpenMM's "random" seed before the fix) -> bitwise identical
    windows; a resumed run (one window file removed) -> the uninterrupted run's windows; another seed -> other
    windows; resuming with another seed is refused."""
    system, _, xyz = ala2
    nodes = _nodes(ala2_model, xyz)
    x0 = np.repeat(xyz[None], len(nodes), axis=0)
    kw = dict(KW, platform=platform, platform_properties=properties, temperature=300.0)
    first = relax_path(ala2_model, system, nodes, x0, seed=0, output_dir=tmp_path / "a", **kw)
    second = relax_path(ala2_model, system, nodes, x0, seed=0, output_dir=tmp_path / "b", **kw)
    _assert_identical(first, second)
    assert first.settings["seed"] == 0
    if platform == "CPU":
        assert first.settings["threads"] == 1
    # resume: window 1 recomputed after window 0 was read from its file -> what the uninterrupted run had
    (tmp_path / "a" / "window_001.npz").unlink()
    resumed = relax_path(ala2_model, system, nodes, x0, seed=0, output_dir=tmp_path / "a", **kw)
    _assert_identical(first, resumed)
    other = relax_path(ala2_model, system, nodes, x0, seed=1, **kw)
    for key, x in _arrays(first).items():
        if key != "energy":  # a quench can land two runs in the same minimum only by chance; the samples cannot
            assert not np.array_equal(x, _arrays(other)[key]), key
    assert not np.array_equal(first.umbrella.z[0], other.umbrella.z[0])
    with pytest.raises(ValueError, match="seed differ"):
        relax_path(ala2_model, system, nodes, x0, seed=1, output_dir=tmp_path / "a", **kw)


def test_window_seeds():
    """Per-window seeds: never OpenMM's "random" 0, in its int32 range, distinct across windows and streams,
    a function of (seed, window) only; bad seeds refused."""
    seeds = np.array([window_seeds(s, w) for s in (0, 1, 2**40) for w in range(50)])
    assert seeds.min() >= 1 and seeds.max() <= 2**31 - 1
    assert len(np.unique(seeds)) == seeds.size
    assert window_seeds(0, 7) == window_seeds(0, 7) and window_seeds(0, 7) != window_seeds(1, 7)
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(ValueError, match="seed must be a non-negative integer"):
            window_seeds(bad, 0)


def test_cli_threads_option_is_checked(tmp_path):
    """``latentbias path --threads`` pins the CPU platform's thread count; refused on another platform or < 1."""
    from latentbias.cli import main

    base = ["path", str(tmp_path / "no_run"), "--quiet"]
    with pytest.raises(SystemExit, match="--threads sets the CPU platform's thread count"):
        main(base + ["--platform", "Reference", "--threads", "2"])
    with pytest.raises(SystemExit, match="--threads must be >= 1"):
        main(base + ["--platform", "CPU", "--threads", "0"])
    with pytest.raises(SystemExit, match="not a campaign run directory"):  # got past the option check
        main(base + ["--platform", "CPU", "--threads", "1"])


def test_window_files_carry_a_checksum(ala2, ala2_model, tmp_path, caplog):
    """A window file is written with a checksum: a damaged one is refused with its name and the fix (never read as
    samples), one without a checksum (an older version's) is read with a warning naming it, and gives the same
    windows."""
    import logging

    from latentbias.io import NPZ_CHECKSUM_KEY, load_npz, save_npz

    system, _, xyz = ala2
    nodes = _nodes(ala2_model, xyz)
    x0 = np.repeat(xyz[None], len(nodes), axis=0)
    kw = dict(KW, platform="Reference", temperature=300.0)
    out = tmp_path / "w"
    first = relax_path(ala2_model, system, nodes, x0, seed=4, output_dir=out, **kw)
    path = out / "window_001.npz"
    with np.load(path) as raw:
        stored = {k: raw[k] for k in raw.files}
    assert NPZ_CHECKSUM_KEY in stored
    data = load_npz(path)
    # an older version's file: the same arrays without the checksum -> read, with a warning naming it
    save_npz(path, **data)
    with caplog.at_level(logging.WARNING, logger="latentbias.pathway.relax"):
        again = relax_path(ala2_model, system, nodes, x0, seed=4, output_dir=out, **kw)
    _assert_identical(first, again)
    assert any("window_001.npz carries no checksum" in r.getMessage() for r in caplog.records)
    # a damaged file: one sample changed under the original checksum -> refused, naming the file and the fix
    stored["z"] = stored["z"].copy()
    stored["z"][0, 0] += 1e-3
    np.savez(path, **stored)
    with pytest.raises(ValueError, match=r"window_001\.npz.*delete .*window_001\.npz to rerun that window"):
        relax_path(ala2_model, system, nodes, x0, seed=4, output_dir=out, **kw)


def test_a_window_that_blows_up_is_rerun_with_a_shorter_step(ala2, ala2_model, tmp_path, caplog):
    """A stiff extra C-N bond (k = 1.2e7 kJ/mol/nm², ω ≈ 1360 /ps: ω·dt = 2.7 at the configured 2 fs, 1.4 at 1 fs)
    makes every window explode at 2 fs: each is rerun from its start with 1 fs (latentbias.campaign.instability),
    the windows are physical, the step used is recorded per window, and a resumed run reads the files back."""
    import copy
    import logging

    import openmm

    system, _, xyz = ala2
    stiff = copy.deepcopy(system)
    bond = openmm.HarmonicBondForce()
    bond.addBond(4, 6, float(np.linalg.norm(xyz[4] - xyz[6])), 1.2e7)
    stiff.addForce(bond)
    nodes = _nodes(ala2_model, xyz)
    x0 = np.repeat(xyz[None], len(nodes), axis=0)
    with caplog.at_level(logging.WARNING, logger="latentbias.campaign.instability"):
        windows = relax_path(ala2_model, stiff, nodes, x0, seed=2, platform="Reference", output_dir=tmp_path, **KW)
    assert windows.settings["window_timesteps"] == [0.001] * len(nodes)
    assert all(f"path window {w} passed with the time step x 0.5" in caplog.text for w in range(len(nodes)))
    assert all(np.all(np.isfinite(z)) for z in windows.umbrella.z)
    assert np.all(np.isfinite(windows.structures)) and np.abs(windows.structures).max() < 5.0
    again = relax_path(ala2_model, stiff, nodes, x0, seed=2, platform="Reference", output_dir=tmp_path, **KW)
    _assert_identical(windows, again)
    assert again.settings["window_timesteps"] == [0.001] * len(nodes)


def test_a_window_unstable_from_its_structure_starts_again_from_the_fallback(ala2, ala2_model, tmp_path, caplog):
    """A trap that exists only around the given structures: atom 4 sits 0.25 nm off its place, in a 0.01 nm wide
    well of curvature 2e9 kJ/mol/nm² (ω·dt ≥ 4.5 even at a quarter of the step), so every retried step blows up
    from there. The windows then start from the fallback structures (the unperturbed molecule, outside the well),
    run at the configured step, record where they started, and a resumed run reads that back. Without fallback
    structures the window's error is raised as before."""
    import copy
    import logging

    import openmm

    from latentbias.campaign.instability import SimulationBlowUpError

    system, _, xyz = ala2
    bad = xyz.copy()
    bad[4] = xyz[4] + np.array([0.0, 0.0, 0.25])
    trap = copy.deepcopy(system)
    well = openmm.CustomExternalForce("K*min(0, (x-x0)^2+(y-y0)^2+(z-z0)^2-R2)")
    well.addGlobalParameter("K", 1e9)
    well.addGlobalParameter("R2", 0.01 ** 2)
    for name in ("x0", "y0", "z0"):
        well.addPerParticleParameter(name)
    well.addParticle(4, list(bad[4]))
    trap.addForce(well)
    nodes = _nodes(ala2_model, xyz)
    x0 = np.repeat(bad[None], len(nodes), axis=0)
    with pytest.raises(SimulationBlowUpError, match="path window 0"):
        relax_path(ala2_model, trap, nodes[:2], x0[:2], seed=2, platform="Reference", **dict(KW, production_steps=20))
    fallback = np.repeat(xyz[None], len(nodes), axis=0)
    with caplog.at_level(logging.WARNING, logger="latentbias.pathway.relax"):
        windows = relax_path(ala2_model, trap, nodes, x0, seed=2, platform="Reference", output_dir=tmp_path,
                             fallback_positions=fallback, **KW)
    assert windows.settings["window_starts"] == ["fallback"] * len(nodes)
    assert windows.settings["window_timesteps"] == [0.002] * len(nodes)
    assert all(f"path window {w} is unstable at every time step" in caplog.text for w in range(len(nodes)))
    assert np.linalg.norm(windows.structures[:, 4] - bad[4], axis=1).min() > 0.1  # never in the well
    again = relax_path(ala2_model, trap, nodes, x0, seed=2, platform="Reference", output_dir=tmp_path,
                       fallback_positions=fallback, **KW)
    _assert_identical(windows, again)
    assert again.settings["window_starts"] == ["fallback"] * len(nodes)
    with pytest.raises(ValueError, match="fallback_positions"):
        relax_path(ala2_model, trap, nodes, x0, fallback_positions=fallback[:1], **KW)
