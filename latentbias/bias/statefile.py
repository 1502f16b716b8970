"""Reading a bias state written by ``saveState`` (metadynamics and OPES): a checksummed JSON record plus an npz.

Both biases save ``<prefix>.json`` (format, walker ids, settings and the npz's SHA-256, itself checksummed) and
``<prefix>.npz`` (the arrays). :func:`read_state_record` checks that both exist, that the record is JSON with every
key and its own checksum, that it is the expected kind of state, and that the npz matches the digest it stores;
every error names the file and the fix.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from ..io import ChecksumError, load_json, require_keys

__all__ = ["STATE_KEYS", "read_state_record", "state_fix"]

STATE_KEYS = ("format", "walkerId", "otherWalkers", "numDeposits", "settings", "npz_sha256")
_STATE_FIX = ("restore {prefix}.npz and {prefix}.json together from one saveState, or start the bias again without "
              "loadState")


def state_fix(prefix: str | os.PathLike) -> str:
    """The fix appended to every error about the state at ``prefix``."""
    return _STATE_FIX.format(prefix=prefix)


def read_state_record(prefix: str | os.PathLike, kind: str, fmt: str) -> tuple[dict[str, Any], Path, str]:
    """Read and verify the JSON record of the state saved at ``prefix``.

    Parameters
    ----------
    prefix : path
        The ``saveState`` prefix: the files are ``<prefix>.json`` and ``<prefix>.npz``.
    kind : str
        Name of the bias in messages (``"metadynamics"``, ``"OPES"``).
    fmt : str
        The record's expected ``format`` value.

    Returns
    -------
    info : dict
        The record, every key of :data:`STATE_KEYS` present.
    npz : Path
        The arrays' file, whose SHA-256 equals ``info["npz_sha256"]``.
    fix : str
        :func:`state_fix` of ``prefix``, for the caller's own errors about the arrays.

    Raises
    ------
    FileNotFoundError
        Either file is missing.
    ValueError
        The record is not JSON, lacks a key, is another kind of state, or the npz does not match it
        (:class:`~latentbias.io.ChecksumError` when the record does not match its own checksum).
    """
    prefix = Path(prefix)
    npz, meta = prefix.with_name(prefix.name + ".npz"), prefix.with_name(prefix.name + ".json")
    if not meta.is_file() or not npz.is_file():
        raise FileNotFoundError(f"no {kind} state at {prefix} (.npz and .json)")
    fix = state_fix(prefix)
    try:
        info = require_keys(load_json(meta), STATE_KEYS, meta, fix=fix)
    except ChecksumError as exc:
        raise ChecksumError(f"{exc}; {fix}") from None
    except ValueError as exc:  # not JSON (the message names the file), or a key missing (already complete)
        raise ValueError(str(exc) if fix in str(exc) else f"{exc}; {fix}") from None
    if info.get("format") != fmt:
        raise ValueError(f"{meta} is not a latentbias {kind} state")
    if hashlib.sha256(npz.read_bytes()).hexdigest() != info["npz_sha256"]:
        raise ValueError(f"{npz} does not match the checksum in {meta} (an interrupted save or a damaged "
                         "file); restore both files from one save")
    return info, npz, fix
