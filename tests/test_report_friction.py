"""Report friction (issue 9 item 6): colour scales from the data, integer round ticks, a sparse-data warning, the
OOD cut-off in the OOD table, and a --cv error that names the atom count."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from latentbias.campaign import Campaign, load_config
from latentbias.campaign import report as report_module
from latentbias.campaign.report import parse_cv_spec, write_report

from campaign_toy import toy_config_text, write_toy_system

OOD = """
[ood]
min_frames = 10
threshold = 0.5
action = "cap"
"""


@pytest.fixture(scope="module")
def flagged_run(tmp_path_factory):
    """A finished 2-round toy campaign whose OOD guard flags frames (a low threshold, judged from 10 frames)."""
    folder = tmp_path_factory.mktemp("report")
    write_toy_system(folder)
    (folder / "toy.toml").write_text(toy_config_text(rounds=2, steps=2000, round0=2000, checkpoint=1000, extra=OOD))
    Campaign(load_config(folder / "toy.toml"), folder / "run", progress=False).run()
    return folder / "run"


def test_report_scales_ticks_sparse_warning_and_ood_cutoff(flagged_run, monkeypatch):
    shown, lines = [], []
    plot_fes = report_module.plot_fes
    line_plot = report_module._line_plot

    def capture_fes(fes, path, **kw):
        shown.append((np.asarray(fes.free_energy, dtype=float), kw.get("vmax")))
        return plot_fes(fes, path, **kw)

    def capture_line(path, series, xlabel, *args, **kw):
        lines.append((Path(path).name, xlabel, kw.get("integer_x", False)))
        return line_plot(path, series, xlabel, *args, **kw)

    monkeypatch.setattr(report_module, "plot_fes", capture_fes)
    monkeypatch.setattr(report_module, "_line_plot", capture_line)
    text = write_report(flagged_run).read_text()
    # colour scale from the data: the top is the largest finite free energy of each surface, not a fixed 30
    assert shown
    for free, vmax in shown:
        assert vmax == pytest.approx(max(np.nanmax(free[np.isfinite(free)]), 1e-3))
    # rounds are integers on every per-round axis
    assert [x for x in lines if x[1] == "round"] and all(x[2] for x in lines if x[1] == "round")
    # few frames: the report says so (ESS < 50 after rounds 0 and 1 of this tiny campaign)
    assert "**Sparse data**" in text and re.search(r"round\(s\) 0, 1 rest on an effective sample size below 50",
                                                    text)
    # the OOD table gives the cut-off each flagged frame was compared with
    assert "| round | step | error | cut-off | error / cut-off |" in text
    import json

    q99 = json.loads((flagged_run / "round_000" / "model.json").read_text())["recon_error_q99"]
    rows = [ln for ln in text.splitlines() if re.match(r"\| 1 \| \d+ \| ", ln)]
    assert rows
    for row in rows:
        _, r, step, err, cut, ratio, _ = row.split("|")
        assert float(cut) == pytest.approx(0.5 * q99, rel=1e-2)
        assert float(ratio) == pytest.approx(float(err) / float(cut), rel=2e-2) and float(ratio) > 1.0


def test_cv_atom_index_out_of_range_names_the_atom_count(flagged_run):
    from latentbias.cli import main

    with pytest.raises(ValueError, match=r"atom index 582 is out of range: the system has 4 atoms, so indices "
                                         r"run from 0 to 3 \(0-based"):
        write_report(flagged_run, cvs=[parse_cv_spec("d:distance:1,582")])
    with pytest.raises(SystemExit, match=r"error: --cv d:distance:1,582: atom index 582 .* 4 atoms"):
        main(["report", str(flagged_run), "--cv", "d:distance:1,582"])
    with pytest.raises(SystemExit, match=r"error: a distance needs 2 atom indices"):
        main(["report", str(flagged_run), "--cv", "d:distance:1,2,3"])
