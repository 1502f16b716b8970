"""Growing and moving a campaign: the configuration changes a run directory accepts when it is run again, and
what each change would invalidate.

A run directory stores the configuration it ran with (``config.json``). Running it with another configuration
is accepted when everything already done stays exactly what the new configuration would have produced, and is
refused otherwise with a message naming each offending key and the completed work it would invalidate. What
"done" means comes from ``progress.json``: a round is *planned* once its plan phase has committed, *simulated*
once frames of it are committed, *trained* once its train phase has committed.

==============================================  ===============================================================
key                                             accepted when ...
==============================================  ===============================================================
``[md] platform``, ``platform_properties``      always: a round in progress continues on the new platform from
                                                its platform-independent state (:mod:`~.rundir`)
``[system]``, ``[md]`` temperature, timestep,   nothing has been simulated (every later round continues from
friction, seed; ``[campaign] save_interval``    the frames of the earlier ones, and all weights use them)
``[features]``, ``[model] latent_dim``          no model has been trained (the models and every biased round)
``[model] hidden``, ``activation``              no model has been trained, or ``warm_start = false``
other ``[model]`` keys                          always: models trained from then on
``[campaign] round0_steps``, ``…trajectories``  round 0 is not planned yet
``[campaign] steps_per_round``; planning keys   always: rounds planned from then on (a plan is fixed, so a
of ``[metadynamics]``, ``[opes]``,              planned round keeps its length, grid and targets)
``[frontier]``
``[campaign] strategy``                         every planned round keeps the strategy it was planned with
``[campaign] checkpoint_interval``              no round is planned but not yet fully simulated
bias settings of a strategy (``height``,        no round of that strategy is part-way through its simulation
``bias_factor``, ``frequency``, OPES            (its saved bias state holds the old settings)
``barrier``, ``pace`` …), ``[ood]``
``wall_force_constant``, ``restraint_k``        no round of that strategy has been simulated (the cross-round
                                                log-weights evaluate those rounds' bias states with them)
``[campaign] rounds``                           it does not drop a planned round, and no converge phase has
                                                started: a finished campaign continues with the new rounds
``[converge] enabled``                          switching on: always (a finished campaign runs the converge
                                                phase next); off: the converge phase has not started
``[converge] method``, ``umbrella_*``,          the converge phase has not started (its plan fixes them)
``core_kt``, ``structural_states``
``[converge] max_steps``                        it is not below what the converge phase has run; a converge
                                                phase that spent its whole budget continues to the new one
other ``[converge]`` keys                       always; once the converge phase has run, its estimate
                                                (weights, convergence.csv) is recomputed with them
==============================================  ===============================================================

Keys not in this table (added by later versions) are accepted only before anything has been simulated.

An accepted change is applied in an order that survives a kill at any point (``progress.json`` first, then the
plans, then ``config.json``: until the new configuration is stored the change is re-applied, idempotently), and
recorded with its effect in ``config_changes.json``. Before it is applied, the new configuration is dry-built
(:func:`latentbias.campaign.preflight.dry_build`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from .rundir import RunDir, RunDirError

if TYPE_CHECKING:
    from .config import CampaignConfig
    from .loop import Campaign

logger = logging.getLogger(__name__)

__all__ = ["ConfigChangeError", "KeyChange", "Extension", "assess_change", "reconcile_config"]

CHANGES_FILE = "config_changes.json"


class ConfigChangeError(RunDirError):
    """A run directory cannot continue with the given configuration; the message names each key and the
    completed work it would invalidate."""


@dataclass(frozen=True)
class KeyChange:
    """One configuration value that differs from the run directory's stored one."""

    section: str
    key: str
    old: Any
    new: Any

    @property
    def name(self) -> str:
        return f"[{self.section}] {self.key}"

    def __str__(self) -> str:
        return f"{self.name} = {self.old!r} -> {self.new!r}"


@dataclass
class Extension:
    """The outcome of comparing a new configuration with a run directory's stored one."""

    changes: list[KeyChange] = field(default_factory=list)
    #: per accepted change, what it does
    effects: dict[str, str] = field(default_factory=dict)
    #: per refused change, the completed work it would invalidate
    problems: dict[str, str] = field(default_factory=dict)
    #: the commit point to continue from (None: unchanged)
    progress: dict[str, Any] | None = None
    #: rounds whose plan.json changes (the converge phase's budget)
    plans: dict[int, dict[str, Any]] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ what is done

class _Work:
    """What a run directory has completed, read from progress.json and the plans of planned rounds."""

    def __init__(self, run_dir: RunDir, progress: dict[str, Any]):
        self.progress = progress
        self.p, self.phase, self.finished = int(progress["round"]), progress["phase"], bool(progress["finished"])
        self.plans = {r: run_dir.read_plan(r) for r in range(self.p + 1) if self.planned(r)}
        self.ends = {r: run_dir.round_end(r) for r in self.plans if (run_dir.path / f"round_{r:03d}" / "end.json").is_file()}

    def planned(self, r: int) -> bool:
        return r < self.p or (r == self.p and (self.finished or self.phase != "plan"))

    def done_simulating(self, r: int) -> bool:
        return r < self.p or (r == self.p and (self.finished or self.phase in ("train", "weights", "done")))

    def simulated(self, r: int) -> bool:
        return self.done_simulating(r) or (r == self.p and self.phase == "simulate" and self.progress["segments"] > 0)

    def trained(self) -> list[int]:
        return [r for r, plan in self.plans.items() if not plan.get("converge")
                and (r < self.p or (r == self.p and (self.finished or self.phase in ("weights", "done"))))]

    def simulated_rounds(self, strategies: tuple[str, ...] | None = None) -> list[int]:
        return [r for r, plan in self.plans.items() if self.simulated(r)
                and (strategies is None or plan["strategy"] in strategies)]

    def running(self, strategies: tuple[str, ...] | None = None) -> int | None:
        """The round part-way through its simulation (segments committed, not ended), if its strategy is in
        ``strategies``."""
        r = self.p
        if (self.phase == "simulate" and not self.finished and self.progress["segments"] > 0 and r in self.plans
                and (strategies is None or self.plans[r]["strategy"] in strategies)):
            return r
        return None

    def converge_round(self) -> int | None:
        return next((r for r, plan in self.plans.items() if plan.get("converge")), None)

    def exploration_rounds(self) -> list[int]:
        return [r for r, plan in self.plans.items() if not plan.get("converge")]

    def first_unplanned(self, minimum: int = 0) -> int:
        return max([minimum, *[r + 1 for r in self.exploration_rounds()]])


def _rounds(rs: list[int]) -> str:
    rs = sorted(rs)
    if len(rs) == 1:
        return f"round {rs[0]}"
    if rs == list(range(rs[0], rs[-1] + 1)):
        return f"rounds {rs[0]}-{rs[-1]}"
    return "rounds " + ", ".join(map(str, rs))


# --------------------------------------------------------------------------------------------------- the rules

#: a rule: (change, work, old config dict, new config dict) -> (accepted, what it does / would invalidate)
Rule = Callable[[KeyChange, _Work, dict, dict], tuple[bool, str]]


def _always(what: str) -> Rule:
    return lambda c, w, old, new: (True, what)


def _platform(c: KeyChange, w: _Work, old: dict, new: dict) -> tuple[bool, str]:
    r = w.running()
    note = f"; round {r} continues from its platform-independent state" if r is not None else ""
    return True, f"the rest of the campaign runs with it{note}"


def _frames(c: KeyChange, w: _Work, old: dict, new: dict) -> tuple[bool, str]:
    done = w.simulated_rounds()
    if done:
        return False, (f"the frames of {_rounds(done)} (every later round starts from them, and every model and "
                       "weight is computed from them)")
    return True, "nothing has been simulated yet"


def _models(c: KeyChange, w: _Work, old: dict, new: dict) -> tuple[bool, str]:
    trained = w.trained()
    if trained:
        return False, (f"the models of {_rounds(trained)} (and the rounds biased with them: later models are "
                       "aligned to and warm-started from them)")
    return True, "no model has been trained yet"


def _architecture(c: KeyChange, w: _Work, old: dict, new: dict) -> tuple[bool, str]:
    trained = w.trained()
    if trained and new["model"]["warm_start"]:
        return False, (f"the warm start of the next model from the model of round {max(trained)} (same architecture "
                       "needed; set [model] warm_start = false to train later models with another one)")
    return True, f"applies to the models trained from round {max(trained, default=-1) + 1} on"


def _training(c: KeyChange, w: _Work, old: dict, new: dict) -> tuple[bool, str]:
    return True, f"applies to the models trained from round {max(w.trained(), default=-1) + 1} on"


def _round0(c: KeyChange, w: _Work, old: dict, new: dict) -> tuple[bool, str]:
    if 0 in w.plans:
        return False, "round 0, planned with the old value (and everything after it)"
    return True, "round 0 is not planned yet"


def _planning(c: KeyChange, w: _Work, old: dict, new: dict) -> tuple[bool, str]:
    return True, (f"applies to the rounds planned from round {w.first_unplanned(1)} on (planned rounds keep their "
                  "plans)")


def _strategy(c: KeyChange, w: _Work, old: dict, new: dict) -> tuple[bool, str]:
    s = new["campaign"]["strategy"]
    bad = [r for r, plan in w.plans.items() if r >= 1 and not plan.get("converge")
           and plan["strategy"] != s[min(r - 1, len(s) - 1)]]
    if bad:
        return False, ", ".join(f"round {r} (planned and run as {w.plans[r]['strategy']!r})" for r in bad)
    return True, f"applies to the rounds planned from round {w.first_unplanned(1)} on"


def _checkpoint_interval(c: KeyChange, w: _Work, old: dict, new: dict) -> tuple[bool, str]:
    open_ = [r for r in w.plans if not w.done_simulating(r)]
    if open_:
        return False, f"{_rounds(open_)}, planned in segments of the old interval and not finished"
    return True, f"applies to the rounds planned from round {w.first_unplanned()} on"


def _running(strategies: tuple[str, ...] | None) -> Rule:
    def rule(c: KeyChange, w: _Work, old: dict, new: dict) -> tuple[bool, str]:
        r = w.running(strategies)
        if r is not None and r > 0:
            return False, (f"round {r} ({w.plans[r]['strategy']}), {w.progress['segments']} segment(s) of which ran "
                           "with the old value (its saved bias state holds it); change it once the round is done")
        return True, "applies from the next round simulated"
    return rule


def _weighted(strategies: tuple[str, ...]) -> Rule:
    def rule(c: KeyChange, w: _Work, old: dict, new: dict) -> tuple[bool, str]:
        done = w.simulated_rounds(strategies)
        if done:
            return False, (f"the frames of {_rounds(done)} ({'/'.join(strategies)}), simulated with the old value, "
                           "and their log-weights (every weights phase re-evaluates their bias states with it)")
        return True, "no round using it has been simulated yet"
    return rule


def _converge_method(c: KeyChange, w: _Work, old: dict, new: dict) -> tuple[bool, str]:
    r = w.converge_round()
    if r is not None:
        return False, f"the converge phase (round {r}), planned as {w.plans[r]['strategy']!r}"
    return True, "the converge phase has not started"


def _converge_analysis(c: KeyChange, w: _Work, old: dict, new: dict) -> tuple[bool, str]:
    r = w.converge_round()
    if r is None:
        return True, "the converge phase has not started"
    return True, f"the stopping rule and estimate of the converge phase (round {r}) use it from now on"


#: rules by (section, key); "*" matches every key of a section
_RULES: dict[tuple[str, str], Rule] = {
    ("md", "platform"): _platform,
    ("md", "platform_properties"): _platform,
    ("system", "*"): _frames,
    ("md", "*"): _frames,
    ("campaign", "save_interval"): _frames,
    ("features", "*"): _models,
    ("model", "latent_dim"): _models,
    ("model", "hidden"): _architecture,
    ("model", "activation"): _architecture,
    ("model", "*"): _training,
    ("campaign", "round0_steps"): _round0,
    ("campaign", "round0_trajectories"): _round0,
    ("campaign", "round0_topology"): _round0,
    ("campaign", "steps_per_round"): _planning,
    ("campaign", "strategy"): _strategy,
    ("campaign", "checkpoint_interval"): _checkpoint_interval,
    ("metadynamics", "margin"): _planning,
    ("metadynamics", "sigma"): _planning,
    ("metadynamics", "grid_points"): _planning,
    ("metadynamics", "carry_bias"): _planning,
    ("metadynamics", "wall_force_constant"): _weighted(("metadynamics",)),
    ("metadynamics", "*"): _running(("metadynamics",)),
    ("opes", "margin"): _planning,
    ("opes", "sigma"): _planning,
    ("opes", "grid_points"): _planning,
    ("opes", "wall_force_constant"): _weighted(("opes",)),
    ("opes", "*"): _running(("opes",)),
    ("frontier", "restraint_k"): _weighted(("frontier",)),
    ("frontier", "*"): _planning,
    ("ood", "*"): _running(None),
    ("converge", "method"): _converge_method,
    ("converge", "umbrella_windows"): _converge_method,  # the windows are planned when the phase starts
    ("converge", "umbrella_force_constant"): _converge_method,
    ("converge", "umbrella_basins"): _converge_method,
    ("converge", "umbrella_replicas"): _converge_method,
    ("converge", "umbrella_exchange"): _converge_method,
    ("converge", "core_kt"): _converge_method,  # the round-trip cores are planned when the phase starts
    ("converge", "structural_states"): _converge_method,  # so are the structural microstates' count and frames
    ("converge", "*"): _converge_analysis,
}
#: keys handled together by :func:`_reshape`
_SHAPE = {("campaign", "rounds"), ("converge", "enabled"), ("converge", "max_steps")}


def _rule(section: str, key: str) -> Rule:
    return _RULES.get((section, key)) or _RULES.get((section, "*")) or _frames


# ------------------------------------------------------------------------------------------------- assessment

def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(config))
    out.pop("base_dir", None)
    return out


def _changes(old: dict[str, Any], new: dict[str, Any]) -> list[KeyChange]:
    """The keys whose values differ. A key missing from the stored config (written by a version without it)
    that holds its default now is no change: that version behaved as the default does."""
    from .config import CampaignConfig

    defaults = _comparable(CampaignConfig().to_dict())
    out = []
    for section in sorted(set(old) | set(new)):
        a, b = old.get(section, {}), new.get(section, {})
        if not isinstance(a, dict) or not isinstance(b, dict):
            if a != b:
                out.append(KeyChange(section, "*", a, b))
            continue
        for key in sorted(set(a) | set(b)):
            if key not in a and key in defaults.get(section, {}) and b.get(key) == defaults[section][key]:
                continue
            if a.get(key) != b.get(key):
                out.append(KeyChange(section, key, a.get(key), b.get(key)))
    return out


def _reshape(ext: Extension, w: _Work, old: dict, new: dict, run_dir: RunDir) -> None:
    """``[campaign] rounds``, ``[converge] enabled`` and ``max_steps``: which rounds the campaign has, and where
    it continues."""
    R0, E0 = old["campaign"]["rounds"], old["converge"]["enabled"]
    R1, E1 = new["campaign"]["rounds"], new["converge"]["enabled"]
    conv = w.converge_round()
    explored = w.exploration_rounds()
    if conv is not None:
        if R1 != R0:
            ext.problems["[campaign] rounds"] = (
                f"the converge phase (round {conv}), which ran with the encoder of round {conv - 1} as the last one; "
                "rounds cannot be added or removed once it has started")
        if not E1:
            ext.problems["[converge] enabled"] = f"the converge phase (round {conv}), which has started"
    if explored and R1 - 1 < max(explored):
        ext.problems["[campaign] rounds"] = (f"{_rounds(explored)}, planned already (keep [campaign] rounds >= "
                                             f"{max(explored) + 1})")
    if ext.problems:
        return
    last = R1 - 1 + int(E1)
    progress = dict(w.progress)
    if R1 != R0:
        ext.effects["[campaign] rounds"] = f"the campaign has rounds 0-{R1 - 1}" + (
            f" and a converge phase (round {R1})" if E1 else "")
    if E1 != E0:
        ext.effects["[converge] enabled"] = (f"a converge phase runs after round {R1 - 1}" if E1
                                             else "no converge phase")
    if w.finished and last > w.p:
        progress = {"round": w.p + 1, "phase": "plan", "segments": 0, "finished": False}
    elif not w.finished and w.phase == "plan" and w.p > last:
        progress = {"round": w.p - 1, "phase": "done", "segments": 0, "finished": True}
    # the converge phase's budget
    if conv is not None and old["converge"]["max_steps"] != new["converge"]["max_steps"]:
        key = "[converge] max_steps"
        plan = dict(w.plans[conv])
        budget = new["converge"]["max_steps"] // new["campaign"]["checkpoint_interval"]
        held = (w.progress["segments"] if not w.done_simulating(conv)
                else (w.ends[conv]["segments"] if conv in w.ends else plan["segments"]))
        if budget < held:
            ext.problems[key] = f"the converge phase (round {conv}), which has run {held} segments already"
            return
        if conv in w.ends:
            ext.effects[key] = (f"nothing: the converge phase stopped ({w.ends[conv]['reason']}) after {held} "
                                "segments")
        else:
            plan["segments"] = budget
            ext.plans[conv] = plan
            ext.effects[key] = f"the converge phase (round {conv}) runs up to {budget} segments ({held} done)"
            if w.done_simulating(conv):
                progress = {"round": conv, "phase": "simulate", "segments": held, "finished": False}
    elif old["converge"]["max_steps"] != new["converge"]["max_steps"]:
        ext.effects["[converge] max_steps"] = "the converge phase has not started"
    if conv is not None and progress == w.progress and w.done_simulating(conv) and any(
            c.section == "converge" and c.key not in ("enabled", "method", "max_steps") for c in ext.changes):
        n = w.ends[conv]["segments"] if conv in w.ends else w.plans[conv]["segments"]
        progress = {"round": conv, "phase": "weights", "segments": n, "finished": False}
    if progress != w.progress:
        ext.progress = progress


def assess_change(run_dir: RunDir, old: dict[str, Any], new: dict[str, Any]) -> Extension:
    """Compare a new configuration (``CampaignConfig.to_dict()``) with the one stored in ``run_dir``.

    Returns the :class:`Extension` (accepted changes, their effects, the progress to continue from); raises
    :class:`ConfigChangeError` listing every change the completed work cannot follow and what it would
    invalidate. Reads only.
    """
    old, new = _comparable(old), _comparable(new)
    ext = Extension(changes=_changes(old, new))
    if not ext.changes:
        return ext
    w = _Work(run_dir, run_dir.read_progress())
    for c in ext.changes:
        if (c.section, c.key) in _SHAPE:
            continue
        ok, text = _rule(c.section, c.key)(c, w, old, new)
        (ext.effects if ok else ext.problems)[c.name] = text
    _reshape(ext, w, old, new, run_dir)
    if ext.problems:
        by_name = {c.name: c for c in ext.changes}
        lines = [f"  {by_name[k] if k in by_name else k}: would invalidate {v}" for k, v in ext.problems.items()]
        raise ConfigChangeError(
            f"{run_dir.path} holds a campaign with a different configuration that its completed work cannot "
            "follow:\n" + "\n".join(lines) + f"\nKeep those values (they are in {run_dir.config_file}), or start "
            "the changed campaign in a new --rundir.")
    return ext


# ---------------------------------------------------------------------------------------------------- applying

def _record(run_dir: RunDir, ext: Extension, before: dict[str, Any]) -> None:
    path = run_dir.path / CHANGES_FILE
    history = run_dir.read_json(path, ("changes",)) if path.is_file() else {"changes": []}
    history["changes"].append({
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "progress_before": before,
        "keys": [{"key": c.name, "old": c.old, "new": c.new, "effect": ext.effects.get(c.name, "")}
                 for c in ext.changes]})
    run_dir.write_json(path, history)


def reconcile_config(campaign: Campaign) -> None:
    """Make the run directory's stored configuration ``campaign.cfg``; call while holding the run directory's lock.

    A new run directory: the configuration is dry-built (:func:`~latentbias.campaign.preflight.dry_build`) and
    stored. A changed one: the change is assessed (:func:`assess_change`; refused changes raise
    :class:`ConfigChangeError`), dry-built, and applied in a kill-safe order (module docstring).
    """
    from .preflight import dry_build

    run_dir = campaign.run_dir
    new = campaign.cfg.to_dict()
    old = run_dir.stored_config()
    if old is None:
        dry_build(campaign)
        run_dir.write_config(new)
        return
    ext = assess_change(run_dir, old, new)
    if not ext.changes:
        return
    dry_build(campaign)
    before = run_dir.read_progress()
    _record(run_dir, ext, before)
    if ext.progress is not None:
        run_dir.write_progress(ext.progress)
    for r, plan in ext.plans.items():
        run_dir.write_plan(r, plan)
    run_dir.write_config(new)
    for c in ext.changes:
        logger.info("configuration change %s: %s", c, ext.effects.get(c.name, "accepted"))
    if ext.progress is not None:
        logger.info("the campaign continues at round %d, phase %s (was round %d, phase %s)",
                    ext.progress["round"], ext.progress["phase"], before["round"], before["phase"])
