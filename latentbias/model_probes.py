"""Configurations at which a loaded model is probed for a differentiable output (issue 9: no silent zero forces).

:func:`latentbias.export.check_model_output` refuses a model whose latent component has an exactly zero gradient
with respect to the positions at every probe configuration. Random configurations alone give false positives: a
model with saturating activations (tanh) on standardized features of a folded protein sees features tens of standard
deviations from its training data in a random box, every hidden unit saturates, and float32 ``1 - tanh(x)**2`` is
exactly 0 — a healthy model refused. The probes are therefore, in this order:

1. configurations the caller passes (``probe_positions=``, e.g. the system's starting structure);
2. training frames stored in the model file (``metadata["probe_positions"]``: the coordinates of the atoms the
   model reads in up to three training frames; written by :func:`latentbias.save_model`);
3. the reference structure of aligned-coordinate features (``feature_spec``), which every such model carries;
4. three reproducible random configurations at protein-like density (any model, also hand-written CV modules).

A component passes when its gradient is non-zero at one probe. A detached, integer or constant output has a zero
(or no) gradient at every configuration and is still refused.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch

__all__ = ["MAX_STORED_PROBES", "probe_configurations", "probe_metadata", "random_configuration"]

#: training frames stored in a model file as probes
MAX_STORED_PROBES = 3

#: base seed of the probes' random streams: stream s, probe k uses ``SeedSequence(PROBE_SEED, spawn_key=(s, k))``
PROBE_SEED = 20261130
_STORED, _ALIGNED, _RANDOM = range(3)


def _probe_seed(stream: int, k: int) -> int:
    return int(np.random.SeedSequence(PROBE_SEED, spawn_key=(stream, k)).generate_state(1, np.uint32)[0])


def random_configuration(n_atoms: int, seed: int) -> torch.Tensor:
    """A reproducible random configuration at protein-like density (~100 atoms/nm³), shape=(n_atoms, 3), nm."""
    side = max(1.0, (n_atoms / 100.0) ** (1.0 / 3.0))
    gen = torch.Generator().manual_seed(seed)
    return torch.rand((n_atoms, 3), generator=gen, dtype=torch.float64) * side


def probe_metadata(positions: Any, atom_indices: Any, n_atoms: int) -> dict[str, Any] | None:
    """The ``probe_positions`` metadata entry: the coordinates of the atoms a model reads in up to
    :data:`MAX_STORED_PROBES` training frames (first, middle, last).

    Parameters
    ----------
    positions : array_like, shape=(n_frames, n_atoms, 3), nm
        Full-system training frames.
    atom_indices : array_like of int
        Atoms the model reads (empty: all atoms).
    n_atoms : int

    Returns
    -------
    dict or None
        ``{"atoms": [...], "frames_nm": [[[x, y, z], ...], ...]}``; None when there are no finite frames.
    """
    xyz = np.asarray(positions, dtype=float)
    if xyz.ndim == 2:
        xyz = xyz[None]
    if xyz.ndim != 3 or xyz.shape[1:] != (n_atoms, 3):
        raise ValueError(f"probe positions must have shape (n_frames, {n_atoms}, 3), got {xyz.shape}")
    atoms = np.asarray(atom_indices, dtype=np.int64).ravel()
    if atoms.size == 0:
        atoms = np.arange(n_atoms)
    xyz = xyz[np.all(np.isfinite(xyz), axis=(1, 2))]
    if len(xyz) == 0:
        return None
    picks = sorted({0, len(xyz) // 2, len(xyz) - 1})[:MAX_STORED_PROBES]
    return {"atoms": atoms.tolist(), "frames_nm": np.round(xyz[picks][:, atoms], 6).tolist()}


def _aligned_references(spec: Any) -> Iterator[tuple[list[int], list]]:
    """(atoms, reference coordinates) of every aligned-coordinate part of a feature spec (nested concatenations)."""
    if not isinstance(spec, dict):
        return
    if spec.get("type") == "aligned_coordinates" and "atoms" in spec and "reference_nm" in spec:
        yield list(spec["atoms"]), spec["reference_nm"]
    for part in spec.get("parts", []) or []:
        yield from _aligned_references(part)


def _placed(n_atoms: int, atoms: Any, coordinates: Any, seed: int) -> torch.Tensor | None:
    """A random configuration with ``atoms`` moved to ``coordinates`` (None if they do not fit the model)."""
    idx = np.asarray(atoms, dtype=np.int64).ravel()
    xyz = np.asarray(coordinates, dtype=float)
    if xyz.shape != (len(idx), 3) or not np.all(np.isfinite(xyz)) or np.any((idx < 0) | (idx >= n_atoms)):
        return None
    x = random_configuration(n_atoms, seed)
    x[torch.as_tensor(idx)] = torch.as_tensor(xyz)
    return x


def probe_configurations(n_atoms: int, metadata: dict[str, Any], positions: Any | None = None
                         ) -> Iterator[tuple[str, torch.Tensor]]:
    """The probe configurations of a model, in the order listed in the module docstring.

    Parameters
    ----------
    n_atoms : int
    metadata : dict
        The model file's metadata.
    positions : array_like, shape=(n_atoms, 3) or (n, n_atoms, 3), nm, optional
        Caller-supplied configurations (probed first).

    Yields
    ------
    (str, torch.Tensor)
        What the configuration is, and the positions (float64, shape=(n_atoms, 3), nm).
    """
    if positions is not None:
        xyz = np.asarray(positions, dtype=float)
        if xyz.ndim == 2:
            xyz = xyz[None]
        if xyz.ndim != 3 or xyz.shape[1:] != (n_atoms, 3) or not np.all(np.isfinite(xyz)):
            raise ValueError(f"probe_positions must be finite with shape ({n_atoms}, 3) or (n, {n_atoms}, 3) in nm, "
                             f"got {xyz.shape}")
        for k, frame in enumerate(xyz):
            yield f"the given configuration {k}", torch.as_tensor(frame, dtype=torch.float64)
    stored = metadata.get("probe_positions")
    if isinstance(stored, dict):
        for k, frame in enumerate((stored.get("frames_nm") or [])[:MAX_STORED_PROBES]):
            x = _placed(n_atoms, stored.get("atoms", []), frame, seed=_probe_seed(_STORED, k))
            if x is not None:
                yield f"stored training frame {k}", x
    for k, (atoms, reference) in enumerate(_aligned_references(metadata.get("feature_spec"))):
        x = _placed(n_atoms, atoms, reference, seed=_probe_seed(_ALIGNED, k))
        if x is not None:
            yield "the aligned features' reference structure", x
    for k in range(3):
        yield f"random configuration {k}", random_configuration(n_atoms, seed=_probe_seed(_RANDOM, k))
