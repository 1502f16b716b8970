"""Neural-network blocks and the latent model: featurizer -> standardisation -> MLP encoder -> z.

* :class:`MLP` — a plain multilayer perceptron.
* :class:`FeatureAutoencoder` — standardisation + encoder (+ optional decoder) acting on feature vectors; this is
  what training fits.
* :class:`LatentModel` — a featurizer in front of a :class:`FeatureAutoencoder`'s encoder: full-system positions
  (nm) [+ box] -> latent coordinates z. This is what is exported to TorchScript and evaluated inside OpenMM.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from .features import Featurizer, Standardizer
from .validation import ensure_box, ensure_positions, ensure_positive_int, ensure_sequence_of_ints

__all__ = ["ACTIVATIONS", "MLP", "FeatureAutoencoder", "LatentModel"]

#: Activation functions by name. Smooth ones (tanh, silu, softplus, elu, gelu) give continuous forces; relu does not.
ACTIVATIONS: dict[str, type[torch.nn.Module]] = {
    "tanh": torch.nn.Tanh,
    "silu": torch.nn.SiLU,
    "softplus": torch.nn.Softplus,
    "elu": torch.nn.ELU,
    "gelu": torch.nn.GELU,
    "relu": torch.nn.ReLU,
}


class MLP(torch.nn.Sequential):
    """Multilayer perceptron: Linear -> activation -> ... -> Linear (no activation on the output).

    Parameters
    ----------
    n_in, n_out : int
        Input and output sizes.
    hidden : sequence of int
        Widths of the hidden layers (may be empty: a linear map).
    activation : str
        One of :data:`ACTIVATIONS`.
    """

    def __init__(self, n_in: int, n_out: int, hidden: Sequence[int] = (64, 64), activation: str = "tanh"):
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}")
        sizes = [ensure_positive_int(n_in, "n_in"), *ensure_sequence_of_ints(hidden, "hidden")]
        layers: list[torch.nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [torch.nn.Linear(a, b), ACTIVATIONS[activation]()]
        layers.append(torch.nn.Linear(sizes[-1], ensure_positive_int(n_out, "n_out")))
        super().__init__(*layers)


class FeatureAutoencoder(torch.nn.Module):
    """Standardisation + MLP encoder (+ optional MLP decoder) on feature vectors.

    Parameters
    ----------
    n_features : int
        Length of the input feature vector.
    latent_dim : int
        Number of latent coordinates d.
    hidden : sequence of int
        Encoder hidden widths; the decoder mirrors them unless ``decoder_hidden`` is given.
    activation : str
        See :data:`ACTIVATIONS`.
    decoder : bool
        Whether to build a decoder (needed by the reconstruction objectives).
    n_outputs : int, optional
        Decoder output size (defaults to ``n_features``; the decoder predicts *standardised* features).
    """

    def __init__(
        self,
        n_features: int,
        latent_dim: int,
        hidden: Sequence[int] = (64, 64),
        activation: str = "tanh",
        decoder: bool = True,
        decoder_hidden: Sequence[int] | None = None,
        n_outputs: int | None = None,
    ):
        super().__init__()
        self.n_features = ensure_positive_int(n_features, "n_features")
        self.latent_dim = ensure_positive_int(latent_dim, "latent_dim")
        self.hidden = ensure_sequence_of_ints(hidden, "hidden")
        self.activation = activation
        self.standardizer = Standardizer(self.n_features)
        self.encoder = MLP(self.n_features, self.latent_dim, self.hidden, activation)
        self.decoder: torch.nn.Module | None = None
        if decoder:
            dec_hidden = list(reversed(self.hidden)) if decoder_hidden is None else decoder_hidden
            self.decoder = MLP(self.latent_dim, n_outputs or self.n_features, dec_hidden, activation)
        self.to(torch.get_default_dtype())  # one dtype for weights and standardisation buffers

    def config(self) -> dict[str, Any]:
        """Architecture description (JSON-serialisable)."""
        return {
            "n_features": self.n_features,
            "latent_dim": self.latent_dim,
            "hidden": self.hidden,
            "activation": self.activation,
            "decoder": self.decoder is not None,
        }

    def encode(self, features: Tensor) -> Tensor:
        """Raw features (n_frames, n_features) -> latent z (n_frames, latent_dim)."""
        return self.encoder(self.standardizer(features))

    def decode(self, z: Tensor) -> Tensor:
        """Latent z -> reconstructed *standardised* features."""
        if self.decoder is None:
            raise ValueError("this model was built without a decoder (decoder=False)")
        return self.decoder(z)

    def forward(self, features: Tensor) -> Tensor:
        return self.encode(features)


class _Encoder(torch.nn.Module):
    """TorchScript-friendly encoder path: positions [+ box] -> z. Used inside :class:`LatentModel` and export.

    With a decoder and aligned-coordinate features, the exported module also has ``decode(z)``: latent points ->
    the coordinates of the aligned atoms (nm, in the frame of the featurizer's reference structure).
    """

    def __init__(self, featurizer: Featurizer, standardizer: Standardizer, encoder: torch.nn.Module,
                 decoder: torch.nn.Module | None = None, coordinates: tuple[int, int] | None = None):
        super().__init__()
        self.featurizer = featurizer
        self.standardizer = standardizer
        self.encoder = encoder
        self.has_decoder = decoder is not None and coordinates is not None
        self.decoder = decoder if self.has_decoder else torch.nn.Identity()
        self.coord_start, self.coord_stop = coordinates if coordinates is not None else (0, 0)

    @torch.jit.export
    def decode(self, z: Tensor) -> Tensor:
        """Latent z, shape=(latent_dim,) or (n, latent_dim) -> aligned coordinates, shape=(n_atoms_sel, 3) or
        (n, n_atoms_sel, 3), **nm**, in the frame of the featurizer's reference structure."""
        if not self.has_decoder:
            raise RuntimeError("this model has no coordinate decoder (it needs aligned-coordinate features and a "
                               "decoder)")
        dtype = self.standardizer.mean.dtype
        features = self.standardizer.inverse(self.decoder(z.to(dtype)))
        xyz = features[..., self.coord_start:self.coord_stop]
        shape = list(xyz.shape[:-1])
        shape.append(-1)
        shape.append(3)
        return xyz.reshape(shape)

    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tensor:
        # OpenMM's Reference/CPU platforms hand over float64 positions; the model may be float32
        dtype = self.standardizer.mean.dtype
        x = positions.to(dtype)
        b: Optional[Tensor] = None
        if box is not None:
            b = box.to(dtype)
        return self.encoder(self.standardizer(self.featurizer(x, b)))


class LatentModel(torch.nn.Module):
    """Featurizer + standardisation + encoder: full-system positions -> latent coordinates.

    Parameters
    ----------
    featurizer : Featurizer
        Picks its atoms from full-system positions.
    autoencoder : FeatureAutoencoder
        Fitted standardisation and encoder (decoder optional).
    n_atoms : int
        Number of atoms of the system the model is meant for (positions passed in must have this many).
    """

    def __init__(self, featurizer: Featurizer, autoencoder: FeatureAutoencoder, n_atoms: int):
        super().__init__()
        if not isinstance(featurizer, Featurizer):
            raise TypeError(f"featurizer must be a latentbias Featurizer, got {type(featurizer).__name__}")
        if featurizer.n_features != autoencoder.n_features:
            raise ValueError(
                f"featurizer gives {featurizer.n_features} features but the autoencoder expects "
                f"{autoencoder.n_features}"
            )
        n_atoms = ensure_positive_int(n_atoms, "n_atoms")
        if n_atoms < featurizer.min_atoms():
            raise ValueError(f"n_atoms={n_atoms} but the featurizer reads atom index {featurizer.min_atoms() - 1}")
        self.featurizer = featurizer
        self.autoencoder = autoencoder
        self.n_atoms = n_atoms

    @property
    def latent_dim(self) -> int:
        return self.autoencoder.latent_dim

    def encoder_module(self) -> _Encoder:
        """The positions -> z module (shares parameters with this model); with ``decode(z)`` when the model has a
        decoder and aligned-coordinate features (:meth:`coordinate_features`)."""
        coords = self.coordinate_features()
        return _Encoder(self.featurizer, self.autoencoder.standardizer, self.autoencoder.encoder,
                        self.autoencoder.decoder if coords is not None else None,
                        None if coords is None else coords[:2])

    def coordinate_features(self) -> tuple[int, int, list[int]] | None:
        """``(start, stop, atom_indices)`` of the aligned-coordinate block in the feature vector, or None.

        The first :class:`~latentbias.features.AlignedCoordinates` block (the featurizer itself or a part of a
        :class:`~latentbias.features.Concatenate`) is what ``decode`` returns.
        """
        from .features import AlignedCoordinates, Concatenate

        parts = list(self.featurizer.parts) if isinstance(self.featurizer, Concatenate) else [self.featurizer]
        start = 0
        for part in parts:
            if isinstance(part, AlignedCoordinates):
                return start, start + part.n_features, [int(i) for i in part.atom_indices()]
            start += part.n_features
        return None

    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tensor:
        return self.encoder_module()(positions, box)

    def transform(self, positions: Any, box: Any | None = None) -> np.ndarray:
        """Latent coordinates of frames (validated input, no gradients).

        Parameters
        ----------
        positions : array_like or Quantity, shape=(n_atoms, 3) or (n_frames, n_atoms, 3), **nm**
        box : array_like, shape=(3, 3) or (n_frames, 3, 3), **nm**, optional

        Returns
        -------
        numpy.ndarray, shape=(latent_dim,) or (n_frames, latent_dim)
        """
        from .features import featurize

        xyz = ensure_positions(positions, self.n_atoms)
        single = xyz.ndim == 2
        frames = xyz[None] if single else xyz
        boxes = ensure_box(box, n_frames=len(frames))
        dtype = self.autoencoder.standardizer.mean.dtype
        feats = featurize(self.featurizer, frames, boxes, dtype=dtype)
        with torch.no_grad():
            z = self.autoencoder.encode(torch.as_tensor(feats, dtype=dtype)).cpu().numpy()
        return z[0] if single else z
