"""Multi-controller start-up: `jax.distributed.initialize()` when several processes run.

On TPU VM slices (and SLURM / Open MPI jobs) JAX detects the coordinator itself. Elsewhere
set DIFFGRM_COORDINATOR=host:port, DIFFGRM_NUM_PROCESSES and DIFFGRM_PROCESS_ID (as the
scripts in launch/ do). A single process on a single host needs nothing.
"""

import os

import jax


def _on_tpu_pod():
  # Multi-host TPU VMs export the worker list; a single host has one entry.
  hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  return len([h for h in hosts.split(",") if h]) > 1


def maybe_initialize():
  """Initialises the distributed runtime if the environment asks for it; returns True if so."""
  coordinator = os.environ.get("DIFFGRM_COORDINATOR")
  if coordinator:
    try:
      n = int(os.environ["DIFFGRM_NUM_PROCESSES"])
      pid = int(os.environ["DIFFGRM_PROCESS_ID"])
    except (KeyError, ValueError) as e:
      raise SystemExit(
          "DIFFGRM_COORDINATOR is set, so DIFFGRM_NUM_PROCESSES and DIFFGRM_PROCESS_ID must be "
          f"integers too ({e})") from e
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=n, process_id=pid)
    return True
  if _on_tpu_pod() or "SLURM_NTASKS" in os.environ and int(os.environ["SLURM_NTASKS"]) > 1:
    jax.distributed.initialize()
    return True
  return False
