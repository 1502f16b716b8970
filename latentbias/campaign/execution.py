"""Where a campaign's parallel walkers run: ``[execution]`` of the configuration, and the Dask client that runs them.

A campaign with ``[execution] walkers = N > 1`` runs every round as N walkers in parallel segments
(:mod:`latentbias.campaign.walkers`); each walker segment is one task of Dask's ``distributed`` scheduler:

``executor = "local"`` (default)
    a ``distributed.LocalCluster`` of worker *processes* (``processes=True``: OpenMM and torch hold the GIL),
    started when the first multi-walker round begins and stopped when the campaign returns; nothing to install
    or run besides the package. One worker per walker unless ``local_workers`` says otherwise; each worker runs
    one segment at a time. The workers are started with ``multiprocessing``'s spawn method: a Python script that
    runs such a campaign must do so under ``if __name__ == "__main__":`` (``latentbias run`` does).
``executor = "dask"``
    a running Dask scheduler at ``scheduler`` (``"tcp://host:8786"``), with workers started by the user
    (``dask scheduler`` + ``dask worker tcp://host:8786 --nthreads 1`` on each machine, one walker at a time per
    worker); the campaign only connects to it and never stops it.
``executor = "jobqueue"``
    a batch-system cluster of ``dask-jobqueue`` (``cluster_class``: ``SLURMCluster``, ``PBSCluster``,
    ``LSFCluster``, ``SGECluster``, ``HTCondorCluster``, ``OARCluster``, ``MoabCluster``) built with the keyword
    arguments of the ``[execution.cluster]`` table, kept at ``jobs`` batch jobs (default: one per walker; a job
    whose worker connected and was lost is resubmitted by ``adapt`` after ``distributed.deploy.lost-worker-timeout``,
    a job that never starts is not detected); the campaign's process runs the scheduler, the jobs run the workers.
    ``dask-jobqueue`` is an optional dependency (``pip install latentbias[cluster]``).

Resources per walker: ``threads_per_walker`` CPU threads (OpenMM's CPU platform ``Threads`` and torch's intra-op
threads in the worker) and, for GPU platforms, ``devices``: walker w gets ``devices[w % len(devices)]`` as the
platform property ``device_property`` (``DeviceIndex`` for CUDA, OpenCL and HIP). Leave ``devices`` empty on a
batch system that gives each job its own GPU (SLURM ``--gres=gpu:1`` sets ``CUDA_VISIBLE_DEVICES``, so the
job's GPU is device 0).

Every worker must read the run directory (models, system files): on a cluster it must be on a shared filesystem.
Only the driver (the ``latentbias run`` process) writes to it.

Memory allocator: Dask's nannies start workers with ``MALLOC_TRIM_THRESHOLD_=65536`` (return freed memory to the
OS early), which made a walker segment 1.7x slower than the same code in a plain process here (glibc trims and
regrows the heap every step). The clusters the campaign starts drop it (``local``: glibc's default, as in a plain
process) or raise it to 1 GiB (``jobqueue``: exported by the job script); with ``executor = "dask"`` start the
workers with ``MALLOC_TRIM_THRESHOLD_=1073741824`` in their environment.

Lost workers: the scheduler reschedules a segment whose worker died on another worker (up to
``allowed_failures`` times per segment, Dask's ``distributed.scheduler.allowed-failures``; set by the campaign for
the clusters it starts, by the user's Dask configuration for ``executor = "dask"``). A segment is a pure function
of its inputs (the committed checkpoint and bias states), so the rerun gives the same frames.
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable

logger = logging.getLogger(__name__)

__all__ = ["ExecutionConfig", "EXECUTORS", "JOBQUEUE_CLASSES", "validate_execution", "WalkerPool",
           "walker_platform_properties"]

EXECUTORS = ("local", "dask", "jobqueue")
JOBQUEUE_CLASSES = ("SLURMCluster", "PBSCluster", "LSFCluster", "SGECluster", "HTCondorCluster", "OARCluster",
                    "MoabCluster")
_GPU_PLATFORMS = ("CUDA", "OpenCL", "HIP")
_DASK_TRIM = "65536"  # Dask's default MALLOC_TRIM_THRESHOLD_ for worker processes
_WALKER_TRIM = "1073741824"


@dataclass
class ExecutionConfig:
    """``[execution]``: parallel walkers and where they run (module docstring)."""

    walkers: int = 1
    executor: str = "local"
    scheduler: str = ""
    local_workers: int = 0
    threads_per_walker: int = 1
    devices: list[str] = field(default_factory=list)
    device_property: str = "DeviceIndex"
    cluster_class: str = "SLURMCluster"
    cluster: dict[str, Any] = field(default_factory=dict)
    jobs: int = 0
    allowed_failures: int = 3


def validate_execution(e: ExecutionConfig, platform: str) -> None:
    """Check ``[execution]`` (with the campaign's ``[md] platform``); raises ConfigError naming the key."""
    from .config import ConfigError

    if e.walkers < 1:
        raise ConfigError(f"[execution] walkers must be >= 1, got {e.walkers}")
    if e.executor not in EXECUTORS:
        raise ConfigError(f"[execution] executor = {e.executor!r} is not allowed; choose one of {', '.join(EXECUTORS)}")
    if e.executor == "dask" and not e.scheduler:
        raise ConfigError('[execution] executor = "dask" needs scheduler = "tcp://HOST:PORT" (the address of a '
                          'running `dask scheduler`), or use executor = "local"')
    if e.executor == "jobqueue" and e.cluster_class not in JOBQUEUE_CLASSES:
        raise ConfigError(f"[execution] cluster_class = {e.cluster_class!r} is not allowed; choose one of "
                          f"{', '.join(JOBQUEUE_CLASSES)}")
    for key in ("local_workers", "jobs"):
        if getattr(e, key) < 0:
            raise ConfigError(f"[execution] {key} must be >= 0 (0: one per walker), got {getattr(e, key)}")
    if e.threads_per_walker < 1:
        raise ConfigError(f"[execution] threads_per_walker must be >= 1, got {e.threads_per_walker}")
    if e.allowed_failures < 0:
        raise ConfigError(f"[execution] allowed_failures must be >= 0, got {e.allowed_failures}")
    e.devices = [str(d) for d in e.devices]
    if e.devices and platform not in _GPU_PLATFORMS:
        raise ConfigError(f"[execution] devices = {e.devices} needs a GPU platform ([md] platform one of "
                          f"{', '.join(_GPU_PLATFORMS)}), got {platform!r}; remove devices")
    if not isinstance(e.cluster, dict):
        raise ConfigError("[execution] cluster must be a table of dask-jobqueue keyword arguments")


def walker_platform_properties(e: ExecutionConfig, platform: str, properties: dict[str, str],
                               walker: int) -> dict[str, str]:
    """OpenMM platform properties of walker ``walker``: the configured ones plus its device and threads."""
    out = dict(properties)
    if e.devices:
        out[e.device_property] = e.devices[walker % len(e.devices)]
    if platform == "CPU" and "Threads" not in out:
        out["Threads"] = str(e.threads_per_walker)
    return out


class WalkerPool:
    """The Dask client of a campaign's walkers, started on first use and closed by :meth:`close`.

    Parameters
    ----------
    execution : ExecutionConfig
    """

    def __init__(self, execution: ExecutionConfig):
        self.execution = execution
        self._client: Any = None
        self._cluster: Any = None

    @property
    def started(self) -> bool:
        return self._client is not None

    def _resources(self) -> dict[str, float] | None:
        # clusters the campaign starts give every worker one "walker" slot, so a worker runs one segment at a time
        return {"walker": 1} if self.execution.executor in ("local", "jobqueue") else None

    def client(self) -> Any:
        """The ``distributed.Client`` (the cluster is started or connected to on the first call)."""
        if self._client is not None:
            return self._client
        try:
            import dask
            from distributed import Client, LocalCluster
        except ImportError as exc:  # pragma: no cover - distributed is a dependency
            raise ImportError("[execution] walkers > 1 needs the 'distributed' package "
                              "(pip install distributed)") from exc
        e = self.execution
        settings = {"distributed.scheduler.allowed-failures": e.allowed_failures,
                    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}  # module docstring
        if e.executor == "local" and os.environ.get("MALLOC_TRIM_THRESHOLD_") == _DASK_TRIM:
            del os.environ["MALLOC_TRIM_THRESHOLD_"]  # left by an earlier Dask cluster in this process
        with dask.config.set(settings):
            if e.executor == "local":
                n = e.local_workers or e.walkers
                self._cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                             resources={"walker": 1}, dashboard_address=None,
                                             silence_logs=logging.WARNING)
                logger.info("started a local Dask cluster: %d worker processes for %d walkers", n, e.walkers)
            elif e.executor == "jobqueue":
                self._cluster = _jobqueue_cluster(e)
                n_jobs = e.jobs or e.walkers
                self._cluster.adapt(minimum_jobs=n_jobs, maximum_jobs=n_jobs)  # a job that ends is replaced
                logger.info("started a dask-jobqueue %s, %d jobs requested", e.cluster_class, e.jobs or e.walkers)
            if self._cluster is not None:
                self._client = Client(self._cluster)
            else:
                self._client = Client(e.scheduler)
                logger.info("connected to the Dask scheduler at %s", e.scheduler)
        return self._client

    def submit(self, fn: Callable[..., Any], *args: Any, key: str, worker: str | None = None) -> Any:
        """Submit ``fn(*args)`` as one walker task (a ``distributed.Future``), preferably on ``worker`` (the
        address of the worker that ran the walker's previous segment; any other may take it)."""
        where = {"workers": [worker], "allow_other_workers": True} if worker else {}
        return self.client().submit(fn, *args, key=key, pure=False, resources=self._resources(), **where)

    def close(self) -> None:
        """Close the client and stop the cluster the campaign started (a ``dask`` scheduler keeps running)."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None
            logger.info("stopped the campaign's Dask cluster")


def _jobqueue_cluster(e: ExecutionConfig) -> Any:
    """The dask-jobqueue cluster of ``[execution]`` (not yet scaled)."""
    try:
        jobqueue = importlib.import_module("dask_jobqueue")
    except ImportError:
        raise ImportError('[execution] executor = "jobqueue" needs dask-jobqueue: pip install dask-jobqueue (or '
                          "latentbias[cluster])") from None
    kwargs = dict(e.cluster)
    prologue = list(kwargs.pop("job_script_prologue", []))
    if not any("MALLOC_TRIM_THRESHOLD_" in line for line in prologue):
        prologue.insert(0, f"export MALLOC_TRIM_THRESHOLD_={_WALKER_TRIM}")  # module docstring: allocator
    kwargs["job_script_prologue"] = prologue
    # one walker slot per worker, whatever number of cores the job reserves for the walker's threads
    extra = list(kwargs.pop("worker_extra_args", []))
    if "--resources" not in extra:
        extra += ["--resources", "walker=1"]
    kwargs["worker_extra_args"] = extra
    return getattr(jobqueue, e.cluster_class)(**kwargs)
