"""Per-device memory of parameters and AdamW state under each mesh shape; prints a table.

  python benchmarks/bench_sharding.py [--config=configs/toys.py] [--shapes=8x1,4x2,2x4,1x8,2x2x2]

Shapes are data x fsdp [x tensor] over 8 fake CPU devices. Bytes per device come from
the shard shapes of the shardings the config's rules give (jax.eval_shape, nothing is
allocated), so this runs anywhere in seconds. Activations and gradients are not counted:
gradients take the parameters' layout; activations depend on the batch, not the mesh.
"""

import os

N_DEVICES = 8
# Fake CPU devices must be requested before JAX starts.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             f" --xla_force_host_platform_device_count={N_DEVICES}").strip()

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags
import jax
from ml_collections import config_flags

from diffgrm_jax.model import factory as model_lib  # pylint: disable=wrong-import-position
from diffgrm_jax.runtime import sharding as shard_lib
from diffgrm_jax.training import step as step_lib

_CONFIG = config_flags.DEFINE_config_file("config", "configs/toys.py", "Recipe to measure.",
                                          lock_config=True)
flags.DEFINE_string("shapes", "8x1,4x2,2x4,1x8,2x2x2",
                    "Comma-separated mesh shapes (data x fsdp [x tensor]) over 8 devices.")
FLAGS = flags.FLAGS

MIB = 2 ** 20


def measure(config, shape, devices):
  """(params, optimizer state) bytes on the most loaded device under mesh `shape`, and the
  parameter count."""
  config.mesh.shape = shape
  mesh = shard_lib.make_mesh(config, devices)
  tx, _ = step_lib.make_optimizer(config, 10)
  abstract, shardings = step_lib.abstract_state(model_lib.from_config(config), tx, config, mesh)
  return (shard_lib.bytes_per_device(abstract.params, shardings.params),
          shard_lib.bytes_per_device(abstract.opt_state, shardings.opt_state),
          sum(x.size for x in jax.tree.leaves(abstract.params)))


def main(argv):
  del argv
  config = _CONFIG.value
  devices = jax.devices("cpu")[:N_DEVICES]
  if len(devices) < N_DEVICES:
    raise SystemExit(f"need {N_DEVICES} CPU devices, JAX sees {len(devices)}; "
                     f"set XLA_FLAGS=--xla_force_host_platform_device_count={N_DEVICES}")
  shapes = [tuple(int(x) for x in s.split("x")) for s in FLAGS.shapes.split(",")]
  rows = [(s, *measure(config, s, devices)[:2]) for s in shapes]
  # Pure data parallelism (everything replicated) is the reference.
  base_p, base_o, n_params = measure(config, (N_DEVICES,), devices)
  m = config.model
  print(f"d_model {m.d_model}, {m.n_heads} heads, {m.n_enc_layers}+{m.n_dec_layers} layers, "
        f"n_inner {m.n_inner}, vocab {config.sid.n_digit}x{config.sid.codebook_size}: "
        f"{n_params:,} parameters (float32); AdamW keeps 2 moments per parameter.")
  print(f"Per-device MiB on {N_DEVICES} devices; rules: "
        + ", ".join(f"{k}->{v}" for k, v in shard_lib.rules(config) if k != "batch"))
  axes = " x ".join(config.mesh.axes)
  print(f"| mesh ({axes}) | params | optimizer state | total | vs 8x1 data-parallel |")
  print("|---|---:|---:|---:|---:|")
  for shape, p, o in rows:
    print(f"| {'x'.join(map(str, shape))} | {p / MIB:.1f} | {o / MIB:.1f} | "
          f"{(p + o) / MIB:.1f} | {(p + o) / (base_p + base_o):.1%} |")


if __name__ == "__main__":
  app.run(main)
