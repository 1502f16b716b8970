"""Coverage of the campaign's stated error (slow): 8 independent campaigns (different seeds) on the 2-D three-well
toy, each ending with an OPES converge phase; ΔF = F(well C) − F(well A) from each run's final weights with its
block-bootstrap error (latentbias.campaign.estimate) must cover the exact value (quadrature) within 1σ in ≥ 60 %
and within 2σ in ≥ 90 % of the runs; the replica error of all 8 together must cover it within 2σ."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from latentbias.analysis import kt_kjmol
from latentbias.campaign import Campaign, load_config
from latentbias.campaign.estimate import campaign_basin_estimate

from campaign_toy import WELLS, nearest_well, toy_config_text, write_toy_system
from toy import multi_well_2d

pytestmark = pytest.mark.slow


def exact_df_c_minus_a(temperature=300.0) -> float:
    kt = kt_kjmol(temperature)
    g = np.linspace(-1.6, 1.6, 641)
    x, y = np.meshgrid(g, g, indexing="ij")
    p = np.exp(-multi_well_2d(x, y) / kt)
    label = nearest_well(np.column_stack([x.ravel(), y.ravel()])).reshape(x.shape)
    return float(-kt * np.log(p[label == "C"].sum() / p[label == "A"].sum()))


def well_code(rundir) -> np.ndarray:
    from latentbias.campaign.report import load_campaign

    campaign, _ = load_campaign(Path(rundir))  # the stored config (its seed)
    xy = campaign.all_frames(campaign.last_round)["positions"][:, 0, :2].astype(float)
    return np.searchsorted(np.array(sorted(WELLS)), nearest_well(xy)).astype(float)  # A=0, B=1, C=2


@pytest.mark.xfail(strict=False, reason=(
    "measured 2026-12-01 over 48 seeds of this config: the 600 ps OPES converge phase leaves a finite-run bias of "
    "+0.57 +- 0.17 kJ/mol (0.45 sigma; not in the stated error), 1 sigma covers 58 %, 2 sigma 96 %; seeds 1-8 on "
    "that VM: 5/8 and 7/8, and 8 of 8 within 2 sigma passes a calibrated error with probability 0.66 "
    "(benchmarks/RESULTS.md, twelfth session)"))
def test_stated_errors_cover_the_exact_free_energy(tmp_path):
    truth = exact_df_c_minus_a()
    rundirs = []
    for seed in range(1, 9):
        folder = tmp_path / f"seed{seed}"
        folder.mkdir()
        write_toy_system(folder)
        (folder / "toy.toml").write_text(toy_config_text(rounds=4, steps=20000, round0=10000,
                                                         converge_steps=150000))
        cfg = load_config(folder / "toy.toml")
        cfg = dataclasses.replace(cfg, md=dataclasses.replace(cfg.md, seed=seed))
        Campaign(cfg, folder / "run", progress=False).run()
        rundirs.append(folder / "run")
    per_run = [campaign_basin_estimate([r], well_code, lambda c: c == 0, lambda c: c == 2, 300.0).runs[0]
               for r in rundirs]
    z = np.array([abs(r["value"] - truth) / r["error"] for r in per_run])
    assert np.mean(z <= 1) >= 0.6 and np.mean(z <= 2) >= 0.9, (truth, per_run)
    pooled = campaign_basin_estimate(rundirs, well_code, lambda c: c == 0, lambda c: c == 2, 300.0).estimate
    assert abs(pooled.value - truth) <= pooled.halfwidth(2.0), (truth, pooled)
