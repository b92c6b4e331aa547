"""Mesh and logical-axis rules from the config; shardings for parameters and batches.

Model code names logical axes only ('vocab', 'embed', 'mlp', 'heads', 'kv', 'pos');
`config.mesh.rules` maps them to mesh axes:

  data    pure data parallelism: parameters replicated, the batch split.
  fsdp    the batch split too, and every parameter (and its Adam moments) sharded
          over its 'embed' dimension (ZeRO-3 style; XLA gathers a layer's weights
          just before use and reduce-scatters its gradients).
  tensor  optional: 'mlp' / 'heads' dimensions split (Megatron style); the batch is
          replicated over it.

The batch is split over every mesh axis named in the 'batch' rule (data-like axes).
`mesh.shape` may list fewer sizes than `mesh.axes`; the axes left out have size 1, so
`--config.mesh.shape=4,2` means data=4, fsdp=2, tensor=1.
"""

import math

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from diffgrm_jax.runtime.cli import ConfigError


def mesh_shape(shape, n_devices, n_axes=None):
  """Pads `shape` with 1s to `n_axes`, resolves one -1 to the remaining devices, checks the product."""
  shape = list(shape)
  if n_axes is not None:
    if len(shape) > n_axes:
      raise ConfigError(f"mesh.shape={tuple(shape)} has more entries than mesh.axes ({n_axes})")
    shape += [1] * (n_axes - len(shape))
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
  """Builds the mesh of `config.mesh` over `devices` (default: all devices, all processes)."""
  devices = jax.devices() if devices is None else devices
  axes = tuple(config.mesh.axes)
  if len(set(axes)) != len(axes):
    raise ConfigError(f"mesh.axes={axes}: names must be distinct")
  shape = mesh_shape(config.mesh.shape, len(devices), len(axes))
  rules(config)  # fail early on a rule naming an axis the mesh lacks
  # Auto axes: annotate parameters and inputs, let XLA propagate the rest (GSPMD).
  return jax.make_mesh(shape, axes, axis_types=(jax.sharding.AxisType.Auto,) * len(axes),
                       devices=devices)


def rules(config):
  """`config.mesh.rules` as (logical name, mesh axis | tuple of axes | None) pairs, checked."""
  out = []
  for name, axes in config.mesh.rules:
    axes = tuple(axes) if isinstance(axes, (list, tuple)) else axes
    for a in (axes if isinstance(axes, tuple) else (axes,)):
      if a is not None and a not in tuple(config.mesh.axes):
        raise ConfigError(f"mesh.rules maps {name!r} to mesh axis {a!r}, which is not in "
                          f"mesh.axes={tuple(config.mesh.axes)}")
    out.append((name, axes))
  return tuple(out)


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


def split_over_data(shardings, abstract, mesh, axis="data"):
  """ZeRO-style: each array of `abstract` laid out by `shardings`, additionally split over
  the mesh axis `axis` along its first dimension that still divides evenly.

  For the optimiser state: a data-parallel device then keeps and updates only its share of
  it (the parameters themselves stay as their rules say), and the new parameters are
  gathered (the memory it saves: benchmarks/results/speed.md). Arrays
  already split over `axis`, scalars, and arrays without such a dimension are unchanged.
  """
  sizes = dict(mesh.shape)
  n = sizes.get(axis, 1)
  if n == 1:
    return shardings

  def one(sharding, a):
    spec = list(sharding.spec) + [None] * (len(a.shape) - len(sharding.spec))
    entries = [() if e is None else (e if isinstance(e, tuple) else (e,)) for e in spec]
    if any(axis in e for e in entries):
      return sharding
    for i, (e, size) in enumerate(zip(entries, a.shape)):
      if size % (math.prod(sizes[x] for x in e) * n) == 0:
        spec[i] = e + (axis,)
        return NamedSharding(mesh, P(*spec))
    return sharding

  return jax.tree.map(one, shardings, abstract)


def replicated(mesh):
  return NamedSharding(mesh, P())


def bytes_per_device(abstract, shardings):
  """Largest number of bytes any one device holds of `abstract` (arrays or shape structs)
  laid out by the matching `shardings`; computed from shard shapes, nothing is allocated."""
  per_device = {}
  for a, s in zip(jax.tree.leaves(abstract), jax.tree.leaves(shardings)):
    n = math.prod(s.shard_shape(a.shape)) * np.dtype(a.dtype).itemsize
    for d in s.device_set:
      per_device[d] = per_device.get(d, 0) + n
  return max(per_device.values(), default=0)
