"""One XLA device per CPU core: data parallelism across the cores of one machine.

XLA:CPU runs one device's operations one after another and spreads only the larger ones
over the cores, so the cores are busy together only part of the time. Split into one
device per core, the host runs the mesh's data axis as a multi-GPU machine does: each
core its own rows of the batch, the gradients summed across devices. It is opt-in
(`mesh.cpu_devices=0`): not faster in every measurement, and it takes more memory
(benchmarks/results/speed.md, "One XLA device per CPU core"). Evaluation shards its
users the same way.

`split_host(config)` sets the count (`mesh.cpu_devices`; 0: one per usable core, as many
as divide the batch sizes) through `jax_num_cpu_devices`, which JAX reads when it starts
its CPU backend, so the entry points call it first. It leaves the count alone where the
user chose one (XLA_FLAGS' --xla_force_host_platform_device_count or JAX's own option),
where JAX has already started, and in multi-process runs (their processes share the
cores). Results stay those of one device up to float rounding: the batch's rows and
random draws do not depend on the mesh.
"""

import math
import os

from absl import logging
import jax
from jax._src import xla_bridge

from diffgrm_jax.runtime import distributed
from diffgrm_jax.runtime.cli import ConfigError

_FLAG = "xla_force_host_platform_device_count"


def usable_cores():
  """Cores this process may run on (its CPU affinity where the OS has one)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # macOS, Windows
    return os.cpu_count() or 1


def device_count(config, cores):
  """Devices to split the host into: `mesh.cpu_devices`, a fixed `mesh.shape`'s size, or
  the most (up to `cores`) that divide both `train.batch_size` and `decode.batch_size`."""
  requested = int(config.mesh.cpu_devices)
  if requested < 0:
    raise ConfigError(f"mesh.cpu_devices={requested}: must be >= 1, or 0 for one per core")
  if requested:
    return requested
  shape = tuple(config.mesh.shape)
  if -1 not in shape:
    return math.prod(shape)
  # decode.batch_size 0 is 256 on CPU (decoding/settings.py, AUTO_BATCH; JAX has not
  # started here, so the backend cannot be asked).
  sizes = (config.train.batch_size, int(config.decode.batch_size) or 256)
  return max(d for d in range(1, max(cores, 1) + 1) if all(s % d == 0 for s in sizes))


def split_host(config):
  """Sets JAX's CPU device count for this run before JAX starts (see the module docstring).
  Returns the count set, or None where it was left alone."""
  if _FLAG in os.environ.get("XLA_FLAGS", "") or jax.config.jax_num_cpu_devices != -1:
    return None
  if distributed.requested():
    return None
  if xla_bridge.backends_are_initialized():
    logging.warning("mesh.cpu_devices: JAX has already started; keeping its %d CPU devices",
                    len(jax.devices("cpu")))
    return None
  n = device_count(config, usable_cores())
  jax.config.update("jax_num_cpu_devices", n)
  return n
