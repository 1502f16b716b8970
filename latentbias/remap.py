"""Apply a model trained on one topology to another: match atoms, export a model for the target system.

Users routinely train on protein-only trajectories (water stripped, or a subset of chains) and then want to bias
the solvated system, whose atom indices differ. :func:`match_atoms` maps every atom the model reads onto the target
topology by chain position, residue number, residue name and atom name (falling back to the residue's position in
its chain when residue numbers were changed, e.g. by a renumbering tool); :func:`remap_model` writes a new model
file whose ``forward`` gathers those atoms from the target's full positions and calls the original model.
Forces flow back through the gather, so every route (TorchForce, CustomCVForce, LatentBiasForce) works unchanged.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

from .export import LatentModelFile, write_scripted_model, load_model
from .validation import ensure_mdtraj_topology

logger = logging.getLogger(__name__)

__all__ = ["match_atoms", "remap_model"]


def _keys(top, by_position: bool) -> list[tuple]:
    keys = []
    for chain in top.chains:
        for k, res in enumerate(chain.residues):
            rid = k if by_position else res.resSeq
            for atom in res.atoms:
                keys.append((chain.index, rid, res.name, atom.name))
    return keys


def match_atoms(model_topology: Any, target_topology: Any, atoms: Any | None = None) -> np.ndarray:
    """Index in the target topology of each model-topology atom.

    Parameters
    ----------
    model_topology, target_topology : mdtraj.Topology, openmm.app.Topology or path
        The topology the model was trained on and the one it is to be applied to.
    atoms : array_like of int, optional
        Model-topology atoms that must be matched (default: all). Others map to -1 when absent.

    Returns
    -------
    numpy.ndarray of int, shape=(model_topology.n_atoms,)
        ``-1`` for atoms not required and not found.

    Raises
    ------
    ValueError
        A required atom has no match or several; the message lists the first ones.
    """
    src = ensure_mdtraj_topology(model_topology, "model_topology")
    dst = ensure_mdtraj_topology(target_topology, "target_topology")
    required = np.arange(src.n_atoms) if atoms is None or len(atoms) == 0 else np.unique(np.asarray(atoms, int))
    if required.size and (required.min() < 0 or required.max() >= src.n_atoms):
        raise ValueError(f"atom indices must lie in [0, {src.n_atoms}) for the model topology")
    problems: list[str] = []
    for by_position in (False, True):
        index: dict[tuple, list[int]] = {}
        for i, key in enumerate(_keys(dst, by_position)):
            index.setdefault(key, []).append(i)
        src_keys = _keys(src, by_position)
        mapping = np.full(src.n_atoms, -1, dtype=np.int64)
        problems = []
        for i, key in enumerate(src_keys):
            hits = index.get(key, [])
            if len(hits) == 1:
                mapping[i] = hits[0]
        for i in required:
            hits = index.get(src_keys[i], [])
            if len(hits) != 1:
                atom = src.atom(int(i))
                what = "no atom" if not hits else f"{len(hits)} atoms"
                problems.append(f"{atom} (model atom {i}, chain {atom.residue.chain.index}) -> {what}")
        if not problems:
            if by_position:
                logger.info("matched atoms by residue position within each chain (residue numbers differ)")
            return mapping
    shown = "; ".join(problems[:5]) + (f"; ... ({len(problems)} in all)" if len(problems) > 5 else "")
    raise ValueError(
        "cannot match the model's atoms onto the target topology by chain, residue number (or position), residue "
        f"name and atom name: {shown}. The target must contain the atoms the model reads, with the same names "
        "(e.g. the same protein, solvated); check chain order and residue/atom naming"
    )


class _Gathered(torch.nn.Module):
    """positions of the target system (n_target, 3) [+ box] -> model(positions[index], box)."""

    def __init__(self, model: torch.jit.ScriptModule, index: np.ndarray):
        super().__init__()
        self.model = model
        self.register_buffer("index", torch.as_tensor(index, dtype=torch.long))

    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tensor:
        return self.model(positions.index_select(-2, self.index), box)


def remap_model(
    model: str | os.PathLike | LatentModelFile,
    model_topology: Any,
    target_topology: Any,
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
) -> Path:
    """Write a model file for ``target_topology`` that evaluates ``model`` on the matched atoms.

    Parameters
    ----------
    model : path or LatentModelFile
        A model trained on ``model_topology`` (its ``n_atoms`` must equal that topology's atom count).
    model_topology, target_topology : mdtraj.Topology, openmm.app.Topology or path
    path : str or path-like
        The new model file.
    overwrite : bool

    Returns
    -------
    pathlib.Path

    Notes
    -----
    Only the atoms the model reads (``metadata["atom_indices"]``; all atoms when a hand-made module does not say)
    must be present in the target. Atoms the model does not read and the target lacks are fed the position of the
    first matched atom; they have no effect on z. The box passed to the model is the target's box.
    """
    src_model = model if isinstance(model, LatentModelFile) else load_model(model)
    src = ensure_mdtraj_topology(model_topology, "model_topology")
    dst = ensure_mdtraj_topology(target_topology, "target_topology")
    if src.n_atoms != src_model.n_atoms:
        raise ValueError(f"the model reads {src_model.n_atoms} atoms but model_topology has {src.n_atoms}; give the "
                         "topology the model was trained on")
    mapping = match_atoms(src, dst, src_model.atom_indices)
    filler = int(mapping[mapping >= 0][0]) if np.any(mapping >= 0) else 0
    index = np.where(mapping >= 0, mapping, filler)
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    metadata = dict(src_model.metadata)
    metadata["n_atoms"] = int(dst.n_atoms)
    metadata["atom_indices"] = [int(mapping[i]) for i in src_model.atom_indices]
    metadata["native_description"] = None  # the gather is not described: the remapped model runs through libtorch
    metadata["extra"] = dict(metadata.get("extra") or {})
    metadata["extra"]["remapped_from"] = {
        "file": str(src_model.path) if src_model.path else None,
        "n_atoms": src_model.n_atoms,
        "atom_indices": [int(i) for i in src_model.atom_indices],
    }
    write_scripted_model(_Gathered(src_model.module, index), path, metadata)
    logger.info("remapped %s (%d atoms) onto a topology of %d atoms: %s", src_model.path or "model",
                src_model.n_atoms, dst.n_atoms, path)
    return path
