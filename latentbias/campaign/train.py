"""Training after a round: retrain the encoder on all frames so far, align its latent space to the previous
round's, export it, and store its statistics.

Files of round r (written by :func:`train_round`, read by :func:`load_round_model`):

* ``model.pt`` — the exported :class:`~latentbias.models.LatentModel` (featurizer + aligned encoder);
* ``model_state.npz`` — the autoencoder's weights (decoder included, for reconstruction errors), with checksum;
* ``model.json`` — training history, best epoch, architecture, number of frames, the latent range of all frames
  so far (``z_min``/``z_max``, which set the next metadynamics grid), the 99th percentile of the reconstruction
  error (the OOD guard's unit; ``recon_error_n``: frames it comes from) and, for r >= 1, the alignment fit (R², rmsd, scale).

Training is warm-started from the previous round's autoencoder (``[model] warm_start``); the alignment is a
similarity Procrustes fit on the frames both models saw, folded into the encoder
(:mod:`latentbias.campaign.alignment`).

Exploring and converging ask different things of an encoder (:func:`encoder_activation`). An exploration bias
must keep pushing beyond the frames seen so far: an encoder whose activation saturates (tanh) is flat there, so the
bias has no gradient where the next basin lies, while an unbounded one (silu) extrapolates. A converge phase
reweights what its frozen bias did, so its encoder should be bounded and smooth. ``[converge] activation`` sets
the activation of the encoders trained for the converge phase (after round ``[campaign] rounds`` − 1, and after
each converge attempt that goes back to retraining); such an encoder is trained from scratch when the previous
round's has another activation (its weights would mean something else), and aligned to the previous latent space
as every round's is.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..export import LatentModelFile, load_model, save_model
from ..features import AlignedCoordinates, featurize
from ..models import FeatureAutoencoder, LatentModel
from ..sampleweights import cluster_balanced_weights
from ..training import LatentModelEstimator
from ..analysis.pockets import anchor_agreement
from .alignment import apply_alignment, fit_alignment
from .pocket import anchored_alignment, pocket_anchor
from .records import frame_boxes
from .rundir import RunDir
from .seeds import RoundSeeds

if TYPE_CHECKING:
    from .loop import Campaign

logger = logging.getLogger(__name__)

__all__ = ["RoundModel", "encoder_activation", "train_round", "load_round_model"]


@dataclass
class RoundModel:
    """A round's trained model: the exported file (z), the autoencoder (reconstruction error) and its stats
    (the content of model.json)."""

    file: LatentModelFile
    autoencoder: FeatureAutoencoder
    info: dict[str, Any]

    def reconstruction_error(self, features: np.ndarray) -> np.ndarray:
        """Mean squared reconstruction error of standardized features, shape=(n,)."""
        with torch.no_grad():
            x = torch.as_tensor(features, dtype=torch.float32)
            target = self.autoencoder.standardizer(x)
            out = self.autoencoder.decode(self.autoencoder.encode(x))
            return ((out - target) ** 2).mean(-1).double().numpy()


def _state_file(run_dir: RunDir, r: int):
    return run_dir.round_dir(r) / "model_state.npz"


def load_round_model(run_dir: RunDir, r: int) -> RoundModel:
    """The model trained after round r, from its files."""
    info = run_dir.read_json(run_dir.round_dir(r) / "model.json")
    arch = info["architecture"]
    ae = FeatureAutoencoder(arch["n_features"], arch["latent_dim"], arch["hidden"], arch["activation"])
    ae.load_state_dict({k: torch.as_tensor(v) for k, v in run_dir.read_npz(_state_file(run_dir, r)).items()})
    return RoundModel(load_model(run_dir.model_file(r)), ae.eval(), info)


def encoder_activation(cfg: Any, r: int) -> str:
    """Activation of the encoder trained after round r: ``[converge] activation`` for the converge phase's encoders
    (r ≥ ``[campaign] rounds`` − 1 with a converge phase), else ``[model] activation`` (module docstring)."""
    cv = cfg.converge
    if cv.enabled and cv.activation and r >= cfg.campaign.rounds - 1:
        return cv.activation
    return cfg.model.activation


def train_round(campaign: Campaign, r: int, frames: dict[str, np.ndarray]) -> RoundModel:
    """Train, align and export the model of round r on ``frames`` (all frames of rounds 0..r, as
    :meth:`Campaign.all_frames` returns them); writes the round's model files and returns the model."""
    cfg, run_dir = campaign.cfg, campaign.run_dir
    t0 = time.perf_counter()
    featurizer = campaign.featurizer()
    positions = frames["positions"].astype(float)
    boxes = frame_boxes(frames)
    feats = featurize(featurizer, positions, boxes)
    lengths = [int(np.count_nonzero(frames["round"] == q)) for q in range(r + 1)]
    mc = cfg.model
    anchor = pocket_anchor(campaign, r, frames)  # [pocket]: one latent dimension trained to equal the openness
    activation = encoder_activation(cfg, r)
    est = LatentModelEstimator(latent_dim=mc.latent_dim, hidden=mc.hidden, activation=activation,
                               objective=mc.objective, lag=mc.lag, epochs=mc.epochs, batch_size=mc.batch_size,
                               learning_rate=mc.learning_rate, patience=mc.patience,
                               jacobian_penalty=mc.jacobian_penalty,
                               seed=RoundSeeds(cfg.md.seed, r).training, progress=campaign.progress,
                               **({"cv_dims": anchor["cv_dims"], "cv_weight": anchor["cv_weight"]} if anchor else {}))
    init = campaign.model(r - 1).autoencoder if (r > 0 and mc.warm_start) else None
    if init is not None and init.activation != activation:
        logger.info("round %d: the encoder's activation changes from %s to %s ([converge] activation): trained from "
                    "scratch", r, init.activation, activation)
        init = None
    weights = None
    if mc.balance_clusters:  # rare regions count as much as the start basin (latentbias.sampleweights)
        weights = cluster_balanced_weights(feats, min(mc.balance_clusters, len(feats)),
                                           seed=RoundSeeds(cfg.md.seed, r).training)
    # aligned coordinates alone: the decoder's validation RMSD (Å) goes into the model's metadata
    result = est.fit(feats, lengths=lengths, init=init, cvs=anchor["cvs"] if anchor else None, weights=weights,
                     coordinates=isinstance(featurizer, AlignedCoordinates))
    ae = result.model
    info: dict[str, Any] = {"round": r, "history": result.history, "best_epoch": result.best_epoch,
                            "fold": result.fold,
                            "architecture": ae.config(), "n_frames": int(len(feats))}
    if r > 0:
        n_prev = int(np.count_nonzero(frames["round"] < r))
        with torch.no_grad():
            z_new = ae.encode(torch.as_tensor(feats[:n_prev], dtype=torch.float32)).double().numpy()
        z_old = campaign.model(r - 1).file.encode(positions[:n_prev], None if boxes is None else boxes[:n_prev])
        align = anchored_alignment(z_new, z_old, anchor["cv_dims"]) if anchor else fit_alignment(z_new, z_old)
        apply_alignment(ae, align)
        info["alignment"] = {"r2": align.r2, "rmsd": align.rmsd, "scale": align.scale}
        logger.info("round %d: latent space aligned to round %d: R^2 = %.3f, rmsd = %.3g", r, r - 1, align.r2,
                    align.rmsd)
    model = LatentModel(featurizer, ae, campaign.system()[0].getNumParticles())
    run_dir.save_npz(_state_file(run_dir, r), **{k: v.detach().cpu().numpy() for k, v in ae.state_dict().items()})
    save_model(model, run_dir.model_file(r), training=result, overwrite=True, extra={"campaign_round": r},
               probe_positions=positions)
    exported = load_model(run_dir.model_file(r))
    z = exported.encode(positions, boxes)
    err = RoundModel(exported, ae, info).reconstruction_error(feats)
    info.update({"z_min": z.min(0).tolist(), "z_max": z.max(0).tolist(),
                 "recon_error_q99": float(np.quantile(err, 0.99)), "recon_error_n": int(len(err)),
                 "train_seconds": time.perf_counter() - t0})
    if anchor:
        k = anchor["cv_dims"][0]
        info["pocket_anchor"] = {"dim": k, **anchor_agreement(z[:, k], anchor["cvs"][:, 0]),
                                 "val_pearson": (result.history.get("val_cv_correlation") or [None])[-1]}
        logger.info("round %d: z%d vs pocket openness: %s", r, k, info["pocket_anchor"])
    run_dir.write_json(run_dir.round_dir(r) / "model.json", info)
    h = result.history
    logger.info("round %d trained: %d frames total, val loss %.4g (epoch %d), z range %s, OOD frames %d", r,
                len(feats), (h["val_loss"] or h["train_loss"])[result.best_epoch], result.best_epoch,
                np.array2string(np.stack([z.min(0), z.max(0)]), precision=2),
                int(frames["ood"][frames["round"] == r].sum()))
    return RoundModel(exported, ae, info)
