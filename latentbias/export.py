"""Model files: one TorchScript file mapping positions (n_atoms, 3) [+ box] -> z (latent_dim,), metadata inside.

File format
-----------
A TorchScript archive (``torch.jit.save``) whose ``forward(positions, box=None)`` takes full-system positions in
**nm** (any float dtype; cast internally) and optional periodic box vectors (3, 3) in **nm**, and returns the
latent vector ``z`` of shape ``(latent_dim,)`` (or ``(n_frames, latent_dim)`` for batched positions). The archive
carries a JSON document as the TorchScript extra file ``latentbias.json`` (see :data:`METADATA_NAME`) with the
keys listed in :func:`build_metadata`. No pickle is involved: loading uses ``torch.jit.load``.

Model loading sits behind :func:`load_model` / :class:`LatentModelFile` so that another backend (an AOTInductor
``.pt2`` package, OpenMM's PythonForce) can be added without touching callers.
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import io
import json
import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .io import atomic_write_bytes
from .models import LatentModel
from .model_probes import probe_configurations, probe_metadata
from .native_description import NATIVE_NAME, describe_model, is_native_entry, validate_description
from .torchscript_errors import cause_first
from .validation import ensure_box, ensure_positions

logger = logging.getLogger(__name__)

__all__ = [
    "METADATA_NAME",
    "FORMAT_VERSION",
    "ExportError",
    "ModelEvaluationError",
    "LatentModelFile",
    "archive_bytes",
    "check_model_output",
    "load_model",
    "save_cv_module",
    "save_model",
]

#: Name of the JSON metadata stored inside the TorchScript archive.
METADATA_NAME = "latentbias.json"
#: Version of the model-file layout.
FORMAT_VERSION = 2
#: Metadata key of the file's checksums (format 2): ``content_sha256`` over every archive entry but the metadata,
#: ``metadata_sha256`` over the metadata without this key.
CHECKSUM_KEY = "checksums"

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class ExportError(ValueError):
    """The model cannot be compiled to TorchScript or written."""


class ModelEvaluationError(RuntimeError):
    """A model's TorchScript code failed while evaluating it; the message names the file and starts with the cause
    (e.g. ``RuntimeError: linalg.svd: ... non-finite values``), the TorchScript traceback follows."""


def script_module(module: torch.nn.Module, what: str = "model") -> torch.jit.ScriptModule:
    """``torch.jit.script`` with an error message that says what to fix.

    Raises
    ------
    ExportError
        When a layer uses Python that TorchScript cannot compile.
    """
    try:
        return torch.jit.script(module)
    except Exception as exc:  # TorchScript raises several exception types (NotSupportedError, RuntimeError, ...)
        detail = cause_first(str(exc)).splitlines() or [type(exc).__name__]
        raise ExportError(
            f"TorchScript cannot compile the {what}: {detail[0]}\nEvery layer (featurizer, encoder, custom modules) "
            "must be TorchScript-compatible — annotate argument types, avoid Python-only calls (numpy, arbitrary "
            "objects), and use torch operations in forward().\nTorchScript said:\n" + "\n".join(detail[:12])
        ) from exc


def build_metadata(model: LatentModel, dtype: str, training: Any | None, extra: dict | None) -> dict[str, Any]:
    """Metadata stored in a model file.

    Keys: ``format``, ``format_version``, ``latentbias_version``, ``torch_version``, ``created``, ``n_atoms``,
    ``latent_dim``, ``atom_indices``, ``n_features``, ``feature_spec``, ``feature_names``, ``architecture``,
    ``dtype``, ``units``, ``z_range`` (z over the training frames: ``min``/``max``/``q01``/``q99`` per dimension, or
    None), ``training_data_hash``, ``training`` (settings and final losses), ``decoder`` (what ``decode(z)``
    returns and its held-out reconstruction RMSD in Å, or None), ``extra``; :func:`save_model` adds
    ``native_description`` and ``probe_positions`` (see :mod:`latentbias.model_probes`, or None).
    """
    from . import __version__

    hist = getattr(training, "history", {}) or {}
    return {
        "format": "latentbias-model",
        "format_version": FORMAT_VERSION,
        "latentbias_version": __version__,
        "torch_version": torch.__version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "n_atoms": model.n_atoms,
        "latent_dim": model.latent_dim,
        "atom_indices": [int(i) for i in model.featurizer.atom_indices()],
        "n_features": model.featurizer.n_features,
        "feature_spec": model.featurizer.spec(),
        "feature_names": model.featurizer.feature_names(),
        "architecture": model.autoencoder.config(),
        "dtype": dtype,
        "units": {
            "positions": "nm",
            "box": "nm",
            "z": "dimensionless (latent dimensions anchored to CVs carry those CVs' units)",
        },
        "periodic": [None] * model.latent_dim,
        "z_range": getattr(training, "latent_range", None),
        "training_data_hash": getattr(training, "data_hash", None),
        "training": None
        if training is None
        else {
            "settings": getattr(training, "settings", {}),
            "best_epoch": getattr(training, "best_epoch", None),
            "epochs_run": len(hist.get("train_loss", [])),
            "final": {k: v[training.best_epoch] for k, v in hist.items() if len(v) > training.best_epoch >= 0},
        },
        "decoder": _decoder_metadata(model, training),
        "extra": extra or {},
    }


def _decoder_metadata(model: LatentModel, training: Any | None) -> dict[str, Any] | None:
    """What ``decode(z)`` returns, and how well it reconstructs held-out frames (None without a decoder)."""
    coords = model.coordinate_features()
    if coords is None or model.autoencoder.decoder is None:
        return None
    hist = getattr(training, "history", {}) or {}
    rmsd = hist.get("val_rmsd_angstrom") or []
    best = getattr(training, "best_epoch", None)
    return {
        "output": "aligned coordinates, nm, in the frame of the featurizer's reference structure",
        "atom_indices": coords[2],
        "validation_rmsd_angstrom": float(rmsd[best]) if rmsd and best is not None and best < len(rmsd) else None,
    }


def save_model(
    model: LatentModel,
    path: str | os.PathLike,
    *,
    training: Any | None = None,
    dtype: str = "float32",
    extra: dict[str, Any] | None = None,
    overwrite: bool = False,
    z_range: dict[str, list[float]] | None = None,
    probe_positions: Any | None = None,
) -> Path:
    """Export a latent model to one TorchScript file with metadata inside (atomic write).

    Parameters
    ----------
    model : LatentModel
    path : str or path-like
        Destination, conventionally ``*.pt``.
    training : TrainingResult, optional
        Recorded in the metadata (settings, data hash, final losses).
    dtype : {"float32", "float64"}
        Precision of the exported weights. Inputs of any float dtype are cast to it.
    extra : dict, optional
        JSON-serialisable user metadata.
    overwrite : bool
        Replace an existing file. Without it an existing file is never touched.
    z_range : dict, optional
        Range of z on the training frames (see :func:`latentbias.training.latent_range`); default: the one in
        ``training``. Pass it when the model was changed after training (e.g. a latent alignment).
    probe_positions : array_like, shape=(n_frames, n_atoms, 3), nm, optional
        Training frames (full system); the coordinates of the atoms the model reads in up to three of them are
        stored (``metadata["probe_positions"]``) and probed when the file is loaded (:func:`check_model_output`).
        Default: ``training.probe_positions`` if present.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ExportError
        The model cannot be compiled to TorchScript.
    FileExistsError
        ``path`` exists and ``overwrite`` is False.
    """
    if not isinstance(model, LatentModel):
        raise TypeError(f"save_model expects a LatentModel, got {type(model).__name__}")
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    if not path.parent.exists():
        raise FileNotFoundError(f"folder {path.parent} does not exist")
    encoder = copy.deepcopy(model.encoder_module()).to(_DTYPES[dtype]).eval()
    metadata = build_metadata(model, dtype, training, extra)
    if z_range is not None:
        metadata["z_range"] = {k: [float(x) for x in v] for k, v in z_range.items()}
    if probe_positions is None:
        probe_positions = getattr(training, "probe_positions", None)
    metadata["probe_positions"] = None if probe_positions is None else probe_metadata(
        probe_positions, metadata["atom_indices"], model.n_atoms)
    native = describe_model(encoder, model.n_atoms, model.latent_dim)
    metadata["native_description"] = NATIVE_NAME if native is not None else None
    write_scripted_model(encoder, path, metadata, native)
    logger.info("saved latent model (d=%d, %d atoms, native description: %s) to %s", model.latent_dim, model.n_atoms,
                "yes" if native is not None else "no", path)
    return path


def write_scripted_model(module: torch.nn.Module, path: Path, metadata: dict[str, Any],
                         native: dict[str, bytes] | None = None) -> None:
    """Script ``module`` and write it with ``metadata`` (checksums added) and the optional native description
    files to ``path`` atomically."""
    for p in module.parameters():
        p.requires_grad_(False)
    scripted = script_module(module)
    atomic_write_bytes(path, _archive_with_checksums(scripted, metadata, native))


def _archive(scripted: torch.jit.ScriptModule, metadata: dict[str, Any], native: dict[str, bytes] | None) -> bytes:
    """TorchScript archive with the metadata and the native description's files (if any) as extra files."""
    buffer = io.BytesIO()
    extra: dict[str, Any] = {METADATA_NAME: json.dumps(metadata)}
    extra.update(native or {})
    torch.jit.save(scripted, buffer, _extra_files=extra)
    return buffer.getvalue()


def _metadata_digest(metadata: dict[str, Any]) -> str:
    body = {k: v for k, v in metadata.items() if k != CHECKSUM_KEY}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _content_digest(archive: bytes) -> str:
    """SHA-256 over every entry of a TorchScript archive except the metadata and torch's random serialization id
    (entry names without the archive prefix).

    Reading the entries also checks each one's zip CRC-32 (``zipfile.BadZipFile`` on a mismatch).
    """
    h = hashlib.sha256()
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        entries = sorted((info.filename.split("/", 1)[-1], info) for info in zf.infolist())
        for name, info in entries:
            if name in (f"extra/{METADATA_NAME}", ".data/serialization_id"):  # ours; a random id per save
                continue
            h.update(name.encode() + b"\0" + hashlib.sha256(zf.read(info)).digest())
    return h.hexdigest()


def _archive_with_checksums(scripted: torch.jit.ScriptModule, metadata: dict[str, Any],
                            native: dict[str, bytes] | None = None) -> bytes:
    """The archive bytes with ``metadata[CHECKSUM_KEY]`` describing them (the code and weights are written twice;
    their bytes do not depend on the metadata, which is verified). The native description's files are archive
    entries like the weights, so ``content_sha256`` covers them."""
    metadata = {k: v for k, v in metadata.items() if k != CHECKSUM_KEY}
    # the checksums make it a file of the current format (a format-1 model re-exported); a format-1 file with
    # checksums is refused by both loaders as an edited one
    metadata["format_version"] = max(int(metadata.get("format_version", 0)), FORMAT_VERSION)
    content = _content_digest(_archive(scripted, metadata, native))
    metadata[CHECKSUM_KEY] = {"content_sha256": content, "metadata_sha256": _metadata_digest(metadata)}
    data = _archive(scripted, metadata, native)
    if _content_digest(data) != content:  # pragma: no cover - torch.jit.save is deterministic for one module
        raise ExportError("torch.jit.save wrote different bytes for the same module twice; cannot checksum the file")
    return data


def archive_bytes(model: "LatentModelFile") -> bytes:
    """A loaded model as the bytes of a model file (TorchScript archive, metadata and fresh checksums)."""
    return _archive_with_checksums(model.module, model.metadata, model.native_files)


def _read_verified(path: Path) -> tuple[bytes, dict[str, Any], dict[str, bytes] | None]:
    """The bytes, metadata and native-description files (None when absent) of a model file, its checksums verified
    (format 2) before any code is loaded."""
    data = path.read_bytes()
    fix = "re-export the model (latentbias.save_model / `latentbias train`) or restore the file from a copy"
    native: dict[str, bytes] = {}
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = [n for n in zf.namelist() if n.split("/", 1)[-1] == f"extra/{METADATA_NAME}"]
            raw = zf.read(names[0]) if names else b""
            for n in zf.namelist():
                entry = n.split("/", 1)[-1]
                if entry.startswith("extra/") and is_native_entry(entry[len("extra/"):]):
                    native[entry[len("extra/"):]] = zf.read(n)
        content = _content_digest(data)
    except Exception as exc:  # zipfile raises BadZipFile, zlib.error, EOFError, NotImplementedError, ...
        raise ValueError(f"{path} is not a TorchScript file, or a corrupt one ({type(exc).__name__}: {exc}); "
                         f"{fix}") from exc
    if not raw:
        raise ValueError(
            f"{path} is a TorchScript file but not a latentbias model (no {METADATA_NAME} inside); export it "
            "with latentbias.save_model"
        )
    try:
        metadata = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: corrupt {METADATA_NAME} metadata ({exc}); {fix}") from exc
    if not isinstance(metadata, dict) or metadata.get("format") != "latentbias-model":
        raise ValueError(f"{path}: metadata is not of a latentbias model")
    sums = metadata.get(CHECKSUM_KEY)
    if int(metadata.get("format_version", 0)) >= 2:
        if not isinstance(sums, dict) or sums.get("metadata_sha256") != _metadata_digest(metadata):
            raise ValueError(f"{path}: its metadata does not match the checksum stored with it (the file is corrupt "
                             f"or was edited); {fix}")
        if sums.get("content_sha256") != content:
            raise ValueError(f"{path}: its code or weights do not match the checksum stored in its metadata (the "
                             f"file is corrupt or was edited); {fix}")
    elif CHECKSUM_KEY in metadata:  # written by format 2 or later, then its format_version edited: skip nothing
        raise ValueError(f"{path}: its metadata says model format {metadata.get('format_version')}, which carries no "
                         f"checksums, but it holds them ({CHECKSUM_KEY!r}): its format_version was edited (a format-1 "
                         f"file never held them), so it is not trusted; {fix}")
    else:
        logger.warning("%s is a model of format %s, which carries no checksums, so it is loaded unverified (a damaged "
                       "or edited file would go unnoticed); re-export it with this latentbias to add them "
                       "(latentbias.save_model, or write latentbias.export.archive_bytes(latentbias.load_model(path)) "
                       "to a new file)", path, metadata.get("format_version"))
    if native and NATIVE_NAME not in native:
        raise ValueError(f"{path}: it has native-description arrays but no {NATIVE_NAME}; {fix}")
    return data, metadata, (native or None)


def save_cv_module(
    module: torch.nn.Module,
    path: str | os.PathLike,
    *,
    n_atoms: int,
    latent_dim: int,
    atom_indices: Any | None = None,
    periodic: list[list[float] | None] | None = None,
    description: str = "",
    extra: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Export a hand-written CV module (no training) in the latentbias model format.

    Use it to bias known coordinates with the same machinery as learned ones: an identity map of a particle's
    coordinates, exact φ/ψ angles, a linear projection.

    Parameters
    ----------
    module : torch.nn.Module
        ``forward(positions, box: Optional[Tensor] = None) -> Tensor`` mapping full-system positions
        ``(n_atoms, 3)`` in **nm** to ``(latent_dim,)``; must compile with TorchScript.
    path : str or path-like
    n_atoms : int
        Atom count of the system the module is meant for.
    latent_dim : int
    atom_indices : array_like of int, optional
        Atoms the module reads (metadata only).
    periodic : list, optional
        Per output dimension ``[min, max]`` of its period (e.g. ``[-pi, pi]`` for angles) or ``None``.
    description : str
        Stored as ``feature_spec["description"]``.
    """
    from . import __version__

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    if periodic is not None and len(periodic) != latent_dim:
        raise ValueError(f"periodic must have one entry per latent dimension ({latent_dim}), got {len(periodic)}")
    metadata = {
        "format": "latentbias-model",
        "format_version": FORMAT_VERSION,
        "latentbias_version": __version__,
        "torch_version": torch.__version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "n_atoms": int(n_atoms),
        "latent_dim": int(latent_dim),
        "atom_indices": [] if atom_indices is None else [int(i) for i in np.asarray(atom_indices).ravel()],
        "n_features": None,
        "feature_spec": {"type": "custom_module", "description": description},
        "feature_names": [],
        "architecture": {"type": type(module).__name__},
        "dtype": str(next(iter(module.parameters()), torch.zeros((), dtype=torch.float64)).dtype).replace(
            "torch.", ""
        ),
        "units": {"positions": "nm", "box": "nm", "z": "as defined by the module"},
        "periodic": periodic,
        "training_data_hash": None,
        "training": None,
        "extra": extra or {},
    }
    write_scripted_model(copy.deepcopy(module).eval(), path, metadata)
    return path


@dataclass
class LatentModelFile:
    """A loaded model file: the TorchScript module and its metadata.

    Attributes
    ----------
    module : torch.jit.ScriptModule
        positions (n_atoms, 3) [+ box (3, 3)], **nm** -> z (latent_dim,).
    metadata : dict
        See :func:`build_metadata`.
    path : pathlib.Path or None
    """

    module: torch.jit.ScriptModule
    metadata: dict[str, Any]
    path: Path | None = None
    native_files: dict[str, bytes] | None = None

    @property
    def has_native_description(self) -> bool:
        """Whether the file carries a native description (see :mod:`latentbias.native_description`)."""
        return self.native_files is not None

    @property
    def n_atoms(self) -> int:
        return int(self.metadata["n_atoms"])

    @property
    def latent_dim(self) -> int:
        return int(self.metadata["latent_dim"])

    @property
    def periodic(self) -> list[list[float] | None]:
        """Per latent dimension, its period ``[min, max]`` or None (learned latent coordinates are not periodic)."""
        value = self.metadata.get("periodic")
        return [None] * self.latent_dim if value is None else list(value)

    @property
    def atom_indices(self) -> np.ndarray:
        return np.asarray(self.metadata["atom_indices"], dtype=np.int64)

    def check_system(self, system: Any) -> None:
        """Raise ValueError unless ``system`` (an openmm.System) has the atom count the model was built for."""
        n = system.getNumParticles()
        if n != self.n_atoms:
            where = f" ({self.path})" if self.path else ""
            raise ValueError(
                f"the model{where} was built for {self.n_atoms} atoms but the System has {n} particles; use the "
                "model trained for this system (same topology, same solvent), or, when the model was trained on a "
                "subset of this system's atoms (e.g. protein-only trajectories of a solvated system), map them with "
                "latentbias.remap_model(model, model_topology, system_topology, 'remapped.pt') or `latentbias remap`"
            )

    def encode(self, positions: Any, box: Any | None = None) -> np.ndarray:
        """Latent coordinates of one frame or many (validated, no gradients).

        Parameters
        ----------
        positions : array_like or Quantity, shape=(n_atoms, 3) or (n_frames, n_atoms, 3), **nm**
        box : array_like, shape=(3, 3) or (n_frames, 3, 3), **nm**, optional

        Returns
        -------
        numpy.ndarray, shape=(latent_dim,) or (n_frames, latent_dim)
        """
        xyz = ensure_positions(positions, self.n_atoms)
        boxes = ensure_box(box, n_frames=len(xyz) if xyz.ndim == 3 else None)
        x = torch.as_tensor(xyz)
        b = None if boxes is None else torch.as_tensor(boxes)
        with torch.no_grad():
            try:
                z = self.module(x, b)
            except RuntimeError as exc:  # torch.jit.Error: the cause is on the traceback's last line
                frames = f"{len(xyz)} frames" if xyz.ndim == 3 else "one frame"
                raise ModelEvaluationError(
                    f"{self._where()}: the model's forward failed on {frames}: {cause_first(str(exc))}"
                ) from exc
            return z.double().cpu().numpy()

    def _where(self) -> str:
        return str(self.path) if self.path is not None else "the model"

    @property
    def has_decoder(self) -> bool:
        """Whether ``decode`` works (models trained with aligned-coordinate features and a decoder)."""
        return bool(self.metadata.get("decoder")) and hasattr(self.module, "decode")

    def decode(self, z: Any) -> np.ndarray:
        """Structures of latent points: the aligned atoms (``metadata["decoder"]["atom_indices"]``).

        Parameters
        ----------
        z : array_like, shape=(latent_dim,) or (n, latent_dim)

        Returns
        -------
        numpy.ndarray, shape=(n_atoms_decoded, 3) or (n, n_atoms_decoded, 3), **nm**, in the frame of the
        featurizer's reference structure.
        """
        if not self.has_decoder:
            where = f" {self.path}" if self.path else ""
            raise ValueError(f"the model{where} has no coordinate decoder: train it with aligned-coordinate features "
                             "(features 'aligned') and the autoencoder objective")
        zz = np.asarray(z, dtype=float)
        if zz.shape[-1] != self.latent_dim or zz.ndim not in (1, 2) or not np.all(np.isfinite(zz)):
            raise ValueError(f"z must be finite with shape ({self.latent_dim},) or (n, {self.latent_dim}), got "
                             f"{zz.shape}")
        with torch.no_grad():
            try:
                return self.module.decode(torch.as_tensor(zz)).double().cpu().numpy()
            except RuntimeError as exc:
                raise ModelEvaluationError(f"{self._where()}: the model's decode failed: {cause_first(str(exc))}"
                                           ) from exc


def load_model(path: str | os.PathLike, map_location: str = "cpu", *, probe_positions: Any | None = None
               ) -> LatentModelFile:
    """Load a latentbias model file.

    Parameters
    ----------
    path : str or path-like
    map_location : str
    probe_positions : array_like, shape=(n_atoms, 3) or (n, n_atoms, 3), nm, optional
        Configurations the model is meant for, probed first by :func:`check_model_output`.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        The file is not a TorchScript archive, has no latentbias metadata, does not match the checksums stored in
        it (corrupt or edited; format 2), or its model has the wrong output shape or no gradient
        (:func:`check_model_output`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} not found")
    data, metadata, native = _read_verified(path)
    if int(metadata.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(
            f"{path} uses model format {metadata['format_version']}; this latentbias reads up to {FORMAT_VERSION}. "
            "Upgrade latentbias."
        )
    try:
        module = torch.jit.load(io.BytesIO(data), map_location=map_location)
    except Exception as exc:
        raise ValueError(
            f"{path} is not a loadable TorchScript file ({type(exc).__name__}: {cause_first(str(exc))}); export models "
            "with latentbias.save_model or `latentbias train`"
        ) from exc
    if native is not None:
        doc = validate_description(native, where=str(path))
        if doc["n_atoms"] != int(metadata["n_atoms"]) or doc["latent_dim"] != int(metadata["latent_dim"]):
            raise ValueError(f"{path}: its native description does not match its metadata (n_atoms/latent_dim); "
                             "re-export the model with latentbias.save_model")
    model = LatentModelFile(module=module, metadata=metadata, path=path, native_files=native)
    check_model_output(model, probe_positions)
    return model


def check_model_output(model: LatentModelFile, probe_positions: Any | None = None) -> None:
    """Refuse a model whose output has the wrong shape or does not depend differentiably on the positions.

    The model is evaluated (float64 positions, no box) at the probe configurations of
    :func:`latentbias.model_probes.probe_configurations`: the given ``probe_positions``, training frames stored in
    the file, the aligned features' reference structure, then reproducible random configurations. ``z`` must be a
    floating-point tensor of shape ``(latent_dim,)`` attached to the autograd graph, and every component must have a
    non-zero gradient with respect to the positions at one probe at least. A detached, integer/boolean or constant
    output would make every biasing route apply exactly zero force while the bias energy is recorded — silently
    wrong physics. Physical probes come first because random configurations saturate healthy tanh models.

    Parameters
    ----------
    model : LatentModelFile
    probe_positions : array_like, shape=(n_atoms, 3) or (n, n_atoms, 3), nm, optional
        Configurations the model is meant for (e.g. the system's starting structure), probed first.

    Raises
    ------
    ValueError
        Naming the file, the cause and the fix.
    """
    where = str(model.path) if model.path is not None else "the model"
    moves = np.zeros(model.latent_dim, dtype=bool)  # component i has a non-zero gradient at some probe
    tried: list[str] = []
    for label, x in probe_configurations(model.n_atoms, model.metadata, probe_positions):
        tried.append(label)
        z, x = _evaluate_probe(model, where, x)
        for i in np.flatnonzero(~moves):
            (grad,) = torch.autograd.grad(z[int(i)], x, retain_graph=True, allow_unused=True)
            moves[i] = grad is not None and bool(torch.any(grad != 0))
        if moves.all():
            return
    i = int(np.flatnonzero(~moves)[0])
    raise ValueError(
        f"{where}: latent component z[{i}] does not depend differentiably on the positions (its gradient is "
        f"exactly zero at {len(tried)} probe configurations: {', '.join(tried)}); every biasing route would apply "
        "exactly zero force along it while recording the bias energy. Make the output a differentiable function of "
        "the positions (no .detach(), integer/boolean counts, constants or torch.no_grad() in forward; use a smooth "
        "switching function for counts). If the model is differentiable but saturates (e.g. tanh) away from its "
        "training structures, pass a structure of the system as load_model(..., probe_positions=...)"
    )


def _evaluate_probe(model: LatentModelFile, where: str, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z (checked: shape (latent_dim,), floating point, attached to the graph) and the probe positions."""
    x = positions.detach().clone().requires_grad_(True)
    try:
        z = model.module(x, None)
    except Exception as exc:
        raise ValueError(
            f"{where}: the model's forward(positions, box=None) failed on a test configuration of {model.n_atoms} "
            f"atoms: {cause_first(str(exc))}"
        ) from exc
    if not isinstance(z, torch.Tensor) or tuple(z.shape) != (model.latent_dim,):
        shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise ValueError(
            f"{where}: forward(positions) must return z of shape ({model.latent_dim},) (latent_dim in the metadata) "
            f"for positions of shape ({model.n_atoms}, 3), got {shape}"
        )
    if not z.is_floating_point() or not z.requires_grad:
        raise ValueError(
            f"{where}: the model output z ({z.dtype}) does not depend differentiably on the positions; every biasing "
            "route would apply exactly zero force while recording the bias energy. Make the output a differentiable "
            "function of the positions (no .detach(), integer/boolean counts or torch.no_grad() in forward; use a "
            "smooth switching function for counts)"
        )
    return z, x
