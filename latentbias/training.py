"""Fitting latent models: an estimator (settings + ``fit``) that returns a model and its loss history.

The estimator/model split follows deeptime: :class:`LatentModelEstimator` holds hyper-parameters and is reusable;
``fit`` returns a :class:`TrainingResult` holding the fitted :class:`~latentbias.models.FeatureAutoencoder` and the
loss history. :meth:`LatentModelEstimator.fit_trajectories` featurizes mdtraj trajectories (or position arrays)
first and returns a ready-to-export :class:`~latentbias.models.LatentModel`.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .features import AlignedCoordinates, Featurizer, featurize
from .jacobian_penalty import fold_measure, latent_gradient_sq
from .jacobian_penalty import jacobian_penalty as smoothness_penalty
from .losses import cv_alignment_loss, fape_loss, reconstruction_loss, weighted_mean
from .models import ACTIVATIONS, FeatureAutoencoder, LatentModel
from .validation import ensure_positive_int, ensure_sequence_of_ints

logger = logging.getLogger(__name__)

__all__ = ["LatentModelEstimator", "TrainingResult", "TrainingData", "data_hash"]

OBJECTIVES = ("autoencoder", "time-lagged")
RECONSTRUCTIONS = ("mse", "fape")


def data_hash(*arrays: np.ndarray | None) -> str:
    """SHA-256 of the training arrays (float64, C order); identifies the data a model was trained on."""
    h = hashlib.sha256()
    for a in arrays:
        if a is not None:
            arr = np.ascontiguousarray(np.asarray(a, dtype=np.float64))
            h.update(str(arr.shape).encode())
            h.update(arr.tobytes())
    return h.hexdigest()


@dataclass
class TrainingResult:
    """Outcome of :meth:`LatentModelEstimator.fit`.

    Attributes
    ----------
    model : FeatureAutoencoder
        Fitted model (weights of the best validation epoch), on the CPU, in eval mode.
    history : dict of str -> list of float
        Per-epoch ``train_loss`` and ``val_loss`` (and ``val_rmsd_angstrom`` for coordinate features, and
        ``val_cv_correlation`` when CVs were anchored).
    best_epoch : int
        Epoch (0-based) whose weights were kept.
    stopped_early : bool
    data_hash : str
        SHA-256 of the training features (and weights/CVs).
    settings : dict
        The estimator settings used.
    latent_range : dict, optional
        ``{"min", "max", "q01", "q99"}``: per latent dimension, the extremes and 1st/99th (unweighted)
        percentiles of z over all training frames (units of z). Stored in exported models as ``z_range`` so that
        bias grids can default to the sampled range (:meth:`latentbias.bias.LatentVariable.fromModel`).
    probe_positions : numpy.ndarray, shape=(n_frames, n_atoms, 3), optional
        Full-system training frames, nm (set by :meth:`LatentModelEstimator.fit_trajectories`); up to three of them
        are stored in exported models as load-time probes (:mod:`latentbias.model_probes`).
    fold : dict, optional
        ``{"median", "q99", "max"}`` over all training inputs of the fitted encoder's per-frame fold measure
        max_k |dz_k/dx|^2 / Var_w(z_k) (dimensionless; :func:`latentbias.jacobian_penalty.fold_measure`): values
        far above 1 (a linear projection onto a principal component gives <= 1) mean the encoder folds there.
    """

    model: FeatureAutoencoder
    history: dict[str, list[float]]
    best_epoch: int
    stopped_early: bool
    data_hash: str
    settings: dict[str, Any] = field(default_factory=dict)
    latent_range: dict[str, list[float]] | None = None
    probe_positions: np.ndarray | None = field(default=None, repr=False)
    fold: dict[str, float] | None = None


def latent_range(z: np.ndarray) -> dict[str, list[float]]:
    """Per-dimension ``min``, ``max``, ``q01``, ``q99`` of latent samples z, shape=(n_frames, latent_dim)."""
    z = np.asarray(z, dtype=float).reshape(len(z), -1)
    return {"min": z.min(0).tolist(), "max": z.max(0).tolist(), "q01": np.quantile(z, 0.01, axis=0).tolist(),
            "q99": np.quantile(z, 0.99, axis=0).tolist()}


@dataclass
class TrainingData:
    """Input/target pairs for one objective (all numpy, float64).

    ``inputs`` and ``targets`` have shape=(n_pairs, n_features); ``weights`` (n_pairs,); ``cvs`` (n_pairs, n_cv).
    """

    inputs: np.ndarray
    targets: np.ndarray
    weights: np.ndarray
    cvs: np.ndarray | None


def _lagged_pairs(lengths: Sequence[int], lag: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (t, t + lag) that stay inside each trajectory."""
    src, dst = [], []
    start = 0
    for n in lengths:
        if n > lag:
            idx = np.arange(start, start + n - lag)
            src.append(idx)
            dst.append(idx + lag)
        start += n
    if not src:
        raise ValueError(f"no trajectory is longer than the lag time ({lag} frames); lower `lag`")
    return np.concatenate(src), np.concatenate(dst)


class LatentModelEstimator:
    """Settings for fitting a latent model, and the fitting itself.

    Parameters
    ----------
    latent_dim : int
        Number of latent coordinates d.
    hidden : sequence of int
        Encoder hidden-layer widths (the decoder mirrors them).
    activation : str
        One of ``latentbias.models.ACTIVATIONS`` (smooth activations give continuous forces).
    objective : {"autoencoder", "time-lagged"}
        Reconstruct x(t) or x(t + lag) from x(t).
    lag : int
        Lag time in frames for the time-lagged objective.
    reconstruction : {"mse", "fape"}
        Reconstruction loss. ``"fape"`` needs aligned-coordinate features and ``fape_frames``.
    fape_frames : array_like of int, shape=(n_residues, 3), optional
        For ``"fape"``: indices, into the aligned-coordinate atom list, of each residue's N, CA, C.
    fape_clamp : float
        FAPE distance clamp, **nm**.
    cv_dims : sequence of int, optional
        Latent dimensions anchored to user CVs (CV-aligned autoencoder); give ``cvs`` to ``fit``.
    cv_weight : float
        Weight of the CV-alignment term relative to the reconstruction term.
    jacobian_penalty : float, default 0.0
        Weight lambda >= 0 of a smoothness term ``lambda * E_w[sum_k max(g_k - 1, 0)^2]``, g_k = |dz_k/dx|^2 /
        Var_w(z_k) with x the standardised features (:mod:`latentbias.jacobian_penalty`), that keeps the encoder
        from folding, i.e. from mapping a narrow range of the features onto a wide range of z, where bias kernels
        become stiff ridges.
        0 (the default) leaves the loss exactly as without it. The default stays 0: on the Ala/Gly campaigns
        with phi/psi features 0.1 removed the folds, cut the bias's stiffness 2-4x and fixed glycine's mirror
        check (4 seeds), but alanine crossed C7ax less often; other features are untested (benchmarks/RESULTS.md).
        Costs one double-backward pass per latent dimension per training step (1.8x the CPU per epoch there).
    epochs, batch_size, learning_rate, weight_decay :
        Adam optimisation settings.
    validation_fraction : float
        Fraction of frames held out for validation and early stopping (0 disables both).
    patience : int
        Stop after this many epochs without validation improvement.
    seed : int
        Seeds weight initialisation, the split and the shuffling: equal seeds give identical models.
    device : {"cpu", "cuda", "auto"}
        ``"auto"`` uses CUDA when available.
    progress : bool
        Show a tqdm progress bar (also hidden when stderr is not a terminal).
    """

    def __init__(
        self,
        latent_dim: int = 2,
        hidden: Sequence[int] = (64, 64),
        activation: str = "tanh",
        objective: str = "autoencoder",
        lag: int = 1,
        reconstruction: str = "mse",
        fape_frames: Any | None = None,
        fape_clamp: float = 1.0,
        cv_dims: Sequence[int] | None = None,
        cv_weight: float = 1.0,
        jacobian_penalty: float = 0.0,
        epochs: int = 200,
        batch_size: int = 256,
        learning_rate: float = 1e-3,
        weight_decay: float = 0.0,
        validation_fraction: float = 0.2,
        patience: int = 20,
        seed: int = 0,
        device: str = "cpu",
        progress: bool = True,
    ):
        self.latent_dim = ensure_positive_int(latent_dim, "latent_dim")
        self.hidden = ensure_sequence_of_ints(hidden, "hidden")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}")
        self.activation = activation
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}; choose from {OBJECTIVES}")
        self.objective = objective
        self.lag = ensure_positive_int(lag, "lag")
        if reconstruction not in RECONSTRUCTIONS:
            raise ValueError(f"unknown reconstruction loss {reconstruction!r}; choose from {RECONSTRUCTIONS}")
        self.reconstruction = reconstruction
        self.fape_frames = None if fape_frames is None else np.asarray(fape_frames, dtype=np.int64)
        if reconstruction == "fape" and (self.fape_frames is None or self.fape_frames.ndim != 2
                                         or self.fape_frames.shape[1] != 3):
            raise ValueError("reconstruction='fape' needs fape_frames of shape (n_residues, 3): N, CA, C indices")
        self.fape_clamp = float(fape_clamp)
        self.cv_dims = None if cv_dims is None else [int(d) for d in cv_dims]
        if self.cv_dims is not None:
            bad = [d for d in self.cv_dims if not 0 <= d < self.latent_dim]
            if bad:
                raise ValueError(f"cv_dims {bad} out of range for latent_dim={self.latent_dim}")
            if len(set(self.cv_dims)) != len(self.cv_dims):
                raise ValueError("cv_dims must not repeat a latent dimension")
        self.cv_weight = float(cv_weight)
        if isinstance(jacobian_penalty, bool) or not isinstance(jacobian_penalty, (int, float)) \
                or not np.isfinite(jacobian_penalty) or jacobian_penalty < 0:
            raise ValueError(f"jacobian_penalty must be a finite number >= 0 (0 switches it off), got "
                             f"{jacobian_penalty!r}")
        self.jacobian_penalty = float(jacobian_penalty)
        self.epochs = ensure_positive_int(epochs, "epochs")
        self.batch_size = ensure_positive_int(batch_size, "batch_size")
        if not learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {learning_rate!r}")
        self.learning_rate = float(learning_rate)
        self.weight_decay = float(weight_decay)
        if not 0.0 <= validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction!r}")
        self.validation_fraction = float(validation_fraction)
        self.patience = ensure_positive_int(patience, "patience")
        self.seed = int(seed)
        if device not in ("cpu", "cuda", "auto"):
            raise ValueError(f"device must be 'cpu', 'cuda' or 'auto', got {device!r}")
        if device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device='cuda' but torch sees no CUDA device; use device='cpu' or 'auto'")
        self.device = device
        self.progress = bool(progress)

    # ------------------------------------------------------------------------------------------------ settings

    def settings(self) -> dict[str, Any]:
        """JSON-serialisable settings (stored in exported model metadata)."""
        return {
            "latent_dim": self.latent_dim,
            "hidden": self.hidden,
            "activation": self.activation,
            "objective": self.objective,
            "lag": self.lag,
            "reconstruction": self.reconstruction,
            "cv_dims": self.cv_dims,
            "cv_weight": self.cv_weight,
            "jacobian_penalty": self.jacobian_penalty,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "weight_decay": self.weight_decay,
            "validation_fraction": self.validation_fraction,
            "patience": self.patience,
            "seed": self.seed,
        }

    def _torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    # ---------------------------------------------------------------------------------------------------- data

    def prepare(
        self,
        features: Any,
        weights: Any | None = None,
        cvs: Any | None = None,
        lengths: Sequence[int] | None = None,
    ) -> TrainingData:
        """Validate arrays and build (input, target) pairs for the objective."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or len(x) < 2:
            raise ValueError(f"features must have shape (n_frames >= 2, n_features), got {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError("features contain NaN or inf")
        n = len(x)
        w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
        if w.shape != (n,) or np.any(w < 0) or not np.all(np.isfinite(w)) or w.sum() <= 0:
            raise ValueError(f"weights must be {n} finite non-negative numbers with a positive sum")
        c = None
        if self.cv_dims is not None:
            if cvs is None:
                raise ValueError("cv_dims was set: pass the CV values as `cvs`, shape (n_frames, len(cv_dims))")
            c = np.asarray(cvs, dtype=np.float64)
            if c.ndim == 1:
                c = c[:, None]
            if c.shape != (n, len(self.cv_dims)):
                raise ValueError(f"cvs must have shape ({n}, {len(self.cv_dims)}), got {np.shape(cvs)}")
            if not np.all(np.isfinite(c)):
                raise ValueError("cvs contain NaN or inf")
        elif cvs is not None:
            raise ValueError("cvs were given but cv_dims is None; say which latent dimensions to anchor")
        lengths = [n] if lengths is None else [int(v) for v in lengths]
        if sum(lengths) != n:
            raise ValueError(f"trajectory lengths sum to {sum(lengths)} but there are {n} frames")
        if self.objective == "time-lagged":
            src, dst = _lagged_pairs(lengths, self.lag)
        else:
            src = dst = np.arange(n)
        return TrainingData(x[src], x[dst], w[src], None if c is None else c[src])

    # ----------------------------------------------------------------------------------------------------- fit

    def fit(
        self,
        features: Any,
        *,
        weights: Any | None = None,
        cvs: Any | None = None,
        lengths: Sequence[int] | None = None,
        coordinates: bool = False,
        init: FeatureAutoencoder | None = None,
    ) -> TrainingResult:
        """Fit standardisation, encoder and decoder on feature vectors.

        Parameters
        ----------
        features : array_like, shape=(n_frames, n_features)
            Frames of all trajectories, concatenated in time order.
        weights : array_like, shape=(n_frames,), optional
            Per-frame weights (e.g. reweighting factors of biased frames).
        cvs : array_like, shape=(n_frames, len(cv_dims)), optional
            CV values for the CV-aligned objective.
        lengths : sequence of int, optional
            Frames per trajectory (time-lagged pairs never cross trajectories). Default: one trajectory.
        coordinates : bool
            Features are aligned Cartesian coordinates in nm: also report the validation RMSD in Å.
        init : FeatureAutoencoder, optional
            Warm start: copy its weights and standardisation (same architecture required) instead of a random
            initialisation.

        Returns
        -------
        TrainingResult
        """
        data = self.prepare(features, weights, cvs, lengths)
        n_pairs, n_features = data.inputs.shape
        if self.reconstruction == "fape":
            if not coordinates:
                raise ValueError("reconstruction='fape' needs aligned-coordinate features (coordinates=True)")
            if self.fape_frames.max() >= n_features // 3:
                raise ValueError("fape_frames index an atom beyond the aligned-coordinate selection")
        device = self._torch_device()
        gen = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(n_pairs, generator=gen).numpy()
        n_val = int(round(self.validation_fraction * n_pairs))
        if self.validation_fraction > 0 and n_val == 0:
            n_val = 1
        val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
        if len(train_idx) == 0:
            raise ValueError("no frames left for training; lower validation_fraction or give more frames")

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = FeatureAutoencoder(
                n_features, self.latent_dim, self.hidden, self.activation, decoder=True
            )
        if init is not None:
            if init.config() != model.config():
                raise ValueError(f"warm start needs the same architecture: {init.config()} vs {model.config()}")
            model.load_state_dict(init.state_dict())
        else:
            model.standardizer.fit(data.inputs[train_idx], data.weights[train_idx])
        model = model.to(device=device, dtype=torch.float32)

        def tensors(idx: np.ndarray) -> dict[str, torch.Tensor]:
            out = {
                "x": torch.as_tensor(data.inputs[idx], dtype=torch.float32, device=device),
                "y": torch.as_tensor(data.targets[idx], dtype=torch.float32, device=device),
                "w": torch.as_tensor(data.weights[idx], dtype=torch.float32, device=device),
            }
            if data.cvs is not None:
                out["c"] = torch.as_tensor(data.cvs[idx], dtype=torch.float32, device=device)
            return out

        train, val = tensors(train_idx), tensors(val_idx) if n_val else None
        cv_scale = None
        if data.cvs is not None:
            spread = data.cvs[train_idx].std(axis=0)
            cv_scale = torch.as_tensor(np.where(spread > 0, spread, 1.0), dtype=torch.float32, device=device)
        frames = None
        if self.fape_frames is not None:
            frames = torch.as_tensor(self.fape_frames, dtype=torch.long, device=device)

        lam = self.jacobian_penalty

        def loss_terms(batch: dict[str, torch.Tensor], create_graph: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
            grad_sq = None
            if lam > 0:  # z and |dz_k/dx|^2 of the standardised features x (double backward when training)
                z, grad_sq = latent_gradient_sq(model.encoder, model.standardizer(batch["x"]), create_graph)
            else:
                z = model.encode(batch["x"])
            decoded = model.decode(z)
            if self.reconstruction == "fape":
                pred = model.standardizer.inverse(decoded).reshape(len(z), -1, 3)
                true = batch["y"].reshape(len(z), -1, 3)
                loss = fape_loss(pred, true, frames, clamp=self.fape_clamp, weights=batch["w"])
            else:
                loss = reconstruction_loss(decoded, model.standardizer(batch["y"]), batch["w"])
            if cv_scale is not None:
                loss = loss + self.cv_weight * cv_alignment_loss(z, batch["c"], self.cv_dims, cv_scale, batch["w"])
            if grad_sq is not None:
                loss = loss + lam * smoothness_penalty(z, grad_sq, batch["w"])
            return loss, z

        opt = torch.optim.Adam(model.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        history: dict[str, list[float]] = {"train_loss": [], "val_loss": []}
        if coordinates:
            history["val_rmsd_angstrom"] = []
        if cv_scale is not None:
            history["val_cv_correlation"] = []
        best = (np.inf, -1, copy.deepcopy(model.state_dict()))
        stopped_early = False
        n_train = len(train_idx)
        bar = tqdm(range(self.epochs), desc="training", unit="epoch", disable=(not self.progress) or None,
                   leave=False)
        for epoch in bar:
            model.train()
            perm = torch.randperm(n_train, generator=gen).to(device)
            total, wsum = 0.0, 0.0
            for start in range(0, n_train, self.batch_size):
                idx = perm[start : start + self.batch_size]
                batch = {k: v[idx] for k, v in train.items()}
                loss, _ = loss_terms(batch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                bw = float(batch["w"].sum())
                total += float(loss.detach()) * bw
                wsum += bw
            history["train_loss"].append(total / wsum)
            model.eval()
            if val is not None:
                with torch.no_grad():
                    vloss, vz = loss_terms(val, create_graph=False)
                    history["val_loss"].append(float(vloss))
                    if coordinates:
                        history["val_rmsd_angstrom"].append(self._rmsd_angstrom(model, val, vz))
                    if cv_scale is not None:
                        history["val_cv_correlation"].append(self._cv_correlation(vz, val["c"]))
                monitored = history["val_loss"][-1]
            else:
                monitored = history["train_loss"][-1]
            if monitored < best[0]:
                best = (monitored, epoch, copy.deepcopy(model.state_dict()))
            bar.set_postfix(loss=f"{history['train_loss'][-1]:.4g}", val=f"{monitored:.4g}")
            if epoch - best[1] >= self.patience:
                stopped_early = True
                logger.info("early stop at epoch %d (best %d, val loss %.4g)", epoch, best[1], best[0])
                break
        bar.close()
        model.load_state_dict(best[2])
        model = model.cpu().eval()
        logger.info(
            "trained %d epochs on %d frames (%d validation): best epoch %d, loss %.4g",
            len(history["train_loss"]), n_train, n_val, best[1], best[0],
        )
        with torch.no_grad():
            x_all = torch.as_tensor(data.inputs, dtype=torch.float32)
            z_all = model.encode(x_all).double().numpy()
        fold = _fold_summary(model, x_all, torch.as_tensor(data.weights, dtype=torch.float32))
        return TrainingResult(
            model=model,
            history=history,
            best_epoch=best[1],
            stopped_early=stopped_early,
            data_hash=data_hash(features, weights, cvs),
            settings=self.settings(),
            latent_range=latent_range(z_all),
            fold=fold,
        )

    @staticmethod
    def _rmsd_angstrom(model: FeatureAutoencoder, batch: dict[str, torch.Tensor], z: torch.Tensor) -> float:
        pred = model.standardizer.inverse(model.decode(z)).reshape(len(z), -1, 3)
        true = batch["y"].reshape(len(z), -1, 3)
        per_frame = torch.sqrt(((pred - true) ** 2).sum(-1).mean(-1)) * 10.0
        return float(weighted_mean(per_frame, batch["w"]))

    def _cv_correlation(self, z: torch.Tensor, cvs: torch.Tensor) -> float:
        """Smallest Pearson correlation between an anchored latent dimension and its CV."""
        cors = []
        for k, d in enumerate(self.cv_dims or []):
            a = z[:, d] - z[:, d].mean()
            b = cvs[:, k] - cvs[:, k].mean()
            cors.append(float((a * b).sum() / torch.sqrt((a * a).sum() * (b * b).sum() + 1e-30)))
        return min(cors)

    # ------------------------------------------------------------------------------------------- trajectories

    def fit_trajectories(
        self,
        featurizer: Featurizer,
        trajectories: Any,
        *,
        weights: Any | None = None,
        cvs: Any | None = None,
    ) -> tuple[LatentModel, TrainingResult]:
        """Featurize trajectories and fit; return an exportable :class:`LatentModel`.

        Parameters
        ----------
        featurizer : Featurizer
        trajectories : mdtraj.Trajectory, list of them, or array_like shape=(n_frames, n_atoms, 3) in **nm**
            Full-system frames (unit cells are used for periodic systems).
        weights : array_like, shape=(n_frames_total,), optional
        cvs : array_like, shape=(n_frames_total, len(cv_dims)), optional

        Returns
        -------
        model : LatentModel
        result : TrainingResult
        """
        feats, lengths, n_atoms = featurize_trajectories(featurizer, trajectories)
        result = self.fit(
            feats,
            weights=weights,
            cvs=cvs,
            lengths=lengths,
            coordinates=isinstance(featurizer, AlignedCoordinates),
        )
        result.probe_positions = _probe_frames(trajectories)
        return LatentModel(featurizer, result.model, n_atoms), result


def _fold_summary(model: FeatureAutoencoder, x: torch.Tensor, w: torch.Tensor) -> dict[str, float]:
    """Median, 99th percentile and maximum of the fold measure of ``model`` over raw inputs x (weights w)."""
    z, grad_sq = latent_gradient_sq(model.encoder, model.standardizer(x), create_graph=False)
    g = fold_measure(z.double(), grad_sq.double(), w.double()).max(-1).values.numpy()
    return {"median": float(np.median(g)), "q99": float(np.quantile(g, 0.99)), "max": float(g.max())}


def _probe_frames(trajectories: Any) -> np.ndarray | None:
    """First, middle and last frame of the first trajectory (nm), the load-time probes of an exported model."""
    first = trajectories[0] if isinstance(trajectories, (list, tuple)) else trajectories
    xyz = np.asarray(first.xyz if hasattr(first, "xyz") else first, dtype=float)
    if xyz.ndim == 2:
        xyz = xyz[None]
    return xyz[sorted({0, len(xyz) // 2, len(xyz) - 1})] if xyz.ndim == 3 and len(xyz) else None


def featurize_trajectories(featurizer: Featurizer, trajectories: Any) -> tuple[np.ndarray, list[int], int]:
    """Features of mdtraj trajectories or position arrays.

    Returns
    -------
    features : numpy.ndarray, shape=(n_frames_total, n_features)
    lengths : list of int
        Frames per trajectory.
    n_atoms : int
    """
    import mdtraj as md

    if isinstance(trajectories, md.Trajectory) or (
        not isinstance(trajectories, (list, tuple)) and np.ndim(trajectories) == 3
    ):
        trajectories = [trajectories]
    feats, lengths, n_atoms = [], [], None
    for k, traj in enumerate(trajectories):
        if isinstance(traj, md.Trajectory):
            xyz, box = traj.xyz, (traj.unitcell_vectors if traj.unitcell_vectors is not None else None)
        else:
            xyz, box = np.asarray(traj), None
        if n_atoms is None:
            n_atoms = xyz.shape[1]
        elif xyz.shape[1] != n_atoms:
            raise ValueError(f"trajectory {k} has {xyz.shape[1]} atoms, trajectory 0 has {n_atoms}")
        feats.append(featurize(featurizer, xyz, box))
        lengths.append(len(xyz))
    if not feats:
        raise ValueError("no trajectories given")
    return np.concatenate(feats), lengths, int(n_atoms)
