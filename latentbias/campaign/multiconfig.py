"""Multi-system campaign configuration: a ``[systems]`` table (wild type and mutants) instead of ``[system]``.

Layout (every other section exactly as in :mod:`latentbias.campaign.config`, shared by all systems)::

    [systems.wt]                               # the first system is the reference (wild type) of every ΔΔG
    pdb = "ace_ala_nme.pdb"                    # any single-system spec: testsystem | prmtop + coordinates |
    forcefield = ["amber14-all.xml"]           #   system_xml + pdb | pdb + forcefield (+ implicit_solvent, start)
    constraints = "HBonds"

    [systems.gly]
    mutations = ["ALA-2-GLY"]                  # or "A2G"; applied with pdbfixer to another system (default: the
    # of = "wt"                                #   first), which must be given as pdb + forcefield; the mutant
    # chain = "A"                              #   gets that system's force field, solvent, constraints

    [compare]                                  # optional: what ``latentbias compare`` reports
    cvs = ["phi:dihedral:4,6,8,14"]            # NAME:KIND:ATOMS, 0-based atom indices in the FIRST system;
                                               #   mapped onto each system through the shared atoms
    states = { C7ax = { phi = [0.0, 120.0] } } # state -> {CV or z0/z1: [lo, hi]}; ΔG(state) = F(state) - F(rest)
    basins = 0                                 # > 0: also states from the n deepest basins of the pooled latent FES
    bins = 40

Each system runs as a complete single-system campaign in ``RUNDIR/systems/<name>`` (its own seed, derived from
``[md] seed``); only training is shared (:mod:`latentbias.campaign.multi`).
"""

from __future__ import annotations

import copy
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import CampaignConfig, ConfigError, from_dict, read_toml
from .seeds import MAX_SEED, derived_seed

__all__ = ["SystemSpec", "MultiCampaignConfig", "load_multi_config", "multi_from_dict", "is_multi_config"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_MUTANT_KEYS = {"mutations", "of", "chain", "minimize"}
_COMPARE_KEYS = {"cvs", "states", "basins", "bins", "reference"}


@dataclass
class SystemSpec:
    """One system of a multi-system campaign: a single-system ``[system]`` table, or mutations of another system."""

    name: str
    system: dict[str, Any] | None = None
    mutations: list[str] = field(default_factory=list)
    of: str | None = None
    chain: str | None = None
    minimize: bool = True

    @property
    def is_mutant(self) -> bool:
        return bool(self.mutations)


@dataclass
class MultiCampaignConfig:
    """A validated multi-system configuration.

    Attributes
    ----------
    systems : dict of str -> SystemSpec
        In file order; the first is the reference (wild type).
    shared : dict
        Every section but ``[systems]`` and ``[compare]`` (the raw TOML tables), common to all systems.
    compare : dict
        The ``[compare]`` table (validated keys only).
    base_dir : str
        The config file's folder (relative paths start there).
    base : CampaignConfig
        The first system's validated single-system config (the shared sections checked once).
    """

    systems: dict[str, SystemSpec]
    shared: dict[str, Any]
    compare: dict[str, Any]
    base_dir: str
    base: CampaignConfig

    @property
    def names(self) -> list[str]:
        return list(self.systems)

    @property
    def reference(self) -> str:
        return str(self.compare.get("reference", self.names[0]))

    def seed(self) -> int | None:
        return self.base.md.seed

    def member_dict(self, name: str, system: dict[str, Any], seed: int) -> dict[str, Any]:
        """The raw single-system config of system ``name`` (shared sections + its ``[system]`` + its seed)."""
        raw = copy.deepcopy(self.shared)
        raw["system"] = dict(system)
        raw.setdefault("md", {})["seed"] = int(seed)
        return raw

    def to_dict(self) -> dict[str, Any]:
        return {"systems": {n: {k: v for k, v in vars(s).items() if k != "name"} for n, s in self.systems.items()},
                "shared": self.shared, "compare": self.compare, "base_dir": self.base_dir}


#: SeedSequence spawn key of the systems' seeds (a constant no round index reaches: round streams are (round, ...))
MEMBER_STREAM = 0x6D656D62


def member_seed(seed: int, index: int, legacy: bool = False) -> int:
    """Seed of the index-th system: distinct per system, in [1, MAX_SEED], reproducible from ``[md] seed``.

    ``SeedSequence(seed, spawn_key=(MEMBER_STREAM, index))`` (:func:`latentbias.campaign.seeds.derived_seed`):
    independent streams for every system and every base seed. ``legacy=True`` gives the seeds of multi-system run
    directories created before run-directory formats (``1 + (seed - 1 + 1_000_003 * index) mod MAX_SEED``, where
    base seeds 1_000_003 apart share systems' seeds); their members' config.json store those seeds, so they keep
    them to stay resumable (:mod:`latentbias.campaign.rundirformat`).
    """
    if legacy:
        return 1 + (int(seed) - 1 + 1_000_003 * int(index)) % MAX_SEED
    return derived_seed(int(seed), MEMBER_STREAM, int(index))


def is_multi_config(path: str | Path) -> bool:
    """True when the TOML file has a ``[systems]`` table."""
    try:
        return "systems" in tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return False


def multi_from_dict(raw: dict[str, Any], base_dir: str | Path = ".") -> MultiCampaignConfig:
    """Validate a parsed multi-system TOML document.

    Raises
    ------
    ConfigError
        Naming the bad key: no or one system, ``[system]`` given as well, a mutant of an unknown system or of a
        system not given as ``pdb + forcefield``, unknown ``[compare]`` keys, or anything the single-system
        validation refuses in the shared sections or a system's spec.
    """
    raw = dict(raw)
    systems_raw = raw.pop("systems", None)
    compare = raw.pop("compare", {})
    if "system" in raw:
        raise ConfigError("give either [system] (one system) or [systems] (wild type and mutants), not both")
    if not isinstance(systems_raw, dict) or len(systems_raw) < 2:
        raise ConfigError("[systems] must be a table of at least two named systems, e.g. [systems.wt] and "
                          "[systems.mut] (one system: use [system])")
    specs: dict[str, SystemSpec] = {}
    for name, table in systems_raw.items():
        if not _NAME.fullmatch(name):
            raise ConfigError(f"[systems.{name}]: system names may contain letters, digits, '_', '-' and '.' only")
        if not isinstance(table, dict):
            raise ConfigError(f"[systems.{name}] must be a table (a system spec or mutations = [...])")
        if "mutations" in table:
            bad = sorted(set(table) - _MUTANT_KEYS)
            if bad:
                raise ConfigError(f"[systems.{name}] has mutations and {bad}; a mutant takes only "
                                  f"{sorted(_MUTANT_KEYS)} (force field and solvent come from the system it mutates)")
            muts = table["mutations"]
            muts = [muts] if isinstance(muts, str) else muts
            if not isinstance(muts, list) or not muts or not all(isinstance(m, str) for m in muts):
                raise ConfigError(f"[systems.{name}] mutations must be a non-empty list like [\"L99A\"] or "
                                  "[\"ALA-2-GLY\"]")
            from ..mutants import parse_mutation

            for m in muts:
                try:
                    parse_mutation(m)
                except ValueError as exc:
                    raise ConfigError(f"[systems.{name}] {exc}") from None
            of = table.get("of", next(iter(systems_raw)))
            chain = table.get("chain")
            minimize = table.get("minimize", True)
            if not isinstance(minimize, bool):
                raise ConfigError(f"[systems.{name}] minimize must be true or false")
            specs[name] = SystemSpec(name, None, list(muts), str(of), None if chain is None else str(chain), minimize)
        else:
            specs[name] = SystemSpec(name, dict(table))
    for spec in specs.values():
        if spec.is_mutant:
            parent = specs.get(spec.of)
            if parent is None or parent.is_mutant:
                raise ConfigError(f"[systems.{spec.name}] of = {spec.of!r} must name a system given by a spec (not a "
                                  f"mutant); systems: {list(specs)}")
            if not (parent.system.get("pdb") and parent.system.get("forcefield")):
                raise ConfigError(f"[systems.{spec.name}] mutates {spec.of!r}, which must be given as pdb + "
                                  "forcefield (pdbfixer mutates the PDB; the mutant is parametrised with that force "
                                  "field)")
    bad = sorted(set(compare) - _COMPARE_KEYS)
    if bad:
        raise ConfigError(f"unknown key(s) {bad} in [compare]; allowed: {sorted(_COMPARE_KEYS)}")
    if "reference" in compare and compare["reference"] not in specs:
        raise ConfigError(f"[compare] reference = {compare['reference']!r} is not one of {list(specs)}")
    if not isinstance(compare.get("states", {}), dict):
        raise ConfigError("[compare] states must be a table: name = { cv_or_z = [lo, hi], ... }")
    for sname, ranges in compare.get("states", {}).items():
        if not isinstance(ranges, dict) or not ranges or not all(
                isinstance(v, list) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v)
                for v in ranges.values()):
            raise ConfigError(f"[compare] state {sname!r} must map CV names (or z0, z1) to [lo, hi] ranges")
    for key in ("basins", "bins"):
        if key in compare and (not isinstance(compare[key], int) or compare[key] < 0):
            raise ConfigError(f"[compare] {key} must be a non-negative integer")
    if not isinstance(compare.get("cvs", []), list):
        raise ConfigError("[compare] cvs must be a list of NAME:KIND:ATOMS strings")
    first = next(iter(specs.values()))
    base = from_dict({**raw, "system": first.system}, base_dir=base_dir)
    for spec in specs.values():
        if not spec.is_mutant:
            try:
                from_dict({**raw, "system": spec.system}, base_dir=base_dir)
            except ConfigError as exc:
                raise ConfigError(f"[systems.{spec.name}]: {exc}".replace("[system]", f"[systems.{spec.name}]")) \
                    from None
    return MultiCampaignConfig(specs, raw, dict(compare), str(base_dir), base)


def load_multi_config(path: str | Path) -> MultiCampaignConfig:
    """Read and validate a multi-system campaign TOML file (one with a ``[systems]`` table)."""
    return multi_from_dict(read_toml(path), base_dir=Path(path).parent.resolve())
