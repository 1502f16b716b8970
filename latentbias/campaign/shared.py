"""One encoder for several systems: features on the atoms they share, trained on their pooled frames.

Shared atoms
------------
:class:`SharedAtoms` matches every system's atoms to the reference (first) system's by chain position, residue
number and atom name (:func:`latentbias.mutants.common_atoms`; the residue *name* is not part of the key, so a
mutated residue keeps the atoms both residue types carry under the same name). The features of every system are
built on the reference system's selection **restricted to the shared atoms, in the reference order**, so feature
k means the same atoms in every system:

* ``distances``/``contacts``: all pairs of the shared selected atoms;
* ``aligned``: their coordinates Kabsch-aligned onto the *reference system's* structure (one reference for all);
* ``phipsi``/``chi1``: the reference system's dihedrals whose four atoms are all shared (a χ1 of a residue mutated
  to Gly or Ala is dropped; φ/ψ of a mutated residue are kept: N, CA, C and the neighbours' C/N are shared).

What the mutated side chain contributes is therefore stated, not hidden: at a mutated site only the atoms both
residues carry (for ALA→GLY: N, H, CA, C, O — not CB, nor HA, which glycine names HA2/HA3) enter the encoder; the
side-chain atoms beyond that are **left out of the features** (logged by ``common_atoms``). They still act through
the force field, so their effect on the backbone and on everything the encoder sees is what the comparison
measures; the encoder cannot tell the systems apart by atoms one of them lacks.

Training
--------
:func:`train_shared_round` trains one autoencoder on the features of all systems' frames of rounds 0..r, each
system's frames weighted so that every system carries the same total weight (``w = N / (S n_s)``), warm-started from
the previous round's shared autoencoder and aligned to its latent space (similarity Procrustes on the frames of
rounds < r of all systems, as :mod:`latentbias.campaign.train` does for one system). It writes the shared files
``RUNDIR/shared/round_XXX/{model_state.npz, model.json}``; :func:`write_member_model` then exports, for each system,
the same autoencoder behind that system's featurizer as the system's ``model.pt`` (so every single-system tool —
simulation, weights, ``latentbias report`` — reads a member run directory unchanged).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..export import load_model, save_model
from ..features import (AlignedCoordinates, Concatenate, Contacts, Dihedrals, Distances, Featurizer,
                        backbone_dihedral_atoms, chi_dihedral_atoms, featurize, select_atoms)
from ..io import load_json, load_npz, save_npz, write_json
from ..models import FeatureAutoencoder, LatentModel
from ..training import LatentModelEstimator
from .alignment import apply_alignment, fit_alignment
from .records import frame_boxes
from .rundir import RunDirError
from .rundirformat import unverified_handler
from .seeds import RoundSeeds

logger = logging.getLogger(__name__)

__all__ = ["SharedAtoms", "balanced_weights", "train_shared_round", "load_shared_autoencoder", "write_member_model"]


class SharedAtoms:
    """The atoms shared by a reference system and others, and the shared featurizer of each.

    Parameters
    ----------
    topologies : sequence of mdtraj.Topology or openmm.app.Topology
        Reference (wild type) first.
    reference_xyz : numpy.ndarray, shape=(n_atoms_ref, 3), nm
        The reference system's structure (the Kabsch reference of ``aligned`` features).
    """

    def __init__(self, topologies: Sequence[Any], reference_xyz: np.ndarray):
        from ..mutants import common_atoms
        from ..validation import ensure_mdtraj_topology

        self.topologies = [ensure_mdtraj_topology(t, f"topologies[{i}]") for i, t in enumerate(topologies)]
        self.reference_xyz = np.asarray(reference_xyz, dtype=float)
        shared = common_atoms(self.topologies)
        #: index map reference atom -> atom of system s (-1: not shared), one array per system
        self.maps = []
        for s in range(len(self.topologies)):
            m = np.full(self.topologies[0].n_atoms, -1, dtype=np.int64)
            m[shared[0]] = shared[s]
            self.maps.append(m)
        self.n_shared = len(shared[0])
        self._selections: dict[str, np.ndarray] = {}

    def _mapped(self, s: int, ref_atoms: np.ndarray) -> np.ndarray:
        out = self.maps[s][np.asarray(ref_atoms, dtype=np.int64)]
        if np.any(out < 0):
            raise ValueError("internal error: an atom outside the shared set was mapped")
        return out

    def reference_selection(self, selection: str) -> np.ndarray:
        """Reference-system atoms of ``selection`` that every system shares (reference order)."""
        if selection in self._selections:
            return self._selections[selection]
        sel = select_atoms(self.topologies[0], selection)
        kept = sel[self.maps[1][sel] >= 0] if len(self.maps) > 1 else sel
        for m in self.maps[2:]:
            kept = kept[m[kept] >= 0]
        dropped = len(sel) - len(kept)
        if dropped:
            top = self.topologies[0]
            logger.info("shared features: %d of %d selected atoms are not in every system and are left out: %s",
                        dropped, len(sel), ", ".join(str(top.atom(int(i))) for i in sorted(set(sel) - set(kept))))
        if len(kept) < 3:
            raise ValueError(f"selection {selection!r} leaves {len(kept)} atoms shared by all systems; at least 3 "
                             "are needed")
        self._selections[selection] = kept
        return kept

    def _shared_dihedrals(self, quads: np.ndarray) -> np.ndarray:
        ok = np.all(np.stack([m[quads] >= 0 for m in self.maps]).all(0), axis=1)
        if not ok.all():
            logger.info("shared features: %d dihedrals involve atoms not in every system and are left out",
                        int((~ok).sum()))
        if not ok.any():
            raise ValueError("no dihedral of the requested kind is shared by all systems")
        return quads[ok]

    def featurizer(self, s: int, kinds: Sequence[str], selection: str, contact_r0: float = 0.8) -> Featurizer:
        """The shared featurizer of system s (features identical in meaning for every system)."""
        parts: list[Featurizer] = []
        atoms = None
        for kind in kinds:
            if kind in ("distances", "contacts", "aligned"):
                if atoms is None:
                    atoms = self.reference_selection(selection)
                idx = self._mapped(s, atoms)
                if kind == "distances":
                    parts.append(Distances.from_selection(self.topologies[s], idx))
                elif kind == "contacts":
                    parts.append(Contacts.from_selection(self.topologies[s], idx, r0=contact_r0))
                else:
                    parts.append(AlignedCoordinates(idx, self.reference_xyz[atoms]))
            elif kind in ("phipsi", "chi1"):
                quads = (backbone_dihedral_atoms(self.topologies[0], ("phi", "psi")) if kind == "phipsi"
                         else chi_dihedral_atoms(self.topologies[0], (1,)))
                parts.append(Dihedrals(self._mapped(s, self._shared_dihedrals(quads))))
            else:
                raise ValueError(f"unknown feature kind {kind!r}")
        return parts[0] if len(parts) == 1 else Concatenate(parts)


def balanced_weights(system_of_frame: np.ndarray) -> np.ndarray:
    """Per-frame training weights giving every system the same total weight; mean weight 1.

    Parameters
    ----------
    system_of_frame : numpy.ndarray of int, shape=(n,)

    Returns
    -------
    numpy.ndarray, shape=(n,): ``n / (S n_s)`` for a frame of system s (S systems with frames).
    """
    labels = np.asarray(system_of_frame)
    systems, counts = np.unique(labels, return_counts=True)
    per = {int(k): len(labels) / (len(systems) * c) for k, c in zip(systems, counts)}
    return np.array([per[int(k)] for k in labels], dtype=float)


def _shared_dir(rundir: Path, r: int) -> Path:
    return Path(rundir) / "shared" / f"round_{r:03d}"


def load_shared_autoencoder(rundir: str | Path, r: int) -> tuple[FeatureAutoencoder, dict[str, Any]]:
    """The shared autoencoder of round r and its ``model.json`` content."""
    d = _shared_dir(Path(rundir), r)
    # a record without a checksum is refused in a run directory of the current format (multi.json stores it)
    unverified = unverified_handler(Path(rundir) / "multi.json", "restore the shared model from a backup, or start "
                                    "again in a new --rundir", RunDirError)
    info = load_json(d / "model.json", unverified=unverified)
    arch = info["architecture"]
    ae = FeatureAutoencoder(arch["n_features"], arch["latent_dim"], arch["hidden"], arch["activation"])
    ae.load_state_dict({k: torch.as_tensor(v) for k, v in load_npz(d / "model_state.npz",
                                                                    unverified=unverified).items()})
    return ae.eval(), info


def has_shared_round(rundir: str | Path, r: int) -> bool:
    return (_shared_dir(Path(rundir), r) / "model.json").is_file()


def train_shared_round(rundir: str | Path, r: int, members: Sequence[Any], progress: bool = False) -> dict[str, Any]:
    """Train the shared encoder of round r on the frames of rounds 0..r of every member campaign.

    Parameters
    ----------
    rundir : path
        The multi-system run directory (files go to ``shared/round_XXX``).
    r : int
        Round.
    members : sequence of Campaign
        Member campaigns, reference first; each with a shared ``featurizer()``.

    Returns
    -------
    dict
        The shared ``model.json`` content (history, architecture, per-system frame counts, pooled z range,
        reconstruction-error 99th percentile, alignment fit).
    """
    t0 = time.perf_counter()
    cfg = members[0].cfg
    feats, system_of, lengths, round_of = [], [], [], []
    for s, m in enumerate(members):
        frames = m.all_frames(r)
        f = featurize(m.featurizer(), frames["positions"].astype(float), frame_boxes(frames))
        feats.append(f)
        system_of.append(np.full(len(f), s))
        round_of.append(frames["round"])
        lengths += [int(np.count_nonzero(frames["round"] == q)) for q in range(r + 1)]
    x = np.concatenate(feats)
    sys_of = np.concatenate(system_of)
    rnd = np.concatenate(round_of)
    lengths = [n for n in lengths if n > 0]
    w = balanced_weights(sys_of)
    mc = cfg.model
    est = LatentModelEstimator(latent_dim=mc.latent_dim, hidden=mc.hidden, activation=mc.activation,
                               objective=mc.objective, lag=mc.lag, epochs=mc.epochs, batch_size=mc.batch_size,
                               learning_rate=mc.learning_rate, patience=mc.patience,
                               jacobian_penalty=mc.jacobian_penalty,
                               seed=RoundSeeds(cfg.md.seed, r).training, progress=progress)
    prev = load_shared_autoencoder(rundir, r - 1)[0] if r > 0 else None
    result = est.fit(x, weights=w, lengths=lengths, init=prev if mc.warm_start else None)
    ae = result.model
    info: dict[str, Any] = {"round": r, "history": result.history, "best_epoch": result.best_epoch,
                            "fold": result.fold,
                            "architecture": ae.config(), "n_frames": int(len(x)),
                            "frames_per_system": {m.system_name: int(np.count_nonzero(sys_of == s))
                                                  for s, m in enumerate(members)},
                            "training_weights": "balanced: every system carries the same total weight"}
    if r > 0:
        old = rnd < r
        with torch.no_grad():
            z_new = ae.encode(torch.as_tensor(x[old], dtype=torch.float32)).double().numpy()
            z_old = prev.encode(torch.as_tensor(x[old], dtype=torch.float32)).double().numpy()
        align = fit_alignment(z_new, z_old)
        apply_alignment(ae, align)
        info["alignment"] = {"r2": align.r2, "rmsd": align.rmsd, "scale": align.scale}
        logger.info("shared round %d: latent space aligned to round %d: R^2 = %.3f", r, r - 1, align.r2)
    with torch.no_grad():
        xt = torch.as_tensor(x, dtype=torch.float32)
        z = ae.encode(xt).double().numpy()
        target = ae.standardizer(xt)
        err = ((ae.decode(ae.encode(xt)) - target) ** 2).mean(-1).double().numpy()
    info.update({"z_min": z.min(0).tolist(), "z_max": z.max(0).tolist(),
                 "recon_error_q99": float(np.quantile(err, 0.99)), "recon_error_n": int(len(err)),
                 "train_seconds": time.perf_counter() - t0})
    d = _shared_dir(Path(rundir), r)
    d.mkdir(parents=True, exist_ok=True)
    save_npz(d / "model_state.npz", checksum=True,
             **{k: v.detach().cpu().numpy() for k, v in ae.state_dict().items()})
    write_json(d / "model.json", info, checksum=True)  # written last: its presence marks the round's shared model as complete
    h = result.history
    logger.info("shared round %d trained on %s frames, val loss %.4g (epoch %d)", r, info["frames_per_system"],
                (h["val_loss"] or h["train_loss"])[result.best_epoch], result.best_epoch)
    return info


def write_member_model(member: Any, rundir: str | Path, r: int) -> Any:
    """Export round r's shared autoencoder behind ``member``'s featurizer as the member's round-r model files
    (``model.pt``, ``model_state.npz``, ``model.json`` with the shared statistics). Returns the member's
    :class:`~latentbias.campaign.train.RoundModel`."""
    from .train import RoundModel

    ae, info = load_shared_autoencoder(rundir, r)
    run_dir = member.run_dir
    model = LatentModel(member.featurizer(), ae, member.system()[0].getNumParticles())
    run_dir.save_npz(run_dir.round_dir(r) / "model_state.npz",
                     **{k: v.detach().cpu().numpy() for k, v in ae.state_dict().items()})
    save_model(model, run_dir.model_file(r), overwrite=True,
               extra={"campaign_round": r, "shared_encoder": str(_shared_dir(Path(rundir), r)),
                      "system": member.system_name})
    member_info = {**info, "shared": True, "system": member.system_name}
    run_dir.write_json(run_dir.round_dir(r) / "model.json", member_info)
    return RoundModel(load_model(run_dir.model_file(r)), ae, member_info)
