"""Train-step variants side by side in one process: rows/s, the variants alternating.

This machine's speed drifts between minutes, so variants are compared only within one
process, round robin: every (history bucket, micro-batches, dropout, XLA options, layers,
last block) case is compiled and warmed up first, then each round runs --steps steps of
every case in turn; the median over rounds is printed.

  python benchmarks/ab_train_step.py --micro_batches=1,4,8            # slices per step
  python benchmarks/ab_train_step.py --dropout=flax,16bit --micro_batches=1
  python benchmarks/ab_train_step.py --micro_batches=8 --options=none,xla_cpu_use_fusion_emitters=false
  python benchmarks/ab_train_step.py --micro_batches=8 --layers=package,../old/diffgrm_jax/model/layers.py
  python benchmarks/ab_train_step.py --micro_batches=0 --last_block=masked,full

Sports-recipe model with random weights and random inputs (benchmarks/profile_step.py's
train case), batch 256. `--dropout=flax` swaps in `flax.linen.Dropout` (32 random bits
per element) for the model's 16-bit `diffgrm_jax.model.dropout.Dropout`, `--dropout=threefry16`
the model's Dropout with threefry words instead of its counter hash.
"""

import importlib.util
import itertools
import time

from absl import app
from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import profile_step  # benchmarks/profile_step.py: the train case and the --config flag

flags.DEFINE_string("buckets_ab", "8,50", "Comma-separated history lengths.")
flags.DEFINE_string("micro_batches", "1,8", "Comma-separated train.micro_batches values.")
flags.DEFINE_string("dropout", "16bit",
                    "Comma-separated dropout implementations: 16bit (the package's), "
                    "threefry16 (16 bits per element from threefry words), flax.")
flags.DEFINE_string("options", "default",
                    "Comma-separated XLA option sets for the train step: 'default' (the package's "
                    "own, diffgrm_jax/runtime/compile_options.py), 'none', or option=value pairs joined "
                    "by '+', e.g. xla_cpu_use_fusion_emitters=false.")
flags.DEFINE_string("layers", "package",
                    "Comma-separated layer sources: 'package', or the path of a "
                    "diffgrm_jax/model/layers.py from another checkout (e.g. a `git worktree` of "
                    "an earlier commit), whose `Block` (and every layer below it) replaces the "
                    "package's.")
flags.DEFINE_string("last_block", "masked",
                    "Comma-separated: 'masked' (train.masked_last_block=True, the package's "
                    "default: the decoder's last block at the masked digits only, where the "
                    "masking strategy fixes their number) or 'full' (every position).")
flags.DEFINE_integer("rounds", 4, "Round-robin rounds.")
flags.DEFINE_integer("steps", 3, "Steps per case per round.")
FLAGS = flags.FLAGS


class FlaxDropout(nn.Module):
  """flax.linen.Dropout behind the model's Dropout interface."""
  rate: float

  @nn.compact
  def __call__(self, x, deterministic):
    return nn.Dropout(self.rate)(x, deterministic=deterministic)


def _threefry_dropout():
  """The package's 16-bit Dropout with its words from threefry (`jax.random.bits`)."""
  from diffgrm_jax.model import dropout as drop_lib

  class ThreefryDropout(nn.Module):
    rate: float

    @nn.compact
    def __call__(self, x, deterministic):
      if deterministic or self.rate == 0.0:
        return x
      t = drop_lib.keep_threshold(self.rate)
      words = jax.random.bits(self.make_rng("dropout"), drop_lib.word_shape(x.shape), jnp.uint32)
      return drop_lib.apply_mask(x, drop_lib.mask_from_words(words, t, x.shape), t)
  return ThreefryDropout


def _option_set(spec, package_default):
  """'default' | 'none' | 'opt=value+opt=value' -> the train step's XLA options (or None)."""
  if spec == "default":
    return package_default
  if spec == "none":
    return None
  parsed = {}
  for pair in spec.split("+"):
    name, value = pair.split("=", 1)
    parsed[name] = {"true": True, "false": False}.get(value.lower(), value)
  return parsed


def _blocks(source, package_model):
  """(module, its `Block` class) of a layer source (see --layers)."""
  if source == "package":
    return package_model, package_model.Block
  spec = importlib.util.spec_from_file_location(f"layers_{abs(hash(source))}", source)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module, module.Block


def main(argv):
  del argv
  from diffgrm_jax.runtime import compile_options
  from diffgrm_jax.model import dropout as drop_lib
  from diffgrm_jax.model import diffgrm
  from diffgrm_jax.model import layers as model_lib
  impls = {"16bit": drop_lib.Dropout, "threefry16": _threefry_dropout(), "flax": FlaxDropout}
  config = profile_step._CONFIG.value
  key = ("train", jax.default_backend())
  package_default = compile_options._OPTIONS.get(key)
  package_block = model_lib.Block
  blocks = {src: _blocks(src, model_lib) for src in FLAGS.layers.split(",")}
  cases = {}
  for bucket, micro, drop, opts, layers, last in itertools.product(
      [int(x) for x in FLAGS.buckets_ab.split(",")],
      [int(x) for x in FLAGS.micro_batches.split(",")], FLAGS.dropout.split(","),
      FLAGS.options.split(","), blocks, FLAGS.last_block.split(",")):
    config.train.micro_batches = micro
    # Both read when the step is traced, just below, by the modules that name them.
    module, model_lib.Block = blocks[layers]
    model_lib.Dropout = module.Dropout = diffgrm.Dropout = impls[drop]
    config.train.masked_last_block = {"masked": True, "full": False}[last]
    chosen = _option_set(opts, package_default)
    if chosen is None:
      compile_options._OPTIONS.pop(key, None)
    else:
      compile_options._OPTIONS[key] = chosen
    run, _, _ = profile_step.train_case(bucket, 256)
    jax.block_until_ready(run())
    cases[(bucket, micro, drop, opts, layers, last)] = run
  model_lib.Dropout = diffgrm.Dropout = drop_lib.Dropout
  model_lib.Block = package_block
  if package_default is None:
    compile_options._OPTIONS.pop(key, None)
  else:
    compile_options._OPTIONS[key] = package_default
  times = {k: [] for k in cases}
  for _ in range(FLAGS.rounds):
    for k, run in cases.items():
      t = time.perf_counter()
      for _ in range(FLAGS.steps):
        jax.block_until_ready(run())
      times[k].append((time.perf_counter() - t) / FLAGS.steps)
  print(f"batch 256, {FLAGS.rounds} rounds x {FLAGS.steps} steps, median")
  print("| history | micro_batches | dropout | XLA options | layers | last block | ms/step | rows/s |\n"
        "|---|---|---|---|---|---|---|---|")
  for (bucket, micro, drop, opts, layers, last), ts in times.items():
    t = float(np.median(ts))
    print(f"| {bucket} | {micro} | {drop} | {opts} | {layers} | {last} | {t * 1e3:.0f} "
          f"| {256 / t:.1f} |")


if __name__ == "__main__":
  app.run(main)
