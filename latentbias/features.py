"""Invariant, differentiable featurizers: full-system positions (nm) -> feature vectors.

Every featurizer is a ``torch.nn.Module`` that TorchScript can compile. It accepts full-system positions of shape
``(n_atoms, 3)`` or ``(n_frames, n_atoms, 3)`` in **nm** (float32 or float64) and an optional periodic box
``(3, 3)`` / ``(n_frames, 3, 3)`` in **nm**, picks its own atoms, and returns ``(n_features,)`` /
``(n_frames, n_features)``. All features are invariant to rigid rotations and translations of the system.

Atoms are chosen by mdtraj selection strings or index lists through :func:`select_atoms`.
"""

from __future__ import annotations

import abc
from itertools import combinations
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from .geometry import dihedral_sin_cos, kabsch_align, minimum_image
from .validation import ensure_index_array, ensure_positions

__all__ = [
    "AlignedCoordinates",
    "Concatenate",
    "Contacts",
    "Dihedrals",
    "Distances",
    "Featurizer",
    "Standardizer",
    "FEATURE_KINDS",
    "backbone_dihedral_atoms",
    "build_featurizer",
    "chi_dihedral_atoms",
    "featurize",
    "select_atoms",
]


# --------------------------------------------------------------------------------------------------- topology


def _as_mdtraj_topology(topology: Any):
    import mdtraj as md

    if isinstance(topology, md.Topology):
        return topology
    if isinstance(topology, md.Trajectory):
        return topology.topology
    try:
        from openmm import app

        if isinstance(topology, app.Topology):
            return md.Topology.from_openmm(topology)
    except ImportError:  # pragma: no cover
        pass
    raise TypeError(
        f"expected an mdtraj.Topology, mdtraj.Trajectory or openmm.app.Topology, got {type(topology).__name__}"
    )


def select_atoms(topology: Any, selection: str | Sequence[int]) -> np.ndarray:
    """Atom indices from an mdtraj selection string or an explicit index list.

    Parameters
    ----------
    topology : mdtraj.Topology, mdtraj.Trajectory or openmm.app.Topology
    selection : str or sequence of int
        An mdtraj selection (e.g. ``"protein and name CA"``, ``"element != H"``) or atom indices.

    Returns
    -------
    numpy.ndarray of int64, shape=(n_selected,)

    Raises
    ------
    ValueError
        If the selection is invalid or matches no atoms.
    """
    top = _as_mdtraj_topology(topology)
    if isinstance(selection, str):
        try:
            indices = top.select(selection)
        except Exception as exc:  # mdtraj raises ValueError / pyparsing errors
            raise ValueError(f"invalid mdtraj selection {selection!r}: {exc}") from exc
        if len(indices) == 0:
            raise ValueError(f"selection {selection!r} matched no atoms in the topology ({top.n_atoms} atoms)")
        return indices.astype(np.int64)
    return ensure_index_array(selection, n_atoms=top.n_atoms, name="atom selection")


def _dummy_trajectory(topology: Any):
    import mdtraj as md

    top = _as_mdtraj_topology(topology)
    return md.Trajectory(np.zeros((1, top.n_atoms, 3)), top)


def backbone_dihedral_atoms(topology: Any, kinds: Sequence[str] = ("phi", "psi")) -> np.ndarray:
    """Atom quadruplets of backbone dihedrals (mdtraj definitions).

    Parameters
    ----------
    topology : mdtraj.Topology, mdtraj.Trajectory or openmm.app.Topology
    kinds : sequence of {"phi", "psi", "omega"}

    Returns
    -------
    numpy.ndarray of int64, shape=(n_dihedrals, 4)
        All dihedrals of the first kind, then of the second, ...
    """
    import mdtraj as md

    funcs = {"phi": md.compute_phi, "psi": md.compute_psi, "omega": md.compute_omega}
    traj = _dummy_trajectory(topology)
    blocks = []
    for kind in kinds:
        if kind not in funcs:
            raise ValueError(f"unknown backbone dihedral {kind!r}; choose from {sorted(funcs)}")
        blocks.append(funcs[kind](traj)[0])
    quads = np.concatenate(blocks) if blocks else np.zeros((0, 4), dtype=np.int64)
    if len(quads) == 0:
        raise ValueError(f"the topology has no {'/'.join(kinds)} dihedrals (is it a protein?)")
    return quads.astype(np.int64)


def chi_dihedral_atoms(topology: Any, orders: Sequence[int] = (1,)) -> np.ndarray:
    """Atom quadruplets of side-chain chi dihedrals (mdtraj definitions).

    Parameters
    ----------
    topology : mdtraj.Topology, mdtraj.Trajectory or openmm.app.Topology
    orders : sequence of int in 1..4
        Which chi angles (chi1 ... chi4).

    Returns
    -------
    numpy.ndarray of int64, shape=(n_dihedrals, 4)
    """
    import mdtraj as md

    funcs = {1: md.compute_chi1, 2: md.compute_chi2, 3: md.compute_chi3, 4: md.compute_chi4}
    traj = _dummy_trajectory(topology)
    blocks = []
    for order in orders:
        if order not in funcs:
            raise ValueError(f"chi order must be 1, 2, 3 or 4, got {order!r}")
        blocks.append(funcs[order](traj)[0])
    quads = np.concatenate(blocks) if blocks else np.zeros((0, 4), dtype=np.int64)
    if len(quads) == 0:
        raise ValueError(f"the topology has no chi{list(orders)} dihedrals")
    return quads.astype(np.int64)


# ------------------------------------------------------------------------------------------------- featurizers


class Featurizer(torch.nn.Module, abc.ABC):
    """Base class: full-system positions -> invariant features.

    Subclasses implement ``forward(positions, box=None)`` (TorchScript-compatible) and :meth:`spec`.

    Attributes
    ----------
    n_features : int
        Length of the feature vector (set by subclasses).
    """

    @abc.abstractmethod
    def spec(self) -> dict[str, Any]:
        """JSON-serialisable description (stored in exported model metadata)."""

    @abc.abstractmethod
    def atom_indices(self) -> np.ndarray:
        """Sorted unique atom indices this featurizer reads."""

    def feature_names(self) -> list[str]:
        """Human-readable name of each feature (length ``n_features``)."""
        return [f"{self.spec()['type']}_{i}" for i in range(self.n_features)]

    def min_atoms(self) -> int:
        """Smallest number of atoms a system must have for this featurizer."""
        return int(self.atom_indices().max()) + 1


def _index_buffer(indices: np.ndarray) -> Tensor:
    return torch.as_tensor(np.ascontiguousarray(indices), dtype=torch.long)


class Distances(Featurizer):
    """Interatomic distances, **nm** (minimum image when a box is given).

    Parameters
    ----------
    pairs : array_like of int, shape=(n_pairs, 2)
        Atom index pairs.

    See Also
    --------
    Distances.from_selection : all pairs among selected atoms.
    """

    def __init__(self, pairs: Any):
        super().__init__()
        pairs = ensure_index_array(pairs, width=2, name="distance pairs")
        if np.any(pairs[:, 0] == pairs[:, 1]):
            raise ValueError("distance pairs must join two different atoms")
        self.register_buffer("first", _index_buffer(pairs[:, 0]))
        self.register_buffer("second", _index_buffer(pairs[:, 1]))
        self.n_features = len(pairs)

    @classmethod
    def from_selection(cls, topology: Any, selection: str | Sequence[int], min_separation: int = 1) -> "Distances":
        """All pairwise distances among the selected atoms.

        Parameters
        ----------
        topology : mdtraj.Topology or openmm.app.Topology
        selection : str or sequence of int
            mdtraj selection string or atom indices.
        min_separation : int, default 1
            Skip pairs closer than this in selection order (1 keeps all pairs).
        """
        atoms = select_atoms(topology, selection)
        if len(atoms) < 2:
            raise ValueError(f"selection {selection!r} has {len(atoms)} atom(s); distances need at least 2")
        pairs = [(a, b) for (i, a), (j, b) in combinations(enumerate(atoms), 2) if j - i >= min_separation]
        return cls(np.array(pairs, dtype=np.int64))

    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tensor:
        delta = positions.index_select(-2, self.second) - positions.index_select(-2, self.first)
        delta = minimum_image(delta, box)
        return torch.sqrt((delta * delta).sum(-1))

    def pairs(self) -> np.ndarray:
        return torch.stack([self.first, self.second], dim=1).cpu().numpy()

    def spec(self) -> dict[str, Any]:
        return {"type": "distances", "units": "nm", "pairs": self.pairs().tolist()}

    def atom_indices(self) -> np.ndarray:
        return np.unique(self.pairs())

    def feature_names(self) -> list[str]:
        return [f"d({a},{b})" for a, b in self.pairs()]


class Contacts(Featurizer):
    """Smooth contact numbers ``s(r) = 1 / (1 + (r / r0)^n)`` for atom pairs (dimensionless, in (0, 1)).

    This is PLUMED's RATIONAL switching function with ``d0 = 0`` and ``m = 2n``, written in a form with no
    removable singularity at ``r = r0`` (so its gradient is finite everywhere).

    Parameters
    ----------
    pairs : array_like of int, shape=(n_pairs, 2)
    r0 : float, default 0.8
        Switching distance, **nm** (s = 1/2 at r0).
    n : int, default 6
        Steepness exponent (default 6).
    """

    def __init__(self, pairs: Any, r0: float = 0.8, n: int = 6):
        super().__init__()
        pairs = ensure_index_array(pairs, width=2, name="contact pairs")
        if not np.isfinite(r0) or r0 <= 0:
            raise ValueError(f"r0 must be a positive distance in nm, got {r0!r}")
        if int(n) != n or n <= 0:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        self.register_buffer("first", _index_buffer(pairs[:, 0]))
        self.register_buffer("second", _index_buffer(pairs[:, 1]))
        self.r0 = float(r0)
        self.exponent = int(n)
        self.n_features = len(pairs)

    @classmethod
    def from_selection(
        cls, topology: Any, selection: str | Sequence[int], r0: float = 0.8, n: int = 6
    ) -> "Contacts":
        """Contacts between all pairs of selected atoms.

        Parameters
        ----------
        topology : mdtraj.Topology or openmm.app.Topology
        selection : str or sequence of int
            mdtraj selection string or atom indices.
        r0 : float, default 0.8
            Switching distance, **nm**.
        n : int, default 6
            Exponent of the switching function (as in the constructor).
        """
        atoms = select_atoms(topology, selection)
        if len(atoms) < 2:
            raise ValueError(f"selection {selection!r} has {len(atoms)} atom(s); contacts need at least 2")
        return cls(np.array(list(combinations(atoms, 2)), dtype=np.int64), r0=r0, n=n)

    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tensor:
        delta = positions.index_select(-2, self.second) - positions.index_select(-2, self.first)
        delta = minimum_image(delta, box)
        x2 = (delta * delta).sum(-1) / (self.r0 * self.r0)
        return 1.0 / (1.0 + torch.pow(x2, 0.5 * self.exponent))

    def pairs(self) -> np.ndarray:
        return torch.stack([self.first, self.second], dim=1).cpu().numpy()

    def spec(self) -> dict[str, Any]:
        return {"type": "contacts", "r0_nm": self.r0, "n": self.exponent, "pairs": self.pairs().tolist()}

    def atom_indices(self) -> np.ndarray:
        return np.unique(self.pairs())


class Dihedrals(Featurizer):
    """Dihedral angles as ``(sin, cos)`` pairs: output is ``[sin φ_1..φ_m, cos φ_1..φ_m]`` (dimensionless).

    Parameters
    ----------
    quadruplets : array_like of int, shape=(n_dihedrals, 4)

    See Also
    --------
    backbone_dihedral_atoms, chi_dihedral_atoms
    """

    def __init__(self, quadruplets: Any, names: Sequence[str] | None = None):
        super().__init__()
        quads = ensure_index_array(quadruplets, width=4, name="dihedral atoms")
        for k in range(4):
            self.register_buffer(f"atom{k}", _index_buffer(quads[:, k]))
        self.n_features = 2 * len(quads)
        self._names = list(names) if names is not None else [f"dih{i}" for i in range(len(quads))]
        if len(self._names) != len(quads):
            raise ValueError(f"got {len(self._names)} names for {len(quads)} dihedrals")

    @classmethod
    def backbone(cls, topology: Any, kinds: Sequence[str] = ("phi", "psi")) -> "Dihedrals":
        """Backbone φ/ψ(/ω) dihedrals of a protein topology."""
        quads = backbone_dihedral_atoms(topology, kinds)
        return cls(quads)

    @classmethod
    def chi(cls, topology: Any, orders: Sequence[int] = (1,)) -> "Dihedrals":
        """Side-chain χ dihedrals of a protein topology."""
        return cls(chi_dihedral_atoms(topology, orders))

    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tensor:
        sin, cos = dihedral_sin_cos(
            positions.index_select(-2, self.atom0),
            positions.index_select(-2, self.atom1),
            positions.index_select(-2, self.atom2),
            positions.index_select(-2, self.atom3),
            box,
        )
        return torch.cat([sin, cos], dim=-1)

    def quadruplets(self) -> np.ndarray:
        return torch.stack([self.atom0, self.atom1, self.atom2, self.atom3], dim=1).cpu().numpy()

    def spec(self) -> dict[str, Any]:
        return {"type": "dihedrals", "encoding": "sin,cos", "quadruplets": self.quadruplets().tolist()}

    def atom_indices(self) -> np.ndarray:
        return np.unique(self.quadruplets())

    def feature_names(self) -> list[str]:
        return [f"sin({n})" for n in self._names] + [f"cos({n})" for n in self._names]


def _unwrap_tree(reference: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spanning tree used to make a selection whole in a periodic box.

    Each atom k > 0 hangs from the nearest earlier atom of the (whole) reference structure, so every tree edge
    is short. Returns ``child``, ``parent`` (edge lists, shape=(n-1,)) and the path matrix ``paths``
    (shape=(n, n-1)) with ``paths[i, e] = 1`` when edge ``e`` lies on the path from atom 0 to atom i.
    """
    n = len(reference)
    parent = np.zeros(n, dtype=np.int64)
    for k in range(1, n):
        parent[k] = int(np.argmin(np.linalg.norm(reference[:k] - reference[k], axis=1)))
    paths = np.zeros((n, max(n - 1, 0)))
    for i in range(1, n):
        k = i
        while k != 0:
            paths[i, k - 1] = 1.0
            k = parent[k]
    return np.arange(1, n), parent[1:], paths


class AlignedCoordinates(Featurizer):
    """Cartesian coordinates of selected atoms, superposed in-graph onto a reference (differentiable Kabsch fit).

    The output (``3 * n_selected`` values, **nm**, ordered x0, y0, z0, x1, ...) is invariant to rigid motions
    of the input, so trajectories need no pre-alignment. With a periodic box the selection is first made whole
    by imaging each atom against its parent in a spanning tree built from the reference (each tree edge is
    short), so a molecule split across the boundary gives the same features as the whole molecule. This needs
    every tree edge to be shorter than half the box, which holds for bonded or packed selections.

    Parameters
    ----------
    atoms : array_like of int, shape=(n_selected,)
        Atom indices (at least 3, not all collinear).
    reference : array_like, shape=(n_selected, 3) or (n_atoms, 3)
        Reference coordinates in **nm** of the selected atoms (or of the full system, from which the
        selection is taken); must be whole (not split by periodic wrapping).
    """

    def __init__(self, atoms: Any, reference: Any):
        super().__init__()
        atoms = ensure_index_array(atoms, name="aligned-coordinate atoms")
        if len(atoms) < 3:
            raise ValueError(f"aligned coordinates need at least 3 atoms, got {len(atoms)}")
        if len(np.unique(atoms)) != len(atoms):
            raise ValueError("aligned-coordinate atoms contain duplicates")
        ref = ensure_positions(reference, name="reference", allow_frames=False)
        if len(ref) != len(atoms):
            if len(ref) > int(atoms.max()):
                ref = ref[atoms]
            else:
                raise ValueError(
                    f"reference has {len(ref)} atoms; pass coordinates of the {len(atoms)} selected atoms or of the"
                    " full system"
                )
        ref = ref - ref.mean(axis=0)
        if np.linalg.matrix_rank(ref, tol=1e-6) < 2:
            raise ValueError("reference atoms are collinear; the Kabsch fit would be ill-defined")
        child, parent, paths = _unwrap_tree(ref)
        self.register_buffer("atoms", _index_buffer(atoms))
        self.register_buffer("reference", torch.as_tensor(ref, dtype=torch.float64))
        self.register_buffer("child", _index_buffer(child))
        self.register_buffer("parent", _index_buffer(parent))
        self.register_buffer("paths", torch.as_tensor(paths, dtype=torch.float64))
        self.n_features = 3 * len(atoms)
        self.n_selected = len(atoms)

    @classmethod
    def from_selection(cls, topology: Any, selection: str | Sequence[int], reference: Any) -> "AlignedCoordinates":
        """Aligned coordinates of the atoms selected in ``topology``, reference from full-system positions.

        Parameters
        ----------
        topology : mdtraj.Topology or openmm.app.Topology
        selection : str or sequence of int
        reference : array_like, shape=(n_atoms, 3), **nm**, or an mdtraj.Trajectory (its first frame is used)
        """
        atoms = select_atoms(topology, selection)
        ref = reference.xyz[0] if hasattr(reference, "xyz") else reference
        return cls(atoms, np.asarray(ensure_positions(ref, allow_frames=False))[atoms])

    def make_whole(self, selected: Tensor, box: Optional[Tensor]) -> Tensor:
        """Rebuild the selected atoms as one whole image (identity when ``box`` is None)."""
        if box is None or self.n_selected < 2:
            return selected
        bonds = minimum_image(
            selected.index_select(-2, self.child) - selected.index_select(-2, self.parent), box
        )
        return selected[..., 0:1, :] + torch.matmul(self.paths.to(selected.dtype), bonds)

    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tensor:
        selected = self.make_whole(positions.index_select(-2, self.atoms), box)
        aligned = kabsch_align(selected, self.reference)
        return aligned.reshape(aligned.shape[:-2] + (self.n_features,))

    def spec(self) -> dict[str, Any]:
        return {
            "type": "aligned_coordinates",
            "units": "nm",
            "atoms": self.atoms.cpu().tolist(),
            "reference_nm": self.reference.cpu().tolist(),
        }

    def atom_indices(self) -> np.ndarray:
        return np.unique(self.atoms.cpu().numpy())

    def feature_names(self) -> list[str]:
        return [f"{c}({a})" for a in self.atoms.cpu().tolist() for c in "xyz"]


class Concatenate(Featurizer):
    """Concatenation of several featurizers' outputs, in the given order."""

    def __init__(self, featurizers: Sequence[Featurizer]):
        super().__init__()
        featurizers = list(featurizers)
        if not featurizers:
            raise ValueError("Concatenate needs at least one featurizer")
        for f in featurizers:
            if not isinstance(f, Featurizer):
                raise TypeError(f"Concatenate takes Featurizer instances, got {type(f).__name__}")
        self.parts = torch.nn.ModuleList(featurizers)
        self.n_features = sum(f.n_features for f in featurizers)

    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tensor:
        outputs: list[Tensor] = []
        for part in self.parts:
            outputs.append(part(positions, box))
        return torch.cat(outputs, dim=-1)

    def spec(self) -> dict[str, Any]:
        return {"type": "concatenate", "parts": [p.spec() for p in self.parts]}

    def atom_indices(self) -> np.ndarray:
        return np.unique(np.concatenate([p.atom_indices() for p in self.parts]))

    def feature_names(self) -> list[str]:
        return [name for p in self.parts for name in p.feature_names()]


class Standardizer(torch.nn.Module):
    """Affine input standardisation ``(x - mean) / scale`` fitted on training features and stored in the module.

    Parameters
    ----------
    n_features : int
    """

    def __init__(self, n_features: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features, dtype=torch.float64))
        self.register_buffer("scale", torch.ones(n_features, dtype=torch.float64))

    def fit(self, features: Any, weights: Any | None = None, min_scale: float = 1e-6) -> "Standardizer":
        """Fit mean and standard deviation (optionally weighted) over frames.

        Parameters
        ----------
        features : array_like, shape=(n_frames, n_features)
        weights : array_like, shape=(n_frames,), optional
            Non-negative per-frame weights.
        min_scale : float, default 1e-6
            Features whose standard deviation is below this are left unscaled (scale 1) instead of blowing up.
        """
        x = torch.as_tensor(np.asarray(features), dtype=torch.float64)
        if x.ndim != 2 or x.shape[1] != self.mean.shape[0]:
            raise ValueError(f"expected features of shape (n_frames, {self.mean.shape[0]}), got {tuple(x.shape)}")
        w = torch.ones(x.shape[0], dtype=torch.float64) if weights is None else torch.as_tensor(weights).double()
        w = w / w.sum()
        mean = (w[:, None] * x).sum(0)
        std = torch.sqrt((w[:, None] * (x - mean) ** 2).sum(0))
        std = torch.where(std < min_scale, torch.ones_like(std), std)
        self.mean.copy_(mean.to(self.mean.dtype))
        self.scale.copy_(std.to(self.scale.dtype))
        return self

    def forward(self, features: Tensor) -> Tensor:
        return (features - self.mean) / self.scale

    def inverse(self, standardized: Tensor) -> Tensor:
        """Map standardised values back to feature units."""
        return standardized * self.scale + self.mean


def featurize(
    featurizer: Featurizer,
    positions: Any,
    box: Any | None = None,
    *,
    batch_size: int = 1024,
    dtype: torch.dtype = torch.float64,
) -> np.ndarray:
    """Evaluate a featurizer on many frames without building autograd graphs.

    Parameters
    ----------
    featurizer : Featurizer
    positions : array_like, shape=(n_frames, n_atoms, 3), **nm**
    box : array_like, shape=(n_frames, 3, 3) or (3, 3), **nm**, optional
    batch_size : int, default 1024
        Frames per batch (memory only: the features do not depend on it).

    Returns
    -------
    numpy.ndarray, shape=(n_frames, n_features)
    """
    from .validation import ensure_box

    xyz = ensure_positions(positions)
    if xyz.ndim == 2:
        xyz = xyz[None]
    if xyz.shape[1] < featurizer.min_atoms():
        raise ValueError(
            f"positions have {xyz.shape[1]} atoms but the featurizer reads atom index {featurizer.min_atoms() - 1}"
        )
    boxes = ensure_box(box, n_frames=len(xyz))
    out = []
    with torch.no_grad():
        module = featurizer.to(dtype)
        for start in range(0, len(xyz), batch_size):
            chunk = torch.as_tensor(xyz[start : start + batch_size], dtype=dtype)
            b = None
            if boxes is not None:
                b = torch.as_tensor(boxes if boxes.ndim == 2 else boxes[start : start + batch_size], dtype=dtype)
            out.append(module(chunk, b).cpu().numpy())
    return np.concatenate(out, axis=0)


#: Feature kinds understood by :func:`build_featurizer` (CLI and campaign configs).
FEATURE_KINDS = ("distances", "contacts", "aligned", "phipsi", "chi1")


def build_featurizer(
    kinds: Sequence[str], topology: Any, selection: str, reference: Any, contact_r0: float = 0.8
) -> Featurizer:
    """Featurizer from kind names (concatenated in order).

    Parameters
    ----------
    kinds : sequence of {"distances", "contacts", "aligned", "phipsi", "chi1"}
        ``distances``/``contacts``/``aligned`` use ``selection``; ``phipsi`` and ``chi1`` are backbone φ/ψ and
        side-chain χ1 (sin, cos).
    topology : mdtraj.Topology or openmm.app.Topology
    selection : str
        mdtraj selection for the atom-based kinds.
    reference : array_like (n_atoms, 3) nm or mdtraj.Trajectory
        Reference structure for ``aligned``.
    contact_r0 : float, default 0.8
        Switching distance of ``contacts``, nm.
    """
    parts: list[Featurizer] = []
    for kind in kinds:
        if kind == "distances":
            parts.append(Distances.from_selection(topology, selection))
        elif kind == "contacts":
            parts.append(Contacts.from_selection(topology, selection, r0=contact_r0))
        elif kind == "aligned":
            parts.append(AlignedCoordinates.from_selection(topology, selection, reference))
        elif kind == "phipsi":
            parts.append(Dihedrals.backbone(topology, ("phi", "psi")))
        elif kind == "chi1":
            parts.append(Dihedrals.chi(topology, (1,)))
        else:
            raise ValueError(f"unknown feature kind {kind!r}; choose from {FEATURE_KINDS}")
    if not parts:
        raise ValueError(f"give at least one feature kind from {FEATURE_KINDS}")
    return parts[0] if len(parts) == 1 else Concatenate(parts)
