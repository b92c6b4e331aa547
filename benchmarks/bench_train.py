"""Training throughput and peak memory for a recipe on this machine; prints a table.

  python benchmarks/bench_train.py --config=configs/sports.py --batch_sizes=256,1024 --steps=200

Rows are real training rows from the config's data pipeline (length-bucketed batches,
guided masking with 4 views unless overridden). Compile and `--warmup` steps are
excluded from the timing; rows/s counts rows before views
(as the training loop's progress bar does).
Peak memory is the process's peak RSS (VmHWM, peak_memory.py) after the run.
"""

import time

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

import peak_memory  # benchmarks/peak_memory.py

from diffgrm_jax import data as data_lib
from diffgrm_jax.model import factory as model_lib
from diffgrm_jax.runtime import sharding as shard_lib
from diffgrm_jax.training import step as step_lib

_CONFIG = config_flags.DEFINE_config_file("config", "configs/sports.py", "Recipe to time.",
                                          lock_config=True)
flags.DEFINE_string("batch_sizes", "256", "Comma-separated global batch sizes to time.")
flags.DEFINE_integer("steps", 200, "Timed steps per batch size.")
flags.DEFINE_integer("warmup", 20, "Untimed steps first (compiles every bucket shape).")
FLAGS = flags.FLAGS


def time_batch_size(config, data, batch_size, steps, warmup):
  config.train.batch_size = batch_size
  mesh = shard_lib.make_mesh(config)
  model = model_lib.from_config(config)
  tx, schedule = step_lib.make_optimizer(config, 10 ** 6)
  state, shardings = step_lib.init_state(model, tx, config, mesh)
  bs = shard_lib.batch_sharding(config, mesh)
  step = step_lib.make_train_step(model, tx, schedule, config, shardings, bs)
  loader = data_lib.train_loader(data, batch_size=batch_size, seed=config.seed,
                                 buckets=tuple(config.data.length_buckets))
  # Warm up on one batch of every bucket length so no compile falls in the timing.
  seen = set()
  n = 0
  while len(seen) < len(config.data.length_buckets) or n < warmup:
    batch = next(loader)
    seen.add(batch["hist_sids"].shape[1])
    state, m = step(state, step_lib.to_global(batch, bs))
    n += 1
    if n > 50 * warmup:
      break
  jax.block_until_ready(m)
  rows, t0 = 0, time.perf_counter()
  for _ in range(steps):
    batch = next(loader)
    state, m = step(state, step_lib.to_global(batch, bs))
    rows += int(batch["weight"].sum())
  jax.block_until_ready(m)
  dt = time.perf_counter() - t0
  return rows / dt, dt / steps


def main(argv):
  del argv
  config = _CONFIG.value
  data = data_lib.prepare_data(config, verbose=False)
  results = []
  for b in [int(x) for x in FLAGS.batch_sizes.split(",")]:
    rows_s, s_step = time_batch_size(config, data, b, FLAGS.steps, FLAGS.warmup)
    results.append((b, rows_s, s_step))
  peak_gb = peak_memory.peak_rss_gb()
  print(f"\ntraining: {data.name}, masking {config.masking.strategy} x{config.masking.augment_factor}, "
        f"d_model {config.model.d_model}, {jax.device_count()}x {jax.devices()[0].device_kind}")
  print(f"{'batch':>6} {'rows/s':>10} {'s/step':>8}")
  for b, r, s in results:
    print(f"{b:>6} {r:>10.1f} {s:>8.3f}")
  print(f"peak RSS (whole process): {peak_gb:.2f} GB")


if __name__ == "__main__":
  app.run(main)
