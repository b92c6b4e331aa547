"""A whole training run's wall time by phase, with a cold and then a warm cache; prints a table.

  python benchmarks/bench_wall.py --job=demo                       # configs/demo.py
  python benchmarks/bench_wall.py --job=own300                     # 300-user CSV, defaults
  python benchmarks/bench_wall.py --job=demo --extra=--config.train.precompile=False

Each job runs `python -m diffgrm_jax.train` twice in subprocesses on one fresh cache
folder: "cold" (data preparation, SIDs and every XLA program from nothing) and then "warm"
(a new workdir: the prepared data and the persistent compilation cache from the first run).
The phases are `summary.json`'s `timing` (training/loop.py): setup (data, model, start-up
compilation), precompile (the start-up compilation alone), the training loop, validation,
checkpoint saves, the final evaluation, and compile (XLA compilation seconds summed over
threads, inside the others). `own300` is the smallest own-data job: 300 users with 5 to 30
items each over 400 items, written as a CSV with no item table (random SIDs), through
configs/default.py (every field at its default) for 3 epochs.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
flags.DEFINE_enum("job", "demo", ["demo", "own300"], "What to run.")
flags.DEFINE_multi_string("extra", [], "Extra flags for both runs (e.g. --config.x=y).")
FLAGS = flags.FLAGS

PHASES = ("setup_s", "precompile_s", "train_loop_s", "valid_s", "checkpoint_s",
          "final_eval_s", "compile_s")


def own300_csv(folder, seed=0):
  """300 users, 5-30 items each over 400 items, with a popularity skew; returns the path."""
  rng = np.random.default_rng(seed)
  weights = 1.0 / np.arange(1, 401) ** 0.8
  weights /= weights.sum()
  path = os.path.join(folder, "interactions.csv")
  with open(path, "w") as f:
    f.write("user_id,item_id,timestamp\n")
    for u in range(300):
      items = rng.choice(400, size=rng.integers(5, 31), replace=False, p=weights)
      for t, i in enumerate(items):
        f.write(f"user{u},item{i},{t}\n")
  return path


def command(job, folder, workdir):
  if job == "demo":
    flags_ = ["--config=configs/demo.py"]
  else:
    flags_ = ["--config=configs/default.py", "--config.data.source=interactions",
              "--config.data.name=own300",
              f"--config.data.interactions.path={own300_csv(folder)}",
              "--config.embedding.source=random", "--config.train.epochs=3"]
  # --config first: absl reads the overrides of its fields after it.
  return ([sys.executable, "-m", "diffgrm_jax.train", flags_[0], f"--workdir={workdir}",
           f"--config.data.cache_dir={os.path.join(folder, 'cache')}"] + flags_[1:]
          + FLAGS.extra)


def main(argv):
  del argv
  folder = tempfile.mkdtemp(prefix=f"bench_wall_{FLAGS.job}_")
  env = dict(os.environ)
  env.pop("JAX_COMPILATION_CACHE_DIR", None)  # the run's own cache folder, fresh
  rows = []
  for name in ("cold", "warm"):
    workdir = os.path.join(folder, f"run_{name}")
    t = time.time()
    proc = subprocess.run(command(FLAGS.job, folder, workdir), cwd=ROOT, env=env,
                          capture_output=True, text=True)
    wall = time.time() - t
    if proc.returncode:
      sys.exit(f"{name} run failed:\n{proc.stderr[-3000:]}")
    with open(os.path.join(workdir, "summary.json")) as f:
      summary = json.load(f)
    rows.append((name, wall, summary["timing"], summary["test"].get("sid/ndcg@10")))
  print(f"\n{FLAGS.job}{' ' + ' '.join(FLAGS.extra) if FLAGS.extra else ''} (folder {folder})")
  print(f"{'run':>5} {'wall_s':>7} " + " ".join(f"{p[:-2]:>11}" for p in PHASES)
        + f" {'test SID N@10':>14}")
  for name, wall, timing, ndcg in rows:
    print(f"{name:>5} {wall:>7.1f} " + " ".join(f"{timing.get(p, 0.0):>11.1f}" for p in PHASES)
          + f" {ndcg:>14.4f}")


if __name__ == "__main__":
  app.run(main)
