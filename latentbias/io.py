"""File helpers: atomic writes (temp file in the same folder, fsync, rename) for everything a restart reads."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Collection, Mapping, Sequence, TypeVar

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["atomic_write_bytes", "write_json", "load_json", "save_npz", "load_npz", "write_csv", "ChecksumError",
           "NPZ_CHECKSUM_KEY", "JSON_CHECKSUM_KEY", "require_keys", "require_choice"]


def atomic_write_bytes(path: str | os.PathLike, data: bytes, overwrite: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically: readers see the old file or the new one, never a torn one.

    Raises FileExistsError when ``path`` exists and ``overwrite`` is False, FileNotFoundError when its folder does
    not exist.
    """
    path = Path(path)
    _refuse_overwrite(path, overwrite)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"folder {folder} does not exist; create it first")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def _refuse_overwrite(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")


#: key of the optional SHA-256 of a JSON object's other keys (see :func:`write_json`)
JSON_CHECKSUM_KEY = "__sha256__"


def _json_digest(obj: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_json(path: str | os.PathLike, obj: Any, overwrite: bool = True, checksum: bool = False) -> None:
    """Atomically write ``obj`` as indented JSON.

    With ``checksum=True`` (``obj`` must be a dict) the SHA-256 of the object's canonical JSON (sorted keys) is
    stored in it under :data:`JSON_CHECKSUM_KEY`; :func:`load_json` verifies it.
    """
    path = Path(path)
    _refuse_overwrite(path, overwrite)
    if checksum:
        if not isinstance(obj, dict) or JSON_CHECKSUM_KEY in obj:
            raise ValueError(f"write_json(checksum=True) needs a dict without the key {JSON_CHECKSUM_KEY!r}")
        obj = {**obj, JSON_CHECKSUM_KEY: _json_digest(obj)}
    atomic_write_bytes(path, (json.dumps(obj, indent=1) + "\n").encode())


def load_json(path: str | os.PathLike, *, warn_unverified: bool = False,
              unverified: Callable[[Path], None] | None = None) -> Any:
    """Read a JSON file; a checksum stored by :func:`write_json` is verified and removed.

    With ``warn_unverified``, an object without a checksum (written by an older version, or edited by hand with the
    checksum key removed) is returned with a logged warning naming the file, instead of silently. ``unverified``,
    when given, is called with the path instead of that warning; it may raise to refuse such a file (run
    directories of the current format do: :mod:`latentbias.campaign.rundirformat`).

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        The file is not valid JSON (the message names the file).
    ChecksumError
        The object does not match its stored checksum (the file was changed or damaged).
    """
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}): the file is corrupt") from None
    if isinstance(obj, dict) and JSON_CHECKSUM_KEY in obj:
        stored = obj.pop(JSON_CHECKSUM_KEY)
        if stored != _json_digest(obj):
            raise ChecksumError(f"{path}: its content does not match the checksum stored in it (the file was "
                                "edited or is corrupt)")
    elif unverified is not None:
        unverified(path)
    elif warn_unverified:
        logger.warning("%s carries no checksum (%s), so it was read unverified: it was written by an older version "
                       "or edited by hand; check it, or restore it from a backup", path, JSON_CHECKSUM_KEY)
    return obj


R = TypeVar("R", bound=Mapping)


def require_keys(record: R, keys: Sequence[str], path: str | os.PathLike, *, fix: str,
                 error: type[Exception] = ValueError) -> R:
    """Check that a record read from ``path`` (a JSON object or the arrays of an ``.npz``) holds ``keys``.

    Parameters
    ----------
    record : mapping
        What was read (a non-mapping is refused too: the file holds something else).
    keys : sequence of str
        Keys the reader indexes.
    path : path-like
        The file, named in the error.
    fix : str
        What the user should do, appended to the error.
    error : exception type
        Raised (``ValueError`` or a subclass such as the run directory's ``RunDirError``).

    Returns
    -------
    mapping
        ``record`` itself, so ``info = require_keys(load_json(p), ...)`` reads in one line.
    """
    if not isinstance(record, Mapping):
        raise error(f"{path} does not hold a JSON object or named arrays ({type(record).__name__}): the file is "
                    f"corrupt; {fix}")
    missing = [k for k in keys if k not in record]
    if missing:
        raise error(f"{path} lacks the key(s) {missing}: the file is corrupt or from another version; {fix}")
    return record


def require_choice(value: Any, allowed: Collection[Any], path: str | os.PathLike, key: str, *, fix: str,
                   error: type[Exception] = ValueError) -> Any:
    """Check that the value of ``key`` read from ``path`` is one of ``allowed``; else raise ``error`` naming the
    file, the key, the value, the allowed values and ``fix``. Returns ``value``."""
    try:
        ok = value in allowed
    except TypeError:  # unhashable value (a list, a dict) looked up in a set or dict
        ok = False
    if not ok:
        raise error(f"{path}: {key} {value!r} is not one of {', '.join(map(repr, allowed))}; the file is corrupt or "
                    f"from another version; {fix}")
    return value


#: key of the optional SHA-256 of an ``.npz`` file's arrays (see :func:`save_npz`)
NPZ_CHECKSUM_KEY = "__sha256__"


class ChecksumError(ValueError):
    """A file's stored checksum does not match its content (the file is corrupt)."""


def _arrays_digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_npz(path: str | os.PathLike, overwrite: bool = True, checksum: bool = False, **arrays: np.ndarray) -> None:
    """Atomically write arrays to an ``.npz`` file (no pickled objects).

    With ``checksum=True`` the SHA-256 of the arrays (names, dtypes, shapes, bytes) is stored under
    :data:`NPZ_CHECKSUM_KEY`; :func:`load_npz` verifies it.
    """
    path = Path(path)
    _refuse_overwrite(path, overwrite)
    values = {k: np.asarray(v) for k, v in arrays.items()}
    if NPZ_CHECKSUM_KEY in values:
        raise ValueError(f"{NPZ_CHECKSUM_KEY!r} is reserved for the checksum")
    if checksum:
        values[NPZ_CHECKSUM_KEY] = np.array(_arrays_digest(values))
    buffer = io.BytesIO()
    np.savez(buffer, **values)
    atomic_write_bytes(path, buffer.getvalue())


def load_npz(path: str | os.PathLike, *, unverified: Callable[[Path], None] | None = None) -> dict[str, np.ndarray]:
    """Load an ``.npz`` file without allowing pickled objects; a stored checksum is verified and removed.

    Raises :class:`ChecksumError` (naming the file) when the arrays do not match their stored checksum.
    ``unverified``, when given, is called with the path when the file carries no checksum (it may raise).
    """
    with np.load(path, allow_pickle=False) as data:
        out = {k: data[k] for k in data.files}
    stored = out.pop(NPZ_CHECKSUM_KEY, None)
    if stored is not None and str(stored) != _arrays_digest(out):
        raise ChecksumError(f"{path}: its arrays do not match the checksum stored in it (the file is corrupt)")
    if stored is None and unverified is not None:
        unverified(Path(path))
    return out


def write_csv(
    path: str | os.PathLike,
    header: Sequence[str],
    rows: np.ndarray,
    comment: str | None = None,
    overwrite: bool = False,
    fmt: str = "%.10g",
) -> None:
    """Atomically write a numeric table as CSV with a header line (and an optional ``# comment`` line first)."""
    path = Path(path)
    _refuse_overwrite(path, overwrite)
    buffer = io.StringIO()
    if comment:
        buffer.write(f"# {comment}\n")
    buffer.write(",".join(header) + "\n")
    arr = np.atleast_2d(np.asarray(rows, dtype=float))
    if arr.size:
        np.savetxt(buffer, arr, delimiter=",", fmt=fmt)
    atomic_write_bytes(path, buffer.getvalue().encode())
