"""Campaign configuration: a TOML file validated into dataclasses, with errors that name the bad key.

Example (every key shown; most have defaults)::

    [system]
    testsystem = "alanine-dipeptide-vacuum"   # | "t4-lysozyme-l99a-implicit"; or: prmtop + coordinates | system_xml + pdb | pdb + forcefield
    # prmtop = "ala2.prmtop"; coordinates = "ala2.crd"
    # system_xml = "system.xml"; pdb = "start.pdb"
    # pdb = "protein.pdb"; forcefield = ["amber14-all.xml"]; implicit_solvent = "implicit/obc2.xml"
    constraints = "HBonds"                     # None | HBonds | AllBonds | HAngles (not for system_xml)
    start = "c7eq.pdb"                         # optional: starting positions (PDB, same atoms)

    [md]
    platform = "Reference"                     # Reference | CPU | CUDA | OpenCL
    platform_properties = {}
    temperature = 300.0                        # K
    timestep = 2.0                             # fs
    friction = 1.0                             # 1/ps
    seed = 2024                                # 1 .. 2**31-1; omit it to draw one (logged, kept in RUNDIR/config.json)

    [features]
    kind = ["distances"]                       # distances | contacts | aligned | phipsi | chi1
    selection = "element != H"

    [model]                                    # defaults: those of LatentModelEstimator and `latentbias train`
    latent_dim = 2
    hidden = [64, 64]
    activation = "tanh"
    objective = "autoencoder"                  # autoencoder | time-lagged
    lag = 1
    balance_clusters = 0                       # > 0: cluster-balanced training weights (k-means, latentbias.sampleweights)
    jacobian_penalty = 0.0                     # >= 0: weight of the encoder smoothness term (jacobian_penalty.py)
    epochs = 200
    learning_rate = 0.001
    batch_size = 256
    patience = 20
    warm_start = true

    [campaign]
    rounds = 6
    steps_per_round = 50000
    save_interval = 250                        # steps between saved frames
    checkpoint_interval = 5000                 # steps between checkpoints (multiple of save_interval)
    round0_steps = 25000                       # unbiased round 0 (or give round0_trajectories)
    # round0_trajectories = ["run.dcd"]      # round 0 from trajectories instead of simulating it
    # round0_topology = "protein.pdb"        # their topology when they hold a subset of the atoms (water stripped)
    strategy = "metadynamics"                  # metadynamics | frontier | opes | pocket (or a list, one per round)

    [metadynamics]
    bias_factor = 8.0
    height = 1.0                               # kJ/mol
    frequency = 250                            # steps
    sigma = 0.1                                # fraction of each latent range
    margin = 0.3                               # grid extends this fraction of the range beyond the data
    carry_bias = true                          # start from the previous metadynamics round's final bias

    [frontier]
    n_targets = 4
    restraint_k = 500.0                        # kJ/mol per z^2
    pull_fraction = 0.5                        # fraction of the round spent restrained/steered; rest released

    [opes]                                     # OPES-METAD (or explore) rounds and the default converge phase
    barrier = 30.0                             # kJ/mol: the initial bias and the largest bias (epsilon)
    bias_factor = 0.0                          # gamma of the target p^(1/gamma); 0: barrier/kT (OPES's default)
    pace = 250                                 # steps between kernels
    explore = false                            # OPES-explore instead of OPES-METAD
    sigma = 0.05                               # kernel width sigma0, fraction of each latent range
    margin = 0.3                               # grid extends this fraction of the range beyond the data
    grid_points = 60
    compression_threshold = 1.0                # merge kernels closer than this many sigma
    wall_force_constant = 1000.0
    max_temperature = 0.0                      # K, > [md] temperature: OPES multithermal on the potential energy
                                               # beside the latent OPES of the converge phase (temperatures
                                               # T..max_temperature; it enhances what the latent space does not
                                               # resolve, at a cost in effective samples); 0: off
    temperatures = 0                           # number of temperatures; 0: from the degrees of freedom

    [ood]
    threshold = 3.0                            # reconstruction error in units of its training 99th percentile
    action = "retrain"                         # retrain (end the round early) | cap | off
    retrain_fraction = 0.2                     # action "retrain": end the round after a segment with more OOD frames
    min_frames = 200                           # fewer training frames: the guard cannot judge yet (logged, no action)

    [converge]                                 # production run with the last encoder frozen (after the rounds)
    enabled = false
    method = "opes"                            # opes | metadynamics | umbrella (windows along a latent path)
    max_steps = 2500000                        # budget
    min_steps = 250000                         # never stop before this
    burn_in = 0.2                              # fraction of the converge run left out of the estimate (its start)
    window = 0.25                              # drift: estimate now vs. without the last `window` of used frames
    tolerance = 0.5                            # kJ/mol: stop when the drift of the latent FES is below this
    min_round_trips = 13                       # ... and the run made this many round trips between the two deepest
                                               # basins of the latent FES (2kT/sqrt(2*13) = 0.98 kJ/mol at 300 K;
                                               # 0: off; not counted for "umbrella"; latentbias.campaign.roundtrips)
    round_trip_basins = 0                      # 0: every latent basin with weight takes part (round trips across
                                               # the slowest split of them, the minimum cut); n: the n deepest
    basin_min_frames = 10                      # basins whose core held fewer exploration frames do not take part
    core_kt = 2.0                              # basin cores: this many kT below the basin's lowest saddle
    structural_states = 20                     # ... and as many round trips across the slowest split of this many
                                               # k-means microstates of the standardized input features (states the
                                               # latent space may not resolve; 0: off; campaign.structuralstates)
    fes_bins = 20                              # latent FES bins per dimension for the drift
    fes_cutoff = 25.0                          # kJ/mol: bins above this are left out of the drift
    activation = ""                            # activation of the converge phase's encoders ("": [model] activation);
                                               # e.g. "silu" to explore, "tanh" to converge (campaign.train)
    restarts = 0                               # times the frozen encoder may meet OOD frames (a segment with more
                                               # than [ood] retrain_fraction flagged) and the campaign goes back to
                                               # retraining before a new converge attempt; max_steps is shared
    save_interval = 0                          # steps between saved frames in the converge phase (0: [campaign]'s)
    umbrella_windows = 16                      # method "umbrella": restraint windows along the latent MFEP
    umbrella_force_constant = 0.0              # kJ/mol per (latent range)^2; 0: from the window spacing (width/2)
    umbrella_basins = 8                        # the path visits at most this many basins (lowest first)
    umbrella_replicas = 1                      # independent trajectories per window (2+: the error bar sees a
                                               # window whose trajectories disagree; campaign.umbrellaconv)
    umbrella_exchange = false                  # swap configurations between neighbouring windows (Metropolis)
                                               # before every sweep: replica-exchange umbrella sampling; walkers = 1

    [execution]                                # parallel walkers (latentbias.campaign.execution, .walkers)
    walkers = 1                                # walkers per round; 1 = one simulation in this process
    executor = "local"                         # local (embedded Dask LocalCluster) | dask (scheduler) | jobqueue
    scheduler = ""                             # executor = "dask": "tcp://host:8786"
    threads_per_walker = 1                     # CPU threads of a walker (CPU platform, torch)
    devices = []                               # GPU index per walker (walker w: devices[w % len]); [] = default
    cluster_class = "SLURMCluster"             # executor = "jobqueue": a dask_jobqueue class, with
    # [execution.cluster] its keyword arguments (queue, cores, processes = 1, memory, walltime, ...)

    [pocket]                                   # a pocket to open: see latentbias.campaign.pocket for every key
    residues = [78, 84, 87, 88, 91, 99, 102, 103, 111, 118, 121, 133, 153]
    anchor_dim = 0                             # latent dimension trained to equal the openness
    bias = "opes"                              # opes | metadynamics on that dimension (strategy "pocket")

Seeds: ``[md] seed`` is the one source of randomness of a campaign (integrators, velocities, training; see
:mod:`latentbias.campaign.seeds`) and must be an integer in [1, 2**31 - 1] — 0 is refused, because OpenMM reads
it as "random". Without it a seed is drawn when the run directory is created, logged, and stored in
``RUNDIR/config.json``; resuming with the same config file (still without a seed) uses the stored one, so the
resumed run is the run that would have happened.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = [
    "CampaignConfig",
    "ConfigError",
    "load_config",
    "STRATEGIES",
    "TESTSYSTEMS",
]

STRATEGIES = ("metadynamics", "frontier", "opes", "pocket")
CONVERGE_METHODS = ("opes", "metadynamics", "umbrella")
OOD_ACTIONS = ("retrain", "cap", "off")
TESTSYSTEMS = ("alanine-dipeptide-vacuum", "t4-lysozyme-l99a-implicit")
from ..features import FEATURE_KINDS  # noqa: E402
from .seeds import MAX_SEED  # noqa: E402
from .execution import ExecutionConfig, validate_execution  # noqa: E402
from .pocket import PocketConfig, validate_pocket  # noqa: E402
PLATFORMS = ("Reference", "CPU", "CUDA", "OpenCL", "HIP")
CONSTRAINTS = ("None", "HBonds", "AllBonds", "HAngles")
MIN_ROUND0_FRAMES = 10  # the first encoder trains (and validates) on round 0 alone


class ConfigError(ValueError):
    """A campaign configuration is invalid; the message names the key and the allowed values."""


@dataclass
class SystemConfig:
    testsystem: str | None = None
    prmtop: str | None = None
    coordinates: str | None = None
    system_xml: str | None = None
    pdb: str | None = None
    forcefield: list[str] = field(default_factory=list)
    implicit_solvent: str | None = None
    constraints: str = "HBonds"
    start: str | None = None


@dataclass
class MDConfig:
    platform: str = "Reference"
    platform_properties: dict[str, str] = field(default_factory=dict)
    temperature: float = 300.0
    timestep: float = 2.0
    friction: float = 1.0
    seed: int | None = None


@dataclass
class FeatureConfig:
    kind: list[str] = field(default_factory=lambda: ["distances"])
    selection: str = "element != H"
    contact_r0: float = 0.8


def _estimator_default(name: str) -> Any:
    """Default of a :class:`~latentbias.training.LatentModelEstimator` argument: the one source of the model
    defaults of campaigns, ``latentbias train`` and the library."""
    import inspect

    from ..training import LatentModelEstimator

    return inspect.signature(LatentModelEstimator.__init__).parameters[name].default


@dataclass
class ModelConfig:
    latent_dim: int = _estimator_default("latent_dim")
    hidden: list[int] = field(default_factory=lambda: list(_estimator_default("hidden")))
    activation: str = _estimator_default("activation")
    objective: str = _estimator_default("objective")
    lag: int = _estimator_default("lag")
    epochs: int = _estimator_default("epochs")
    learning_rate: float = _estimator_default("learning_rate")
    batch_size: int = _estimator_default("batch_size")
    patience: int = _estimator_default("patience")
    warm_start: bool = True
    balance_clusters: int = 0       # 0: every frame weighs the same; K > 0: latentbias.sampleweights on K clusters
    jacobian_penalty: float = _estimator_default("jacobian_penalty")  # 0: off; > 0: latentbias.jacobian_penalty


@dataclass
class LoopConfig:
    rounds: int = 6
    steps_per_round: int = 50_000
    save_interval: int = 250
    checkpoint_interval: int = 5_000
    round0_steps: int = 25_000
    round0_trajectories: list[str] = field(default_factory=list)
    round0_topology: str = ""       # topology of round0_trajectories that hold a subset of the atoms (campaign.round0import)
    strategy: list[str] = field(default_factory=lambda: ["metadynamics"])


@dataclass
class MetadynamicsConfig:
    bias_factor: float = 8.0
    height: float = 1.0
    frequency: int = 250
    sigma: float = 0.1
    margin: float = 0.3
    grid_points: int = 60
    wall_force_constant: float = 1000.0
    carry_bias: bool = True


@dataclass
class FrontierConfig:
    n_targets: int = 4
    restraint_k: float = 500.0
    pull_fraction: float = 0.5
    bins: int = 20


@dataclass
class OPESConfig:
    barrier: float = 30.0
    bias_factor: float = 0.0
    pace: int = 250
    explore: bool = False
    sigma: float = 0.05
    margin: float = 0.3
    grid_points: int = 60
    compression_threshold: float = 1.0
    wall_force_constant: float = 1000.0
    max_temperature: float = 0.0
    temperatures: int = 0


@dataclass
class OODConfig:
    threshold: float = 3.0
    action: str = "retrain"
    retrain_fraction: float = 0.2
    min_frames: int = 200


@dataclass
class ConvergeConfig:
    enabled: bool = False
    method: str = "opes"
    max_steps: int = 2_500_000
    min_steps: int = 250_000
    burn_in: float = 0.2
    window: float = 0.25
    tolerance: float = 0.5
    fes_bins: int = 20
    fes_cutoff: float = 25.0
    restarts: int = 0
    save_interval: int = 0
    umbrella_windows: int = 16
    umbrella_force_constant: float = 0.0
    umbrella_basins: int = 8
    umbrella_replicas: int = 1
    umbrella_exchange: bool = False
    min_round_trips: int = 13
    round_trip_basins: int = 0
    core_kt: float = 2.0
    basin_min_frames: int = 10
    structural_states: int = 20
    activation: str = ""


@dataclass
class CampaignConfig:
    """A validated campaign configuration (see the module docstring for the TOML layout)."""

    system: SystemConfig = field(default_factory=SystemConfig)
    md: MDConfig = field(default_factory=MDConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    campaign: LoopConfig = field(default_factory=LoopConfig)
    metadynamics: MetadynamicsConfig = field(default_factory=MetadynamicsConfig)
    frontier: FrontierConfig = field(default_factory=FrontierConfig)
    opes: OPESConfig = field(default_factory=OPESConfig)
    ood: OODConfig = field(default_factory=OODConfig)
    converge: ConvergeConfig = field(default_factory=ConvergeConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    pocket: PocketConfig = field(default_factory=PocketConfig)  # see latentbias.campaign.pocket
    base_dir: str = "."

    def to_dict(self) -> dict[str, Any]:
        """The settings that determine a campaign's results (stored in, and compared with, RUNDIR/config.json).
        ``[execution]`` enters only as its number of walkers, and only when > 1: where walkers run changes no
        frame, and a one-walker campaign stores the same config as before walkers existed."""
        d = asdict(self)
        d.pop("execution")
        if not self.converge.activation:  # unset: runs from before the option store the same config
            d["converge"].pop("activation")
        if self.execution.walkers > 1:
            d["execution"] = {"walkers": self.execution.walkers}
        return d

    def strategy_for_round(self, round_index: int) -> str:
        """Bias strategy of a biased round (round_index >= 1); a list cycles its last entry."""
        s = self.campaign.strategy
        return s[min(round_index - 1, len(s) - 1)]

    def resolve(self, path: str) -> Path:
        """A path from the config, relative to the config file's folder."""
        p = Path(path)
        return p if p.is_absolute() else Path(self.base_dir) / p


_SECTIONS = {
    "system": SystemConfig,
    "md": MDConfig,
    "features": FeatureConfig,
    "model": ModelConfig,
    "campaign": LoopConfig,
    "metadynamics": MetadynamicsConfig,
    "frontier": FrontierConfig,
    "opes": OPESConfig,
    "ood": OODConfig,
    "converge": ConvergeConfig,
    "execution": ExecutionConfig,
    "pocket": PocketConfig,
}

#: tables passed on as given (keyword arguments of another library), not coerced to strings
_RAW_TABLES = {("execution", "cluster")}


#: keys whose value is an integer but whose default is None (meaning "choose one")
_OPTIONAL_INTS = {("md", "seed")}


def _coerce(section: str, key: str, value: Any, default: Any) -> Any:
    where = f"[{section}] {key}"
    if (section, key) in _OPTIONAL_INTS:
        default = 0
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if isinstance(default, int) and not isinstance(default, bool):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if isinstance(default, list):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return value
    if isinstance(default, dict):
        if (section, key) in _RAW_TABLES and isinstance(value, dict):
            return dict(value)
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table, got {value!r}")
        return {str(k): str(v) for k, v in value.items()}
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, got {value!r}")
    return value


def _choice(where: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{where} = {value!r} is not allowed; choose one of {', '.join(allowed)}")


def _positive(where: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{where} must be positive, got {value!r}")


def from_dict(raw: dict[str, Any], base_dir: str | Path = ".") -> CampaignConfig:
    """Validate a parsed TOML document into a :class:`CampaignConfig`."""
    unknown = sorted(set(raw) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"unknown section(s) {unknown}; allowed sections: {', '.join(_SECTIONS)}")
    parts: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        given = raw.get(name, {})
        if not isinstance(given, dict):
            raise ConfigError(f"[{name}] must be a table of keys")
        defaults = cls()
        allowed = {f.name for f in fields(cls)}
        bad = sorted(set(given) - allowed)
        if bad:
            raise ConfigError(f"unknown key(s) {bad} in [{name}]; allowed keys: {', '.join(sorted(allowed))}")
        values = {k: _coerce(name, k, v, getattr(defaults, k)) for k, v in given.items()}
        parts[name] = cls(**{**asdict(defaults), **values})
    cfg = CampaignConfig(**parts, base_dir=str(base_dir))
    _validate(cfg)
    return cfg


#: numbers that may be infinite (``inf``: no cut-off)
_MAY_BE_INFINITE = {("converge", "fes_cutoff")}


def _finite_numbers(cfg: CampaignConfig) -> None:
    for name in _SECTIONS:
        section = getattr(cfg, name)
        for f in fields(section):
            value = getattr(section, f.name)
            if isinstance(value, float) and not math.isfinite(value) and not (
                    math.isinf(value) and (name, f.name) in _MAY_BE_INFINITE):
                raise ConfigError(f"[{name}] {f.name} must be a finite number, got {value!r}")


def _validate(cfg: CampaignConfig) -> None:
    _finite_numbers(cfg)
    s = cfg.system
    routes = {
        "testsystem": s.testsystem is not None,
        "prmtop + coordinates": s.prmtop is not None,
        "system_xml + pdb": s.system_xml is not None,
        "pdb + forcefield": bool(s.forcefield),
    }
    chosen = [k for k, v in routes.items() if v]
    if len(chosen) != 1:
        raise ConfigError(
            "[system] must give exactly one of: testsystem = \"alanine-dipeptide-vacuum\"; prmtop + coordinates; "
            f"system_xml + pdb; pdb + forcefield — got {chosen or 'none'}"
        )
    if s.testsystem is not None:
        _choice("[system] testsystem", s.testsystem, TESTSYSTEMS)
    if s.prmtop is not None and s.coordinates is None:
        raise ConfigError("[system] prmtop needs coordinates (an inpcrd/rst7 file)")
    if s.system_xml is not None and s.pdb is None:
        raise ConfigError("[system] system_xml needs pdb (topology and starting positions)")
    if s.forcefield and s.pdb is None:
        raise ConfigError("[system] forcefield needs pdb")
    _choice("[system] constraints", str(s.constraints), CONSTRAINTS)
    for key in ("prmtop", "coordinates", "system_xml", "pdb", "start"):
        value = getattr(s, key)
        if value is not None and not cfg.resolve(value).is_file():
            raise ConfigError(f"[system] {key} = {value!r}: file not found (relative paths start at the config's folder)")

    m = cfg.md
    _choice("[md] platform", m.platform, PLATFORMS)
    for key in ("temperature", "timestep", "friction"):
        _positive(f"[md] {key}", getattr(m, key))
    if m.seed is not None and not 1 <= m.seed <= MAX_SEED:
        raise ConfigError(f"[md] seed must be an integer in [1, {MAX_SEED}], got {m.seed} (0 would mean a random seed "
                          "in OpenMM; omit the key to draw one, which is logged and stored in RUNDIR/config.json)")

    f = cfg.features
    if not f.kind:
        raise ConfigError(f"[features] kind must list at least one of {', '.join(FEATURE_KINDS)}")
    for k in f.kind:
        _choice("[features] kind", k, FEATURE_KINDS)

    mo = cfg.model
    from ..models import ACTIVATIONS

    _choice("[model] activation", mo.activation, tuple(sorted(ACTIVATIONS)))
    _choice("[model] objective", mo.objective, ("autoencoder", "time-lagged"))
    if not 1 <= mo.latent_dim <= 3:
        raise ConfigError(f"[model] latent_dim must be 1, 2 or 3 (metadynamics grids), got {mo.latent_dim}")
    for key in ("epochs", "batch_size", "patience", "lag"):
        _positive(f"[model] {key}", getattr(mo, key))
    if not all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in mo.hidden):
        raise ConfigError(f"[model] hidden must list the widths of the hidden layers as positive integers (e.g. "
                          f"[32, 32]; [] for a linear encoder), got {mo.hidden!r}")
    _positive("[model] learning_rate", mo.learning_rate)
    if isinstance(mo.balance_clusters, bool) or not isinstance(mo.balance_clusters, int) or mo.balance_clusters < 0:
        raise ConfigError(f"[model] balance_clusters must be 0 (uniform training weights) or a number of k-means "
                          f"clusters >= 1, got {mo.balance_clusters!r}")
    if not mo.jacobian_penalty >= 0:  # finiteness: _finite_numbers
        raise ConfigError(f"[model] jacobian_penalty must be >= 0 (0 switches the encoder smoothness term off), got "
                          f"{mo.jacobian_penalty!r}")

    c = cfg.campaign
    _positive("[campaign] rounds", c.rounds)
    for key in ("steps_per_round", "save_interval", "checkpoint_interval"):
        _positive(f"[campaign] {key}", getattr(c, key))
    if c.checkpoint_interval % c.save_interval:
        raise ConfigError("[campaign] checkpoint_interval must be a multiple of save_interval")
    if c.steps_per_round % c.checkpoint_interval:
        raise ConfigError("[campaign] steps_per_round must be a multiple of checkpoint_interval")
    if c.round0_topology and not c.round0_trajectories:
        raise ConfigError("[campaign] round0_topology is the topology of round0_trajectories, which are not given")
    if not c.round0_trajectories:
        _positive("[campaign] round0_steps", c.round0_steps)
        if c.round0_steps % c.checkpoint_interval:
            raise ConfigError("[campaign] round0_steps must be a multiple of checkpoint_interval")
        n0 = c.round0_steps // c.save_interval
        if n0 < max(MIN_ROUND0_FRAMES, cfg.model.latent_dim + 2):
            raise ConfigError(
                f"[campaign] round0_steps = {c.round0_steps} with save_interval = {c.save_interval} saves {n0} "
                f"frames in round 0; the first encoder (latent_dim = {cfg.model.latent_dim}) needs at least "
                f"{max(MIN_ROUND0_FRAMES, cfg.model.latent_dim + 2)}: raise round0_steps or lower save_interval")
    if not c.strategy:
        raise ConfigError(f"[campaign] strategy must be one of {', '.join(STRATEGIES)} (or a list of them)")
    for st in c.strategy:
        _choice("[campaign] strategy", st, STRATEGIES)

    md_ = cfg.metadynamics
    if not md_.bias_factor > 1:
        raise ConfigError(f"[metadynamics] bias_factor must be > 1, got {md_.bias_factor}")
    for key in ("height", "frequency", "sigma", "grid_points", "wall_force_constant"):
        _positive(f"[metadynamics] {key}", getattr(md_, key))
    if md_.margin < 0:
        raise ConfigError("[metadynamics] margin must be >= 0")
    if c.save_interval % md_.frequency and md_.frequency % c.save_interval:
        raise ConfigError("[metadynamics] frequency and [campaign] save_interval must divide one another")

    fr = cfg.frontier
    _positive("[frontier] n_targets", fr.n_targets)
    _positive("[frontier] restraint_k", fr.restraint_k)
    if not 0 < fr.pull_fraction < 1:
        raise ConfigError(f"[frontier] pull_fraction must be in (0, 1), got {fr.pull_fraction}")

    op = cfg.opes
    for key in ("barrier", "pace", "sigma", "grid_points", "wall_force_constant"):
        _positive(f"[opes] {key}", getattr(op, key))
    if op.margin < 0 or op.compression_threshold < 0:
        raise ConfigError("[opes] margin and compression_threshold must be >= 0")
    if op.bias_factor != 0 and not (op.bias_factor > 1 and math.isfinite(op.bias_factor)):
        raise ConfigError(f"[opes] bias_factor must be > 1 (or 0: barrier/kT), got {op.bias_factor!r}")
    if op.max_temperature != 0 and not (op.max_temperature > cfg.md.temperature and math.isfinite(op.max_temperature)):
        raise ConfigError(f"[opes] max_temperature must be above [md] temperature = {cfg.md.temperature} K (or 0: "
                          f"no multithermal bias), got {op.max_temperature!r}")
    if op.max_temperature and not (cfg.converge.enabled and cfg.converge.method == "opes"):
        raise ConfigError("[opes] max_temperature acts in an OPES converge phase only (exploration rounds are weighted "
                          "by MBAR over biases of the latent coordinates alone): set [converge] enabled = true and "
                          'method = "opes", or max_temperature = 0')
    if op.temperatures != 0 and not op.temperatures >= 2:
        raise ConfigError(f"[opes] temperatures must be >= 2 (or 0: from the degrees of freedom), got "
                          f"{op.temperatures!r}")
    uses_opes = "opes" in c.strategy or (cfg.converge.enabled and cfg.converge.method == "opes")
    if uses_opes and c.save_interval % op.pace and op.pace % c.save_interval:
        raise ConfigError("[opes] pace and [campaign] save_interval must divide one another")

    _positive("[ood] threshold", cfg.ood.threshold)
    _choice("[ood] action", cfg.ood.action, OOD_ACTIONS)
    if not 0 < cfg.ood.retrain_fraction <= 1:
        raise ConfigError(f"[ood] retrain_fraction must be in (0, 1], got {cfg.ood.retrain_fraction}")
    if cfg.ood.min_frames < 1:
        raise ConfigError(f"[ood] min_frames must be >= 1, got {cfg.ood.min_frames}")

    cv = cfg.converge
    _choice("[converge] method", cv.method, CONVERGE_METHODS)
    if cv.enabled and cv.method == "umbrella" and "pocket" in c.strategy:
        raise ConfigError('[converge] method = "umbrella" is not available with [campaign] strategy "pocket" (its '
                          'converge phase biases the openness dimension toward [pocket] target): use "opes" or '
                          '"metadynamics"')
    for key in ("max_steps", "tolerance", "fes_bins", "fes_cutoff"):
        _positive(f"[converge] {key}", getattr(cv, key))
    if cv.min_steps < 0 or cv.min_steps > cv.max_steps:
        raise ConfigError(f"[converge] min_steps must be in [0, max_steps = {cv.max_steps}], got {cv.min_steps}")
    if cv.max_steps % c.checkpoint_interval:
        raise ConfigError("[converge] max_steps must be a multiple of [campaign] checkpoint_interval")
    if not 0 <= cv.burn_in < 1:
        raise ConfigError(f"[converge] burn_in must be a fraction in [0, 1), got {cv.burn_in}")
    if not 0 < cv.window < 1:
        raise ConfigError(f"[converge] window must be a fraction in (0, 1), got {cv.window}")
    if cv.restarts < 0:
        raise ConfigError(f"[converge] restarts must be >= 0, got {cv.restarts}")
    if cv.min_round_trips < 0:
        raise ConfigError(f"[converge] min_round_trips must be an integer >= 0 (0: no round-trip condition), got "
                          f"{cv.min_round_trips}")
    if cv.round_trip_basins == 1 or cv.round_trip_basins < 0:
        raise ConfigError(f"[converge] round_trip_basins must be 0 (every latent basin with weight) or an integer "
                          f">= 2 (the n deepest latent basins), got {cv.round_trip_basins}")
    if cv.structural_states == 1 or cv.structural_states < 0:
        raise ConfigError(f"[converge] structural_states must be 0 (no structural count) or an integer >= 2 (k-means "
                          f"microstates of the input features), got {cv.structural_states}")
    if cv.activation:
        from ..models import ACTIVATIONS

        _choice("[converge] activation", cv.activation, tuple(sorted(ACTIVATIONS)))
    if cv.basin_min_frames < 0:
        raise ConfigError(f"[converge] basin_min_frames must be an integer >= 0, got {cv.basin_min_frames}")
    if not cv.core_kt > 0:
        raise ConfigError(f"[converge] core_kt must be > 0 (basin cores: kT below the saddle), got {cv.core_kt}")
    if cv.save_interval < 0 or (cv.save_interval and c.checkpoint_interval % cv.save_interval):
        raise ConfigError(f"[converge] save_interval must be 0 (use [campaign] save_interval) or divide [campaign] "
                          f"checkpoint_interval = {c.checkpoint_interval}, got {cv.save_interval}")
    if cv.umbrella_windows < 2:
        raise ConfigError(f"[converge] umbrella_windows must be an integer >= 2, got {cv.umbrella_windows}")
    if cv.umbrella_force_constant < 0:
        raise ConfigError(f"[converge] umbrella_force_constant must be >= 0 (kJ/mol per latent range squared; 0 = "
                          f"from the window spacing), got {cv.umbrella_force_constant}")
    if cv.umbrella_basins < 2:
        raise ConfigError(f"[converge] umbrella_basins must be an integer >= 2, got {cv.umbrella_basins}")
    if cv.umbrella_replicas < 1:
        raise ConfigError(f"[converge] umbrella_replicas must be an integer >= 1 (independent trajectories per "
                          f"window), got {cv.umbrella_replicas}")
    if cv.umbrella_exchange and cv.enabled and cv.method == "umbrella" and cfg.execution.walkers > 1:
        raise ConfigError(f"[converge] umbrella_exchange swaps configurations between the windows of one sweep, which "
                          f"runs on one walker; set [execution] walkers = 1 (got {cfg.execution.walkers}) or "
                          f"umbrella_exchange = false")
    slots = cv.umbrella_windows * cv.umbrella_replicas
    if cv.enabled and cv.method == "umbrella" and cv.max_steps < slots * c.checkpoint_interval:
        raise ConfigError(f"[converge] max_steps = {cv.max_steps} cannot run every one of the umbrella_windows = "
                          f"{cv.umbrella_windows} windows × umbrella_replicas = {cv.umbrella_replicas} trajectories "
                          f"for one checkpoint_interval = {c.checkpoint_interval} steps; raise max_steps to at least "
                          f"{slots * c.checkpoint_interval} or use fewer windows or replicas")
    if cv.save_interval and cv.method == "opes" and cv.save_interval % op.pace and op.pace % cv.save_interval:
        raise ConfigError("[opes] pace and [converge] save_interval must divide one another")
    if cv.save_interval and cv.method == "metadynamics" and (cv.save_interval % md_.frequency
                                                             and md_.frequency % cv.save_interval):
        raise ConfigError("[metadynamics] frequency and [converge] save_interval must divide one another")

    validate_execution(cfg.execution, m.platform)
    validate_pocket(cfg)


def read_toml(path: str | Path) -> dict[str, Any]:
    """The tables of a TOML config file; ConfigError naming the file when it is missing or not TOML."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc


def load_config(path: str | Path) -> CampaignConfig:
    """Read and validate a campaign TOML file."""
    return from_dict(read_toml(path), base_dir=Path(path).parent.resolve())
