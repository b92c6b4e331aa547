"""Side by side with the released PyTorch DIFF_GRM on this machine: training and decoding speed.

Setup of the release (once; torch on CPU is enough):

  git clone https://github.com/liuzhao09/DiffGRM /path/to/DiffGRM
  git -C /path/to/DiffGRM checkout ad7b971
  python3 -m venv /path/to/release_venv
  /path/to/release_venv/bin/pip install torch numpy pyyaml tqdm accelerate transformers \
      datasets requests tiktoken

Run (from the repository root, with this package's environment; Sports data prepared):

  python benchmarks/bench_vs_release.py --release_dir=/path/to/DiffGRM \
      --release_python=/path/to/release_venv/bin/python

Each measurement is its own process (so peak RSS is its own) and runs for about
--seconds after its warm-up; the release and ours alternate, measure by measure, for
--rounds rounds, because this machine's speed drifts between minutes: only ratios taken
in one window mean anything. Both sides use the Sports recipe's model (d 256, 4 heads,
1 encoder + 4 decoder layers, n_inner 1024) with random weights and the Sports SIDs:

  train   rows/s at batch 256 (guided masking, 4 views, label smoothing 0.1, AdamW step
          with clipping) and the process's peak RSS. The release pads every history to 50,
          as its collate does; ours uses its length buckets, as its training does.
  decode  users/s of the confidence beam search at beam 32 and 256 with legality on,
          2048 // beam test users per call (its `generate` vs our jitted decoder).

The release's half is benchmarks/release_side.py; ours is this file with --side=ours.
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
from ml_collections import config_flags

import peak_memory  # benchmarks/peak_memory.py

_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/sports.py", "Recipe whose model and data both sides use.", lock_config=False)
flags.DEFINE_string("release_dir", None, "Checkout of the released code (the folder holding genrec/).")
flags.DEFINE_string("release_python", None, "Python of an environment with torch for the release.")
flags.DEFINE_string("measures", "train,decode32,decode256",
                    "Comma-separated measurements: train, decode<beam>.")
flags.DEFINE_integer("rounds", 2, "Interleaved rounds.")
flags.DEFINE_float("seconds", 20.0, "Timed seconds per measurement.")
flags.DEFINE_integer("train_batch", 256, "Training batch size (rows).")
flags.DEFINE_enum("side", None, ["ours"], "Internal: run our half of one measurement.")
flags.DEFINE_enum("measure", "train", ["train", "decode"], "Internal: the measurement (--side).")
flags.DEFINE_integer("batch", 256, "Internal: batch of the measurement (--side).")
flags.DEFINE_integer("beam", 32, "Internal: beam of the measurement (--side).")
FLAGS = flags.FLAGS

TARGETS = {"train": (4.0, "rows/s >= 4x"), "train_rss": (0.5, "peak RSS <= 0.5x"),
           "decode": (5.0, "users/s >= 5x")}


def _recipe_data():
  from diffgrm_jax import data as data_lib
  config = _CONFIG.value
  return config, data_lib.prepare_data(config, verbose=False)


def write_inputs(path, n_train=20_000):
  config, data = _recipe_data()
  rng = np.random.default_rng(0)
  rows = rng.choice(len(data.train), min(n_train, len(data.train)), replace=False)
  np.savez(path, sids=data.sids, codebook_size=data.codebook_size,
           train_hist=data.train.hist[rows], train_len=data.train.length[rows],
           train_target=data.train.target[rows], test_hist=data.test.hist,
           test_len=data.test.length)
  return data.name, len(data.sids) - 1


def _time_loop(step, seconds):
  step()  # warm-up
  done, t0 = 0, time.perf_counter()
  while time.perf_counter() - t0 < seconds or done == 0:
    done += step()
  return done / (time.perf_counter() - t0)


def run_ours(measure, batch, beam, seconds):
  """Our half of one measurement: returns its JSON record."""
  import jax

  from diffgrm_jax.sid import catalogue as catalogue_lib
  from diffgrm_jax.runtime import cpu_devices
  from diffgrm_jax import data as data_lib
  from diffgrm_jax.decoding import settings as decoding
  from diffgrm_jax.evaluation import evaluate as evaluation
  from diffgrm_jax.runtime import host_memory
  from diffgrm_jax.model import factory as model_lib
  from diffgrm_jax.runtime import sharding as shard_lib
  from diffgrm_jax.training import step as step_lib

  config = _CONFIG.value
  if measure == "train":
    config.train.batch_size = batch
  else:
    config.decode.batch_size = batch
  cpu_devices.split_host(config)  # as `python -m diffgrm_jax.train` does, before JAX starts
  host_memory.trim_after_compiles()  # as training, evaluation and recommending do
  config, data = _recipe_data()
  model = model_lib.from_config(config)
  buckets = tuple(config.data.length_buckets)
  mesh = shard_lib.make_mesh(config)
  bs = shard_lib.batch_sharding(config, mesh)
  if measure == "train":
    tx, schedule = step_lib.make_optimizer(config, 10 ** 6)
    state, shardings = step_lib.init_state(model, tx, config, mesh)
    train_step = step_lib.make_train_step(model, tx, schedule, config, shardings, bs)
    loader = data_lib.train_loader(data, batch_size=batch, seed=0, buckets=buckets)
    seen, box = set(), [state]
    while len(seen) < len(buckets):  # compile every bucket shape before timing
      b = next(loader)
      seen.add(b["hist_sids"].shape[1])
      box[0], m = train_step(box[0], step_lib.to_global(b, bs))
    jax.block_until_ready(m)

    def step():
      b = next(loader)
      box[0], m = train_step(box[0], step_lib.to_global(b, bs))
      jax.block_until_ready(m)
      return int(b["weight"].sum())
  else:
    variables = {"params": step_lib.init_state(
        model, step_lib.make_optimizer(config, 1)[0], config, mesh)[0].params}
    catalogue = catalogue_lib.Catalogue.from_sids(data.sids, data.codebook_size)
    # The decoder as evaluation runs it: users split over the mesh's data axis.
    fn, tables = evaluation.compiled_decoder(
        model, catalogue, decoding.SearchSettings("confidence", (beam,) * 4), mesh)
    batches = list(data_lib.eval_batches(data, "test", batch_size=batch, buckets=buckets))
    rng = np.random.default_rng(0)
    order = list(rng.permutation(len(batches)))

    def run(b):
      hist, mask = (jax.make_array_from_process_local_data(bs, b[k])
                    for k in ("hist_sids", "hist_mask"))
      jax.block_until_ready(fn(variables, tables, hist, mask))

    for lb in sorted({b["hist_sids"].shape[1] for b in batches}):  # compile every bucket
      run(next(b for b in batches if b["hist_sids"].shape[1] == lb))
    pos = [0]

    def step():
      b = batches[order[pos[0] % len(order)]]
      pos[0] += 1
      run(b)
      return int((b["user"] >= 0).sum())
  rate = _time_loop(step, seconds)
  return {"rate": rate, "peak_rss_gb": peak_memory.peak_rss_gb()}


def _last_json(out, what):
  if out.returncode:
    sys.exit(f"{what} failed:\n{out.stderr[-4000:]}")
  return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv):
  del argv
  a = FLAGS
  if a.side == "ours":
    print(json.dumps(run_ours(a.measure, a.batch, a.beam, a.seconds)))
    return
  if not (a.release_dir and a.release_python):
    raise app.UsageError("--release_dir and --release_python are required (see the setup above)")
  here = os.path.dirname(os.path.abspath(__file__))
  root = os.path.dirname(here)
  config_file = os.path.abspath(FLAGS["config"].config_filename)
  inputs = os.path.join(tempfile.mkdtemp(prefix="bench_vs_release_"), "inputs.npz")
  name, n_items = write_inputs(inputs)
  # Config overrides (--config.train.micro_batches=8, ...) apply to our side too.
  overrides = [x for x in sys.argv[1:] if x.startswith("--config.")]
  results = {}  # (measure, side) -> list of records
  for rnd in range(a.rounds):
    for measure in a.measures.split(","):
      kind = "train" if measure == "train" else "decode"
      beam = 32 if kind == "train" else int(measure[len("decode"):])
      batch = a.train_batch if kind == "train" else max(8, 2048 // beam)
      common = [f"--measure={kind}", f"--batch={batch}", f"--beam={beam}",
                f"--seconds={a.seconds}"]
      cmds = {
          "release": [a.release_python, os.path.join(here, "release_side.py"),
                      f"--release_dir={a.release_dir}", f"--inputs={inputs}"] + common,
          "ours": [sys.executable, os.path.abspath(__file__), "--side=ours",
                   f"--config={config_file}"] + overrides + common,
      }
      sides = ("release", "ours") if rnd % 2 == 0 else ("ours", "release")
      for side in sides:
        r = _last_json(subprocess.run(cmds[side], capture_output=True, text=True, cwd=root),
                       f"{side} {measure}")
        results.setdefault((measure, side), []).append(r)
        print(f"round {rnd + 1} {measure:>10} {side:>7}: {r['rate']:8.2f}/s  "
              f"peak RSS {r['peak_rss_gb']:.2f} GB", flush=True)

  print(f"\n{name} ({n_items} items), {a.rounds} interleaved rounds of ~{a.seconds:.0f} s each; "
        "values per round" + (f"; ours with {' '.join(overrides)}" if overrides else "")
        + (f"; XLA_FLAGS={os.environ['XLA_FLAGS']}" if os.environ.get("XLA_FLAGS") else ""))
  print("| measure | release | ours | ratio | target |\n|---|---|---|---|---|")
  fmt = lambda xs, f: " / ".join(f.format(x) for x in xs)
  for measure in a.measures.split(","):
    rel = [r["rate"] for r in results[(measure, "release")]]
    our = [r["rate"] for r in results[(measure, "ours")]]
    kind = "train" if measure == "train" else "decode"
    unit = "rows/s, batch %d" % a.train_batch if kind == "train" else "users/s, confidence beam " + measure[6:]
    ratio = [o / r for o, r in zip(our, rel)]
    print(f"| {'training' if kind == 'train' else 'decoding'} {unit} | {fmt(rel, '{:.1f}')} | "
          f"{fmt(our, '{:.1f}')} | {fmt(ratio, '{:.2f}x')} | {TARGETS[kind][1]} |")
    if kind == "train":
      rel = [r["peak_rss_gb"] for r in results[(measure, "release")]]
      our = [r["peak_rss_gb"] for r in results[(measure, "ours")]]
      print(f"| training peak RSS (GB), batch {a.train_batch} | {fmt(rel, '{:.2f}')} | "
            f"{fmt(our, '{:.2f}')} | {fmt([o / r for o, r in zip(our, rel)], '{:.2f}x')} | "
            f"{TARGETS['train_rss'][1]} |")


if __name__ == "__main__":
  app.run(main)
