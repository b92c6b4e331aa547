"""Times prepare_data on Sports (cold cache, then cached) and the training pipeline's batches/s.

  python benchmarks/bench_prepare.py [--config=configs/sports.py] [--batch_size=1024]
"""

import shutil
import tempfile
import time

from absl import app
from absl import flags
from ml_collections import config_flags

from diffgrm_jax.data import prepare_data, train_loader, eval_batches

_CONFIG = config_flags.DEFINE_config_file("config", "configs/sports.py", "Config file.",
                                          lock_config=True)
_BATCH = flags.DEFINE_integer("batch_size", 1024, "Global batch size for the pipeline.")
_STEPS = flags.DEFINE_integer("steps", 300, "Training batches to time.")


def main(argv):
  del argv
  config = _CONFIG.value
  cache = tempfile.mkdtemp(prefix="diffgrm_bench_")
  rows = []
  try:
    with config.unlocked():
      config.data.cache_dir = cache
    t = time.perf_counter()
    data = prepare_data(config, verbose=True)
    rows.append(("prepare, cold cache", f"{time.perf_counter() - t:.1f} s"))
    t = time.perf_counter()
    prepare_data(config, verbose=False)
    rows.append(("prepare, cached", f"{time.perf_counter() - t:.2f} s"))
  finally:
    shutil.rmtree(cache, ignore_errors=True)
  loader = train_loader(data, batch_size=_BATCH.value, seed=config.seed,
                        process_index=0, process_count=1)
  next(loader)  # first epoch plan
  t = time.perf_counter()
  for _ in range(_STEPS.value):
    next(loader)
  dt = time.perf_counter() - t
  rows.append((f"train batches/s (batch {_BATCH.value}, {loader.steps_per_epoch} steps/epoch)",
               f"{_STEPS.value / dt:.0f} ({_STEPS.value * _BATCH.value / dt:,.0f} rows/s)"))
  t = time.perf_counter()
  n = sum(1 for _ in eval_batches(data, "test", batch_size=256, process_index=0, process_count=1))
  dt = time.perf_counter() - t
  rows.append(("test eval batches/s (batch 256)", f"{n / dt:.0f}"))
  width = max(len(r[0]) for r in rows)
  print(f"\n{'measure'.ljust(width)} | value\n{'-' * width}-|------")
  for name, value in rows:
    print(f"{name.ljust(width)} | {value}")


if __name__ == "__main__":
  app.run(main)
