"""Joining the processes of a multi-host (or multi-process) job with `jax.distributed`.

Every process of a job runs the same `python -m distil_jax.main ...` command and
must call `initialize` before anything touches a JAX device. Where the three
settings (coordinator address, process count, this process's id) come from, in
order of precedence:

1. explicit arguments (main.py's `--coordinator_address`, `--num_processes`,
   `--process_id` flags);
2. `DISTIL_JAX_COORDINATOR`, `DISTIL_JAX_NUM_PROCESSES`, `DISTIL_JAX_PROCESS_ID`;
3. `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`;
4. whatever JAX detects itself: SLURM (`SLURM_NTASKS`, `SLURM_PROCID`, ...),
   Cloud TPU VMs and GKE, Open MPI / mpi4py, Kubernetes.

A setting may come from a different level than the others, e.g. the address
from the environment and the process id from a flag.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping

import jax

# Variable names per level, in precedence order: the project's own first, so a
# launcher can override values a cluster environment happens to export.
ENV_NAMES = (
    ("DISTIL_JAX_COORDINATOR", "DISTIL_JAX_NUM_PROCESSES", "DISTIL_JAX_PROCESS_ID"),
    ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"),
)


@dataclasses.dataclass(frozen=True)
class Settings:
    """What is known before JAX's own cluster detection fills the gaps (None = unknown)."""

    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None

    @property
    def explicit(self) -> bool:
        """True when nothing is left to auto-detection."""
        return None not in (self.coordinator_address, self.num_processes, self.process_id)


def _int(value: str | int | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def resolve(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Fills each unset argument from the environment; checks what it finds."""
    environ = os.environ if environ is None else environ
    address, count, index = coordinator_address or None, num_processes, process_id
    for address_var, count_var, index_var in ENV_NAMES:
        address = address or environ.get(address_var) or None
        count = count if count is not None else _int(environ.get(count_var), count_var)
        index = index if index is not None else _int(environ.get(index_var), index_var)
    if address is not None and ":" not in address:
        raise ValueError(f"coordinator address {address!r} must be HOST:PORT")
    if count is not None and count < 1:
        raise ValueError(f"the number of processes must be >= 1, got {count}")
    if index is not None and index < 0:
        raise ValueError(f"the process id must be >= 0, got {index}")
    if count is not None and index is not None and index >= count:
        raise ValueError(f"process id {index} is not below the number of processes {count}")
    return Settings(address, count, index)


def requested(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the environment alone asks for a multi-process job (the project's variables).

    JAX's own variables and the cluster ones are not enough: a SLURM allocation or
    a TPU VM can run single-process jobs, so those need `--distributed`.
    """
    environ = os.environ if environ is None else environ
    return any(environ.get(name) for name in ENV_NAMES[0])


def _cpu_only() -> bool:
    # JAX_PLATFORMS (or jax.config.update("jax_platforms", ...)) is the only way to
    # know the backend before initialising: asking for devices would start the backends,
    # after which jax.distributed.initialize() refuses to run.
    platforms = jax.config.jax_platforms or os.environ.get("JAX_PLATFORMS", "")
    return platforms.strip().lower() == "cpu"


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    cpu_collectives: bool | None = None,
    initialization_timeout: int = 300,
) -> Settings:
    """Calls `jax.distributed.initialize` with the resolved settings; returns them.

    cpu_collectives: use gloo for cross-process collectives of CPU devices (tests,
    CPU-only clusters); None = when JAX is restricted to the CPU (JAX_PLATFORMS=cpu).
    Without it, CPU computations over devices of several processes cannot run.
    A job of one process is left alone: it needs no coordinator.
    """
    settings = resolve(coordinator_address, num_processes, process_id)
    if settings.num_processes == 1:
        logging.info("one process: jax.distributed is not initialised")
        return settings
    if cpu_collectives is None:
        cpu_collectives = _cpu_only()
    if cpu_collectives:
        # Must precede the first backend use: the CPU client picks its collectives once.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=settings.coordinator_address,
        num_processes=settings.num_processes,
        process_id=settings.process_id,
        initialization_timeout=initialization_timeout,
    )
    logging.info(
        "jax.distributed: process %d of %d, %d local / %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
    return settings
