"""Input checks shared by the analysis modules (private)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..validation import strip_unit


def ensure_1d_float(values: Any, name: str, n: int | None = None, *, allow_neg_inf: bool = False) -> np.ndarray:
    """Return ``values`` as a 1-D float64 array, optionally of length ``n``; reject NaN and (+/-)inf.

    ``allow_neg_inf`` accepts -inf (a log-weight of a frame with zero weight).
    """
    arr = np.asarray(strip_unit(values), dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array with one value per frame, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(
            f"{name} has {arr.shape[0]} values but there are {n} frames: pass one value per frame, in frame order"
        )
    bad = np.isnan(arr) | (arr == np.inf) | ((arr == -np.inf) if not allow_neg_inf else False)
    if np.any(bad):
        raise ValueError(
            f"{name} contains {int(np.count_nonzero(bad))} non-finite values (NaN or inf); drop or fix those frames"
        )
    return arr


def ensure_logweights(logweights: Any, n: int, name: str = "logweights") -> np.ndarray:
    """Validate per-frame log-weights (``None`` means uniform); at least one frame must have finite weight."""
    if logweights is None:
        return np.zeros(n)
    arr = ensure_1d_float(logweights, name, n, allow_neg_inf=True)
    if n > 0 and not np.any(np.isfinite(arr)):
        raise ValueError(f"{name} are all -inf: every frame has zero weight")
    return arr


def ensure_cv(cv: Any, name: str = "cv", max_dim: int | None = 2) -> np.ndarray:
    """Return a CV array as float64 of shape (n_frames, d) with 1 <= d <= ``max_dim`` (any d if None).

    Non-finite values are rejected.
    """
    arr = np.asarray(strip_unit(cv), dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[1] < 1 or (max_dim is not None and arr.shape[1] > max_dim):
        if max_dim == 2:
            want = "(n_frames,) or (n_frames, 2)"
        elif max_dim is None:
            want = "(n_frames,) or (n_frames, d)"
        else:
            want = f"(n_frames, d) with d <= {max_dim}"
        raise ValueError(f"{name} must have shape {want} (one row per frame), got shape {np.shape(cv)}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} has no frames")
    if not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.all(np.isfinite(arr), axis=1)))
        raise ValueError(
            f"{name} contains non-finite values (NaN or inf) in {bad} frames; drop those frames (and their weights) "
            "first"
        )
    return arr


def ensure_n_blocks(n_blocks: Any, n_frames: int) -> int:
    """Return ``n_blocks`` as an int in [1, n_frames]."""
    if isinstance(n_blocks, bool) or not isinstance(n_blocks, (int, np.integer)) or int(n_blocks) < 1:
        raise ValueError(f"n_blocks must be a positive integer (use >= 2 to get error bars), got {n_blocks!r}")
    if int(n_blocks) > n_frames:
        raise ValueError(f"n_blocks={n_blocks} is larger than the number of frames ({n_frames}); use fewer blocks")
    return int(n_blocks)


def ensure_block_labels(blocks: Any, n_frames: int, n_blocks: int) -> tuple[np.ndarray, int]:
    """Per-frame block labels: contiguous time blocks when ``blocks`` is None, else validated integer labels.

    Returns the labels (int64, shape=(n_frames,), values 0..n-1) and the number of distinct blocks.
    """
    if blocks is None:
        labels = (np.arange(n_frames, dtype=np.int64) * n_blocks) // n_frames
        return labels, n_blocks
    arr = np.asarray(blocks)
    if arr.ndim != 1 or arr.shape[0] != n_frames:
        raise ValueError(f"blocks must be one integer label per frame, shape ({n_frames},), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"blocks must be integer block labels, got dtype {arr.dtype}")
    uniq, labels = np.unique(arr, return_inverse=True)
    return labels.astype(np.int64), int(uniq.size)
