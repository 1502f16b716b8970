"""Run-directory format version: which integrity rules a run directory was created under.

A run directory created by this version stores :data:`RUNDIR_FORMAT` under :data:`FORMAT_KEY` in its
``config.json`` (a multi-system run directory also in its ``multi.json``). Every record such a directory holds was
written with a checksum, so a record without one (a JSON record whose checksum key was removed, an ``.npz`` without
its checksum array, an OpenMM checkpoint whose ``chk_*.json`` was deleted) was changed by hand or replaced, and is
refused with an error naming the file and the fix. Run directories of earlier versions store no format: their
records are read as before, with a warning naming each record that carries no checksum, so they stay resumable.

The format is kept when a run directory is extended (``config.json`` rewritten, :mod:`latentbias.campaign.extend`):
an old directory never becomes strict, since its records of earlier versions may lack checksums.

Format history:

* none (absent): run directories of versions before this one; records without a checksum are read with a warning.
* 2: records without a checksum are refused; multi-system members' seeds are drawn with ``numpy.random.SeedSequence``
  (:func:`latentbias.campaign.multiconfig.member_seed`).

Limit: the format lives in the checksummed ``config.json`` itself, so downgrading a directory needs a hand edit of
``config.json`` that removes both the format key and the checksum key; ``config.json`` is then read with a warning
naming it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

__all__ = ["FORMAT_KEY", "RUNDIR_FORMAT", "stamped", "split_format", "stored_format", "missing_checksum_message",
           "unverified_handler"]

logger = logging.getLogger(__name__)

#: key of the run-directory format in config.json / multi.json (dunder: never a configuration section)
FORMAT_KEY = "__rundir_format__"
#: format of the run directories this version creates
RUNDIR_FORMAT = 2


def stamped(record: dict[str, Any], version: int | None) -> dict[str, Any]:
    """``record`` with the format ``version`` stored in it (unchanged when ``version`` is None: an old directory)."""
    out = {k: v for k, v in record.items() if k != FORMAT_KEY}
    if version is not None:
        out[FORMAT_KEY] = int(version)
    return out


def split_format(record: dict[str, Any]) -> tuple[dict[str, Any], int | None]:
    """``(record without the format key, the format or None)``."""
    out = dict(record)
    version = out.pop(FORMAT_KEY, None)
    return out, (int(version) if isinstance(version, int) and not isinstance(version, bool) else None)


def stored_format(path: str | Path) -> int | None:
    """The format stored in the JSON file ``path`` (config.json or multi.json), read without verification (the
    file's own reader verifies it); None when the file is missing, unreadable or holds no format."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return split_format(record)[1] if isinstance(record, dict) else None


def unverified_handler(marker: str | Path, fix: str, error: type[Exception],
                       what: str = "checksum") -> Callable[[Path], None]:
    """A ``load_json``/``load_npz`` ``unverified`` callback for records outside :class:`RunDir` (multi.json, the
    multi-system shared model): refuse a record without a checksum when ``marker`` (the JSON file holding the
    directory's format) stores a format, else log a warning naming it."""
    def handle(path: Path) -> None:
        version = stored_format(marker)
        if version is not None:
            raise error(missing_checksum_message(path, marker, version, what, fix))
        logger.warning("%s carries no %s, so it was read unverified: it was written by an older version or edited by "
                       "hand; check it, or restore it from a backup", path, what)
    return handle


def missing_checksum_message(path: str | Path, marker: str | Path, version: int, what: str, fix: str) -> str:
    """The error for a record without a checksum in a directory of format ``version`` (stored in ``marker``)."""
    return (f"{path} carries no {what}, but this run directory was created by a latentbias version that writes "
            f"one for every record (run-directory format {version}, stored in {marker}): the record was edited by "
            f"hand or replaced, so it cannot be trusted; {fix}")
