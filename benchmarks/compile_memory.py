"""Host memory of compiling the train step, bucket after bucket: what stays, what is scratch.

Each variant runs in its own process (peak RSS is per process). Within it, the train step
runs once at each history bucket in turn (a compilation each), and after each the
process's RSS, its peak (VmHWM) and its RSS once glibc's `malloc_trim(0)` has returned
the heap's free pages are printed: the last is what the compiled programs keep, the
difference scratch that the heap would otherwise hold.

  python benchmarks/compile_memory.py                      # both variants, Sports recipe
  python benchmarks/compile_memory.py --variants=one --trim_after_compiles

Variants: `two`, the package's `TrainStep` (a gradients program per bucket, one
optimiser-update program); `one`, the same two functions composed into one program per
bucket (the step before the split). `--trim_after_compiles` turns on
`host_memory.trim_after_compiles()`, as training does, so the peak is the one a training
run sees; without it, only the trims of this measurement itself run.
"""

import json
import subprocess
import sys

from absl import app
from absl import flags
import numpy as np
from ml_collections import config_flags

import peak_memory  # benchmarks/peak_memory.py
import profile_step  # benchmarks/profile_step.py: the --config flag

flags.DEFINE_string("variants", "one,two", "Comma-separated: one, two (see the docstring).")
flags.DEFINE_string("buckets_run", "8,16,32,50", "History lengths, compiled in this order.")
flags.DEFINE_bool("trim_after_compiles", False, "Trim after every compilation, as training does.")
flags.DEFINE_enum("variant", None, ["one", "two"], "Internal: run one variant here.")
FLAGS = flags.FLAGS


def _rss_gb():
  with open("/proc/self/status") as f:
    return next(int(line.split()[1]) / 2**20 for line in f if line.startswith("VmRSS"))


def run_variant(variant, buckets, trim_after_compiles):
  """[(bucket, RSS after its first step, peak so far, RSS after a trim)] in GB."""
  import jax
  from diffgrm_jax.runtime import host_memory
  from diffgrm_jax.training import step as step_lib
  if trim_after_compiles:
    host_memory.trim_after_compiles()
  batch = 256
  step, state, bs = profile_step.train_setup(batch)
  if variant == "one":
    gradients, update = step.gradients.__wrapped__, step.update.__wrapped__
    step = jax.jit(lambda s, b: update(s, *gradients(s.params, s.step, b)[::-1]),
                   donate_argnums=(0,))
  rng = np.random.default_rng(0)
  host_memory.trim()
  rows = [("start", _rss_gb(), peak_memory.peak_rss_gb(), _rss_gb())]
  for length in buckets:
    b = profile_step.random_train_batch(rng, batch, length)
    state, m = step(state, step_lib.to_global({k: b[k] for k in step_lib.DEVICE_KEYS}, bs))
    jax.block_until_ready(m)
    rss, peak = _rss_gb(), peak_memory.peak_rss_gb()
    host_memory.trim()
    rows.append((length, rss, peak, _rss_gb()))
  return rows


def main(argv):
  del argv
  buckets = [int(x) for x in FLAGS.buckets_run.split(",")]
  if FLAGS.variant:
    print(json.dumps(run_variant(FLAGS.variant, buckets, FLAGS.trim_after_compiles)))
    return
  print("Sports recipe model, batch 256, random inputs; GB; trim after compiles: "
        f"{FLAGS.trim_after_compiles}")
  print("| variant | after bucket | RSS | peak RSS so far | RSS after malloc_trim |\n"
        "|---|---|---|---|---|")
  for variant in FLAGS.variants.split(","):
    cmd = [sys.executable, __file__, f"--variant={variant}", f"--buckets_run={FLAGS.buckets_run}",
           f"--trim_after_compiles={FLAGS.trim_after_compiles}",
           f"--config={config_flags.get_config_filename(FLAGS['config'])}"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
      sys.exit(out.stderr[-3000:])
    for bucket, rss, peak, trimmed in json.loads(out.stdout.strip().splitlines()[-1]):
      print(f"| {variant} | {bucket} | {rss:.2f} | {peak:.2f} | {trimmed:.2f} |")


if __name__ == "__main__":
  app.run(main)
