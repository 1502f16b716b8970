"""Declarative description of a latent model for the native (libtorch-free) evaluator of ``LatentBiasForce``.

A model exported by :func:`latentbias.export.save_model` whose parts all belong to latentbias' own family —
featurizers of :mod:`latentbias.features` (``Distances``, ``Contacts``, ``Dihedrals``, ``AlignedCoordinates``,
``Concatenate`` of those), the fitted :class:`~latentbias.features.Standardizer` and an MLP of ``torch.nn.Linear``
layers with activations from :data:`latentbias.models.ACTIVATIONS` (any latent alignment of a campaign is already
folded into the last layer by :func:`~latentbias.campaign.alignment.apply_alignment`) — carries, next to its
TorchScript code, a description that the plugin evaluates in C++ (forward and analytic backward, float64).

Layout inside the TorchScript archive (extra files, i.e. zip entries ``<archive>/extra/<name>``):

* ``latentbias_native.json`` — the document (format ``"latentbias-native-model"``, ``version`` 1)::

      {"format": "latentbias-native-model", "version": 1, "n_atoms": N, "latent_dim": d, "n_features": F,
       "box": "minimum_image",
       "features": [{"type": "distances", "pairs": ARRAY(int64, (m, 2))},
                    {"type": "contacts", "pairs": ARRAY(int64, (m, 2)), "r0_nm": r0, "n": n},
                    {"type": "dihedrals", "quadruplets": ARRAY(int64, (m, 4))},          # -> [sin..., cos...]
                    {"type": "aligned_coordinates", "atoms": ARRAY(int64, (n,)),
                     "reference_nm": ARRAY(float64, (n, 3)), "tree_child": ARRAY(int64, (n-1,)),
                     "tree_parent": ARRAY(int64, (n-1,))}],                                 # in output order
       "standardizer": {"mean": ARRAY(float64, (F,)), "scale": ARRAY(float64, (F,))},
       "layers": [{"weight": ARRAY(float64, (n_out, n_in)), "bias": ARRAY(float64, (n_out,)),
                   "activation": "tanh" | "silu" | "softplus" | "elu" | "gelu" | "relu" | "identity"}, ...]}

  where ``ARRAY`` is ``{"file": "latentbias_native.<k>.bin", "dtype": "float64" | "int64", "shape": [...]}``.
* ``latentbias_native.<k>.bin`` — the arrays as raw little-endian 8-byte values, C order.

Why JSON + raw arrays rather than one JSON with numbers: weights and reference coordinates round-trip bit for bit
with no text formatting or parsing (a ~100-feature encoder has ~10^4 weights), the C++ reader copies bytes, and a
later GPU path uploads them unchanged; the JSON stays small and human-readable. Every entry is covered by the model
file's ``content_sha256`` checksum (:func:`latentbias.export._content_digest` digests every archive entry but the
metadata). No pickle anywhere.

Periodicity: when the force passes the periodic box (``usesPeriodicBoundaryConditions``), displacements use
OpenMM's triclinic minimum image and aligned coordinates are made whole along ``tree_child``/``tree_parent`` (each
child hung from an already placed parent, root atom 0) — exactly the TorchScript featurizers' behaviour.

The description is evaluated in float64 whatever dtype the TorchScript was exported in (float32 weights and
reference coordinates are stored as their exact float64 values), so for a float32 export the native z differs from
the TorchScript z at float32 rounding (~1e-7 relative); for a float64 export they agree to ~1e-12.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import torch

__all__ = ["NATIVE_NAME", "NATIVE_VERSION", "describe_model", "is_native_entry", "validate_description"]

#: Name of the description document inside the archive (a TorchScript extra file).
NATIVE_NAME = "latentbias_native.json"
#: Version of the description format this latentbias writes and reads.
NATIVE_VERSION = 1
_PREFIX = "latentbias_native."

#: activation module class -> name in the description (default constructor arguments only).
_ACTIVATION_NAMES = {
    torch.nn.Tanh: "tanh",
    torch.nn.SiLU: "silu",
    torch.nn.Softplus: "softplus",
    torch.nn.ELU: "elu",
    torch.nn.GELU: "gelu",
    torch.nn.ReLU: "relu",
}


def is_native_entry(name: str) -> bool:
    """Whether an extra-file name belongs to the native description."""
    return name == NATIVE_NAME or (name.startswith(_PREFIX) and name.endswith(".bin"))


class _Writer:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def array(self, values: Any, integer: bool) -> dict[str, Any]:
        dtype = np.dtype("<i8") if integer else np.dtype("<f8")
        a = np.ascontiguousarray(np.asarray(values), dtype=dtype)
        name = f"{_PREFIX}{len(self.files)}.bin"
        self.files[name] = a.tobytes(order="C")
        return {"file": name, "dtype": "int64" if integer else "float64", "shape": list(a.shape)}


def _tensor(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.float64).numpy() if t.is_floating_point() else t.detach().cpu().numpy()


def _features(featurizer: torch.nn.Module, w: _Writer) -> list[dict[str, Any]] | None:
    from . import features as F

    kind = type(featurizer)
    if kind is F.Concatenate:
        out: list[dict[str, Any]] = []
        for part in featurizer.parts:
            sub = _features(part, w)
            if sub is None:
                return None
            out += sub
        return out
    if kind is F.Distances:
        return [{"type": "distances", "pairs": w.array(featurizer.pairs(), True)}]
    if kind is F.Contacts:
        return [{"type": "contacts", "pairs": w.array(featurizer.pairs(), True), "r0_nm": float(featurizer.r0),
                 "n": int(featurizer.exponent)}]
    if kind is F.Dihedrals:
        return [{"type": "dihedrals", "quadruplets": w.array(featurizer.quadruplets(), True)}]
    if kind is F.AlignedCoordinates:
        return [{
            "type": "aligned_coordinates",
            "atoms": w.array(_tensor(featurizer.atoms), True),
            "reference_nm": w.array(_tensor(featurizer.reference), False),
            "tree_child": w.array(_tensor(featurizer.child), True),
            "tree_parent": w.array(_tensor(featurizer.parent), True),
        }]
    return None


def _activation_name(module: torch.nn.Module) -> str | None:
    name = _ACTIVATION_NAMES.get(type(module))
    if name == "softplus" and (module.beta != 1 or module.threshold != 20):
        return None
    if name == "elu" and module.alpha != 1.0:
        return None
    if name == "gelu" and module.approximate != "none":
        return None
    return name


def _layers(encoder: torch.nn.Module, w: _Writer) -> list[dict[str, Any]] | None:
    if not isinstance(encoder, torch.nn.Sequential):
        return None
    layers: list[dict[str, Any]] = []
    for module in encoder:
        if type(module) is torch.nn.Linear:
            if module.bias is None:
                return None
            layers.append({"weight": w.array(_tensor(module.weight), False), "bias": w.array(_tensor(module.bias), False),
                           "activation": "identity"})
        else:
            name = _activation_name(module)
            if name is None or not layers or layers[-1]["activation"] != "identity":
                return None
            layers[-1]["activation"] = name
    if not layers or layers[-1]["activation"] != "identity":
        return None
    return layers


def describe_model(encoder: torch.nn.Module, n_atoms: int, latent_dim: int) -> dict[str, bytes] | None:
    """The native description of an exported encoder as extra files (name -> bytes), or None outside the family.

    Parameters
    ----------
    encoder : torch.nn.Module
        The module that is scripted and saved (``LatentModel.encoder_module()`` cast to the export dtype), with
        attributes ``featurizer``, ``standardizer`` and ``encoder``.
    n_atoms, latent_dim : int

    Returns
    -------
    dict or None
        ``{NATIVE_NAME: json bytes, "latentbias_native.<k>.bin": raw array bytes, ...}``; None when a part is not
        one latentbias can describe (custom featurizer subclass, non-MLP encoder, unknown activation): such models
        are evaluated through their TorchScript code.
    """
    from .features import Standardizer

    featurizer = getattr(encoder, "featurizer", None)
    standardizer = getattr(encoder, "standardizer", None)
    mlp = getattr(encoder, "encoder", None)
    if featurizer is None or type(standardizer) is not Standardizer or mlp is None:
        return None
    w = _Writer()
    features = _features(featurizer, w)
    if features is None:
        return None
    n_features = int(featurizer.n_features)
    standard = {"mean": w.array(_tensor(standardizer.mean), False), "scale": w.array(_tensor(standardizer.scale), False)}
    layers = _layers(mlp, w)
    if layers is None:
        return None
    doc = {
        "format": "latentbias-native-model",
        "version": NATIVE_VERSION,
        "n_atoms": int(n_atoms),
        "latent_dim": int(latent_dim),
        "n_features": n_features,
        "box": "minimum_image",
        "features": features,
        "standardizer": standard,
        "layers": layers,
    }
    files = {NATIVE_NAME: json.dumps(doc, sort_keys=True).encode()}
    files.update(w.files)
    validate_description(files)
    return files


# ------------------------------------------------------------------------------------------------- validation


def _fail(where: str, what: str) -> None:
    raise ValueError(f"{where}: invalid native description ({NATIVE_NAME}): {what}; re-export the model with "
                     "latentbias.save_model")


def _read(ref: Any, field: str, files: dict[str, bytes], integer: bool, where: str) -> np.ndarray:
    if not isinstance(ref, dict) or not {"file", "dtype", "shape"} <= set(ref):
        _fail(where, f"{field} must be an array reference {{file, dtype, shape}}")
    want = "int64" if integer else "float64"
    if ref["dtype"] != want:
        _fail(where, f"{field} must have dtype {want}, got {ref['dtype']!r}")
    shape = ref["shape"]
    if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
        _fail(where, f"{field}.shape must be a list of sizes")
    data = files.get(ref["file"])
    if data is None:
        _fail(where, f"{field}: the archive has no entry {ref['file']!r}")
    n = math.prod(shape)
    if len(data) != 8 * n:
        _fail(where, f"{field}: {ref['file']} has {len(data)} bytes but shape {tuple(shape)} needs {8 * n}")
    a = np.frombuffer(data, dtype="<i8" if integer else "<f8").reshape(shape)
    if not integer and not np.all(np.isfinite(a)):
        _fail(where, f"{field} contains non-finite values")
    return a


def validate_description(files: dict[str, bytes], where: str = "the model") -> dict[str, Any]:
    """Parse and check a native description (the same checks as the plugin's C++ reader).

    Parameters
    ----------
    files : dict of str to bytes
        The description's extra files (``NATIVE_NAME`` and its arrays).
    where : str
        Named in error messages (the model file).

    Returns
    -------
    dict
        The parsed JSON document.

    Raises
    ------
    ValueError
        Naming the field: unknown format/newer version, sizes that do not chain, indices out of range, non-finite
        or non-positive values, unknown feature types or activations.
    """
    try:
        doc = json.loads(files[NATIVE_NAME])
    except (KeyError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        _fail(where, f"unreadable document ({exc})")
    if not isinstance(doc, dict) or doc.get("format") != "latentbias-native-model":
        _fail(where, 'format must be "latentbias-native-model"')
    if not isinstance(doc.get("version"), int) or not 1 <= doc["version"] <= NATIVE_VERSION:
        _fail(where, f"version {doc.get('version')!r} is not supported (this latentbias reads 1..{NATIVE_VERSION}; "
                     "upgrade latentbias)")
    for key in ("n_atoms", "latent_dim", "n_features"):
        if not isinstance(doc.get(key), int) or doc[key] <= 0:
            _fail(where, f"{key} must be a positive integer")
    n_atoms, n_features = doc["n_atoms"], doc["n_features"]
    total = 0
    feats = doc.get("features")
    if not isinstance(feats, list) or not feats:
        _fail(where, "features must be a non-empty list")
    for b, f in enumerate(feats):
        field = f"features[{b}]"
        kind = f.get("type") if isinstance(f, dict) else None
        if kind in ("distances", "contacts"):
            idx = _read(f.get("pairs"), f"{field}.pairs", files, True, where)
            if idx.ndim != 2 or idx.shape[1] != 2 or len(idx) == 0 or np.any(idx[:, 0] == idx[:, 1]):
                _fail(where, f"{field}.pairs must have shape (n >= 1, 2) and join two different atoms")
            total += len(idx)
            if kind == "contacts":
                r0, n = f.get("r0_nm"), f.get("n")
                if not isinstance(r0, (int, float)) or not math.isfinite(r0) or r0 <= 0:
                    _fail(where, f"{field}.r0_nm must be a positive distance in nm")
                if not isinstance(n, int) or not 0 < n <= 1000:
                    _fail(where, f"{field}.n must be a positive integer")
        elif kind == "dihedrals":
            idx = _read(f.get("quadruplets"), f"{field}.quadruplets", files, True, where)
            if idx.ndim != 2 or idx.shape[1] != 4 or len(idx) == 0:
                _fail(where, f"{field}.quadruplets must have shape (n >= 1, 4)")
            total += 2 * len(idx)
        elif kind == "aligned_coordinates":
            idx = _read(f.get("atoms"), f"{field}.atoms", files, True, where)
            n = len(idx)
            if idx.ndim != 1 or n < 3 or len(np.unique(idx)) != n:
                _fail(where, f"{field}.atoms must list at least 3 different atoms")
            ref = _read(f.get("reference_nm"), f"{field}.reference_nm", files, False, where)
            child = _read(f.get("tree_child"), f"{field}.tree_child", files, True, where)
            parent = _read(f.get("tree_parent"), f"{field}.tree_parent", files, True, where)
            if ref.shape != (n, 3) or child.shape != (n - 1,) or parent.shape != (n - 1,):
                _fail(where, f"{field}: reference_nm must be ({n}, 3) and tree_child/tree_parent ({n - 1},)")
            placed = {0}
            for c, p in zip(child.tolist(), parent.tolist()):
                if p not in placed or c in placed or not 0 <= c < n:
                    _fail(where, f"{field}: tree_child/tree_parent are not a spanning tree rooted at atom 0")
                placed.add(c)
            total += 3 * n
        else:
            _fail(where, f"{field}: unknown feature type {kind!r}")
        if idx.size and (idx.min() < 0 or idx.max() >= n_atoms):
            _fail(where, f"{field}: atom index out of range for n_atoms = {n_atoms}")
    if total != n_features:
        _fail(where, f"the features give {total} values but n_features is {n_features}")
    st = doc.get("standardizer")
    if not isinstance(st, dict):
        _fail(where, "standardizer must be an object")
    mean = _read(st.get("mean"), "standardizer.mean", files, False, where)
    scale = _read(st.get("scale"), "standardizer.scale", files, False, where)
    if mean.shape != (n_features,) or scale.shape != (n_features,) or np.any(scale <= 0):
        _fail(where, f"standardizer mean/scale must have shape ({n_features},) and positive scales")
    layers = doc.get("layers")
    if not isinstance(layers, list) or not layers:
        _fail(where, "layers must be a non-empty list")
    width = n_features
    for i, layer in enumerate(layers):
        field = f"layers[{i}]"
        if not isinstance(layer, dict):
            _fail(where, f"{field} must be an object")
        weight = _read(layer.get("weight"), f"{field}.weight", files, False, where)
        bias = _read(layer.get("bias"), f"{field}.bias", files, False, where)
        if weight.ndim != 2 or weight.shape[1] != width or weight.shape[0] < 1 or bias.shape != (weight.shape[0],):
            _fail(where, f"{field}: weight must be (n_out, {width}) and bias (n_out,)")
        if layer.get("activation") not in ("identity", *_ACTIVATION_NAMES.values()):
            _fail(where, f"{field}: unknown activation {layer.get('activation')!r}")
        width = weight.shape[0]
    if width != doc["latent_dim"]:
        _fail(where, f"the last layer has {width} outputs but latent_dim is {doc['latent_dim']}")
    if layers[-1]["activation"] != "identity":
        _fail(where, 'the last layer must have activation "identity"')
    return doc
