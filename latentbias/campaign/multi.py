"""A multi-system campaign: a wild type and its mutants sampled round by round in ONE shared latent space.

``MultiCampaign(load_multi_config("cmp.toml"), "runs/cmp").run()`` (or ``latentbias run cmp.toml``) runs every
system as an ordinary single-system campaign in ``RUNDIR/systems/<name>`` — same plan, simulate and weights phases,
same files, so ``latentbias report RUNDIR/systems/<name>`` works — but replaces each system's own training by one
shared training (:mod:`latentbias.campaign.shared`):

1. every system runs round r (plan, simulate) up to its train phase — the systems take turns, round by round;
2. one encoder is trained on the pooled frames of all systems (rounds 0..r, balanced per-system weights) on the
   features of the atoms all systems share, and exported behind each system's own atom indices;
3. every system runs its weights phase (the existing estimator, per system) and biases round r+1 in that shared
   latent space (grids span the pooled latent range, so each system's grid covers what any system reached).

The converge phase (``[converge] enabled``) runs per system with the last shared encoder frozen. Mutants given as
``mutations = [...]`` are built once with pdbfixer (:func:`latentbias.mutants.mutate`), energy-minimised with the
parent system's force field (the rebuilt side chain is placed from templates), and stored in
``RUNDIR/inputs/<name>.pdb``. Each system's seed is derived from ``[md] seed``
(:func:`~latentbias.campaign.multiconfig.member_seed`: ``SeedSequence`` in run directories of the current format,
stored in ``multi.json``; the older derivation in older ones, whose members store those seeds).

Run-directory layout::

    RUNDIR/multi.json                 the multi-system config (checked on resume)
    RUNDIR/inputs/<name>.pdb          mutant structures
    RUNDIR/shared/round_XXX/          shared autoencoder of round XXX (model_state.npz, model.json)
    RUNDIR/systems/<name>/            a complete single-system run directory per system
    RUNDIR/weights.csv                all frames of all systems, with a ``system`` column (after the last round)
    RUNDIR/compare/                   ``latentbias compare RUNDIR`` (:mod:`latentbias.campaign.compare`)
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_write_bytes, load_json, require_keys, write_json
from .config import ConfigError, from_dict
from .loop import Campaign, deterministic_torch_threads
from .multiconfig import MultiCampaignConfig, member_seed
from .rundirformat import RUNDIR_FORMAT, split_format, stamped, stored_format, unverified_handler
from .rundir import RunDirError
from .seeds import MAX_SEED
from .shared import SharedAtoms, has_shared_round, train_shared_round, write_member_model

logger = logging.getLogger(__name__)

__all__ = ["MultiCampaign", "MemberCampaign"]


class MemberCampaign(Campaign):
    """One system of a :class:`MultiCampaign`: a single-system campaign whose featurizer is the shared one and whose
    train phase exports the shared encoder instead of training its own."""

    def __init__(self, config: Any, rundir: str | Path, name: str, owner: "MultiCampaign", progress: bool = True):
        super().__init__(config, rundir, progress=progress)
        self.system_name = name
        self._owner = owner

    def featurizer(self) -> Any:
        f = self.cfg.features
        return self._owner.shared_atoms().featurizer(self._owner.names.index(self.system_name), f.kind, f.selection,
                                                     f.contact_r0)

    def _train(self, r: int, progress: dict[str, Any]) -> dict[str, Any]:
        if not has_shared_round(self._owner.path, r):
            raise RunDirError(f"{self.run_dir.path}: round {r} waits for the shared encoder, which is missing; run "
                              "the multi-system campaign (not this system alone)")
        self._models[r] = write_member_model(self, self._owner.path, r)
        return {**progress, "phase": "weights"}

    def begin(self) -> dict[str, Any]:
        """Store/check the config and progress as :meth:`Campaign.run` does before its loop (lock held)."""
        self.run_dir.check_config(self.cfg.to_dict(), store=True)
        self.run_dir.remove_temporary_files()
        progress = self.run_dir.read_progress()
        if not self.run_dir.progress_file.is_file():
            self.run_dir.write_progress(progress)
        return progress

    def advance(self) -> dict[str, Any]:
        """Run phases until the next train phase (waiting for the shared encoder) or the end (lock held)."""
        progress = self.run_dir.read_progress()
        while not progress["finished"] and progress["phase"] != "train":
            progress = self._phases[progress["phase"]](progress["round"], progress)
            self.run_dir.write_progress(progress)
        return progress

    def train_shared(self) -> dict[str, Any]:
        """Run the (shared) train phase the campaign waits at."""
        progress = self.run_dir.read_progress()
        progress = self._train(progress["round"], progress)
        self.run_dir.write_progress(progress)
        return progress


class MultiCampaign:
    """Wild type and mutants, one shared encoder (module docstring).

    Parameters
    ----------
    config : MultiCampaignConfig
    rundir : str or path-like
        Created if missing; an existing one is resumed (its stored config must match).
    progress : bool
        Progress bars.
    """

    def __init__(self, config: MultiCampaignConfig, rundir: str | Path, progress: bool = True):
        self.cfg = config
        self.path = Path(rundir)
        self.path.mkdir(parents=True, exist_ok=True)
        self.progress = progress
        self.seed = self._resolve_seed()
        self._check_stored()
        # systems' seeds: SeedSequence in run directories of the current format, the old derivation in older ones
        # (their members' config.json store those seeds)
        legacy = stored_format(self.config_file) is None
        self._shared: SharedAtoms | None = None
        self.members: list[MemberCampaign] = []
        for i, name in enumerate(self.names):
            system = self._system_table(name)
            raw = config.member_dict(name, system, member_seed(self.seed, i, legacy=legacy))
            try:
                cfg = from_dict(raw, base_dir=config.base_dir)
            except ConfigError as exc:
                raise ConfigError(f"[systems.{name}]: {exc}") from None
            self.members.append(MemberCampaign(cfg, self.path / "systems" / name, name, self, progress=progress))

    @property
    def names(self) -> list[str]:
        return self.cfg.names

    @property
    def config_file(self) -> Path:
        return self.path / "multi.json"

    def member(self, name: str) -> MemberCampaign:
        return self.members[self.names.index(name)]

    # ----------------------------------------------------------------------------------------- construction

    def _stored(self) -> dict[str, Any] | None:
        """multi.json (None in a new run directory); missing while systems/ holds member campaigns, or damaged:
        :class:`RunDirError` naming the file and the fix."""
        if not self.config_file.is_file():
            members = self.path / "systems"
            found = [f"systems/{d.name}/" for d in sorted(members.iterdir()) if d.is_dir() and any(d.iterdir())] \
                if members.is_dir() else []
            if found:
                raise RunDirError(
                    f"{self.config_file} is missing but {self.path} already holds a multi-system campaign (found "
                    f"{', '.join(found)}); nothing was changed. Without it the stored seed is lost and the systems "
                    "would continue as a different run: restore multi.json from a backup, or start again in a new "
                    "--rundir")
            return None
        try:
            stored = load_json(self.config_file, unverified=unverified_handler(
                self.config_file, "restore it from a backup or start again in a new --rundir", RunDirError))
        except RunDirError:
            raise
        except ValueError as exc:
            raise RunDirError(f"{exc}; restore it from a backup or start again in a new --rundir") from None
        stored = require_keys(stored, ("config", "seed"), self.config_file, error=RunDirError,
                              fix="restore it from a backup or start again in a new --rundir")
        return split_format(stored)[0]

    def _resolve_seed(self) -> int:
        seed = self.cfg.seed()
        stored = self._stored()
        if seed is not None:
            return int(seed)
        if stored is not None:
            return int(stored["seed"])
        seed = secrets.randbelow(MAX_SEED) + 1
        logger.info("no [md] seed given: drew seed = %d (stored in %s)", seed, self.config_file)
        return seed

    def _check_stored(self) -> None:
        doc = {"config": json.loads(json.dumps(self.cfg.to_dict())), "seed": self.seed}
        doc["config"]["shared"].get("md", {}).pop("seed", None)
        stored = self._stored()
        if stored is not None:
            if stored != doc:
                raise RunDirError(f"{self.config_file}: the run directory holds a different multi-system campaign; "
                                  "use another --rundir or the original config")
        else:
            write_json(self.config_file, stamped(doc, RUNDIR_FORMAT), checksum=True)

    def _system_table(self, name: str) -> dict[str, Any]:
        spec = self.cfg.systems[name]
        if not spec.is_mutant:
            return dict(spec.system)
        parent = self.cfg.systems[spec.of].system
        pdb = self._materialize_mutant(name)
        table = {"pdb": str(pdb), "forcefield": list(parent["forcefield"])}
        for key in ("implicit_solvent", "constraints"):
            if key in parent:
                table[key] = parent[key]
        return table

    def _materialize_mutant(self, name: str) -> Path:
        """``RUNDIR/inputs/<name>.pdb``: the parent's start (or pdb) mutated by pdbfixer, then minimised."""
        from openmm import app

        from ..mutants import mutate

        out = self.path / "inputs" / f"{name}.pdb"
        if out.is_file():
            return out
        spec = self.cfg.systems[name]
        parent = self.cfg.systems[spec.of].system
        source = self.cfg.base.resolve(parent.get("start") or parent["pdb"])
        topology, xyz = mutate(source, spec.mutations, chain=spec.chain)
        if spec.minimize:
            xyz = _minimize(topology, xyz, list(parent["forcefield"]) + ([parent["implicit_solvent"]]
                                                                       if parent.get("implicit_solvent") else []))
        out.parent.mkdir(parents=True, exist_ok=True)
        import io

        from openmm import unit

        buf = io.StringIO()
        app.PDBFile.writeFile(topology, xyz * unit.nanometer, buf, keepIds=True)
        atomic_write_bytes(out, buf.getvalue().encode())
        logger.info("mutant %s: %s of %s -> %s", name, ",".join(spec.mutations), source, out)
        return out

    def shared_atoms(self) -> SharedAtoms:
        """The shared atoms (reference = first system) and each system's shared featurizer."""
        if self._shared is None:
            tops = [m.system()[1] for m in self.members]
            self._shared = SharedAtoms(tops, self.members[0].system()[2])
        return self._shared

    # ---------------------------------------------------------------------------------------------------- run

    def run(self) -> dict[str, dict[str, Any]]:
        """Run (or resume) every system to the end; returns each system's final progress record."""
        root = logging.getLogger("latentbias")
        handler = logging.FileHandler(self.path / "campaign.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        level = root.level
        if root.getEffectiveLevel() > logging.INFO:
            root.setLevel(logging.INFO)
        try:
            with contextlib.ExitStack() as stack:
                stack.enter_context(deterministic_torch_threads())  # as Campaign.run: models independent of threads
                for m in self.members:
                    stack.enter_context(m.run_dir.lock())
                    stack.callback(root.removeHandler, m.log_handler)
                    root.addHandler(m.log_handler)
                return self._run_locked()
        finally:
            root.removeHandler(handler)
            root.setLevel(level)

    def _run_locked(self) -> dict[str, dict[str, Any]]:
        for m in self.members:
            m.begin()
        while True:
            states = {}
            for m in self.members:
                p = m.run_dir.read_progress()
                if not p["finished"] and p["phase"] == "train" and has_shared_round(self.path, p["round"]):
                    m.train_shared()  # the shared encoder exists (trained now, or before an interruption)
                states[m.system_name] = m.advance()
            waiting = [m for m in self.members if not states[m.system_name]["finished"]]
            if not waiting:
                break
            rounds = {states[m.system_name]["round"] for m in waiting}
            if len(waiting) != len(self.members) or len(rounds) != 1:
                raise RunDirError(f"{self.path}: the systems are out of step ({states}); the run directory is "
                                  "damaged")
            r = rounds.pop()
            logger.info("round %d: training the shared encoder on %d systems", r, len(self.members))
            train_shared_round(self.path, r, self.members, progress=self.progress)
        self.write_pooled_weights()
        logger.info("multi-system campaign finished in %s (%s)", self.path, ", ".join(self.names))
        return {m.system_name: m.run_dir.read_progress() for m in self.members}

    def write_pooled_weights(self) -> Path:
        """``RUNDIR/weights.csv``: every system's final ``weights.csv`` rows, a ``system`` column first."""
        lines, header = [], None
        for m in self.members:
            text = (m.run_dir.path / "weights.csv").read_text().splitlines()
            head, rows = text[1], text[2:]
            header = header or head
            if head != header:
                raise RunDirError(f"{m.run_dir.path / 'weights.csv'}: columns differ between systems")
            lines += [f"{m.system_name},{row}" for row in rows]
        out = self.path / "weights.csv"
        body = "\n".join([f"# all frames of all systems ({', '.join(self.names)}); per-system log-weights, each "
                          "normalised within its system; columns as in systems/<name>/weights.csv",
                          f"system,{header}", *lines]) + "\n"
        atomic_write_bytes(out, body.encode())
        return out


def _minimize(topology: Any, xyz: np.ndarray, forcefield: list[str], iterations: int = 500) -> np.ndarray:
    """Positions (nm) after a local energy minimisation with ``forcefield`` (NoCutoff, Reference platform)."""
    import openmm
    from openmm import app, unit

    ff = app.ForceField(*forcefield)
    system = ff.createSystem(topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds)
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(xyz * unit.nanometer)
    openmm.LocalEnergyMinimizer.minimize(ctx, 10.0, iterations)
    state = ctx.getState(getPositions=True, getEnergy=True)
    logger.info("minimised the mutant: potential energy %.1f kJ/mol",
                state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    return np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer), dtype=float)
