"""The run directory: every artifact of a campaign, written so a killed run resumes without losing or repeating
a single frame.

Layout::

    RUNDIR/
      config.json                  resolved configuration (a resumed run must match it)
      progress.json                the commit point: round, phase, committed segments (atomic)
      campaign.log                 log of all runs on this folder
      round_000/
        plan.json                  what this round does (strategy, bias settings, frontier targets) — fixed at start
        seg_00000.npz ...          frames of each committed segment: positions (nm), step, time_ps, z, bias_kjmol,
                                   state (bias state id), ood flag, recon error
        chk_00003.chk              OpenMM checkpoint after the last committed segment (older ones are removed)
        bias_00003.npz/.json       metadynamics state after the last committed segment
        frames.dcd frames.csv topology.pdb      assembled when the round's simulation ends
        model.pt model_state.npz model.json     model trained after this round on all frames so far
      report/                      written by `latentbias report`

Commit protocol for a segment k: write ``seg_k.npz``, ``chk_k.chk`` and ``bias_k.*`` (each atomically), then
``progress.json`` (atomically) saying k is committed, then delete the files of k-1. On resume, files with an
index above the committed one are leftovers of an interrupted commit and are removed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_write_bytes, load_npz, save_npz, write_json

__all__ = ["RunDir"]

_SEG = re.compile(r"^(seg|chk|bias)_(\d{5})\.(npz|chk|json)$")


class RunDir:
    """Paths and atomic bookkeeping of a campaign run directory.

    Parameters
    ----------
    path : str or path-like
        Created if missing.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------------------------------------ paths

    def round_dir(self, r: int) -> Path:
        d = self.path / f"round_{r:03d}"
        d.mkdir(exist_ok=True)
        return d

    def segment_file(self, r: int, k: int) -> Path:
        return self.round_dir(r) / f"seg_{k:05d}.npz"

    def checkpoint_file(self, r: int, k: int) -> Path:
        return self.round_dir(r) / f"chk_{k:05d}.chk"

    def bias_prefix(self, r: int, k: int) -> Path:
        return self.round_dir(r) / f"bias_{k:05d}"

    def model_file(self, r: int) -> Path:
        return self.round_dir(r) / "model.pt"

    @property
    def log_file(self) -> Path:
        return self.path / "campaign.log"

    # ------------------------------------------------------------------------------------------------ state

    def read_progress(self) -> dict[str, Any]:
        p = self.path / "progress.json"
        if not p.is_file():
            return {"round": 0, "phase": "plan", "segments": 0, "finished": False}
        return json.loads(p.read_text())

    def write_progress(self, progress: dict[str, Any]) -> None:
        write_json(self.path / "progress.json", progress)

    def check_config(self, config: dict[str, Any]) -> None:
        """Store the config on first use; refuse to resume a folder created with different settings."""
        p = self.path / "config.json"
        if p.is_file():
            old = json.loads(p.read_text())
            old.pop("base_dir", None)
            new = dict(config)
            new.pop("base_dir", None)
            if old != json.loads(json.dumps(new)):
                diff = sorted(k for k in set(old) | set(new) if old.get(k) != json.loads(json.dumps(new)).get(k))
                raise ValueError(f"{self.path} holds a campaign with a different configuration (sections {diff}); "
                                 "use another --rundir or the original config")
        else:
            write_json(p, config)

    def read_json(self, path: Path) -> dict[str, Any]:
        return json.loads(Path(path).read_text())

    # --------------------------------------------------------------------------------------------- segments

    def commit_segment(self, r: int, k: int, frames: dict[str, np.ndarray], checkpoint: bytes,
                       write_bias: Any | None, progress: dict[str, Any]) -> None:
        """Write segment k of round r and make it the committed one (see the module docstring)."""
        save_npz(self.segment_file(r, k), **frames)
        atomic_write_bytes(self.checkpoint_file(r, k), checkpoint)
        if write_bias is not None:
            write_bias(self.bias_prefix(r, k))
        self.write_progress(progress)
        for old in (self.checkpoint_file(r, k - 1), *self._bias_files(r, k - 1)):
            if old.exists():
                old.unlink()

    def _bias_files(self, r: int, k: int) -> list[Path]:
        prefix = self.bias_prefix(r, k)
        return [prefix.with_name(prefix.name + ".npz"), prefix.with_name(prefix.name + ".json")]

    def discard_uncommitted(self, r: int, committed: int) -> list[Path]:
        """Remove segment/checkpoint/bias files of round r with index >= committed (never-committed leftovers)."""
        removed = []
        for p in self.round_dir(r).iterdir():
            m = _SEG.match(p.name)
            if m and int(m.group(2)) >= committed:
                p.unlink()
                removed.append(p)
        for p in self.round_dir(r).glob(".*.tmp"):
            p.unlink()
            removed.append(p)
        return removed

    def load_segments(self, r: int, n_segments: int) -> dict[str, np.ndarray]:
        """Concatenate the frames of the first n_segments segments of round r."""
        parts = [load_npz(self.segment_file(r, k)) for k in range(n_segments)]
        if not parts:
            return {}
        return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
