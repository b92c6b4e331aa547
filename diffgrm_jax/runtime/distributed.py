"""Multi-controller start-up: `jax.distributed.initialize()` when several processes run.

Every process of a run executes the same command; this decides whether (and how) they
join one JAX runtime, before any other JAX call:

  DIFFGRM_COORDINATOR=host:port, DIFFGRM_NUM_PROCESSES, DIFFGRM_PROCESS_ID
      explicit (any cluster; launch/slurm_gpu.sbatch sets them from SLURM's variables).
      Each process uses all the accelerators it can see.
  DIFFGRM_DISTRIBUTED=auto
      let JAX detect the cluster (Cloud TPU VM metadata, SLURM inside `srun`, Open MPI);
      launch/tpu_vm.sh sets it on every worker of a slice.
  otherwise: multi-host TPU (TPU_WORKER_HOSTNAMES lists several hosts) or a SLURM step
      with several tasks is detected as above; anything else runs as one process.

Under SLURM auto-detection JAX gives each process only the GPU of its SLURM_LOCALID (one
task per GPU); with one task per node use the explicit variables instead.
"""

import os

from absl import logging
import jax


def _on_tpu_pod():
  # GKE and some TPU VM images export the worker list; a single host has one entry.
  hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  return len([h for h in hosts.split(",") if h]) > 1


def _in_multi_task_slurm_step():
  return "SLURM_STEP_NODELIST" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1


def requested():
  """Whether the environment asks for several processes (see the module docstring)."""
  return bool(os.environ.get("DIFFGRM_COORDINATOR")
              or os.environ.get("DIFFGRM_DISTRIBUTED") == "auto"
              or _on_tpu_pod() or _in_multi_task_slurm_step())


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
    if not 0 <= pid < n:
      raise SystemExit(f"DIFFGRM_PROCESS_ID={pid} must be in [0, DIFFGRM_NUM_PROCESSES={n})")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=n, process_id=pid)
  else:
    mode = os.environ.get("DIFFGRM_DISTRIBUTED", "")
    if mode not in ("", "auto"):
      raise SystemExit(f"DIFFGRM_DISTRIBUTED={mode!r}: the only value is 'auto' (or leave it unset)")
    if not requested():
      return False
    jax.distributed.initialize()
  logging.info("jax.distributed: process %d of %d, %d local / %d global devices",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())
  return True
