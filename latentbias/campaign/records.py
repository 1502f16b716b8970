"""The campaign's frame record: the one schema of every saved frame, its columns, dtypes and units.

Every frame a campaign keeps — simulated (:mod:`latentbias.campaign.simulate`) or imported from trajectories
(round 0 ``round0_trajectories``) — is stored in a checkpoint segment file ``round_RRR/seg_KKKKK.npz`` with the
columns of :data:`SEGMENT_COLUMNS`; :func:`load_frames` concatenates segments of several rounds and adds the
columns ``round`` and ``segment`` (:data:`FRAME_COLUMNS`).

``z`` is stored per segment only: it is the frame's latent vector under the model that *biased* its round (shape
``(n, 0)`` in round 0, where no model exists), so it has no common meaning across rounds and is not part of the
concatenated table; re-encode ``positions`` with one round's model instead (:meth:`Campaign.model`).

``kind`` says which bias acted when the frame was sampled (:data:`KIND_UNBIASED`, :data:`KIND_RESTRAINT`,
:data:`KIND_METAD`); together with ``scale``, ``target``, ``round`` and ``segment`` it identifies the frame's
thermodynamic state for reweighting (:func:`latentbias.campaign.weights.bias_states`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

__all__ = [
    "FrameColumn",
    "SEGMENT_COLUMNS",
    "FRAME_COLUMNS",
    "KIND_UNBIASED",
    "KIND_RESTRAINT",
    "KIND_METAD",
    "KIND_OPES",
    "frame_boxes",
    "SegmentRecorder",
    "unbiased_frames",
    "load_frames",
    "frame_column",
]

#: ``kind`` column values: which bias acted on a frame
KIND_UNBIASED, KIND_RESTRAINT, KIND_METAD, KIND_OPES = 0, 1, 2, 3


@dataclass(frozen=True)
class FrameColumn:
    """One column of the frame record: name, numpy dtype, per-frame shape and unit/meaning."""

    name: str
    dtype: Any
    shape: str
    unit: str


#: Columns of a segment file ``seg_KKKKK.npz`` (one row per saved frame), in this order.
SEGMENT_COLUMNS: tuple[FrameColumn, ...] = (
    FrameColumn("positions", np.float32, "(n_atoms, 3)", "nm"),
    FrameColumn("step", np.int64, "()", "MD step of the round's simulation (imported frames: 1, 2, ...)"),
    FrameColumn("time_ps", np.float64, "()", "ps, simulation time (imported frames: 0)"),
    FrameColumn("z", np.float64, "(d,)", "latent vector under the biasing model (d = 0 in round 0)"),
    FrameColumn("bias_kjmol", np.float64, "()", "kJ/mol, bias energy acting on the frame (walls included)"),
    FrameColumn("ood", np.bool_, "()", "reconstruction error above the out-of-distribution limit"),
    FrameColumn("recon_error", np.float64, "()", "reconstruction error under the biasing model (0 in round 0)"),
    FrameColumn("scale", np.float64, "()", "factor on the acting bias (1 normal, 0 off / restraint released)"),
    FrameColumn("target", np.int64, "()", "frontier target index (-1 when there is none)"),
    FrameColumn("kind", np.int64, "()", "KIND_UNBIASED | KIND_RESTRAINT | KIND_METAD | KIND_OPES"),
    FrameColumn("box", np.float64, "(3, 3)", "nm, periodic box vectors (rows); all zero when the system is not "
                "periodic"),
    FrameColumn("ct_kjmol", np.float64, "()", "kJ/mol, c(t) of the acting OPES bias (0 for other biases)"),
    FrameColumn("walker", np.int64, "()", "parallel walker that sampled the frame (0; only segments of campaigns "
                "with [execution] walkers > 1 store it)"),
)

#: columns a segment written by an older version may lack, with the value they take (per frame)
_DEFAULTS = {"box": np.zeros((3, 3)), "ct_kjmol": 0.0, "walker": 0}

#: Columns of the concatenated frame table returned by :func:`load_frames` (``z`` is per segment only).
FRAME_COLUMNS: tuple[FrameColumn, ...] = tuple(c for c in SEGMENT_COLUMNS if c.name != "z") + (
    FrameColumn("round", np.int64, "()", "campaign round the frame belongs to"),
    FrameColumn("segment", np.int64, "()", "checkpoint segment of its round"),
)

_DTYPES = {c.name: c.dtype for c in SEGMENT_COLUMNS + FRAME_COLUMNS}
#: per-segment extras that are not per-frame columns (dropped by :func:`load_frames`)
_SEGMENT_EXTRAS = ("grid_end", "walker_grid_start", "walker_grid_end")


def _typed(columns: dict[str, Any]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v, dtype=_DTYPES[k]) if k in _DTYPES else np.asarray(v) for k, v in columns.items()}


class SegmentRecorder:
    """Collects the frames of one checkpoint segment row by row and returns them as typed columns."""

    _OBSERVED = ("z", "bias_kjmol", "ood", "recon_error", "scale", "target", "ct_kjmol")

    def __init__(self) -> None:
        self._rows: dict[str, list] = {c.name: [] for c in SEGMENT_COLUMNS if c.name not in ("kind", "walker")}

    def append(self, positions: np.ndarray, step: int, time_ps: float, observed: dict[str, Any],
               box: np.ndarray | None = None) -> None:
        """Add one frame: positions (nm, shape=(n_atoms, 3)), step, time (ps), the bias's observation
        (``z``, ``bias_kjmol``, ``ood``, ``recon_error``, ``scale``, ``target``, optional ``ct_kjmol``) and the
        periodic box vectors (nm, shape=(3, 3); None when the system is not periodic)."""
        self._rows["positions"].append(np.asarray(positions, dtype=np.float32))
        self._rows["box"].append(np.zeros((3, 3)) if box is None else np.asarray(box, dtype=float))
        observed = {"ct_kjmol": 0.0, **observed}
        self._rows["step"].append(step)
        self._rows["time_ps"].append(time_ps)
        for key in self._OBSERVED:
            self._rows[key].append(observed[key])

    def __len__(self) -> int:
        return len(self._rows["step"])

    def columns(self, kind: int) -> dict[str, np.ndarray]:
        """The segment's columns (:data:`SEGMENT_COLUMNS`), every frame with the given ``kind``."""
        out = _typed(self._rows)
        out["kind"] = np.full(len(self), kind, dtype=_DTYPES["kind"])
        return out


def unbiased_frames(positions: np.ndarray, boxes: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Segment columns for frames sampled without bias and imported from trajectories (positions in nm,
    shape=(n, n_atoms, 3); box vectors in nm, shape=(n, 3, 3), or None when not periodic): steps 1..n, time 0,
    no latent vector, no target."""
    n = len(positions)
    return _typed({"positions": positions, "step": np.arange(1, n + 1), "time_ps": np.zeros(n),
                   "z": np.zeros((n, 0)), "bias_kjmol": np.zeros(n), "ood": np.zeros(n, bool),
                   "recon_error": np.zeros(n), "scale": np.ones(n), "target": np.full(n, -1),
                   "kind": np.full(n, KIND_UNBIASED),
                   "box": np.zeros((n, 3, 3)) if boxes is None else boxes, "ct_kjmol": np.zeros(n)})


def frame_boxes(frames: dict[str, np.ndarray]) -> np.ndarray | None:
    """The frames' periodic box vectors (nm, shape=(n, 3, 3)) to pass to an encoder, or None when no frame has
    a box (a non-periodic system). Raises ValueError when only some frames have one."""
    box = frames.get("box")
    if box is None:
        return None
    box = np.asarray(box, dtype=float)
    has = np.any(box != 0.0, axis=(1, 2))
    if not has.any():
        return None
    if not has.all():
        raise ValueError(f"{int((~has).sum())} of {len(has)} frames have no periodic box while the others do; "
                         "frames of one campaign must all be periodic or all not")
    return box


def frame_column(frames: dict[str, np.ndarray], name: str) -> np.ndarray:
    """Column ``name`` of a frame table (:data:`FRAME_COLUMNS`), typed; a column that segments of older versions
    may lack (``box``, ``ct_kjmol``, ``walker``) takes its default value when the table has none."""
    if name in frames:
        return np.asarray(frames[name], dtype=_DTYPES[name])
    if name not in _DEFAULTS:
        raise KeyError(f"frame table has no column {name!r} (columns: {', '.join(sorted(frames))})")
    n = len(frames["step"])
    return np.repeat(np.asarray(_DEFAULTS[name], dtype=_DTYPES[name])[None], n, axis=0)


def load_frames(segments: Iterable[tuple[int, int, dict[str, np.ndarray]]]) -> dict[str, np.ndarray]:
    """Concatenate segments ``(round, segment index, segment columns)`` into the frame table
    (:data:`FRAME_COLUMNS`, in the given order)."""
    parts = []
    for r, k, seg in segments:
        n = len(seg["step"])
        part = {c.name: seg[c.name] if c.name in seg else np.repeat(np.asarray(_DEFAULTS[c.name])[None], n, axis=0)
                for c in SEGMENT_COLUMNS if c.name != "z"}
        part["round"] = np.full(n, r)
        part["segment"] = np.full(n, k)
        parts.append(part)
    if not parts:
        raise ValueError("no segments to load")
    return _typed({c.name: np.concatenate([p[c.name] for p in parts]) for c in FRAME_COLUMNS})
