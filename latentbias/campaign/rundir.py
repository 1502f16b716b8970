"""The run directory: every artifact of a campaign, written so a killed run resumes without losing or repeating
a single frame, and read back with checks that name the damaged file.

Layout::

    RUNDIR/
      config.json                  resolved configuration (a resumed run must match it; holds the seed used)
      progress.json                the commit point: round, phase, committed segments (atomic)
      run.lock                     exclusive lock of the running process (pid, host); free when nothing runs
      campaign.log                 log of all runs on this folder
      weights.json weights.csv     cross-round log-weights of all frames so far
      round_000/
        plan.json                  what this round does (strategy, bias settings, frontier targets) — fixed at start
        initial_bias.npz           bias carried over from the previous metadynamics round (when plan.json names it)
        seg_00000.npz ...          frames of each committed segment (:mod:`latentbias.campaign.records`)
        chk_00003.chk              OpenMM checkpoint after the last committed segment (older ones are removed)
        chk_00003.xml              the same state, platform-independent (positions, velocities, step, parameters)
        chk_00003.json             SHA-256 of both and the platform that wrote the checkpoint
        bias_00003.npz/.json       metadynamics state after the last committed segment
        end.json                   only when the round ended before its planned segments (OOD -> retrain,
                                   converged): the number of segments it holds and why
        frames.dcd frames.csv topology.pdb      assembled when the round's simulation ends
        model.pt model_state.npz model.json     model trained after this round on all frames so far
      report/                      written by `latentbias report`

Phases of a round, in order (``progress.json`` ``phase``): ``plan`` -> ``simulate`` -> ``train`` -> ``weights``
-> ``plan`` of the next round, or ``done`` (with ``finished``) after the last round.

Commit protocol for a segment k: write ``seg_k.npz``, ``chk_k.*`` and ``bias_k.*`` (each atomically), then
``progress.json`` (atomically) saying k is committed, then delete the files of k-1. On resume, files with an
index above the committed one are leftovers of an interrupted commit and are removed, and so are the temporary
files (``.*.tmp``, ``.*.partial``) of any interrupted atomic write, whatever the phase.

Integrity: one process at a time holds ``run.lock`` (``fcntl.flock``; released by the kernel when the process
dies); ``.npz`` records carry a SHA-256 of their arrays and JSON records a SHA-256 of their content
(:data:`latentbias.io.JSON_CHECKSUM_KEY`), both verified on load; JSON records are also checked for the keys the
campaign reads; OpenMM checkpoints are verified against the SHA-256 in their ``chk_*.json``. Any damage raises
:class:`RunDirError` naming the file and what to do. A run directory created by this version stores its format
(:mod:`latentbias.campaign.rundirformat`) in ``config.json``, and a record without a checksum (the key removed,
``chk_*.json`` deleted) is refused there; in directories of earlier versions it is read with a warning naming it.

Moving a run: a checkpoint can only be loaded on the platform that wrote it, so a round resumed on another
platform (``[md] platform`` changed, :mod:`latentbias.campaign.extend`) continues from the platform-independent
``chk_*.xml`` state instead (same positions, velocities and step; the integrator's random stream restarts).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import socket
import zipfile
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..io import (JSON_CHECKSUM_KEY, NPZ_CHECKSUM_KEY, ChecksumError, atomic_write_bytes, load_json, load_npz,
                  require_choice, require_keys, save_npz, write_json)
from .rundirformat import RUNDIR_FORMAT, missing_checksum_message, split_format, stamped, stored_format

logger = logging.getLogger(__name__)

__all__ = ["RunDir", "RunDirError", "RunDirLocked", "PHASES"]

#: phases of a round as stored in progress.json, in order ("done": the campaign has finished)
PHASES = ("plan", "simulate", "train", "weights", "done")

_SEG = re.compile(r"^(seg|chk|bias)_(\d{5})\.(npz|chk|json|xml)$")
_TEMPORARY = (".*.tmp", ".*.partial")
#: keys the campaign reads from each JSON record
_REQUIRED = {
    "config.json": ("system", "md", "features", "model", "campaign", "metadynamics", "frontier", "ood"),
    "progress.json": ("round", "phase", "segments", "finished"),
    "plan.json": ("round", "strategy", "segments"),
    "model.json": ("round", "architecture", "history", "best_epoch", "z_min", "z_max", "recon_error_q99"),
}
#: keys of plan.json that every reader of a strategy's round needs, the reweighting included
#: (latentbias.campaign.plan, latentbias.campaign.weights.bias_states)
_PLAN_KEYS = {
    "metadynamics": ("variables",), "opes": ("variables",), "pocket": ("variables",),
    "frontier": ("targets",), "umbrella": ("dims", "centers", "force_constants"),
}
_DAMAGED = ("restore it from a backup, or start the campaign again in a new --rundir (the frames of committed "
            "rounds stay readable in round_*/frames.dcd)")


class RunDirError(ValueError):
    """The run directory cannot be used as it is; the message names the file and what to do."""


class RunDirLocked(RunDirError):
    """Another process is running a campaign in this run directory."""


class RunDir:
    """Paths and atomic bookkeeping of a campaign run directory.

    Parameters
    ----------
    path : str or path-like
        Created if missing.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------------------------------------ paths

    def round_dir(self, r: int) -> Path:
        d = self.path / f"round_{r:03d}"
        d.mkdir(exist_ok=True)
        return d

    def segment_file(self, r: int, k: int) -> Path:
        return self.round_dir(r) / f"seg_{k:05d}.npz"

    def checkpoint_file(self, r: int, k: int, walker: int | None = None) -> Path:
        """``chk_KKKKK.chk``, or walker w's ``chk_KKKKK_wWW.chk`` (:mod:`latentbias.campaign.walkers`)."""
        tag = "" if walker is None else f"_w{int(walker):02d}"
        return self.round_dir(r) / f"chk_{k:05d}{tag}.chk"

    def checkpoint_files(self, r: int, k: int, walker: int | None = None) -> list[Path]:
        """The checkpoint, its platform-independent ``.xml`` state (when written) and its ``.json`` checksums."""
        chk = self.checkpoint_file(r, k, walker)
        return [chk, chk.with_suffix(".xml"), chk.with_suffix(".json")]

    def bias_prefix(self, r: int, k: int) -> Path:
        return self.round_dir(r) / f"bias_{k:05d}"

    def model_file(self, r: int) -> Path:
        return self.round_dir(r) / "model.pt"

    def plan_file(self, r: int) -> Path:
        return self.round_dir(r) / "plan.json"

    def initial_bias_file(self, r: int) -> Path:
        return self.round_dir(r) / "initial_bias.npz"

    @property
    def log_file(self) -> Path:
        return self.path / "campaign.log"

    @property
    def lock_file(self) -> Path:
        return self.path / "run.lock"

    @property
    def progress_file(self) -> Path:
        return self.path / "progress.json"

    @property
    def config_file(self) -> Path:
        return self.path / "config.json"

    # ------------------------------------------------------------------------------------------------ lock

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run directory exclusively (``fcntl.flock`` on ``run.lock``) for the ``with`` block.

        Raises :class:`RunDirLocked` at once, naming the holder's pid and host, when another process holds it.
        The kernel releases the lock when the holder exits, however it dies.
        """
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "an unknown process"
                raise RunDirLocked(f"{self.path} is in use by another campaign run ({holder}; lock file "
                                   f"{self.lock_file}); wait for it to finish or stop it, or use another "
                                   "--rundir") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
            try:
                yield
            finally:
                os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # releases the flock

    # ------------------------------------------------------------------------------------------------ format

    def format_version(self) -> int | None:
        """The run-directory format stored in config.json (:mod:`latentbias.campaign.rundirformat`); None for a
        directory of an earlier version (or one without config.json yet)."""
        return stored_format(self.config_file)

    def _unverified(self, path: Path, what: str) -> None:
        """A record without a checksum: refused in a directory of the current format, else read with a warning."""
        version = self.format_version()
        if version is not None:
            raise RunDirError(missing_checksum_message(path, self.config_file, version, what, _DAMAGED))
        logger.warning("%s carries no %s, so it was read unverified: it was written by an older version or edited by "
                       "hand; check it, or restore it from a backup", path, what)

    def _unverified_json(self, path: Path) -> None:
        self._unverified(path, f"checksum ({JSON_CHECKSUM_KEY} key)")

    def _unverified_npz(self, path: Path) -> None:
        self._unverified(path, f"checksum ({NPZ_CHECKSUM_KEY} array)")

    # ------------------------------------------------------------------------------------------------ records

    def read_json(self, path: str | Path, required: Sequence[str] | None = None) -> dict[str, Any]:
        """Read a JSON record of the run directory; missing, corrupt or incomplete files raise
        :class:`RunDirError` naming the file. ``required`` defaults to the keys the campaign reads from records
        of that name (progress.json, plan.json, model.json)."""
        path = Path(path)
        required = _REQUIRED.get(path.name, ()) if required is None else required
        try:
            data = load_json(path, unverified=self._unverified_json)
        except FileNotFoundError:
            raise RunDirError(f"{path} is missing; {_DAMAGED}") from None
        except RunDirError:  # a record without a checksum in a directory of the current format: already complete
            raise
        except ChecksumError as exc:
            raise RunDirError(f"{exc}; {_DAMAGED}") from None
        except ValueError as exc:  # not JSON: load_json names the file
            raise RunDirError(f"{exc}; {_DAMAGED}") from None
        return require_keys(data, required, path, fix=_DAMAGED, error=RunDirError)

    def write_json(self, path: str | Path, data: dict[str, Any]) -> None:
        """Write a JSON record atomically with a checksum that :meth:`read_json` verifies."""
        write_json(path, data, checksum=True)

    def read_npz(self, path: str | Path) -> dict[str, np.ndarray]:
        """Read an ``.npz`` record, verifying its checksum; a missing or corrupt file raises
        :class:`RunDirError` naming it."""
        path = Path(path)
        try:
            return load_npz(path, unverified=self._unverified_npz)
        except FileNotFoundError:
            raise RunDirError(f"{path} is missing; {_DAMAGED}") from None
        except RunDirError:
            raise
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise RunDirError(f"{path} cannot be read ({exc}); {_DAMAGED}") from None

    def save_npz(self, path: str | Path, **arrays: np.ndarray) -> None:
        """Write an ``.npz`` record atomically with a checksum that :meth:`read_npz` verifies."""
        save_npz(path, checksum=True, **arrays)

    def read_plan(self, r: int) -> dict[str, Any]:
        """Round r's plan.json, checked for the keys every reader of its strategy's rounds needs (the strategy
        itself is checked where it selects the round's bias: :meth:`check_strategy`)."""
        path = self.plan_file(r)
        plan = self.read_json(path)
        require_keys(plan, _PLAN_KEYS.get(plan["strategy"], ()) if isinstance(plan["strategy"], str) else (), path,
                     fix=_DAMAGED, error=RunDirError)
        if "round_trip_cores" in plan:  # the converge phase's latent basins (latentbias.campaign.roundtrips)
            require_keys(plan["round_trip_cores"], ("dims", "edges", "labels", "minima", "free_energies", "levels"),
                         f"{path} (round_trip_cores)", fix=_DAMAGED, error=RunDirError)
        return plan

    def check_strategy(self, r: int, plan: dict[str, Any], known: Sequence[str]) -> str:
        """``plan["strategy"]`` of round r when it is one of ``known``; else :class:`RunDirError` naming plan.json,
        the value, the known strategies and what to do."""
        return require_choice(plan["strategy"], tuple(known), self.plan_file(r), "strategy", fix=_DAMAGED,
                              error=RunDirError)

    def write_plan(self, r: int, plan: dict[str, Any]) -> None:
        self.write_json(self.plan_file(r), plan)

    def end_file(self, r: int) -> Path:
        return self.round_dir(r) / "end.json"

    def write_round_end(self, r: int, segments: int, reason: str) -> None:
        """Record that round r ended after ``segments`` committed segments, before its plan's count (``reason``:
        "ood", "converged" ...). Written atomically before progress moves on, so every later reader
        (:meth:`round_segments`) sees the shortened round."""
        self.write_json(self.end_file(r), {"round": r, "segments": int(segments), "reason": reason})

    def round_end(self, r: int) -> dict[str, Any] | None:
        """The early-end record of round r (``round``, ``segments``, ``reason``), or None."""
        p = self.end_file(r)
        return self.read_json(p, ("round", "segments", "reason")) if p.is_file() else None

    def round_segments(self, r: int) -> int:
        """Segments round r holds: its plan's count, or fewer when it ended early (:meth:`write_round_end`)."""
        end = self.round_end(r)
        return int(end["segments"]) if end is not None else int(self.read_plan(r)["segments"])

    def read_initial_bias(self, r: int, plan: dict[str, Any]) -> np.ndarray | None:
        """The bias grid round r starts from (kJ/mol), or None when its plan names none."""
        name = plan.get("initial_bias")
        if name is None:
            return None
        path = self.round_dir(r) / name
        if not path.is_file():
            raise RunDirError(f"{path} is missing but {self.plan_file(r)} says round {r} starts from it (the bias "
                              f"carried over from round {r - 1}); {_DAMAGED}")
        return self.read_npz(path)["grid"]

    # ------------------------------------------------------------------------------------------------ state

    def has_work(self) -> bool:
        """Whether any round has written anything (a plan, segments, a model)."""
        return any(p.is_file() for d in self.path.glob("round_*") if d.is_dir() for p in d.iterdir())

    def read_progress(self) -> dict[str, Any]:
        """The commit point. A run directory without progress.json must be empty of rounds (a fresh start);
        otherwise, and for unknown phases or values, :class:`RunDirError` is raised."""
        p = self.progress_file
        if not p.is_file():
            if self.has_work():
                raise RunDirError(
                    f"{p} is missing but {self.path} already holds rounds of a campaign; nothing was changed. "
                    "Restore progress.json from a backup, or start again in a new --rundir (the committed frames "
                    "stay readable in round_*/seg_*.npz and frames.dcd)")
            return {"round": 0, "phase": "plan", "segments": 0, "finished": False}
        progress = self.read_json(p)
        r, phase, k, finished = progress["round"], progress["phase"], progress["segments"], progress["finished"]
        ok = (isinstance(r, int) and not isinstance(r, bool) and r >= 0 and isinstance(k, int)
              and not isinstance(k, bool) and k >= 0 and isinstance(finished, bool))
        if phase not in PHASES:
            raise RunDirError(f"{p}: phase {phase!r} is not one of {', '.join(PHASES)}; the file is corrupt or from "
                              f"another version; {_DAMAGED}")
        if not ok or (phase == "done") != finished:
            raise RunDirError(f"{p} holds impossible values {progress}; the file is corrupt; {_DAMAGED}")
        return progress

    def write_progress(self, progress: dict[str, Any]) -> None:
        self.write_json(self.progress_file, progress)

    def work_evidence(self) -> list[str]:
        """What shows that a campaign already ran here: ``progress.json`` (with its round and phase when readable)
        and the round folders holding files (with their segment counts). Empty for a new run directory."""
        found = []
        if self.progress_file.is_file():
            try:
                p = load_json(self.progress_file)
                found.append(f"{self.progress_file.name} (round {p['round']}, phase {p['phase']})")
            except (ValueError, KeyError, TypeError):
                found.append(f"{self.progress_file.name} (unreadable)")
        for d in sorted(d for d in self.path.glob("round_*") if d.is_dir()):
            files = [p for p in d.iterdir() if p.is_file()]
            if files:
                n_seg = sum(1 for p in files if p.name.startswith("seg_"))
                found.append(f"{d.name}/ ({len(files)} files, {n_seg} segment(s))")
        return found

    def stored_config(self) -> dict[str, Any] | None:
        """The configuration stored by the first run in this directory (None before that).

        Raises :class:`RunDirError` when config.json is missing but the directory already holds a campaign
        (:meth:`work_evidence`): any configuration, and a newly drawn seed, would otherwise continue the stored
        rounds as a silently different run.
        """
        if self.config_file.is_file():
            return self.read_config()
        evidence = self.work_evidence()
        if evidence:
            raise RunDirError(
                f"{self.config_file} is missing but {self.path} already holds a campaign: found "
                f"{', '.join(evidence)}; nothing was changed. Without the stored configuration (which holds the seed "
                "used) these rounds cannot be continued as the same run. Restore config.json from a backup, or start "
                "again in a new --rundir (the committed frames stay readable in round_*/seg_*.npz and frames.dcd; "
                "campaign.log records the seed)")
        return None

    def read_config(self) -> dict[str, Any]:
        """config.json, verified, without its run-directory format key (:meth:`format_version`)."""
        return split_format(self.read_json(self.config_file))[0]

    def write_config(self, config: dict[str, Any]) -> None:
        """Store ``config`` as config.json (atomically, with a checksum). A new run directory is stamped with the
        current format (:data:`~latentbias.campaign.rundirformat.RUNDIR_FORMAT`); an existing one keeps the format
        it has (none for directories of earlier versions), so extending an old directory never makes its older
        records unreadable."""
        version = self.format_version() if self.config_file.is_file() else RUNDIR_FORMAT
        self.write_json(self.config_file, stamped(config, version))

    def check_config(self, config: dict[str, Any], store: bool = False) -> None:
        """Refuse to resume a folder created with different settings; with ``store``, write the config when the
        folder has none yet. The campaign itself uses :func:`latentbias.campaign.extend.assess_change`, which
        accepts the changes that leave completed work valid; this strict check remains for callers that want
        exact equality."""
        old = self.stored_config()
        if old is not None:
            old.pop("base_dir", None)
            new = json.loads(json.dumps(config))
            new.pop("base_dir", None)
            if old != new:
                diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
                raise ValueError(f"{self.path} holds a campaign with a different configuration (sections {diff}); "
                                 "use another --rundir or the original config")
        elif store:
            self.write_config(config)

    def remove_temporary_files(self) -> list[Path]:
        """Remove temporary files of interrupted atomic writes (``.*.tmp``, ``.*.partial``) in the run directory
        and its rounds. Call only while holding :meth:`lock`."""
        removed = []
        for folder in [self.path, *sorted(d for d in self.path.glob("round_*") if d.is_dir())]:
            for pattern in _TEMPORARY:
                for p in folder.glob(pattern):
                    p.unlink()
                    removed.append(p)
        if removed:
            logger.info("removed %d temporary file(s) of an interrupted write: %s", len(removed),
                        ", ".join(str(p.relative_to(self.path)) for p in removed))
        return removed

    # --------------------------------------------------------------------------------------------- segments

    def commit_segment(self, r: int, k: int, frames: dict[str, np.ndarray], checkpoint: bytes,
                       write_bias: Any | None, progress: dict[str, Any], state_xml: str | None = None,
                       platform: str | None = None) -> None:
        """Write segment k of round r and make it the committed one (see the module docstring).

        ``checkpoint`` is ``Context.createCheckpoint()``; ``state_xml`` the serialized ``openmm.State`` (positions,
        velocities, parameters) for resuming on another platform; ``platform`` the name of the platform that wrote
        the checkpoint.
        """
        self.save_npz(self.segment_file(r, k), **frames)
        self.write_checkpoint(r, k, checkpoint, state_xml, platform)
        if write_bias is not None:
            write_bias(self.bias_prefix(r, k))
        self.write_progress(progress)
        for old in (*self.checkpoint_files(r, k - 1), *self._bias_files(r, k - 1)):
            if old.exists():
                old.unlink()

    def write_checkpoint(self, r: int, k: int, checkpoint: bytes, state_xml: str | None = None,
                         platform: str | None = None, walker: int | None = None) -> None:
        """Write ``chk_k.chk`` (+ ``chk_k.xml``) and, last, ``chk_k.json`` with their SHA-256 and the platform
        (walker w's files ``chk_k_wWW.*`` when ``walker`` is given)."""
        chk, xml, meta = self.checkpoint_files(r, k, walker)
        atomic_write_bytes(chk, checkpoint)
        info: dict[str, Any] = {"platform": platform, "chk_sha256": hashlib.sha256(checkpoint).hexdigest()}
        if state_xml is not None:
            data = state_xml.encode()
            atomic_write_bytes(xml, data)
            info["xml_sha256"] = hashlib.sha256(data).hexdigest()
        self.write_json(meta, info)

    def read_checkpoint(self, r: int, k: int, platform: str | None = None,
                        walker: int | None = None) -> tuple[str, bytes]:
        """The saved simulation state after segment k of round r, verified against its checksums.

        Returns ``("checkpoint", bytes)`` for ``Context.loadCheckpoint`` when the checkpoint was written by
        ``platform`` (or its platform is unknown: run directories of older versions), else ``("state", bytes)``:
        the serialized ``openmm.State`` for ``Context.setState`` (a checkpoint cannot be loaded on another
        platform). ``walker``: walker w's checkpoint. Raises :class:`RunDirError` naming a missing or damaged file.
        """
        chk, xml, meta = self.checkpoint_files(r, k, walker)
        info = self.read_json(meta, ("platform", "chk_sha256")) if meta.is_file() else None
        if info is None and self.format_version() is not None:
            raise RunDirError(missing_checksum_message(
                chk, self.config_file, self.format_version(), f"checksum record ({meta.name} is missing)",
                _DAMAGED.replace("restore it", f"restore {meta.name}")))
        if info is None:
            logger.warning("%s is missing, so %s is loaded unverified (a run directory of an older version, or the "
                           "record was deleted); if the run continues oddly, restore it from a backup", meta, chk)
        use_state = info is not None and platform is not None and info["platform"] not in (None, platform)
        path, key = (xml, "xml_sha256") if use_state else (chk, "chk_sha256")
        if use_state and "xml_sha256" not in info:
            raise RunDirError(f"{chk} was written by the {info['platform']} platform and cannot be loaded on "
                              f"{platform}, and {meta} names no platform-independent state; resume round {r} on "
                              f"{info['platform']} (set [md] platform back) and change the platform after the round")
        data = self.read_verified(path, meta, None if info is None else info[key])
        return ("state" if use_state else "checkpoint"), data

    def read_verified(self, path: str | Path, record: str | Path, sha256: str | None) -> bytes:
        """The bytes of ``path``, checked against the SHA-256 ``sha256`` that the JSON record ``record`` stores
        for it (None: a record of an older version without one). A missing or damaged file raises
        :class:`RunDirError` naming it and what to do."""
        path = Path(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise RunDirError(f"{path} is missing; {_DAMAGED}") from None
        if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
            raise RunDirError(f"{path} does not match the SHA-256 stored in {record} (the file is damaged); {_DAMAGED}")
        return data

    def check_bias_state(self, prefix: str | Path) -> None:
        """Verify the JSON record ``<prefix>.json`` of a bias state written by ``saveState`` (its own checksum; a
        record without one is refused in a run directory of the current format) before the bias's ``loadState``
        reads it (which verifies the ``.npz`` against the digest the record stores). Nothing to check when the
        round's bias keeps no state (no record)."""
        meta = Path(prefix).with_name(Path(prefix).name + ".json")
        if meta.is_file():
            self.read_json(meta, ("npz_sha256",))

    def _bias_files(self, r: int, k: int) -> list[Path]:
        prefix = self.bias_prefix(r, k)
        return [prefix.with_name(prefix.name + ".npz"), prefix.with_name(prefix.name + ".json")]

    def discard_uncommitted(self, r: int, committed: int) -> list[Path]:
        """Remove segment/checkpoint/bias files of round r with index >= committed (never-committed leftovers)."""
        removed = []
        for p in self.round_dir(r).iterdir():
            m = _SEG.match(p.name)
            if m and int(m.group(2)) >= committed:
                p.unlink()
                removed.append(p)
        return removed

    def read_segment(self, r: int, k: int) -> dict[str, np.ndarray]:
        return self.read_npz(self.segment_file(r, k))

    def load_segments(self, r: int, n_segments: int) -> dict[str, np.ndarray]:
        """Concatenate the frames of the first n_segments segments of round r."""
        parts = [self.read_segment(r, k) for k in range(n_segments)]
        if not parts:
            return {}
        return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
