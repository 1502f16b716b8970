"""Adaptive sampling campaigns: rounds of plan -> simulate -> train -> weights, resumable.

Modules: :mod:`~.config` (TOML configuration), :mod:`~.loop` (:class:`Campaign`, the orchestrator),
:mod:`~.plan` (what a round does), :mod:`~.simulate` and :mod:`~.roundbias` (running a round and its bias),
:mod:`~.train` (retraining, alignment, export), :mod:`~.weights` (which frames are equilibrium samples; bias
states, cross-round MBAR and converge-phase weights), :mod:`~.converge` (the converge phase's stopping rule),
:mod:`~.estimate` (final basin ΔF with error bars),
:mod:`~.records` (the frame-record schema), :mod:`~.rundir` (run-directory files, lock, integrity checks),
:mod:`~.extend` (config changes a run directory accepts: growing and moving runs), :mod:`~.preflight` (dry build
of a config before round 0),
:mod:`~.seeds` (random seeds), :mod:`~.frontier`, :mod:`~.alignment`, :mod:`~.systems`, :mod:`~.report`;
wild type and mutants in one shared latent space: :mod:`~.multiconfig` (``[systems]``), :mod:`~.multi`
(:class:`~.multi.MultiCampaign`), :mod:`~.shared` (shared atoms and encoder), :mod:`~.compare` (ΔG, ΔΔG).
"""

from .config import CampaignConfig, ConfigError, load_config
from .extend import ConfigChangeError
from .loop import Campaign
from .rundir import RunDirError, RunDirLocked

__all__ = ["Campaign", "CampaignConfig", "ConfigChangeError", "ConfigError", "RunDirError", "RunDirLocked",
           "load_config"]
