"""Mesh and logical-axis rules from the config; shardings for parameters and batches.

Model code names logical axes only ('vocab', 'embed', 'mlp', 'heads', 'kv', 'pos');
`config.mesh.rules` maps them to mesh axes. The batch is split over every mesh axis
named in the 'batch' rule (data-like axes).
"""

import math

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


class ConfigError(ValueError):
  """A config value that cannot work; the message names the field."""


def mesh_shape(shape, n_devices):
  """Resolves one -1 entry in `shape` to the remaining devices; checks the product."""
  shape = list(shape)
  if shape.count(-1) > 1:
    raise ConfigError(f"mesh.shape={tuple(shape)}: at most one axis may be -1")
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if n_devices % known:
      raise ConfigError(f"mesh.shape={tuple(shape)}: {n_devices} devices are not divisible by {known}")
    shape[shape.index(-1)] = n_devices // known
  if math.prod(shape) != n_devices:
    raise ConfigError(
        f"mesh.shape={tuple(shape)} needs {math.prod(shape)} devices but {n_devices} are available")
  return tuple(shape)


def make_mesh(config, devices=None):
  """Builds the mesh of `config.mesh` over `devices` (default: all devices)."""
  devices = jax.devices() if devices is None else devices
  axes = tuple(config.mesh.axes)
  if len(axes) != len(config.mesh.shape):
    raise ConfigError(f"mesh.axes={axes} and mesh.shape={tuple(config.mesh.shape)} differ in length")
  shape = mesh_shape(config.mesh.shape, len(devices))
  # Auto axes: annotate parameters and inputs, let XLA propagate the rest (GSPMD).
  return jax.make_mesh(shape, axes, axis_types=(jax.sharding.AxisType.Auto,) * len(axes),
                       devices=devices)


def rules(config):
  return tuple((name, tuple(axes) if isinstance(axes, (list, tuple)) else axes)
               for name, axes in config.mesh.rules)


def batch_axes(config, mesh):
  """Mesh axes (present in `mesh`) that split the batch dimension."""
  for name, axes in rules(config):
    if name == "batch":
      axes = (axes,) if isinstance(axes, str) else (axes or ())
      return tuple(a for a in axes if a in mesh.axis_names)
  return ()


def batch_sharding(config, mesh):
  """Leading axis split over the data-like axes, the rest replicated."""
  return NamedSharding(mesh, P(batch_axes(config, mesh)))


def data_parallel_size(config, mesh):
  return int(np.prod([mesh.shape[a] for a in batch_axes(config, mesh)]))


def logical_to_sharding(tree, config, mesh):
  """Boxed (nn.Partitioned) variables or their abstract shapes -> NamedShardings."""
  specs = nn.get_partition_spec(tree)
  return nn.logical_to_mesh_sharding(specs, mesh, rules(config))


def replicated(mesh):
  return NamedSharding(mesh, P())
