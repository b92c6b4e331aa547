"""Training steps/s at train.steps_per_call = 1 and K, interleaved; prints a table.

  python benchmarks/bench_steps_per_call.py --config=configs/demo.py --k=8 --rounds=5

Each round times `--steps` steps one program per step, then the same number of steps K per
call (a lax.scan over K stacked batches, training/step.py::make_multi_step), from the same
state and batches; rounds alternate so drift on a shared machine hits both alike. Compile
is excluded (every shape is run once first). The ratio column is the K-per-call rate over
the one-per-call rate of the same round.
"""

import time

from absl import app
from absl import flags
import jax
import numpy as np
from ml_collections import config_flags

from diffgrm_jax import data as data_lib
from diffgrm_jax.model import factory as model_lib
from diffgrm_jax.runtime import sharding as shard_lib
from diffgrm_jax.training import step as step_lib

_CONFIG = config_flags.DEFINE_config_file("config", "configs/demo.py", "Recipe to time.",
                                          lock_config=False)
flags.DEFINE_integer("k", 8, "Steps per call to compare with 1.")
flags.DEFINE_integer("steps", 64, "Timed steps per measurement (a multiple of --k).")
flags.DEFINE_integer("rounds", 5, "Interleaved rounds.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  config = _CONFIG.value
  k, steps = FLAGS.k, FLAGS.steps - FLAGS.steps % FLAGS.k
  data = data_lib.prepare_data(config, verbose=False)
  mesh = shard_lib.make_mesh(config)
  model = model_lib.from_config(config, n_items=data.n_items)
  tx, schedule = step_lib.make_optimizer(config, 10 ** 6)
  state, shardings = step_lib.init_state(model, tx, config, mesh)
  bs = shard_lib.batch_sharding(config, mesh)
  loader = data_lib.train_loader(data, batch_size=config.train.batch_size, seed=config.seed,
                                 buckets=tuple(config.data.length_buckets),
                                 sequences=model.kind == "sasrec")
  keys = step_lib.batch_keys(model)
  one = step_lib.make_train_step(model, tx, schedule, config, shardings, bs)
  multi = step_lib.make_multi_step(model, tx, schedule, config, shardings, bs, loader.edges)
  batches = [next(loader) for _ in range(steps)]
  edges = loader.edges

  def run_one(state):
    for b in batches:
      state, m = one(state, step_lib.to_global(b, bs, keys))
    return state, m

  def run_multi(state):
    for i in range(0, steps, k):
      group = batches[i:i + k]
      buckets = np.searchsorted(edges, [b[keys[0]].shape[1] for b in group]).astype(np.int32)
      state, m = multi(state, step_lib.stack_batches(group, bs, keys, max(edges)), buckets)
    return state, m

  state, m = run_one(state)  # compiles every bucket's program
  state, m = run_multi(state)
  jax.block_until_ready(m)
  rows = []
  for _ in range(FLAGS.rounds):
    rates = []
    for fn in (run_one, run_multi):
      t = time.perf_counter()
      state, m = fn(state)
      jax.block_until_ready(m)
      rates.append(steps / (time.perf_counter() - t))
    rows.append(rates)
  print(f"\n{data.name}: {model.kind}, batch {config.train.batch_size}, {steps} steps per "
        f"measurement, {jax.device_count()}x {jax.devices()[0].device_kind}")
  print(f"{'round':>5} {'steps/s K=1':>12} {f'steps/s K={k}':>12} {'ratio':>6}")
  for i, (a, b) in enumerate(rows):
    print(f"{i + 1:>5} {a:>12.1f} {b:>12.1f} {b / a:>6.2f}")
  ratios = [b / a for a, b in rows]
  print(f"median ratio {np.median(ratios):.2f}")


if __name__ == "__main__":
  app.run(main)
