"""Full-atom structures from decoded latent points.

A coordinate decoder (:meth:`latentbias.export.LatentModelFile.decode`) returns only the atoms the encoder reads
(e.g. the heavy atoms), in the frame of the featurizer's reference structure. :func:`rebuild_structure` completes
them with the remaining atoms (hydrogens, side chains the model does not read, solvent) taken from a *template*:
the sampled frame nearest in latent space (:func:`nearest_frames`), superposed onto the decoded atoms by a Kabsch
fit (:func:`kabsch_fit`) on those atoms. The decoded atoms replace the template's; everything else keeps the
template's internal geometry, so bonds between decoded and template atoms may be strained by the decoder's error
(typically a few tenths of an Å): the restrained relaxation (:mod:`latentbias.pathway.relax`) removes that.

For a protein whose decoder returns e.g. the backbone only, one global fit leaves the side chains and hydrogens of
a residue whose decoded backbone moved relative to the template (a floppy terminus) several Å from their bonded
partners. With ``groups`` (e.g. the residue of every atom; the workflow passes residues) the atoms of each group
that has at least three decoded atoms are instead placed by a local Kabsch fit of the template's decoded atoms of
that group onto their decoded positions (villin HP35, backbone decoder: largest bond deviation of the rebuilt
structures 4.8 Å with the global fit, 0.44 Å per residue); groups with fewer decoded atoms keep the global fit.

Units: nm.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["kabsch_fit", "nearest_frames", "rebuild_structure", "reconstruction_rmsd"]


def kabsch_fit(mobile: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
    """Rotation and translation that superpose ``mobile`` onto ``target`` (least squares, no reflection).

    Parameters
    ----------
    mobile, target : array_like, shape=(n, 3), nm
        Corresponding points (n >= 3).

    Returns
    -------
    rotation : numpy.ndarray, shape=(3, 3)
    translation : numpy.ndarray, shape=(3,)
        ``mobile @ rotation.T + translation`` is the fitted copy, nm.
    """
    p = np.asarray(mobile, dtype=float)
    q = np.asarray(target, dtype=float)
    if p.shape != q.shape or p.ndim != 2 or p.shape[1] != 3 or p.shape[0] < 3:
        raise ValueError(f"mobile and target must both have shape (n >= 3, 3), got {p.shape} and {q.shape}")
    pc, qc = p.mean(0), q.mean(0)
    h = (p - pc).T @ (q - qc)
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(vt.T @ u.T))
    rotation = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    return rotation, qc - pc @ rotation.T


def nearest_frames(z_frames: Any, points: Any, period: Any | None = None) -> np.ndarray:
    """Index of the frame nearest (Euclidean in z; minimum image on periodic dimensions) to each point.

    Parameters
    ----------
    z_frames : array_like, shape=(n_frames, d)
    points : array_like, shape=(n_points, d)
    period : array_like, shape=(d,), optional
        0 = not periodic.

    Returns
    -------
    numpy.ndarray of int, shape=(n_points,)
    """
    z = np.atleast_2d(np.asarray(z_frames, dtype=float))
    p = np.atleast_2d(np.asarray(points, dtype=float))
    if z.shape[1] != p.shape[1] or len(z) == 0:
        raise ValueError(f"z_frames (n, {p.shape[1]}) and points disagree: {z.shape}, {p.shape}")
    delta = p[:, None, :] - z[None, :, :]
    if period is not None:
        per = np.asarray(period, dtype=float)
        wrap = per > 0
        delta[..., wrap] -= per[wrap] * np.round(delta[..., wrap] / per[wrap])
    return np.argmin((delta**2).sum(-1), axis=1)


def rebuild_structure(decoded: Any, decoded_atoms: Any, template: Any, groups: Any | None = None) -> np.ndarray:
    """Complete decoded atoms with the other atoms of a template frame superposed onto them.

    Parameters
    ----------
    decoded : array_like, shape=(m, 3), nm
        Decoded coordinates of the atoms ``decoded_atoms`` (any frame: only the internal geometry matters).
    decoded_atoms : array_like of int, shape=(m,)
        Their indices in the full system.
    template : array_like, shape=(n_atoms, 3), nm
        A full-system frame (e.g. the sampled frame nearest in latent space).
    groups : array_like of int, shape=(n_atoms,), optional
        Group (e.g. residue index) of every atom: atoms of a group with >= 3 decoded atoms follow a local fit on
        that group's decoded atoms (module docstring). Default: one global fit.

    Returns
    -------
    numpy.ndarray, shape=(n_atoms, 3), nm
        The template Kabsch-fitted onto ``decoded`` (on the decoded atoms; per group with ``groups``), with the
        decoded atoms replaced by ``decoded``; the result is in the decoded frame.
    """
    x = np.asarray(decoded, dtype=float)
    t = np.asarray(template, dtype=float)
    idx = np.asarray(decoded_atoms, dtype=np.int64)
    if t.ndim != 2 or t.shape[1] != 3:
        raise ValueError(f"template must have shape (n_atoms, 3), got {t.shape}")
    if x.shape != (len(idx), 3):
        raise ValueError(f"decoded must have shape ({len(idx)}, 3) (one row per decoded atom), got {x.shape}")
    if idx.size and (idx.min() < 0 or idx.max() >= len(t) or len(np.unique(idx)) != len(idx)):
        raise ValueError(f"decoded_atoms must be distinct indices in [0, {len(t)})")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(t))):
        raise ValueError("decoded and template coordinates must be finite")
    rotation, shift = kabsch_fit(t[idx], x)
    out = t @ rotation.T + shift
    if groups is not None:
        g = np.asarray(groups).reshape(-1)
        if g.shape != (len(t),):
            raise ValueError(f"groups must give one group per atom, shape ({len(t)},), got {np.shape(groups)}")
        where = np.full(len(t), -1, dtype=np.int64)
        where[idx] = np.arange(len(idx))
        for label in np.unique(g):
            members = np.flatnonzero(g == label)
            dec = members[where[members] >= 0]
            rest = members[where[members] < 0]
            if len(dec) < 3 or len(rest) == 0:
                continue
            r, sh = kabsch_fit(t[dec], x[where[dec]])
            out[rest] = t[rest] @ r.T + sh
    out[idx] = x
    return out


def reconstruction_rmsd(model: Any, positions: Any, box: Any | None = None) -> np.ndarray:
    """RMSD (Å) between each frame's decoded atoms, ``decode(encode(x))``, and the frame's own atoms after optimal
    superposition (Kabsch), per frame.

    Parameters
    ----------
    model : latentbias.export.LatentModelFile
        With a coordinate decoder.
    positions : array_like, shape=(n_frames, n_atoms, 3), nm
    box : array_like, shape=(n_frames, 3, 3), nm, optional

    Returns
    -------
    numpy.ndarray, shape=(n_frames,), Å
    """
    x = np.asarray(positions, dtype=float)
    if x.ndim != 3:
        raise ValueError(f"positions must have shape (n_frames, n_atoms, 3), got {x.shape}")
    decoded = model.decode(model.encode(x, box))
    atoms = np.asarray(model.metadata["decoder"]["atom_indices"], dtype=np.int64)
    out = np.empty(len(x))
    for k in range(len(x)):
        rot, shift = kabsch_fit(x[k, atoms], decoded[k])
        fitted = x[k, atoms] @ rot.T + shift
        out[k] = 10.0 * np.sqrt(np.mean(np.sum((fitted - decoded[k]) ** 2, axis=1)))
    return out
